"""Summary across runs: mean and std per architecture and tile, pooled 'all' rows, HTML page."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

import cropchain
from cropchain.assessment.evaluate import write_report
from cropchain.assessment.report import summarize
from cropchain.errors import InputError
from cropchain.metrics import confusion_metrics, name_classes
from cropchain.nomenclature import Nomenclature

NOM = Nomenclature(
    codes=(1, 2, 8), names=("wheat", "maize", "vineyard"), colors=((1, 1, 1), (2, 2, 2), (3, 3, 3))
)


def fake_report(tmp_path, arch, tile, run, cm, labels=(1, 2, 8)):
    labels = list(labels)
    cm = np.asarray(cm)
    y_true = np.repeat(labels, cm.sum(axis=1))
    y_pred = np.concatenate([np.repeat(labels, row) for row in cm])
    m = confusion_metrics(y_true, y_pred, labels)
    name_classes(m, NOM)
    rep = {"tile": tile, "run": str(run), "architecture": arch, **m}
    d = tmp_path / f"runs/{run}/reports/{arch}"
    write_report(rep, d / f"{tile}.json", d / f"{tile}.csv", d / f"{tile}.png", NOM)
    return d / f"{tile}.json", m


@pytest.fixture
def reports(tmp_path):
    rng = np.random.default_rng(7)
    out, metrics = [], {}
    for arch, quality in (("rf", 0.8), ("xgboost", 0.9)):
        for tile in ("T31TEJ", "T31TFJ"):
            for run in range(3):
                diag = rng.integers(50, 100, 3)
                cm = np.diag((diag * quality).astype(int)) + rng.integers(0, 12, (3, 3)) * (
                    1 - np.eye(3, dtype=int)
                )
                path, m = fake_report(tmp_path, arch, tile, run, cm)
                out.append(path)
                metrics[arch, tile, run] = (m, cm)
    return out, metrics


def test_mean_std_over_runs(tmp_path, reports):
    paths, metrics = reports
    df = summarize(paths, tmp_path / "summary.csv", tmp_path / "summary.html")
    assert len(df) == 2 * 3  # 2 architectures x (2 tiles + "all")
    row = df[(df.architecture == "rf") & (df.tile == "T31TEJ")].iloc[0]
    oa = [metrics["rf", "T31TEJ", r][0]["overall_accuracy"] for r in range(3)]
    f1_maize = [metrics["rf", "T31TEJ", r][0]["per_class"][2]["f1"] for r in range(3)]
    assert row["n_runs"] == 3
    assert row["overall_accuracy_mean"] == pytest.approx(np.mean(oa))
    assert row["overall_accuracy_std"] == pytest.approx(np.std(oa, ddof=1))
    assert row["f1_2_mean"] == pytest.approx(np.mean(f1_maize))
    assert row["f1_2_std"] == pytest.approx(np.std(f1_maize, ddof=1))
    # "all": the tiles of each run pooled (summed matrices), then mean over runs
    pooled_oa = []
    for r in range(3):
        cm = metrics["rf", "T31TEJ", r][1] + metrics["rf", "T31TFJ", r][1]
        pooled_oa.append(np.trace(cm) / cm.sum())
    allrow = df[(df.architecture == "rf") & (df.tile == "all")].iloc[0]
    assert allrow["overall_accuracy_mean"] == pytest.approx(np.mean(pooled_oa))
    assert allrow["n_runs"] == 3
    back = pd.read_csv(tmp_path / "summary.csv")
    assert list(back.columns) == list(df.columns) and len(back) == len(df)


def test_html_page(tmp_path, reports):
    paths, _ = reports
    df = summarize(paths, tmp_path / "s.csv", tmp_path / "s.html")
    page = (tmp_path / "s.html").read_text()
    assert page.startswith("<!DOCTYPE html>") and "</html>" in page
    assert cropchain.__version__ in page and "Generated" in page
    assert all(str(p) in page for p in paths)
    assert "vineyard (8)" in page
    xg = df[(df.architecture == "xgboost") & (df.tile == "all")].iloc[0]
    cell = (
        f'<td class="best">{100 * xg.overall_accuracy_mean:.1f} ± {100 * xg.overall_accuracy_std:.1f} %</td>'
    )
    assert cell in page  # the better architecture is highlighted
    assert f"{xg.kappa_mean:.3f} ± {xg.kappa_std:.3f}" in page


def test_single_run_and_duplicates(tmp_path):
    p, _ = fake_report(tmp_path, "rf", "T31TEJ", 0, [[10, 1, 0], [2, 9, 0], [0, 0, 5]])
    df = summarize([p], tmp_path / "s.csv", tmp_path / "s.html")
    assert np.isnan(df.loc[0, "overall_accuracy_std"]) and df.loc[0, "n_runs"] == 1
    with pytest.raises(InputError, match="second report"):
        summarize([p, p], tmp_path / "s.csv", tmp_path / "s.html")
    broken = tmp_path / "broken.json"
    broken.write_text(json.dumps({"tile": "x"}))
    with pytest.raises(InputError, match="missing key"):
        summarize([broken], tmp_path / "s.csv", tmp_path / "s.html")


def test_macro_f1_of_validated_classes_and_commission(tmp_path):
    # run 0 maps 6 pixels as maize (2), which has no validation pixel; run 1 maps none
    labels = [1, 2, 8]
    cm0 = [[10, 4, 0], [0, 0, 0], [1, 2, 8]]
    cm1 = [[14, 0, 0], [0, 0, 0], [3, 0, 8]]
    p0, m0 = fake_report(tmp_path, "rf", "T31TEJ", 0, cm0, labels)
    p1, m1 = fake_report(tmp_path, "rf", "T31TEJ", 1, cm1, labels)
    assert m0["macro_f1_classes"] == m1["macro_f1_classes"] == [1, 8]
    assert m0["commission_unvalidated"] == {2: {"pixels": 6, "share": pytest.approx(6 / 25), "name": "maize"}}
    assert m1["commission_unvalidated"] == {}
    df = summarize([p0, p1], tmp_path / "s.csv", tmp_path / "s.html")
    row = df[df.tile == "T31TEJ"].iloc[0]
    assert row["macro_f1_classes"] == "1 8"
    assert row["macro_f1_mean"] == pytest.approx(np.mean([m0["macro_f1"], m1["macro_f1"]]))
    assert row["commission_unvalidated_share_mean"] == pytest.approx(np.mean([6 / 25, 0.0]))
    assert "f1_2_mean" not in df.columns  # maize has no F-score: no validation pixel in any run
    allrow = df[df.tile == "all"].iloc[0]  # one tile: pooling changes nothing
    assert (
        allrow["macro_f1_mean"] == pytest.approx(row["macro_f1_mean"]) and allrow["macro_f1_classes"] == "1 8"
    )
    page = (tmp_path / "s.html").read_text()
    assert "Macro F-score: unweighted mean of the F-scores of the classes that have validation" in page
    assert "classes averaged: 1 8." in page
    # a report of the former definition (no macro_f1_classes) is not mixed in
    old = json.loads(p0.read_text())
    del old["macro_f1_classes"]
    (tmp_path / "old.json").write_text(json.dumps(old))
    with pytest.raises(InputError, match="missing key"):
        summarize([tmp_path / "old.json"], tmp_path / "s.csv", tmp_path / "s.html")


# --- map pages and the summary's links (issue 13) ---


def _class_map(path, values, nom=NOM):
    import rasterio
    from rasterio.crs import CRS
    from rasterio.transform import from_origin

    from cropchain.io.raster import geotiff_profile

    base = {
        "crs": CRS.from_epsg(32631),
        "transform": from_origin(500000, 4800000, 10, 10),
        "width": values.shape[1],
        "height": values.shape[0],
    }
    with rasterio.open(path, "w", **geotiff_profile(base, count=1, dtype="uint8", nodata=0)) as dst:
        dst.write(values, 1)
        dst.write_colormap(1, nom.color_table())
    return path


NOM_COLORS = Nomenclature(
    codes=(1, 2, 8),
    names=("wheat", "maize", "vineyard"),
    colors=((230, 200, 30), (250, 120, 10), (120, 30, 120)),
)


def _curves_png(path):
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    fig = Figure(figsize=(3, 2))
    FigureCanvasAgg(fig)
    fig.add_subplot().plot([1.0, 0.6, 0.4])
    fig.savefig(path, format="png")
    return path


def test_map_page_shows_the_map_legend_accuracies_areas_and_curves(tmp_path):
    import re

    from matplotlib.image import imread

    from cropchain.assessment.olofsson import estimate, write_assessment
    from cropchain.assessment.report import write_map_page

    values = np.zeros((300, 400), np.uint8)
    values[:, :200] = 1
    values[:, 200:350] = 2
    values[:100, 350:] = 8  # the rest of the last columns: nodata
    classification = _class_map(tmp_path / "T31TEJ_classification.tif", values)
    (tmp_path / "T31TEJ_confidence.tif").write_bytes(b"")  # a product beside the map: linked
    report_json, m = fake_report(tmp_path, "fg_unet", "T31TEJ", 0, [[50, 5, 0], [4, 40, 1], [0, 2, 20]])
    areas = estimate(
        [[45, 5, 0], [3, 40, 2], [0, 1, 19]],
        [60000, 45000, 5000],
        0.01,
        [1, 2, 8],
        ["wheat", "maize", "vineyard"],
    )
    write_assessment(areas, tmp_path / "areas.json")
    page, quicklook = tmp_path / "page.html", tmp_path / "ql.png"
    write_map_page(
        classification,
        report_json,
        report_json.with_suffix(".png"),
        NOM_COLORS,
        page,
        quicklook,
        areas_json=tmp_path / "areas.json",
        curves_png=_curves_png(tmp_path / "curves.png"),
        summary_html=tmp_path / "reports/summary.html",
    )
    html_text = page.read_text()
    # three images embedded: quicklook, confusion matrix, training curves
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', html_text)) == 3
    assert "fg_unet · T31TEJ · run 0" in html_text
    # per class: user's (precision) and producer's (recall) accuracies and F-scores, in %
    wheat = m["per_class"][1]
    assert (
        f"<td>{100 * wheat['precision']:.1f}</td><td>{100 * wheat['recall']:.1f}</td>"
        f"<td>{100 * wheat['f1']:.1f}</td>" in html_text
    )
    # mapped areas by pixel counting (1 px = 0.01 ha) and the Olofsson estimates with their intervals
    assert "<td>600.0</td>" in html_text and "<td>450.0</td>" in html_text and "<td>50.0</td>" in html_text
    a = areas["areas"][2]
    assert f"{a['estimated_ha']:,.1f} ± {a['ci95_ha']:,.1f}" in html_text
    assert 'href="T31TEJ_confidence.tif"' in html_text and 'href="reports/summary.html"' in html_text
    # the quicklook shows the classes in their colours
    rgb = (imread(quicklook)[..., :3] * 255).round().astype(int).reshape(-1, 3)
    colours = {tuple(c) for c in np.unique(rgb, axis=0).tolist()}
    assert set(NOM_COLORS.colors) <= colours


def test_map_page_and_report_show_the_same_estimated_areas(tmp_path):
    """With an assessment the report JSON carries the estimated areas (rule evaluate): the page shows the
    assessment's, and refuses a report whose areas are not those (stale) or a page without them."""
    from cropchain.assessment.olofsson import estimate, read_assessment, report_areas, write_assessment
    from cropchain.assessment.report import write_map_page

    values = np.zeros((100, 100), np.uint8)
    values[:, :60], values[:, 60:90], values[:, 90:] = 1, 2, 8
    classification = _class_map(tmp_path / "T31TEJ_classification.tif", values)
    report_json, _ = fake_report(tmp_path, "rf", "T31TEJ", 0, [[50, 5, 0], [4, 40, 1], [0, 2, 20]])
    areas = estimate([[45, 5, 0], [3, 40, 2], [0, 1, 19]], [6000, 3000, 1000], 0.01, [1, 2, 8])
    areas["samples"] = "sample.gpkg"
    write_assessment(areas, tmp_path / "areas.json")
    report = json.loads(report_json.read_text())
    report.update(report_areas(read_assessment(tmp_path / "areas.json")))
    report_json.write_text(json.dumps(report))

    def page(**kwargs):
        out = tmp_path / "page.html"
        png = report_json.with_suffix(".png")
        write_map_page(classification, report_json, png, NOM, out, tmp_path / "ql.png", **kwargs)
        return out.read_text()

    a = report["areas"]["2"]
    assert f"{a['estimated_ha']:,.1f} ± {a['ci95_ha']:,.1f}" in page(areas_json=tmp_path / "areas.json")
    with pytest.raises(InputError, match="no assessment"):
        page()
    report["areas"]["2"]["estimated_ha"] += 1.0
    report_json.write_text(json.dumps(report))
    with pytest.raises(InputError, match="differ"):
        page(areas_json=tmp_path / "areas.json")


def test_summary_links_every_map_page_and_shows_a_chart(tmp_path, reports):
    import re

    paths, _ = reports
    pages = [p.with_suffix(".html") for p in paths]
    quicklooks = [_curves_png(p.with_name(p.stem + "_quicklook.png")) for p in paths]
    out = tmp_path / "reports/summary.html"
    summarize(paths, tmp_path / "s.csv", out, pages=pages, quicklooks=quicklooks)
    text = out.read_text()
    for p in pages:
        assert f'href="../{p.relative_to(tmp_path)}"' in text
    # chart + one thumbnail (first run) per architecture and tile
    assert len(re.findall(r'<img [^>]*src="data:image/png;base64,', text)) == 1 + 2 * 2
    with pytest.raises(InputError, match="map pages"):
        summarize(paths, tmp_path / "s.csv", out, pages=pages[:-1])
