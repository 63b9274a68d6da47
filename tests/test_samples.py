"""Pixel sample extraction on synthetic feature rasters with several windows."""

from __future__ import annotations

import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pyogrio
import pytest
import rasterio
from rasterio.features import rasterize
from rasterio.transform import Affine
from shapely.geometry import Polygon, box

from cropchain.errors import InputError
from cropchain.io.raster import geotiff_profile
from cropchain.learning.samples import extract_pixels

H, W = 150, 130  # pixels; block=48 below gives 4 x 3 windows
X0, Y0 = 600000.0, 4700000.0
TRANSFORM = Affine(10, 0, X0, 0, -10, Y0)
FEATURES = ["20180123_B02", "20180123_B08", "20180123_NDVI", "20180306_B02", "20180306_NDVI"]


def px(col0, row0, col1, row1):
    """Polygon covering pixels [row0, row1) x [col0, col1) exactly (edges on pixel edges)."""
    return box(X0 + 10 * col0, Y0 - 10 * row1, X0 + 10 * col1, Y0 - 10 * row0)


def make_tile(folder: Path, tile: str, features=FEATURES, seed=0):
    """Feature raster (value = band * 1e5 + row * 1000 + col + offset), validity with
    zeros, and split polygons crossing window borders. Returns the tile dict and truth."""
    folder.mkdir(parents=True, exist_ok=True)
    offset = 0.25 if tile.endswith("B") else 0.0
    base = {"crs": "EPSG:32631", "transform": TRANSFORM, "width": W, "height": H}
    rows, cols = np.mgrid[0:H, 0:W]
    data = np.stack([b * 1e5 + rows * 1000 + cols + offset for b in range(len(features))]).astype(np.float32)
    with rasterio.open(
        folder / "features.tif",
        "w",
        **geotiff_profile(base, count=len(features), dtype="float32", nodata=None),
    ) as dst:
        dst.write(data)
        dst.descriptions = tuple(features)
    rng = np.random.default_rng(seed)
    validity = rng.integers(1, 8, size=(H, W)).astype(np.uint8)  # as gapfill writes it
    validity[rng.random((H, W)) < 0.1] = 0  # scattered cloudy-all-year pixels
    validity[60:70, :] = 0  # a cloudy strip crossing polygons
    with rasterio.open(
        folder / "validity.tif", "w", **geotiff_profile(base, count=1, dtype="uint8", nodata=None)
    ) as dst:
        dst.write(validity, 1)
    geoms = [
        px(10, 10, 60, 60),  # crosses the window borders at 48
        px(40, 70, 100, 140),  # crosses row and column borders
        px(100, 5, 125, 30),
        Polygon([(X0 + 5, Y0 - 1495), (X0 + 195, Y0 - 1005), (X0 + 385, Y0 - 1495)]),  # slanted edges
        px(70, 20, 90, 45),
        px(110, 100, 128, 148),
        px(50, 50, 70, 65),  # overlaps polygon 1 (same source): the later polygon wins
    ]
    codes = [1, 1, 2, 2, 3, 3, 2]
    split = ["learn", "validation", "learn", "validation", "learn", "validation", "learn"]
    ids = list(range(1, len(geoms) + 1))
    gdf = gpd.GeoDataFrame(
        {"polygon_id": ids, "code": codes, "split": split}, geometry=geoms, crs="EPSG:32631"
    )
    pyogrio.write_dataframe(gdf, folder / "split.gpkg", layer="split")
    # Truth: one rasterization of the whole tile.
    labels = rasterize(
        zip(geoms, ids), out_shape=(H, W), transform=TRANSFORM, fill=0, all_touched=False, dtype="int32"
    )
    spec = {
        "tile": tile,
        "features": folder / "features.tif",
        "validity": folder / "validity.tif",
        "split": folder / "split.gpkg",
    }
    return spec, labels, validity, data, gdf


def test_every_pixel_once_with_values(tmp_path, caplog):
    spec, labels, validity, data, gdf = make_tile(tmp_path / "A", "T31TAA")
    out = tmp_path / "run" / "pixels.parquet"
    with caplog.at_level(logging.INFO, logger="cropchain.learning.samples"):
        summary = extract_pixels([spec], out, block=48)
    df = pd.read_parquet(out)

    # Pixel-aligned rectangles: exactly area / 100 pixels each (pixel-centre rule).
    for pid in (2, 3, 5, 6, 7):
        assert (labels == pid).sum() == round(gdf.geometry[pid - 1].area / 100)
    assert (labels == 1).sum() == 50 * 50 - 10 * 10
    assert 0.9 < (labels == 4).sum() / (gdf.geometry[3].area / 100) < 1.1
    learn_ids = gdf.loc[gdf["split"] == "learn", "polygon_id"].to_numpy()
    expected = np.isin(labels, learn_ids) & (validity > 0)  # only learning pixels are stored
    assert ((labels > 0) & (validity == 0)).sum() > 100  # the test drops something
    assert len(df) == expected.sum()
    assert not df.duplicated(["row", "col"]).any()
    assert (labels[df["row"], df["col"]] == df["polygon_id"]).all()
    assert (validity[df["row"], df["col"]] > 0).all()
    assert (df["validity"].to_numpy() == validity[df["row"], df["col"]]).all()
    assert set(zip(df["row"], df["col"])) == set(zip(*np.nonzero(expected)))

    by_id = gdf.set_index("polygon_id")
    assert (df["code"].to_numpy() == by_id.loc[df["polygon_id"], "code"].to_numpy()).all()
    assert (df["split"].astype(str) == "learn").all()
    for b, name in enumerate(FEATURES):
        np.testing.assert_array_equal(df[name].to_numpy(), data[b, df["row"], df["col"]])

    schema = pq.read_schema(out)
    assert schema.names == ["tile", "polygon_id", "code", "split", "row", "col", "validity", *FEATURES]
    assert [str(schema.field(n).type) for n in ("polygon_id", "code", "row", "col", "validity")] == [
        "int32",
        "int16",
        "int32",
        "int32",
        "int16",
    ]
    assert all(str(schema.field(n).type) == "float" for n in FEATURES)
    assert isinstance(df["split"].dtype, pd.CategoricalDtype)
    assert set(df["tile"]) == {"T31TAA"}

    counts = df.groupby(["code", "split"], observed=True).size().to_dict()
    # the summary counts the validation pixels (with a clear date) without storing them
    for pid, code, split in gdf[["polygon_id", "code", "split"]].itertuples(index=False):
        if split == "validation":
            n = int(((labels == pid) & (validity > 0)).sum())
            counts[(code, split)] = counts.get((code, split), 0) + n
    assert summary.set_index(["code", "split"])["n_pixels"].to_dict() == counts
    assert "class 1 learn" in caplog.text
    assert not list(out.parent.glob(".*tmp*"))


def test_window_size_does_not_change_result(tmp_path):
    spec, *_ = make_tile(tmp_path / "A", "T31TAA")
    extract_pixels([spec], tmp_path / "small.parquet", block=17)
    extract_pixels([spec], tmp_path / "one.parquet", block=4096)
    a = pd.read_parquet(tmp_path / "small.parquet").sort_values(["row", "col"]).reset_index(drop=True)
    b = pd.read_parquet(tmp_path / "one.parquet").sort_values(["row", "col"]).reset_index(drop=True)
    pd.testing.assert_frame_equal(a, b)


def test_learning_cap_over_tiles(tmp_path):
    tiles = [make_tile(tmp_path / "A", "T31TAA", seed=1)[0], make_tile(tmp_path / "B", "T31TAB", seed=2)[0]]
    extract_pixels(tiles, tmp_path / "all.parquet", block=48)
    full = pd.read_parquet(tmp_path / "all.parquet")
    cap = 1000
    summary = extract_pixels(
        tiles, tmp_path / "cap.parquet", max_learn_pixels_per_class=cap, seed=3, block=48
    )
    capped = pd.read_parquet(tmp_path / "cap.parquet")

    n_full = full.groupby(["code", "split"], observed=True).size()
    n_cap = capped.groupby(["code", "split"], observed=True).size()
    assert n_full[(1, "learn")] > cap and n_full[(2, "learn")] > cap and n_full[(3, "learn")] < cap
    assert set(n_full.index.get_level_values("split")) == {"learn"}  # validation pixels are not stored
    for (code, split), n in n_full.items():
        assert n_cap[(code, split)] == min(n, cap)
    in_summary = summary.set_index(["code", "split"])["n_pixels"].to_dict()
    assert {k: v for k, v in in_summary.items() if k[1] == "learn"} == n_cap.to_dict()
    assert {k[0] for k in in_summary if k[1] == "validation"} == {1, 2, 3}
    assert set(capped["tile"]) == {"T31TAA", "T31TAB"}
    # The kept learning pixels are a subset of the full extraction, drawn from both tiles.
    key = ["tile", "row", "col"]
    assert len(capped.merge(full, on=key)) == len(capped)
    assert capped.loc[(capped["code"] == 1) & (capped["split"] == "learn"), "tile"].nunique() == 2
    # Seeded: same seed, same pixels; another seed, other pixels.
    extract_pixels(tiles, tmp_path / "cap2.parquet", max_learn_pixels_per_class=cap, seed=3, block=48)
    extract_pixels(tiles, tmp_path / "cap3.parquet", max_learn_pixels_per_class=cap, seed=4, block=48)
    pd.testing.assert_frame_equal(capped, pd.read_parquet(tmp_path / "cap2.parquet"))
    assert not capped[key].equals(pd.read_parquet(tmp_path / "cap3.parquet")[key])


def test_feature_names_must_match(tmp_path):
    a = make_tile(tmp_path / "A", "T31TAA")[0]
    b = make_tile(tmp_path / "B", "T31TAB", features=[*FEATURES[:-1], "20180306_NDWI"])[0]
    out = tmp_path / "pixels.parquet"
    with pytest.raises(InputError, match="tile T31TAB has features") as err:
        extract_pixels([a, b], out)
    assert err.value.path == str(b["features"])
    assert not out.exists() and not list(tmp_path.glob(".*tmp*"))


def test_bad_inputs(tmp_path):
    spec = make_tile(tmp_path / "A", "T31TAA")[0]
    out = tmp_path / "pixels.parquet"
    with pytest.raises(InputError, match="not found"):
        extract_pixels([{**spec, "split": tmp_path / "none.gpkg"}], out)
    with rasterio.open(spec["features"], "r+") as ds:
        ds.set_band_description(2, "")
    with pytest.raises(InputError, match="no description"):
        extract_pixels([spec], out)
    far = make_tile(tmp_path / "C", "T31TAC")[0]
    far["split"].unlink()
    gpd.GeoDataFrame(
        {"polygon_id": [1], "code": [1], "split": ["learn"]},
        geometry=[px(500, 500, 510, 510)],
        crs="EPSG:32631",
    ).to_file(far["split"], layer="split")
    with pytest.raises(InputError, match="no learning pixel"):
        extract_pixels([far], out)
    assert not out.exists()
