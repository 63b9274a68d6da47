"""Parcel dataset (cropchain.parcels.dataset), parcel training / prediction / majority vote / ablation
(cropchain.parcels.train) on small synthetic tiles with hand-made parcels."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
import shapely
import torch
from rasterio.transform import from_origin

from cropchain.errors import InputError
from cropchain.parcels.dataset import (
    build_parcel_dataset,
    load_parcel_dataset,
    normalization_stats,
    normalize,
    permute_dates,
)
from cropchain.parcels.train import (
    ablation_table,
    holdout_mask,
    load_parcel_model,
    majority_vote,
    majority_vote_tile,
    predict_parcel_tile,
    predict_parcels,
    train_parcel_model,
)
from cropchain.reference.split import split_polygons

torch.set_num_threads(1)

CRS = "EPSG:32631"
X0, Y0, RES = 500_000.0, 4_800_000.0, 10.0
TRANSFORM = from_origin(X0, Y0, RES, RES)
NODATA = -32768


def pixel_box(r0: int, c0: int, r1: int, c1: int) -> shapely.Polygon:
    """Polygon covering pixel rows r0..r1-1 and columns c0..c1-1 exactly."""
    return shapely.box(X0 + c0 * RES, Y0 - r1 * RES, X0 + c1 * RES, Y0 - r0 * RES)


def write_tile(
    folder: Path, values: np.ndarray, validity: np.ndarray, dates: list[str], bands: list[str]
) -> tuple[Path, Path]:
    """gapfilled.tif (int16 [T*C, H, W], date-major, described YYYYMMDD_Bxx) and validity.tif."""
    t, c, h, w = values.shape
    profile = {"driver": "GTiff", "width": w, "height": h, "crs": CRS, "transform": TRANSFORM}
    gf, va = folder / "gapfilled.tif", folder / "validity.tif"
    with rasterio.open(gf, "w", count=t * c, dtype="int16", nodata=NODATA, **profile) as dst:
        dst.write(values.reshape(t * c, h, w).astype(np.int16))
        for i, (d, b) in enumerate([(d, b) for d in dates for b in bands], start=1):
            dst.set_band_description(i, f"{d}_{b}")
    with rasterio.open(va, "w", count=1, dtype="uint8", nodata=None, **profile) as dst:
        dst.write(validity.astype(np.uint8), 1)
    return gf, va


def write_reference(path: Path, geoms: list, codes: list[int], ids: list[int] | None = None) -> Path:
    names = {1: "wheat", 2: "maize", 3: "vineyard"}
    ids = ids or list(range(1, len(geoms) + 1))
    gdf = gpd.GeoDataFrame(
        {
            "polygon_id": ids,
            "code": codes,
            "name": [names[c] for c in codes],
            "source": "test",
            "area_m2": [g.area for g in geoms],
        },
        geometry=geoms,
        crs=CRS,
    )
    pyogrio.write_dataframe(gdf, path, layer="reference", driver="GPKG")
    return path


def write_nomenclature(path: Path) -> Path:
    path.write_text("code,name,color\n1,wheat,#ffff00\n2,maize,#ff8800\n3,vineyard,#880088\n")
    return path


# ------------------------------------------------------------------ a tile with hand-made parcels

DATES = ["20210115", "20210301", "20210415", "20210601", "20210715"]
BANDS = ["B04", "B08", "B11"]


def parcel_value(code: int, t: int, c: int) -> int:
    return 1000 * code + 100 * t + 10 * c


@pytest.fixture(scope="module")
def small_tile(tmp_path_factory):
    """64 x 64 px; parcels: 1 rectangle (10 x 20 px), 2 L-shape in a 20 x 20 box, 3 a 5 m square
    inside one pixel (no pixel centre), 4 a rectangle where no date is clear. Noise elsewhere."""
    tmp = tmp_path_factory.mktemp("parcels")
    rng = np.random.default_rng(0)
    t, c = len(DATES), len(BANDS)
    values = rng.integers(0, 9000, size=(t, c, 64, 64))
    validity = np.full((64, 64), 5)
    rect = pixel_box(2, 2, 12, 22)
    ell = shapely.union(pixel_box(20, 5, 40, 15), pixel_box(30, 15, 40, 25))  # 3/4 of its 20 x 20 box
    tiny = shapely.box(
        X0 + 50 * RES + 1, Y0 - 52 * RES + 1, X0 + 50 * RES + 6, Y0 - 52 * RES + 6
    )  # in pixel (51, 50)
    cloudy = pixel_box(45, 30, 50, 40)
    for code, box in (
        (1, (2, 12, 2, 22)),
        (2, (20, 40, 5, 15)),
        (2, (30, 40, 15, 25)),
        (3, (51, 52, 50, 51)),
    ):
        r0, r1, c0, c1 = box
        for ti in range(t):
            for ci in range(c):
                values[ti, ci, r0:r1, c0:c1] = parcel_value(code, ti, ci)
    validity[45:50, 30:40] = 0
    values[:, :, 45:50, 30:40] = NODATA
    gf, va = write_tile(tmp, values, validity, DATES, BANDS)
    ref = write_reference(tmp / "reference.gpkg", [rect, ell, tiny, cloudy], [1, 2, 3, 2])
    index = tmp / "parcels.parquet"
    build_parcel_dataset(gf, va, ref, index, tile="T00AAA")
    return {"dir": tmp, "gapfilled": gf, "validity": va, "reference": ref, "index": index}


def test_dataset_layout_and_shapes(small_tile):
    ds = load_parcel_dataset(small_tile["index"])
    assert (
        ds.patches.shape == (3, 5, 3, 32, 32) and ds.patches.dtype == np.int16
    )  # the cloudy parcel is left out
    assert ds.masks.shape == (3, 32, 32) and ds.masks.dtype == np.uint8
    assert ds.dates == DATES and ds.bands == BANDS and ds.tile == "T00AAA" and ds.patch_size == 32
    idx = ds.index
    assert idx["polygon_id"].tolist() == [1, 2, 3] and idx["code"].tolist() == [1, 2, 3]
    assert idx[["row_off", "col_off", "height", "width"]].iloc[0].tolist() == [2, 2, 10, 20]
    assert idx[["row_off", "col_off", "height", "width"]].iloc[1].tolist() == [20, 5, 20, 20]
    assert idx["n_pixels"].tolist() == [200, 300, 1]  # the tiny parcel gets the pixel it touches
    assert (small_tile["dir"] / "parcels.npy").exists() and (small_tile["dir"] / "parcels_mask.npy").exists()


def test_patches_hold_the_parcel_values_and_zero_outside(small_tile):
    ds = load_parcel_dataset(small_tile["index"])
    for k, code in enumerate([1, 2, 3]):
        mask = ds.masks[k].astype(bool)
        expected = np.array([[parcel_value(code, t, c) for c in range(3)] for t in range(5)])
        patch = np.asarray(ds.patches[k])
        # a constant parcel stays constant after resizing (no darkening by the zeros outside,
        # no leak of the neighbours' noise), and every pixel outside the parcel is 0
        assert (patch[..., mask] == expected[..., None]).all()
        assert (patch[..., ~mask] == 0).all()
    assert ds.masks[0].all()  # the rectangle fills its box
    assert ds.masks[1].mean() == pytest.approx(0.75, abs=0.03)  # the L fills 3/4 of its box
    assert ds.masks[2].all()


def test_normalization_uses_parcel_pixels_per_date_and_band(small_tile):
    ds = load_parcel_dataset(small_tile["index"])
    mean, std = normalization_stats([ds], [np.array([0, 1])])
    assert mean.shape == (5, 3) and std.shape == (5, 3)
    m = ds.masks[:2].astype(bool)
    for t in range(5):
        for c in range(3):
            vals = np.concatenate([ds.patches[i, t, c][m[i]] for i in range(2)]) / 10000.0
            assert mean[t, c] == pytest.approx(vals.mean(), rel=1e-5)
            assert std[t, c] == pytest.approx(vals.std(), rel=1e-4)
    x = normalize(ds.patches[:2], ds.masks[:2], mean, std)
    assert x.dtype == np.float32
    inside = np.concatenate([x[i][..., m[i]] for i in range(2)], axis=-1)
    np.testing.assert_allclose(inside.mean(axis=-1), 0.0, atol=1e-4)
    np.testing.assert_allclose(inside.std(axis=-1), 1.0, atol=1e-3)
    assert (x[1][..., ~m[1]] == 0).all()


def test_permute_dates_moves_whole_dates_per_sample():
    x = np.arange(4 * 6 * 2 * 3 * 3).reshape(4, 6, 2, 3, 3)
    a = permute_dates(x, np.random.default_rng(5))
    b = permute_dates(x, np.random.default_rng(5))
    np.testing.assert_array_equal(a, b)  # reproducible for a seed
    perms = []
    for i in range(4):
        # each output date is one input date of the same sample, all its bands and pixels together
        src = [int(np.flatnonzero([(a[i, t] == x[i, u]).all() for u in range(6)])[0]) for t in range(6)]
        assert sorted(src) == list(range(6))
        perms.append(src)
    assert len({tuple(p) for p in perms}) > 1  # each sample draws its own permutation
    assert any(p != list(range(6)) for p in perms)


def test_parcel_outside_the_tile_is_an_input_error(small_tile, tmp_path):
    ref = write_reference(
        tmp_path / "reference.gpkg", [pixel_box(2, 2, 12, 22), pixel_box(100, 100, 110, 110)], [1, 2], [7, 9]
    )
    with pytest.raises(InputError, match="parcel 9 has no pixel on the grid"):
        build_parcel_dataset(
            small_tile["gapfilled"], small_tile["validity"], ref, tmp_path / "p.parquet", tile="T00AAA"
        )
    assert not list(tmp_path.glob("p*.npy"))  # nothing half-written


def test_empty_reference_and_missing_dataset_are_input_errors(small_tile, tmp_path):
    empty = gpd.GeoDataFrame({"polygon_id": [], "code": [], "name": []}, geometry=[], crs=CRS)
    pyogrio.write_dataframe(empty, tmp_path / "empty.gpkg", layer="reference", driver="GPKG")
    with pytest.raises(InputError, match="dataset would be empty"):
        build_parcel_dataset(
            small_tile["gapfilled"],
            small_tile["validity"],
            tmp_path / "empty.gpkg",
            tmp_path / "p.parquet",
            tile="X",
        )
    with pytest.raises(InputError, match="parcel dataset file not found"):
        load_parcel_dataset(tmp_path / "nothing.parquet")
    cloudy = write_reference(tmp_path / "cloudy.gpkg", [pixel_box(45, 30, 50, 40)], [2])
    with pytest.raises(InputError, match="no reference parcel .* clear date"):
        build_parcel_dataset(
            small_tile["gapfilled"], small_tile["validity"], cloudy, tmp_path / "q.parquet", tile="X"
        )


# ------------------------------------------------------------------ training on a synthetic parcel set

T_SET = 6


@pytest.fixture(scope="module")
def parcel_set(tmp_path_factory):
    """A 96 x 96 px tile of 8 x 8 px parcels (a 9 x 9 grid, 81 parcels) of three classes told apart by
    their temporal profile only: 1 rises, 2 falls (the same values in reverse order), 3 stays flat;
    per-parcel offsets and pixel noise."""
    tmp = tmp_path_factory.mktemp("parcel_set")
    rng = np.random.default_rng(1)
    bands = ["B04", "B08"]
    dates = [f"2021{m:02d}15" for m in range(3, 3 + T_SET)]
    values = rng.normal(3000, 300, size=(T_SET, 2, 96, 96))
    rise = np.linspace(1000, 6000, T_SET)
    profiles = {1: rise, 2: rise[::-1], 3: np.full(T_SET, 3500.0)}
    geoms, codes = [], []
    for i in range(9):
        for j in range(9):
            code = 1 + (i * 9 + j) % 3
            r0, c0 = 2 + i * 10, 2 + j * 10
            offset = rng.normal(0, 200)
            for ci in range(2):
                values[:, ci, r0 : r0 + 8, c0 : c0 + 8] = (profiles[code] * (1 + 0.2 * ci) + offset)[
                    :, None, None
                ] + rng.normal(0, 150, size=(T_SET, 8, 8))
            geoms.append(pixel_box(r0, c0, r0 + 8, c0 + 8))
            codes.append(code)
    gf, va = write_tile(tmp, values, np.full((96, 96), T_SET), dates, bands)
    ref = write_reference(tmp / "reference.gpkg", geoms, codes)
    index = tmp / "parcels.parquet"
    build_parcel_dataset(gf, va, ref, index, tile="T00BBB")
    split = tmp / "split.gpkg"
    split_polygons(ref, split, ratio=0.6, seed=0, run=0, tile="T00BBB")
    return {
        "dir": tmp,
        "index": index,
        "split": split,
        "grid": va,
        "nomenclature": write_nomenclature(tmp / "nom.csv"),
    }


SETTINGS = {"n_params": 6000, "epochs": 25, "patience": 25, "learning_rate": 0.01}


def _outputs(folder: Path) -> dict[str, Path]:
    return {
        "gpkg": folder / "T.gpkg",
        "tif": folder / "T_classification.tif",
        "json": folder / "T.json",
        "csv": folder / "T_confusion.csv",
        "png": folder / "T_confusion.png",
        "pixel_json": folder / "T_pixel.json",
    }


@pytest.fixture(scope="module")
def trained_gru(parcel_set, tmp_path_factory):
    out = tmp_path_factory.mktemp("gru") / "model"
    meta = train_parcel_model(
        [parcel_set["index"]], [parcel_set["split"]], "parcel_gru", SETTINGS, out, seed=0, threads=1
    )
    return out, meta


def test_training_learns_far_above_chance_and_writes_maps(parcel_set, trained_gru, tmp_path):
    model_dir, meta = trained_gru
    assert meta["classes"] == [1, 2, 3] and meta["permute_dates"] is False
    assert np.asarray(meta["normalization"]["mean"]).shape == (T_SET, 2)
    split = gpd.read_file(parcel_set["split"])
    held = {p["polygon_id"] for p in meta["holdout_parcels"]}
    assert held and held <= set(
        split.loc[split["split"] == "learn", "polygon_id"]
    )  # never validation parcels
    metrics = json.loads((model_dir / "metrics.json").read_text())
    assert metrics["epochs"] == 25 and 1 <= metrics["best_epoch"] <= 25 and metrics["training_time_s"] > 0
    out = _outputs(tmp_path)
    report = predict_parcel_tile(
        model_dir,
        parcel_set["index"],
        parcel_set["split"],
        parcel_set["grid"],
        parcel_set["nomenclature"],
        out,
        tile="T00BBB",
        run=0,
    )
    assert report["level"] == "parcel" and report["n_parcels"] == report["n_validation_parcels"] == int(
        (split["split"] == "validation").sum()
    )
    assert report["overall_accuracy"] >= 0.9 and report["macro_f1"] >= 0.9  # chance is 1/3
    cm = np.asarray(report["confusion_matrix"]["matrix"])
    assert cm.sum() == report["n_parcels"] and report["n_pixels"] == 64 * report["n_parcels"]
    pixel = report["pixel_level"]
    assert pixel["n_pixels"] == 64 * report["n_parcels"] and pixel["overall_accuracy"] >= 0.9
    on_disk = json.loads(out["json"].read_text())
    assert on_disk["pixel_level"]["kappa"] == pytest.approx(pixel["kappa"])
    pixel_report = json.loads(out["pixel_json"].read_text())
    assert pixel_report["architecture"] == "parcel_gru" and pixel_report["level"] == "pixel"
    gdf = gpd.read_file(out["gpkg"], layer="parcels")
    assert list(gdf.columns) == [
        "polygon_id",
        "code",
        "name",
        "confidence",
        "reference_code",
        "reference_name",
        "split",
        "geometry",
    ]
    assert len(gdf) == 81 and gdf["confidence"].between(0, 100).all()
    assert set(gdf["name"]) <= {"wheat", "maize", "vineyard"}
    with rasterio.open(out["tif"]) as src:
        band = src.read(1)
        assert src.dtypes[0] == "uint8" and src.nodata == 0 and src.colormap(1)[2][:3] == (255, 136, 0)
        first = gdf.iloc[0]
        r0, c0 = 2, 2
        assert (band[r0 : r0 + 8, c0 : c0 + 8] == first["code"]).all()  # the parcel's pixels carry its label
        assert (band[0:2, :] == 0).all()  # outside the parcels: nodata
        assert (band > 0).sum() == 81 * 64


def test_training_is_reproducible(parcel_set, trained_gru, tmp_path):
    model_dir, _ = trained_gru
    train_parcel_model(
        [parcel_set["index"]],
        [parcel_set["split"]],
        "parcel_gru",
        SETTINGS,
        tmp_path / "again",
        seed=0,
        threads=1,
    )
    a = torch.load(model_dir / "model.pt", weights_only=True)
    b = torch.load(tmp_path / "again" / "model.pt", weights_only=True)
    assert all(torch.equal(a[k], b[k]) for k in a)
    curves = lambda d: [r["train_loss"] for r in json.loads((d / "metrics.json").read_text())["curves"]]  # noqa: E731
    assert curves(model_dir) == curves(tmp_path / "again")
    train_parcel_model(
        [parcel_set["index"]],
        [parcel_set["split"]],
        "parcel_gru",
        {**SETTINGS, "epochs": 2},
        tmp_path / "other",
        seed=1,
        threads=1,
    )
    c = torch.load(tmp_path / "other" / "model.pt", weights_only=True)
    assert not all(torch.equal(a[k], c[k]) for k in a)


def test_ablation_permuted_dates_destroys_the_order_signal(parcel_set, trained_gru, tmp_path):
    model_dir, _ = trained_gru
    ordered = predict_parcel_tile(
        model_dir,
        parcel_set["index"],
        parcel_set["split"],
        parcel_set["grid"],
        parcel_set["nomenclature"],
        _outputs(tmp_path / "o"),
        tile="T00BBB",
        run=0,
    )
    perm_dir = tmp_path / "permuted_model"
    # permuted dates: a harder task, the loss leaves its plateau later
    meta = train_parcel_model(
        [parcel_set["index"]],
        [parcel_set["split"]],
        "parcel_gru",
        {**SETTINGS, "epochs": 100, "patience": 100},
        perm_dir,
        seed=0,
        threads=1,
        permute=True,
    )
    assert meta["permute_dates"] is True
    permuted = predict_parcel_tile(
        perm_dir,
        parcel_set["index"],
        parcel_set["split"],
        parcel_set["grid"],
        parcel_set["nomenclature"],
        _outputs(tmp_path / "p"),
        tile="T00BBB",
        run=0,
        permute=True,
    )
    assert permuted["architecture"] == "parcel_gru_permuted"
    # rising and falling parcels hold the same values in reverse order: without the order they
    # cannot be told apart, the flat class still can
    assert permuted["per_class"][3]["f1"] >= 0.9
    assert (permuted["per_class"][1]["f1"] + permuted["per_class"][2]["f1"]) / 2 <= 0.7
    assert min(ordered["per_class"][c]["f1"] for c in (1, 2, 3)) >= 0.9
    assert permuted["macro_f1"] < ordered["macro_f1"] - 0.2
    table = ablation_table(
        [_outputs(tmp_path / "o")["json"]], [_outputs(tmp_path / "p")["json"]], tmp_path / "ablation.csv"
    )
    row = table[(table["model"] == "parcel_gru") & (table["run"] == "0")].iloc[0]
    assert row["delta_macro_f1"] == pytest.approx(permuted["macro_f1"] - ordered["macro_f1"])
    assert pd.read_csv(tmp_path / "ablation.csv")["run"].astype(str).tolist() == ["0", "mean", "std"]
    # the test-time permutation is drawn from the model's seed: the same every time
    model = load_parcel_model(perm_dir)
    ds = load_parcel_dataset(parcel_set["index"])
    np.testing.assert_array_equal(
        predict_parcels(model, ds, permute=True), predict_parcels(model, ds, permute=True)
    )
    assert not np.allclose(predict_parcels(model, ds, permute=True), predict_parcels(model, ds))


def test_holdout_is_stratified_and_keeps_single_parcels():
    codes = np.array([1] * 10 + [2] * 5 + [3])
    held = holdout_mask(codes, 0.2, np.random.default_rng(0))
    assert held[codes == 1].sum() == 2 and held[codes == 2].sum() == 1 and held[codes == 3].sum() == 0


def test_dataset_and_split_from_different_references_is_an_input_error(parcel_set, small_tile, tmp_path):
    other = gpd.GeoDataFrame(
        {"polygon_id": [50, 51], "code": [1, 2], "split": ["learn", "validation"]},
        geometry=[pixel_box(0, 0, 2, 2), pixel_box(4, 4, 6, 6)],
        crs=CRS,
    )
    pyogrio.write_dataframe(other, tmp_path / "other_split.gpkg", layer="split", driver="GPKG")
    with pytest.raises(InputError, match="3 parcel.* not in the split"):
        train_parcel_model(
            [small_tile["index"]],
            [tmp_path / "other_split.gpkg"],
            "parcel_gru",
            SETTINGS,
            tmp_path / "m",
            seed=0,
        )
    wrong = gpd.read_file(parcel_set["split"]).head(3).assign(code=[3, 3, 1])
    pyogrio.write_dataframe(wrong, tmp_path / "wrong_codes.gpkg", layer="split", driver="GPKG")
    with pytest.raises(InputError, match="another code"):
        train_parcel_model(
            [small_tile["index"]],
            [tmp_path / "wrong_codes.gpkg"],
            "parcel_gru",
            SETTINGS,
            tmp_path / "m",
            seed=0,
        )
    with pytest.raises(InputError, match="1 dataset"):
        train_parcel_model([small_tile["index"]], [], "parcel_gru", SETTINGS, tmp_path / "m", seed=0)


# ------------------------------------------------------------------ majority vote


def test_majority_vote_counts():
    assert majority_vote(np.array([1, 1, 1, 2, 0, 0])) == (1, 0.75)  # nodata does not vote
    assert majority_vote(np.array([3, 3, 2, 2])) == (2, 0.5)  # tie: the smallest code
    assert majority_vote(np.array([0, 0])) == (0, 0.0)


def test_majority_vote_on_a_hand_made_map(tmp_path):
    labels = np.zeros((20, 20), dtype=np.uint8)
    labels[0:3, 0:3] = 1
    labels[2, 1:3] = 2  # parcel A: 7 x wheat, 2 x maize
    labels[5:7, 5:7] = [[3, 3], [2, 2]]  # parcel B: a tie between maize and vineyard
    # parcel C (rows 10-12) stays nodata
    profile = {
        "driver": "GTiff",
        "width": 20,
        "height": 20,
        "count": 1,
        "dtype": "uint8",
        "nodata": 0,
        "crs": CRS,
        "transform": TRANSFORM,
    }
    with rasterio.open(tmp_path / "map.tif", "w", **profile) as dst:
        dst.write(labels, 1)
    geoms = [pixel_box(0, 0, 3, 3), pixel_box(5, 5, 7, 7), pixel_box(10, 10, 13, 13)]
    split = gpd.GeoDataFrame(
        {
            "polygon_id": [1, 2, 3],
            "code": [1, 3, 2],
            "name": ["wheat", "vineyard", "maize"],
            "split": ["validation"] * 3,
        },
        geometry=geoms,
        crs=CRS,
    )
    pyogrio.write_dataframe(split, tmp_path / "split.gpkg", layer="split", driver="GPKG")
    out = _outputs(tmp_path / "vote")
    report = majority_vote_tile(
        tmp_path / "map.tif",
        tmp_path / "split.gpkg",
        write_nomenclature(tmp_path / "nom.csv"),
        out,
        tile="T00CCC",
        run=1,
        architecture="rf",
    )
    gdf = gpd.read_file(out["gpkg"], layer="parcels").set_index("polygon_id")
    assert gdf.loc[1, "code"] == 1 and gdf.loc[1, "confidence"] == 78  # 7 of 9
    assert gdf.loc[2, "code"] == 2 and gdf.loc[2, "confidence"] == 50
    assert 3 not in gdf.index  # no classified pixel: no label
    assert report["architecture"] == "vote_rf" and report["run"] == 1
    assert report["n_parcels"] == 2 and report["n_unclassified_parcels"] == 1
    assert report["overall_accuracy"] == 0.5  # A right, B wrong (vineyard voted maize)
    # macro F1 over the classes of the scored validation parcels: wheat (F1 1) and vineyard
    # (never predicted, F1 0); maize is only predicted (its parcel C is unscored): apart
    assert report["macro_f1_classes"] == [1, 3] and report["macro_f1"] == pytest.approx(0.5)
    assert report["per_class"][3]["f1"] == 0.0 and 2 not in report["per_class"]
    assert report["commission_unvalidated"] == {2: {"parcels": 1, "share": 0.5, "name": "maize"}}
    pixel = report["pixel_level"]  # wheat 9 px right, vineyard 4 px mapped maize
    assert pixel["macro_f1_classes"] == [1, 3] and pixel["macro_f1"] == pytest.approx(0.5)
    assert pixel["commission_unvalidated"] == {
        2: {"pixels": 4, "share": pytest.approx(4 / 13), "name": "maize"}
    }
    saved = json.loads(out["json"].read_text())
    assert saved["macro_f1_classes"] == [1, 3] and saved["commission_unvalidated"]["2"]["parcels"] == 1
    with rasterio.open(out["tif"]) as src:
        voted = src.read(1)
    assert (voted[0:3, 0:3] == 1).all() and (voted[5:7, 5:7] == 2).all() and (voted[10:13, 10:13] == 0).all()
    assert report["pixel_level"]["n_pixels"] == 13 and report["pixel_level"][
        "overall_accuracy"
    ] == pytest.approx(9 / 13)


def test_pse_ltae_learns_the_temporal_profiles(parcel_set, tmp_path):
    """PSE+L-TAE (pixel sets drawn inside the parcels) trained by the same loop as the IGARSS models."""
    settings = {
        "d_model": 64,
        "n_head": 8,
        "n_pixels": 32,
        "day_step": 30,
        "epochs": 25,
        "patience": 25,
        "learning_rate": 0.005,
    }
    meta = train_parcel_model(
        [parcel_set["index"]],
        [parcel_set["split"]],
        "parcel_pse_ltae",
        settings,
        tmp_path / "m",
        seed=0,
        threads=1,
    )
    assert (
        meta["hyperparameters"]["n_pixels"] == 32 and meta["n_parameters"] > 0
    )  # reloaded from these resolved sizes
    report = predict_parcel_tile(
        tmp_path / "m",
        parcel_set["index"],
        parcel_set["split"],
        parcel_set["grid"],
        parcel_set["nomenclature"],
        _outputs(tmp_path),
        tile="T00BBB",
        run=0,
    )
    assert report["architecture"] == "parcel_pse_ltae"
    assert report["overall_accuracy"] >= 0.9 and report["macro_f1"] >= 0.9  # chance is 1/3
