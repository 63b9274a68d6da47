"""Accuracy metrics: scikit-learn agreement, a hand-computed kappa, validation polygons only, report files."""

from __future__ import annotations

import json

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.transform import from_origin
from sklearn import metrics as skm

from cropchain.assessment.evaluate import evaluate_map, write_report
from cropchain.errors import InputError
from cropchain.io.raster import geotiff_profile
from cropchain.metrics import confusion_metrics, macro_f1, metrics_from_matrix
from cropchain.nomenclature import Nomenclature

NOM = Nomenclature(
    codes=(1, 2, 5, 8),
    names=("wheat", "maize", "sunflower", "vineyard"),
    colors=((1, 1, 1), (2, 2, 2), (3, 3, 3), (4, 4, 4)),
)


def test_hand_computed_3x3():
    # rows = reference, columns = predicted, labels (1, 2, 5)
    cm = np.array([[5, 2, 0], [1, 3, 1], [0, 1, 7]])
    y_true = np.repeat([1, 2, 5], cm.sum(axis=1))
    y_pred = np.concatenate([np.repeat([1, 2, 5], row) for row in cm])
    m = confusion_metrics(y_true, y_pred, [1, 2, 5])
    n = 20
    po = (5 + 3 + 7) / n  # 0.75
    pe = (7 * 6 + 5 * 6 + 8 * 8) / n**2  # row sums 7,5,8; column sums 6,6,8 -> 0.34
    assert m["overall_accuracy"] == pytest.approx(0.75)
    assert m["kappa"] == pytest.approx((po - pe) / (1 - pe))  # 0.41/0.66 = 0.62121...
    assert m["kappa"] == pytest.approx(0.6212121212)
    # class 2: precision 3/6, recall 3/5, F1 = 2 pr / (p + r) = 6/11
    assert m["per_class"][2] == pytest.approx({"precision": 0.5, "recall": 0.6, "f1": 6 / 11, "support": 5})
    f1 = [2 * 5 / (7 + 6), 2 * 3 / (5 + 6), 2 * 7 / (8 + 8)]
    assert m["macro_f1"] == pytest.approx(np.mean(f1))
    assert m["confusion_matrix"] == {"labels": [1, 2, 5], "matrix": cm.tolist()}
    assert m["n_pixels"] == 20
    # the same from the matrix (pooling path)
    mm = metrics_from_matrix(cm, [1, 2, 5])
    assert mm["kappa"] == pytest.approx(m["kappa"]) and mm["macro_f1"] == pytest.approx(m["macro_f1"])
    for c in (1, 2, 5):
        assert mm["per_class"][c] == pytest.approx(m["per_class"][c])


def test_agrees_with_sklearn_including_absent_classes():
    rng = np.random.default_rng(4)
    y_true = rng.choice([1, 2, 5], 500, p=[0.6, 0.3, 0.1])
    y_pred = np.where(
        rng.random(500) < 0.7, y_true, rng.choice([1, 2, 5, 8], 500)
    )  # 8: predicted, never in reference
    labels = [1, 2, 5, 8]
    m = confusion_metrics(y_true, y_pred, labels)
    assert m["overall_accuracy"] == pytest.approx(skm.accuracy_score(y_true, y_pred))
    assert m["kappa"] == pytest.approx(skm.cohen_kappa_score(y_true, y_pred))
    # macro F1 over the reference classes only: 8 (never in the reference) is not averaged
    assert m["macro_f1"] == pytest.approx(
        skm.f1_score(y_true, y_pred, labels=[1, 2, 5], average="macro", zero_division=0)
    )
    assert m["macro_f1"] > skm.f1_score(
        y_true, y_pred, average="macro", zero_division=0
    )  # sklearn's default adds 8's F1 = 0
    assert m["macro_f1_classes"] == [1, 2, 5]
    p, r, f, s = skm.precision_recall_fscore_support(y_true, y_pred, labels=labels, zero_division=0)
    for i, c in enumerate(labels[:3]):
        assert m["per_class"][c] == pytest.approx(
            {"precision": p[i], "recall": r[i], "f1": f[i], "support": s[i]}
        )
    assert 8 not in m["per_class"]
    assert m["commission_unvalidated"] == {
        8: {"pixels": int((y_pred == 8).sum()), "share": pytest.approx((y_pred == 8).mean())}
    }
    np.testing.assert_array_equal(
        m["confusion_matrix"]["matrix"], skm.confusion_matrix(y_true, y_pred, labels=labels)
    )
    with pytest.raises(ValueError, match="not in labels"):
        confusion_metrics(y_true, y_pred, [1, 2, 5])
    with pytest.raises(ValueError, match="no sample"):
        confusion_metrics([], [], [1])


def test_macro_f1_averages_the_validated_classes_only():
    # labels (1, 2, 3, 9); 9 is predicted but has no reference sample, 3 is never predicted
    cm = np.array([[8, 0, 0, 2], [0, 5, 0, 0], [3, 0, 0, 2], [0, 0, 0, 0]])
    labels = [1, 2, 3, 9]
    y_true = np.repeat(labels, cm.sum(axis=1))
    y_pred = np.concatenate([np.repeat(labels, row) for row in cm])
    m = confusion_metrics(y_true, y_pred, labels)
    f1 = {1: 2 * 8 / (10 + 11), 2: 1.0, 3: 0.0}  # F1 = 2 TP / (reference + predicted)
    assert m["macro_f1_classes"] == [1, 2, 3]  # 3 (F1 0) is in, 9 is out
    assert m["macro_f1"] == pytest.approx(np.mean(list(f1.values())))
    assert sorted(m["per_class"]) == [1, 2, 3] and m["per_class"][3]["f1"] == 0.0
    assert {c: d["f1"] for c, d in m["per_class"].items()} == pytest.approx(f1)
    assert m["commission_unvalidated"] == {9: {"pixels": 4, "share": pytest.approx(4 / 20)}}
    assert m["confusion_matrix"]["labels"] == labels  # the matrix keeps every class
    assert m["overall_accuracy"] == pytest.approx(13 / 20)
    # the pooling path gives the same, and the parcel unit names the count
    mm = metrics_from_matrix(cm, labels)
    assert mm["macro_f1"] == pytest.approx(m["macro_f1"]) and mm["macro_f1_classes"] == [1, 2, 3]
    assert mm["commission_unvalidated"] == m["commission_unvalidated"]
    assert (
        confusion_metrics(y_true, y_pred, labels, unit="parcels")["commission_unvalidated"][9]["parcels"] == 4
    )
    # the one definition: the same value for any pair of label arrays
    assert macro_f1(y_true, y_pred) == (pytest.approx(m["macro_f1"]), [1, 2, 3])
    with pytest.raises(ValueError, match="no reference sample"):
        macro_f1([1, 2], [1, 2], sample_weight=[0, 0])


# --- evaluate_map on a synthetic map and split -------------------------------------------

ORIGIN = (600000.0, 4800000.0)


def pix_box(row0, col0, row1, col1):
    """Polygon covering pixels [row0, row1) x [col0, col1) of the 10 m grid (in EPSG:32631)."""
    x0, y0 = ORIGIN
    return shapely.box(x0 + 10 * col0, y0 - 10 * row1, x0 + 10 * col1, y0 - 10 * row0)


@pytest.fixture
def scene(tmp_path):
    m = np.zeros((60, 60), np.uint8)
    m[0:20, 0:20] = 1  # validation wheat, correct
    m[0:20, 30:50] = 2  # validation maize, half wrong below
    m[10:20, 30:50] = 1
    m[30:50, 0:20] = 2  # learning polygon of sunflower, all wrong: must not count
    m[30:50, 30:50] = 8  # validation vineyard, 1 row unclassified
    m[30, 30:50] = 0
    path = tmp_path / "map.tif"
    base = {"crs": CRS.from_epsg(32631), "transform": from_origin(*ORIGIN, 10, 10), "width": 60, "height": 60}
    with rasterio.open(path, "w", **geotiff_profile(base, count=1, dtype="uint8", nodata=0)) as dst:
        dst.write(m, 1)
    split = gpd.GeoDataFrame(
        {"code": [1, 2, 5, 8], "split": ["validation", "validation", "learn", "validation"]},
        geometry=[
            pix_box(0, 0, 20, 20),
            pix_box(0, 30, 20, 50),
            pix_box(30, 0, 50, 20),
            pix_box(30, 30, 50, 50),
        ],
        crs="EPSG:32631",
    ).to_crs(2154)  # the split is in Lambert-93, the map in UTM: reprojected on the fly
    gpkg = tmp_path / "split.gpkg"
    split.to_file(gpkg)
    return path, gpkg, split


def test_evaluate_map_uses_validation_polygons_only(scene):
    path, gpkg, _ = scene
    rep = evaluate_map(path, gpkg, NOM, tile="T31TEJ", run=0, architecture="rf")
    assert (rep["tile"], rep["run"], rep["architecture"]) == ("T31TEJ", 0, "rf")
    # 400 wheat right, maize 200 right + 200 -> wheat, vineyard 380 right + 20 unclassified
    assert rep["n_unclassified"] == 20
    assert rep["n_pixels"] == 1180
    assert rep["confusion_matrix"]["labels"] == [1, 2, 8]  # sunflower (learning only) absent
    assert rep["confusion_matrix"]["matrix"] == [[400, 0, 0], [200, 200, 0], [0, 0, 380]]
    assert rep["overall_accuracy"] == pytest.approx(980 / 1180)
    assert rep["per_class"][2]["name"] == "maize" and rep["per_class"][2]["recall"] == 0.5
    for key in ("kappa", "macro_f1", "per_class", "n_validation_polygons"):
        assert key in rep


def test_map_report_separates_classes_without_validation_pixels(scene, tmp_path):
    path, gpkg, _ = scene
    with rasterio.open(path, "r+") as dst:
        m = dst.read(1)
        m[0:20, 30:50] = 1  # validation maize: never mapped as maize
        m[40:45, 30:50] = 5  # 100 validation vineyard pixels mapped as sunflower (a learning-only class)
        dst.write(m, 1)
    rep = evaluate_map(path, gpkg, NOM, tile="t", run=2, architecture="rf")
    assert rep["confusion_matrix"]["labels"] == [1, 2, 5, 8]
    assert rep["confusion_matrix"]["matrix"] == [
        [400, 0, 0, 0],
        [400, 0, 0, 0],
        [0, 0, 0, 0],
        [0, 0, 100, 280],
    ]
    assert rep["macro_f1_classes"] == [1, 2, 8]  # maize in (F1 0), sunflower out
    f1 = {1: 2 * 400 / (400 + 800), 2: 0.0, 8: 2 * 280 / (380 + 280)}
    assert {c: d["f1"] for c, d in rep["per_class"].items()} == pytest.approx(f1)
    assert rep["macro_f1"] == pytest.approx(np.mean(list(f1.values())))
    assert rep["commission_unvalidated"] == {
        5: {"pixels": 100, "share": pytest.approx(100 / 1180), "name": "sunflower"}
    }
    write_report(rep, tmp_path / "r.json", tmp_path / "r.csv", tmp_path / "r.png", NOM)
    back = json.loads((tmp_path / "r.json").read_text())
    assert back["macro_f1_classes"] == [1, 2, 8] and back["commission_unvalidated"]["5"]["pixels"] == 100
    assert sorted(back["per_class"]) == ["1", "2", "8"]


def test_learning_pixels_do_not_change_the_score(scene, tmp_path):
    path, gpkg, _ = scene
    before = evaluate_map(path, gpkg, NOM, tile="t", run=1, architecture="rf")
    with rasterio.open(path, "r+") as dst:  # flip every learning-polygon pixel to another wrong class
        m = dst.read(1)
        m[30:50, 0:20] = 8
        dst.write(m, 1)
    after = evaluate_map(path, gpkg, NOM, tile="t", run=1, architecture="rf")
    assert after["confusion_matrix"] == before["confusion_matrix"]
    with rasterio.open(path, "r+") as dst:  # but a change inside a validation polygon does
        m[0:5, 0:20] = 5
        dst.write(m, 1)
    changed = evaluate_map(path, gpkg, NOM, tile="t", run=1, architecture="rf")
    assert changed["overall_accuracy"] < before["overall_accuracy"]
    assert 5 in changed["confusion_matrix"]["labels"]


def test_bad_split_files(scene, tmp_path):
    path, _, split = scene
    with pytest.raises(InputError, match="not found"):
        evaluate_map(path, tmp_path / "nope.gpkg", NOM, tile="t", run=0, architecture="rf")
    bad = tmp_path / "bad.gpkg"
    split.drop(columns="split").to_file(bad)
    with pytest.raises(InputError, match="split"):
        evaluate_map(path, bad, NOM, tile="t", run=0, architecture="rf")
    learn = tmp_path / "learn.gpkg"
    split.assign(split="learn").to_file(learn)
    with pytest.raises(InputError, match="validation"):
        evaluate_map(path, learn, NOM, tile="t", run=0, architecture="rf")


def test_write_report_files(scene, tmp_path):
    path, gpkg, _ = scene
    rep = evaluate_map(path, gpkg, NOM, tile="T31TEJ", run=0, architecture="rf")
    out = tmp_path / "rep"
    write_report(rep, out / "r.json", out / "r.csv", out / "r.png", NOM)
    back = json.loads((out / "r.json").read_text())
    assert back["overall_accuracy"] == pytest.approx(rep["overall_accuracy"])
    assert back["per_class"]["8"]["name"] == "vineyard"
    cm = pd.read_csv(out / "r.csv", index_col=0)
    assert list(cm.index) == ["wheat", "maize", "vineyard"] and list(cm.columns) == [
        "wheat",
        "maize",
        "vineyard",
    ]
    assert cm.loc["maize", "wheat"] == 200
    png = (out / "r.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n" and len(png) > 5000
    assert sorted(p.name for p in out.iterdir()) == ["r.csv", "r.json", "r.png"]
