"""Reference fusion: real EuroCrops parcels of T31TEJ, synthetic overlaps, repairs, bad inputs."""

from __future__ import annotations

import logging
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
from rasterio.transform import Affine
from shapely.geometry import Polygon, box

from cropchain.errors import ConfigError, InputError
from cropchain.nomenclature import read_nomenclature
from cropchain.reference.fusion import ReferenceSource, fuse_reference, read_mapping_csv

# Synthetic grid: 100 x 120 px at 10 m in UTM 31N (1000 m wide, 1200 m high).
X0, Y0 = 500000.0, 4800000.0
GRID_W, GRID_H = 100, 120


def write_grid(path: Path, crs: str = "EPSG:32631") -> Path:
    profile = {
        "driver": "GTiff",
        "width": GRID_W,
        "height": GRID_H,
        "count": 1,
        "dtype": "uint8",
        "crs": crs,
        "transform": Affine(10, 0, X0, 0, -10, Y0),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(np.zeros((1, GRID_H, GRID_W), dtype=np.uint8))
    return path


def write_nomenclature(path: Path, names: list[str]) -> Path:
    colors = [f"#{30 * i:02x}{255 - 30 * i:02x}{100:02x}" for i in range(len(names))]
    pd.DataFrame({"code": range(1, len(names) + 1), "name": names, "color": colors}).to_csv(path, index=False)
    return path


@pytest.fixture()
def nomenclature(tmp_path):
    return read_nomenclature(
        write_nomenclature(tmp_path / "nomenclature.csv", ["wheat", "maize", "vineyard"])
    )


@pytest.fixture()
def grid(tmp_path):
    return write_grid(tmp_path / "grid.tif")


def write_source(
    path: Path, labels: list, geoms: list, crs: str | None = "EPSG:32631", field: str = "crop"
) -> Path:
    gdf = gpd.GeoDataFrame({field: labels}, geometry=geoms, crs=crs)
    pyogrio.write_dataframe(gdf, path)
    return path


def rect(x0, y0, x1, y1):
    """Rectangle in metres relative to the grid's lower-left corner (X0, Y0 - 1200)."""
    return box(X0 + x0, Y0 - 1200 + y0, X0 + x1, Y0 - 1200 + y1)


MAPPING = {"W": 1, "M": 2, "V": 3}


# --------------------------------------------------------------------------- real data


@pytest.fixture(scope="module")
def real_fusion(tmp_path_factory, t31tej):
    tmp = tmp_path_factory.mktemp("real_fusion")
    ref = t31tej / "reference_data"
    mapping = read_mapping_csv(ref / "nomenclature.csv", "EC_hcat_n", "class_id")
    names = sorted(mapping, key=mapping.get)
    nomenclature = read_nomenclature(write_nomenclature(tmp / "nomenclature.csv", names))
    grid = next(t31tej.glob("eodata/**/*_B02_10m.jp2"))
    out = tmp / "reference.gpkg"
    source = ReferenceSource("eurocrops", ref / "france_data_2018.shp", "EC_hcat_n", mapping, priority=1)
    fused = fuse_reference([source], nomenclature, grid, out)
    return fused, out, ref, mapping, grid


def test_read_mapping_csv_real(t31tej):
    mapping = read_mapping_csv(t31tej / "reference_data" / "nomenclature.csv", "EC_hcat_n", "class_id")
    assert len(mapping) == 8
    assert mapping["vineyards_wine_vine_rebland_grapes"] == 6
    assert sorted(mapping.values()) == list(range(1, 9))


def test_read_mapping_csv_null_and_errors(tmp_path):
    p = tmp_path / "m.csv"
    p.write_text("crop,code\n01,1\nhedge,\n003,3\n")
    assert read_mapping_csv(p, "crop", "code") == {"01": 1, "hedge": None, "003": 3}  # text kept as is
    with pytest.raises(InputError, match="available"):
        read_mapping_csv(p, "crop", "class_id")
    p.write_text("crop,code\nA,1\nA,2\n")
    with pytest.raises(InputError, match="mapped twice"):
        read_mapping_csv(p, "crop", "code")


def test_real_fusion_classes_crs_bounds(real_fusion):
    fused, out, ref, mapping, grid = real_fusion
    src = gpd.read_file(ref / "france_data_2018.shp")
    expected = src["EC_hcat_n"].map(mapping).value_counts().sort_index()
    got = fused["code"].value_counts().sort_index()
    assert got.to_dict() == expected.to_dict()
    assert got.to_dict() == {1: 12, 2: 6, 3: 9, 4: 10, 5: 1, 6: 62, 7: 6, 8: 14}
    assert fused.crs.to_epsg() == 32631
    assert fused["polygon_id"].tolist() == list(range(1, 121))
    assert set(fused["source"]) == {"eurocrops"}
    assert (fused["name"] == src["EC_hcat_n"]).all()  # names from the nomenclature, same order as the source
    with rasterio.open(grid) as ds:
        left, bottom, right, top = ds.bounds
    minx, miny, maxx, maxy = fused.total_bounds
    assert left <= minx and maxx <= right and bottom <= miny and maxy <= top
    assert fused.geometry.is_valid.all()
    assert set(fused.geom_type) <= {"Polygon", "MultiPolygon"}


def test_real_fusion_areas_and_file(real_fusion):
    fused, out, ref, mapping, grid = real_fusion
    src = gpd.read_file(ref / "france_data_2018.shp")  # Lambert-93, metres
    # Same parcels in two conformal projections: areas agree within the scale-factor difference.
    np.testing.assert_allclose(fused["area_m2"].to_numpy(), src.geometry.area.to_numpy(), rtol=3e-3)
    np.testing.assert_allclose(fused["area_m2"].to_numpy(), fused.geometry.area.to_numpy(), rtol=1e-9)
    assert 1.5e6 < fused["area_m2"].sum() < 1.7e6  # about 161 ha of parcels
    assert pyogrio.list_layers(out)[:, 0].tolist() == ["reference"]
    back = gpd.read_file(out, layer="reference")
    assert back.columns.tolist() == ["polygon_id", "code", "name", "source", "area_m2", "geometry"]
    assert back["polygon_id"].tolist() == fused["polygon_id"].tolist()
    assert back.crs.to_epsg() == 32631
    assert not list(out.parent.glob(".*tmp*"))


# --------------------------------------------------------------------------- synthetic


def test_priority_overlap_resolution(tmp_path, grid, nomenclature):
    # High priority: one 400 x 400 m vineyard.
    high = write_source(tmp_path / "survey.gpkg", ["V"], [rect(100, 100, 500, 500)])
    # Low priority: one field half under the vineyard, one fully under it, one apart,
    # and two fields of the same source overlapping each other (kept as they are).
    low_geoms = [
        rect(300, 100, 700, 500),
        rect(200, 200, 300, 300),
        rect(600, 700, 900, 1000),
        rect(50, 700, 250, 900),
        rect(150, 800, 350, 1000),
    ]
    low = write_source(tmp_path / "lpis.gpkg", ["W", "M", "W", "M", "M"], low_geoms)
    sources = [
        ReferenceSource("lpis", low, "crop", MAPPING, priority=1),
        ReferenceSource("survey", high, "crop", MAPPING, priority=5),
    ]
    fused = fuse_reference(sources, nomenclature, grid, tmp_path / "ref.gpkg")

    # Order: source-list order then feature order; the fully covered field is gone.
    assert fused["source"].tolist() == ["lpis", "lpis", "lpis", "lpis", "survey"]
    assert fused["code"].tolist() == [1, 1, 2, 2, 3]
    assert fused["polygon_id"].tolist() == [1, 2, 3, 4, 5]
    survey = fused[fused["source"] == "survey"].geometry.iloc[0]
    assert survey.equals(rect(100, 100, 500, 500))  # higher priority untouched
    assert fused["area_m2"].iloc[0] == pytest.approx(200 * 400)  # half of the field cut away
    assert fused["area_m2"].iloc[1] == pytest.approx(300 * 300)

    lpis = fused[fused["source"] == "lpis"]
    overlap = lpis.geometry.intersection(survey).area
    assert overlap.max() < 1e-6
    # No overlap between sources anywhere.
    left, right = gpd.sjoin(fused, fused, predicate="intersects").pipe(lambda j: (j.index, j["index_right"]))
    for i, j in zip(left, right):
        if fused.loc[i, "source"] != fused.loc[j, "source"]:
            assert fused.geometry[i].intersection(fused.geometry[j]).area < 1e-6
    # Within one source, the overlapping fields are kept as they are.
    assert lpis.geometry.iloc[2].intersection(lpis.geometry.iloc[3]).area == pytest.approx(100 * 100)

    # Reversed priorities: the field survives whole and the vineyard is cut.
    sources[0].priority, sources[1].priority = 9, 1
    rev = fuse_reference(sources, nomenclature, grid, tmp_path / "ref2.gpkg")
    assert rev.loc[rev["source"] == "survey", "area_m2"].iloc[0] == pytest.approx(
        400 * 400 - 200 * 400 - 100 * 100
    )
    assert rev.loc[rev["source"] == "lpis", "area_m2"].iloc[0] == pytest.approx(400 * 400)


def test_contested_overlap_within_source_dropped(tmp_path, grid, nomenclature, caplog):
    # A vineyard drawn over half of a wheat field and over a whole small maize field, in
    # the same source: nobody wins by drawing order; the contested area leaves both classes.
    geoms = [
        rect(0, 0, 400, 400),
        rect(200, 0, 600, 400),
        rect(450, 100, 550, 200),
        rect(700, 700, 900, 900),
        rect(800, 800, 1000, 1000),
    ]
    src = write_source(tmp_path / "s.gpkg", ["W", "V", "M", "W", "W"], geoms)
    with caplog.at_level(logging.WARNING, logger="cropchain.reference.fusion"):
        fused = fuse_reference(
            [ReferenceSource("s", src, "crop", MAPPING)], nomenclature, grid, tmp_path / "r.gpkg"
        )
    # The maize field lies entirely inside the vineyard: nothing left of it.
    assert fused["code"].tolist() == [1, 3, 1, 1]
    assert fused["area_m2"].tolist() == pytest.approx(
        [200 * 400, 200 * 400 - 100 * 100, 200 * 200, 200 * 200]
    )
    # No two polygons of different classes overlap; same-class overlap kept as is.
    w, v = fused.geometry.iloc[0], fused.geometry.iloc[1]
    assert w.intersection(v).area < 1e-6
    assert fused.geometry.iloc[2].intersection(fused.geometry.iloc[3]).area == pytest.approx(100 * 100)
    text = caplog.text
    assert "2 pair(s) of overlapping polygons of different classes" in text
    assert "0/1" in text and "1/2" in text  # polygon ids (feature numbers)
    assert "code 1: 8.00 ha" in text and "code 2: 1.00 ha" in text and "code 3: 9.00 ha" in text
    assert "class(es) [2] lost every polygon" in text
    # Order of the input does not matter any more (the old rule: last burnt wins).
    src2 = write_source(tmp_path / "s2.gpkg", ["W", "V", "M", "W", "W"][::-1], geoms[::-1])
    rev = fuse_reference(
        [ReferenceSource("s", src2, "crop", MAPPING)], nomenclature, grid, tmp_path / "r2.gpkg"
    )
    assert sorted(rev["area_m2"].round(3)) == sorted(fused["area_m2"].round(3))


def test_reprojection_and_clipping(tmp_path, grid, nomenclature):
    inside = rect(100, 100, 300, 300)
    across = rect(900, 500, 1100, 700)  # half outside the 1000 m wide grid
    outside = rect(1500, 100, 1700, 300)
    utm = gpd.GeoSeries([inside, across, outside], crs="EPSG:32631")
    src = write_source(tmp_path / "l93.shp", ["W", "M", "V"], list(utm.to_crs("EPSG:2154")), crs="EPSG:2154")
    fused = fuse_reference(
        [ReferenceSource("l93", src, "crop", MAPPING)], nomenclature, grid, tmp_path / "r.gpkg"
    )
    assert fused["code"].tolist() == [1, 2]
    assert fused["area_m2"].tolist() == pytest.approx([200 * 200, 100 * 200], rel=1e-6)
    assert fused.total_bounds[2] <= X0 + 1000 + 1e-6


def test_bowtie_repaired(tmp_path, grid, nomenclature):
    x, y = X0 + 100, Y0 - 1100
    bowtie = Polygon([(x, y), (x + 200, y + 200), (x + 200, y), (x, y + 200)])
    assert not bowtie.is_valid
    src = write_source(tmp_path / "bad.gpkg", ["W", "M"], [bowtie, rect(500, 500, 600, 600)])
    fused = fuse_reference(
        [ReferenceSource("s", src, "crop", MAPPING)], nomenclature, grid, tmp_path / "r.gpkg"
    )
    assert fused.geometry.is_valid.all()
    assert fused.geom_type.iloc[0] == "MultiPolygon"  # the two triangles of the bow-tie
    assert fused["area_m2"].iloc[0] == pytest.approx(2 * 100 * 200 / 2)
    assert len(fused.geometry.iloc[0].geoms) == 2


def test_min_area_and_null_mapping(tmp_path, grid, nomenclature, caplog):
    src = write_source(
        tmp_path / "s.gpkg",
        ["W", "M", "V", "hedge"],
        [rect(0, 0, 100, 100), rect(200, 200, 205, 210), rect(400, 400, 420, 420), rect(600, 600, 700, 700)],
    )
    mapping = {**MAPPING, "hedge": None}
    with caplog.at_level(logging.INFO, logger="cropchain.reference.fusion"):
        fused = fuse_reference(
            [ReferenceSource("s", src, "crop", mapping)],
            nomenclature,
            grid,
            tmp_path / "r.gpkg",
            min_area_m2=100.0,
        )
    # 50 m2 dropped, 400 m2 kept, hedge dropped on purpose.
    assert fused["area_m2"].tolist() == pytest.approx([10000.0, 400.0])
    assert fused["code"].tolist() == [1, 3]
    assert "1 polygon(s) smaller than 100 m2 dropped" in caplog.text
    assert "mapped to null" in caplog.text


def test_min_area_after_difference(tmp_path, grid, nomenclature):
    high = write_source(tmp_path / "h.gpkg", ["V"], [rect(0, 0, 100, 100)])
    low = write_source(tmp_path / "l.gpkg", ["W"], [rect(0, 0, 100, 105)])  # 500 m2 sliver left
    sources = [ReferenceSource("h", high, "crop", MAPPING, 2), ReferenceSource("l", low, "crop", MAPPING, 1)]
    assert len(fuse_reference(sources, nomenclature, grid, tmp_path / "a.gpkg", min_area_m2=400)) == 2
    assert len(fuse_reference(sources, nomenclature, grid, tmp_path / "b.gpkg", min_area_m2=600)) == 1


# --------------------------------------------------------------------------- bad inputs


def _fails(tmp_path, sources, nomenclature, grid, match):
    out = tmp_path / "out" / "ref.gpkg"
    with pytest.raises(InputError, match=match) as err:
        fuse_reference(sources, nomenclature, grid, out)
    assert not out.exists()
    assert not (tmp_path / "out").exists() or not any((tmp_path / "out").iterdir())
    return err.value


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
def test_source_without_crs(tmp_path, grid, nomenclature):
    src = write_source(tmp_path / "nocrs.shp", ["W"], [rect(0, 0, 100, 100)], crs=None)
    assert not (tmp_path / "nocrs.prj").exists()
    err = _fails(tmp_path, [ReferenceSource("s", src, "crop", MAPPING)], nomenclature, grid, "no CRS")
    assert err.path == str(src)
    assert "ogr2ogr -a_srs" in str(err)


def test_value_absent_from_mapping(tmp_path, grid, nomenclature):
    src = write_source(tmp_path / "s.gpkg", ["W", "sunflower", "M", "rice"], [rect(0, 0, 100, 100)] * 4)
    err = _fails(
        tmp_path, [ReferenceSource("s", src, "crop", MAPPING)], nomenclature, grid, "absent from the mapping"
    )
    assert err.path == str(src)
    assert "'rice', 'sunflower'" in str(err) and "map them to null" in str(err)


def test_missing_field(tmp_path, grid, nomenclature):
    src = write_source(tmp_path / "s.shp", ["W"], [rect(0, 0, 100, 100)], field="CULTURE")
    err = _fails(
        tmp_path, [ReferenceSource("s", src, "crop", MAPPING)], nomenclature, grid, "field 'crop' not found"
    )
    assert err.path == str(src) and "CULTURE" in str(err)


def test_code_absent_from_nomenclature(tmp_path, grid, nomenclature):
    src = write_source(tmp_path / "s.gpkg", ["W", "X"], [rect(0, 0, 100, 100)] * 2)
    err = _fails(
        tmp_path,
        [ReferenceSource("s", src, "crop", {**MAPPING, "X": 42})],
        nomenclature,
        grid,
        r"code\(s\) \[42\]",
    )
    assert err.path == str(src)


def test_missing_and_unreadable_source(tmp_path, grid, nomenclature):
    err = _fails(
        tmp_path,
        [ReferenceSource("s", tmp_path / "nope.shp", "crop", MAPPING)],
        nomenclature,
        grid,
        "not found",
    )
    assert err.path == str(tmp_path / "nope.shp")
    junk = tmp_path / "junk.gpkg"
    junk.write_text("not a geopackage")
    err = _fails(
        tmp_path, [ReferenceSource("s", junk, "crop", MAPPING)], nomenclature, grid, "cannot be read"
    )
    assert err.path == str(junk)


def test_config_errors(tmp_path, grid, nomenclature):
    src = write_source(tmp_path / "s.gpkg", ["W"], [rect(0, 0, 100, 100)])
    with pytest.raises(ConfigError):
        fuse_reference([], nomenclature, grid, tmp_path / "r.gpkg")
    with pytest.raises(ConfigError, match="unique"):
        fuse_reference(
            [ReferenceSource("s", src, "crop", MAPPING)] * 2, nomenclature, grid, tmp_path / "r.gpkg"
        )
    with pytest.raises(InputError, match="no reference polygon left"):
        far = write_source(tmp_path / "far.gpkg", ["W"], [rect(5000, 5000, 5100, 5100)])
        fuse_reference([ReferenceSource("s", far, "crop", MAPPING)], nomenclature, grid, tmp_path / "r.gpkg")
    assert not (tmp_path / "r.gpkg").exists()
