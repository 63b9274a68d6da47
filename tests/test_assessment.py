"""Accuracy assessment and area estimation (Olofsson et al. 2014): the paper's example, sampling design,
estimation."""

from __future__ import annotations

import json
import math
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin

from cropchain.assessment.olofsson import (
    STRIPE_ROWS,
    allocate,
    assess_map,
    class_pixel_counts,
    design_sample,
    estimate,
    sample_size,
    stratified_sample,
    validation_sample,
    write_assessment,
)
from cropchain.errors import InputError
from cropchain.io.raster import geotiff_profile
from cropchain.nomenclature import Nomenclature

# --- Olofsson et al. (2014), section 5: the 4-class example -------------------------------
# Mapped areas in 30 m Landsat pixels: deforestation, forest gain, stable forest, stable non-forest.
PAPER_PIXELS = [200_000, 150_000, 3_200_000, 6_450_000]
# Sample counts (their Table 8), rows = map class, columns = reference class.
PAPER_COUNTS = [[66, 0, 5, 4], [0, 55, 8, 12], [1, 0, 153, 11], [2, 1, 9, 313]]
PIXEL_HA_30M = 0.09


def test_olofsson_2014_example_published_digits():
    """The published results of the example, to the digits the paper prints.

    Digits checked against sources that quote the paper (the paper's own text was not
    readable in the session that wrote this test): overall accuracy 0.947 +- 0.018; user's
    accuracy of deforestation 0.88 +- 0.07 and producer's accuracy 0.75 +- 0.21; error-adjusted
    area of deforestation 235,086 +- 68,418 *pixels*, i.e. 21,158 ha at 0.09 ha per pixel
    (the paper's "235,086 +- 68,418" is in pixels, not hectares).
    """
    r = estimate(PAPER_COUNTS, PAPER_PIXELS, pixel_area_ha=1.0)  # areas in pixels
    assert round(r["overall_accuracy"]["value"], 3) == 0.947
    assert round(r["overall_accuracy"]["ci95"], 3) == 0.018
    assert round(r["users_accuracy"][1]["value"], 2) == 0.88
    assert round(r["users_accuracy"][1]["ci95"], 2) == 0.07
    assert round(r["producers_accuracy"][1]["value"], 2) == 0.75
    assert round(r["producers_accuracy"][1]["ci95"], 2) == 0.21
    assert round(r["areas"][1]["estimated_ha"]) == 235_086  # pixels here (pixel_area_ha=1)
    assert round(r["areas"][1]["ci95_ha"]) == 68_418
    ha = estimate(PAPER_COUNTS, PAPER_PIXELS, pixel_area_ha=PIXEL_HA_30M)
    assert round(ha["areas"][1]["estimated_ha"]) == 21_158
    assert ha["areas"][1]["mapped_ha"] == pytest.approx(18_000)


def test_olofsson_2014_example_internal_consistency():
    """Properties the stratified estimator must have on the example (each can fail on a wrong formula)."""
    r = estimate(PAPER_COUNTS, PAPER_PIXELS, pixel_area_ha=PIXEL_HA_30M)
    p = np.array(r["error_matrix_proportions"])
    w = np.array(PAPER_PIXELS) / sum(PAPER_PIXELS)
    np.testing.assert_allclose(p.sum(axis=1), w)  # rows sum to the mapped proportions
    assert p.sum() == pytest.approx(1.0)
    est = np.array([r["areas"][c]["estimated_ha"] for c in r["codes"]])
    assert est.sum() == pytest.approx(
        sum(PAPER_PIXELS) * PIXEL_HA_30M
    )  # the areas are re-distributed, not created
    # user's accuracy is the row's share on the diagonal, producer's the column's
    assert r["users_accuracy"][3]["value"] == pytest.approx(153 / 165)
    assert r["producers_accuracy"][2]["value"] == pytest.approx(p[1, 1] / p[:, 1].sum())
    # eq. 6 by hand for the user's accuracy of stable forest
    u = 153 / 165
    assert r["users_accuracy"][3]["ci95"] == pytest.approx(1.96 * math.sqrt(u * (1 - u) / 164))
    # eq. 10 by hand for the area of forest gain (column 2)
    ni = np.array(PAPER_COUNTS).sum(axis=1)
    f = np.array(PAPER_COUNTS)[:, 1] / ni
    se = math.sqrt(np.sum(w**2 * f * (1 - f) / (ni - 1))) * sum(PAPER_PIXELS) * PIXEL_HA_30M
    assert r["areas"][2]["ci95_ha"] == pytest.approx(1.96 * se)


def test_sample_size_eq13_and_allocations_on_the_paper_design():
    """Eq. 13 with the paper's design targets (U = 0.70, 0.60, 0.90, 0.95; S(O) = 0.01), and the
    allocations."""
    w = np.array(PAPER_PIXELS) / sum(PAPER_PIXELS)
    u = np.array([0.70, 0.60, 0.90, 0.95])
    by_hand = (np.sum(w * np.sqrt(u * (1 - u))) / 0.01) ** 2
    n = sample_size(w, u, 0.01)
    assert n == pytest.approx(by_hand)
    assert math.ceil(n) == 641
    prop = allocate(641, w, "proportional")
    assert prop.tolist() == [13, 10, 205, 413]
    assert allocate(641, w, "equal").sum() == 641 and np.ptp(allocate(641, w, "equal")) <= 1
    rec = allocate(641, w, "recommended", min_per_class=75)
    assert rec[:2].tolist() == [75, 75] and rec.sum() == 641
    assert rec[3] / rec[2] == pytest.approx(w[3] / w[2], rel=0.01)  # the rest proportional
    # a stratum never gets more points than it has pixels
    capped = allocate(100, [0.5, 0.5], "proportional", available=[10, 1000])
    assert capped.tolist() == [10, 90]
    # too small a sample for every minimum: every class still gets points
    assert allocate(10, [0.2, 0.3, 0.5], "recommended", min_per_class=50).min() >= 3
    with pytest.raises(ValueError):
        allocate(10, [1.0], "neyman")


# --- streaming on rasters -----------------------------------------------------------------
CODES = (1, 4, 9)
NOM = Nomenclature(
    codes=CODES, names=("wheat", "rapeseed", "vineyard"), colors=((1, 1, 1), (2, 2, 2), (3, 3, 3))
)
ORIGIN = (700_000.0, 4_800_000.0)


def write_map(path: Path, labels: np.ndarray, pixel_m: float = 10.0) -> Path:
    base = {
        "crs": CRS.from_epsg(32631),
        "transform": from_origin(*ORIGIN, pixel_m, pixel_m),
        "width": labels.shape[1],
        "height": labels.shape[0],
    }
    with rasterio.open(path, "w", **geotiff_profile(base, count=1, dtype="uint8", nodata=0)) as dst:
        dst.write(labels.astype(np.uint8), 1)
    return path


def parcel_map(seed: int = 3, h: int = 2 * STRIPE_ROWS + 37, w: int = 150) -> np.ndarray:
    """Parcels of 10x10 px (wheat 60%, rapeseed 30%, vineyard 10%) with a nodata border; taller than two
    stripes."""
    rng = np.random.default_rng(seed)
    parcels = rng.choice(3, size=(h // 10 + 1, w // 10 + 1), p=[0.6, 0.3, 0.1])
    labels = np.asarray(CODES, np.uint8)[np.kron(parcels, np.ones((10, 10), int))[:h, :w]]
    labels[:, :5] = 0
    return labels


def test_class_pixel_counts_streams_the_whole_map(tmp_path):
    labels = parcel_map()
    counts, pixel_ha = class_pixel_counts(write_map(tmp_path / "map.tif", labels))
    values, n = np.unique(labels[labels != 0], return_counts=True)
    assert counts == dict(zip(values.tolist(), n.tolist()))
    assert pixel_ha == pytest.approx(0.01)


def test_stratified_sample_points_lie_in_their_stratum_and_follow_the_seed(tmp_path):
    labels = parcel_map()
    path = write_map(tmp_path / "map.tif", labels)
    allocation = {1: 40, 4: 30, 9: 25}
    pts = stratified_sample(path, allocation, seed=7)
    assert pts.groupby("stratum").size().to_dict() == allocation
    assert not pts.duplicated(["row", "col"]).any()
    np.testing.assert_array_equal(labels[pts["row"], pts["col"]], pts["stratum"])  # each point on its class
    with rasterio.open(path) as src:  # the coordinates are the centres of those pixels
        rows, cols = rasterio.transform.rowcol(src.transform, pts["x"], pts["y"])
    np.testing.assert_array_equal(rows, pts["row"])
    np.testing.assert_array_equal(cols, pts["col"])
    again = stratified_sample(path, allocation, seed=7)
    assert again.equals(pts)
    other = stratified_sample(path, allocation, seed=8)
    assert not other[["row", "col"]].equals(pts[["row", "col"]])
    # points are spread over every stripe of rows, not only the first ones read
    assert pts["row"].max() >= 2 * STRIPE_ROWS - 40 and pts["row"].min() < STRIPE_ROWS
    with pytest.raises(InputError, match="class 9 has"):
        stratified_sample(path, {9: int((labels == 9).sum()) + 1}, seed=0)


def test_stratified_sample_is_uniform_within_a_stratum(tmp_path):
    """Every pixel of a stratum is equally likely: over many seeds, each half of a class gets about half
    the points."""
    labels = np.full((300, 40), 1, np.uint8)
    labels[:, 20:] = 4
    path = write_map(tmp_path / "map.tif", labels)
    top = sum(int((stratified_sample(path, {1: 20}, seed=s)["row"] < 150).sum()) for s in range(30))
    assert abs(top / 600 - 0.5) < 0.06  # binomial sd ~0.02


def test_design_sample_writes_points_with_an_empty_reference_column(tmp_path):
    labels = parcel_map()
    path = write_map(tmp_path / "map.tif", labels)
    out, js = tmp_path / "design" / "sample.gpkg", tmp_path / "design" / "design.json"
    design = design_sample(
        path,
        NOM,
        out,
        js,
        users_accuracy={1: 0.9, 4: 0.8, 9: 0.7},
        target_se=0.02,
        allocation="recommended",
        min_per_class=30,
        seed=1,
    )
    gdf = gpd.read_file(out)
    assert gdf.crs.to_epsg() == 32631
    assert len(gdf) == design["n"] == math.ceil(design["n_eq13"])
    assert gdf["reference"].isna().all()
    assert set(gdf["map_class"]) == {"wheat", "rapeseed", "vineyard"}
    assert gdf.groupby("stratum").size().min() >= 30  # the rare class got the minimum
    assert json.loads(js.read_text())["classes"]["9"]["n"] == int((gdf["stratum"] == 9).sum())
    assert not list(out.parent.glob(".*tmp-*"))  # written atomically: no temporary left


def test_assess_map_recovers_the_true_areas_of_a_biased_map(tmp_path):
    """A map that calls 30% of the rapeseed wheat: the estimate corrects the mapped areas, in any CRS."""
    truth = parcel_map(seed=5, h=400, w=400)
    rng = np.random.default_rng(0)
    mapped = truth.copy()
    mapped[(truth == 4) & (rng.random(truth.shape) < 0.3)] = 1
    path = write_map(tmp_path / "map.tif", mapped)
    sample = tmp_path / "sample.gpkg"
    design_sample(path, NOM, sample, users_accuracy=0.8, target_se=0.01, min_per_class=80, seed=2)
    gdf = gpd.read_file(sample)
    gdf["reference"] = truth[gdf["row"], gdf["col"]].astype(int)  # a perfect photo-interpreter
    labelled = tmp_path / "labelled.gpkg"
    gdf.to_crs(4326).to_file(labelled)  # another CRS: reprojected by assess_map
    r = assess_map(path, labelled, NOM)
    assert r["n"] == len(gdf) and r["n_outside"] == 0
    for code in CODES:
        true_ha = (truth == code).sum() * 0.01
        a = r["areas"][code]
        assert abs(a["estimated_ha"] - true_ha) <= a["ci95_ha"] + 1e-9, (code, a, true_ha)
    rape_true = (truth == 4).sum() * 0.01
    assert abs(r["areas"][4]["estimated_ha"] - rape_true) < abs(r["areas"][4]["mapped_ha"] - rape_true) / 3
    assert r["users_accuracy"][4]["value"] == 1.0  # rapeseed on the map is rapeseed
    assert r["producers_accuracy"][4]["value"] == pytest.approx(0.7, abs=0.08)
    # same answer from the sample in the map's CRS
    gdf.to_file(tmp_path / "labelled_utm.gpkg")
    r2 = assess_map(path, tmp_path / "labelled_utm.gpkg", NOM)
    assert r2["error_matrix_counts"] == r["error_matrix_counts"]
    write_assessment(r, tmp_path / "areas.json", tmp_path / "areas.csv")
    saved = json.loads((tmp_path / "areas.json").read_text())
    assert set(saved["areas"]["4"]) >= {"mapped_ha", "estimated_ha", "ci95_ha"}
    assert "wheat" in (tmp_path / "areas.csv").read_text()


def test_assess_map_reports_unsampled_strata_and_points_off_the_map(tmp_path):
    labels = parcel_map()
    path = write_map(tmp_path / "map.tif", labels)
    pts = stratified_sample(path, {1: 10, 4: 10}, seed=0)  # vineyard (9) is mapped but not sampled
    gdf = gpd.GeoDataFrame(
        {"reference": pts["stratum"]}, geometry=gpd.points_from_xy(pts["x"], pts["y"]), crs=32631
    )
    off = gpd.GeoDataFrame(
        {"reference": [1]}, geometry=gpd.points_from_xy([ORIGIN[0] - 500], [ORIGIN[1]]), crs=32631
    )
    pd.concat([gdf, off], ignore_index=True).to_file(tmp_path / "s.gpkg")
    r = assess_map(path, tmp_path / "s.gpkg", NOM)
    assert r["n_outside"] == 1
    assert r["unsampled_strata"] == [9]
    assert r["users_accuracy"][9]["value"] is None


def test_assess_map_rejects_bad_samples(tmp_path):
    path = write_map(tmp_path / "map.tif", parcel_map())
    pts = stratified_sample(path, {1: 5}, seed=0)
    gdf = gpd.GeoDataFrame({"label": [1] * 5}, geometry=gpd.points_from_xy(pts["x"], pts["y"]), crs=32631)
    gdf.to_file(tmp_path / "nolabel.gpkg")
    with pytest.raises(InputError, match="no column 'reference'"):
        assess_map(path, tmp_path / "nolabel.gpkg", NOM)
    gdf.rename(columns={"label": "reference"}).assign(reference=[1, 1, 1, 1, 77]).to_file(
        tmp_path / "unknown.gpkg"
    )
    with pytest.raises(InputError, match=r"reference codes \[77\]"):
        assess_map(path, tmp_path / "unknown.gpkg", NOM)
    with pytest.raises(InputError, match="not found"):
        assess_map(path, tmp_path / "absent.gpkg", NOM)


def test_validation_sample_labels_the_pixels_of_the_validation_parcels(tmp_path):
    """`samples: validation`: one point per pixel centre of each validation parcel, with its code, in the
    map's CRS."""
    import shapely

    labels = parcel_map()
    path = write_map(tmp_path / "map.tif", labels)
    x0, y0 = ORIGIN
    boxes = [
        shapely.box(x0 + 100, y0 - 300, x0 + 200, y0 - 200),  # 10 x 10 px
        shapely.box(x0 + 400, y0 - 150, x0 + 450, y0 - 100),  # 5 x 5 px
        shapely.box(x0 + 600, y0 - 600, x0 + 700, y0 - 500),
    ]  # learn: not used
    split = gpd.GeoDataFrame(
        {"polygon_id": [1, 2, 3], "code": [4, 9, 1], "split": ["validation", "validation", "learn"]},
        geometry=boxes,
        crs=32631,
    ).to_crs(2154)  # the split in another CRS
    split.to_file(tmp_path / "split.gpkg")
    n = validation_sample(tmp_path / "split.gpkg", path, tmp_path / "points.gpkg")
    pts = gpd.read_file(tmp_path / "points.gpkg")
    assert n == len(pts) == 100 + 25
    assert pts.crs.to_epsg() == 32631
    assert sorted(pts["reference"].value_counts().items()) == [(4, 100), (9, 25)]
    assert pts.geometry.within(shapely.box(x0 + 100, y0 - 300, x0 + 200, y0 - 200)).sum() == 100
    r = assess_map(path, tmp_path / "points.gpkg", NOM)
    assert r["n"] == 125


def test_report_json_carries_the_estimated_areas_of_the_assessment(tmp_path):
    """Rule evaluate with `assessment.samples`: the report JSON gets `areas` (per class: name, mapped_ha,
    estimated_ha, ci95_ha, the values of the areas JSON) and `areas_definition`; nothing else changes."""
    import shapely

    from cropchain.assessment.evaluate import evaluate_map, write_report
    from cropchain.assessment.olofsson import read_assessment, report_areas

    labels = parcel_map(seed=4, h=300, w=300)
    mapped = labels.copy()
    mapped[(labels == 4) & (np.random.default_rng(1).random(labels.shape) < 0.3)] = 1  # errors: intervals
    path = write_map(tmp_path / "map.tif", mapped)
    x0, y0 = ORIGIN
    cells = [(r, c) for r in range(0, 300, 10) for c in range(10, 300, 10) if (r + c) % 30 == 0]
    split = gpd.GeoDataFrame(
        {
            "polygon_id": range(len(cells)),
            "code": [int(labels[r, c]) for r, c in cells],
            "split": "validation",
        },
        geometry=[
            shapely.box(x0 + 10 * c, y0 - 10 * (r + 10), x0 + 10 * (c + 10), y0 - 10 * r) for r, c in cells
        ],
        crs=32631,
    )
    split.to_file(tmp_path / "split.gpkg")
    validation_sample(tmp_path / "split.gpkg", path, tmp_path / "points.gpkg")
    write_assessment(assess_map(path, tmp_path / "points.gpkg", NOM), tmp_path / "areas.json")
    report = evaluate_map(path, tmp_path / "split.gpkg", NOM, tile="T31TXA", run=0, architecture="rf")
    plain, with_areas = tmp_path / "plain", tmp_path / "with_areas"
    for out, extra in ((plain, {}), (with_areas, report_areas(read_assessment(tmp_path / "areas.json")))):
        out.mkdir()
        write_report({**report, **extra}, out / "r.json", out / "r.csv", out / "r.png", NOM)
    saved = json.loads((with_areas / "r.json").read_text())
    assessment = json.loads((tmp_path / "areas.json").read_text())
    assert set(saved["areas"]) == set(assessment["areas"]) == {str(c) for c in CODES}
    for code, a in saved["areas"].items():
        assert set(a) == {"name", "mapped_ha", "estimated_ha", "ci95_ha"}
        assert a == {k: assessment["areas"][code][k] for k in a}
    assert saved["areas"]["4"]["name"] == "rapeseed" and saved["areas"]["4"]["ci95_ha"] > 0
    assert saved["areas_definition"].startswith("Olofsson et al. 2014")
    assert saved["areas_definition"].endswith(f"sample: {tmp_path / 'points.gpkg'}")
    # without an assessment the report is what it was: no `areas`, the rest byte for byte
    assert "areas" not in json.loads((plain / "r.json").read_text())
    del saved["areas"], saved["areas_definition"]
    assert json.dumps(saved, indent=2) + "\n" == (plain / "r.json").read_text()
    with pytest.raises(InputError, match="labelled sample"):
        report_areas({"areas": {}})  # an assessment that does not name its sample


def test_estimate_degenerate_strata():
    """A class only in the reference (omitted by the map) and a stratum with one point: defined values
    only."""
    counts = [
        [20, 0, 2],  # map class 1
        [1, 0, 0],  # map class 2: one point, variance undefined
        [3, 4, 30],
    ]  # map class 3; class 2 of the reference is never mapped as 2
    r = estimate(counts, [500, 10, 1000], pixel_area_ha=0.01, codes=[1, 2, 3])
    assert r["strata_below_2"] == [2]
    assert r["users_accuracy"][2]["value"] == 0.0 and r["users_accuracy"][2]["ci95"] is None
    assert r["overall_accuracy"]["ci95"] is None and r["areas"][1]["ci95_ha"] is None
    assert r["areas"][2]["estimated_ha"] > 0  # omitted by the map, found by the sample
    assert r["producers_accuracy"][2]["value"] == 0.0
    no_ref = estimate([[5, 0], [0, 0]], [100, 0], codes=[1, 2])  # class 2 neither mapped nor sampled
    assert no_ref["producers_accuracy"][2]["value"] is None and no_ref["unsampled_strata"] == []
