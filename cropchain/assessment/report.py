"""Reports people look at: the summary across tiles, runs and architectures, and one page per map.

The summary (:func:`summarize`) compares the architectures (iota2's "mean ± std over
seeds"), with a bar chart, and links to the page of each map (:func:`write_map_page`: quicklook
with legend, confusion matrix, user's/producer's accuracies, F-scores, mapped and estimated
areas, training curves of a network).

For each architecture and tile, the metrics of the runs (learning/validation splits
redrawn with their own seed) are averaged; the spread is the sample standard deviation
(``ddof=1``; undefined, NaN, with a single run). The row ``tile == "all"`` of an
architecture pools its tiles run by run: the confusion matrices of the tiles of a run are
summed and the metrics recomputed (pixel-weighted, as if the tiles were one map), then
averaged over runs.

Every macro F-score is :func:`cropchain.metrics.macro_f1`'s: the mean F-score of the classes
that have validation pixels (``macro_f1_classes`` of each report); the pixels mapped to
classes without validation pixels are summed apart (``commission_unvalidated_share``).
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import logging
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from rasterio.enums import Resampling

import cropchain
from cropchain.errors import InputError
from cropchain.io.atomic import atomic_output, write_text_atomic
from cropchain.io.raster import open_raster
from cropchain.metrics import MACRO_F1_DEFINITION, matrix_from_cells, metrics_from_matrix
from cropchain.nomenclature import NODATA_CLASS, Nomenclature, read_nomenclature

log = logging.getLogger(__name__)

ALL_TILES = "all"
METRICS = ("overall_accuracy", "kappa", "macro_f1")
REQUIRED = (
    "tile",
    "run",
    "architecture",
    *METRICS,
    "macro_f1_classes",
    "per_class",
    "commission_unvalidated",
    "confusion_matrix",
)
COMMISSION = "commission_unvalidated_share"


def _read_report(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise InputError(
            path, "report not found", "run the evaluation of this tile, run and architecture first"
        )
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(
            path, f"not a valid JSON file ({exc})", "rerun the evaluation that writes it"
        ) from None
    missing = [k for k in REQUIRED if k not in report]
    if missing:
        raise InputError(
            path, f"missing key(s) {missing}", "rerun the evaluation with this version of cropchain"
        )
    return report


def _nan(v: Any) -> float:
    return float("nan") if v is None else float(v)


def _row_values(report: dict[str, Any]) -> tuple[dict[str, float], dict[int, str]]:
    values = {m: _nan(report[m]) for m in METRICS}
    values[COMMISSION] = float(sum(d["share"] for d in report["commission_unvalidated"].values()))
    names = {}
    for code, d in report["per_class"].items():
        values[f"f1_{int(code)}"] = _nan(d["f1"])
        if "name" in d:
            names[int(code)] = str(d["name"])
    return values, names


@dataclass
class _Runs:
    """The reports of :func:`summarize`, gathered per architecture and tile and pooled per run."""

    seen: dict[tuple[str, str, str], Path] = field(default_factory=dict)  # (arch, tile, run) -> report
    per_tile: dict[tuple[str, str], list[dict[str, float]]] = field(default_factory=lambda: defaultdict(list))
    averaged: dict[tuple[str, str], set[int]] = field(default_factory=lambda: defaultdict(set))
    pooled: dict[tuple[str, str], dict[tuple[int, int], int]] = field(default_factory=dict)
    class_names: dict[int, str] = field(default_factory=dict)


def _collect_runs(paths: list[Path]) -> _Runs:
    """Read the reports: metric values per (architecture, tile), confusion cells pooled per (architecture,
    run)."""
    runs = _Runs()
    for path in paths:
        rep = _read_report(path)
        arch, tile, run = str(rep["architecture"]), str(rep["tile"]), str(rep["run"])
        if (arch, tile, run) in runs.seen:
            raise InputError(
                path,
                f"second report for architecture {arch}, tile {tile}, run {run} "
                f"(first: {runs.seen[arch, tile, run]})",
                "pass each report once",
            )
        runs.seen[arch, tile, run] = path
        values, names = _row_values(rep)
        runs.class_names.update(names)
        runs.per_tile[arch, tile].append(values)
        runs.averaged[arch, tile].update(int(c) for c in rep["macro_f1_classes"])
        runs.averaged[arch, ALL_TILES].update(int(c) for c in rep["macro_f1_classes"])
        # pool the tiles of a run: sum confusion matrices on the union of their labels
        labels = [int(c) for c in rep["confusion_matrix"]["labels"]]
        cm = np.asarray(rep["confusion_matrix"]["matrix"], dtype=np.int64)
        acc = runs.pooled.setdefault((arch, run), {})
        for i, a in enumerate(labels):
            for j, b in enumerate(labels):
                if cm[i, j]:
                    acc[(a, b)] = acc.get((a, b), 0) + int(cm[i, j])
    return runs


def _summary_table(runs: _Runs) -> tuple[pd.DataFrame, list[int]]:
    """Mean and std over runs per (architecture, tile), then per architecture on the pooled tiles.

    Returns the table of :func:`summarize` and the class codes of its ``f1_<code>`` columns.
    """
    per_all: dict[str, list[dict[str, float]]] = defaultdict(list)
    for (arch, _run), cells in sorted(runs.pooled.items()):
        m = metrics_from_matrix(*matrix_from_cells(cells))
        values = {k: float(m[k]) for k in METRICS}
        values[COMMISSION] = float(sum(d["share"] for d in m["commission_unvalidated"].values()))
        values.update({f"f1_{c}": float(d["f1"]) for c, d in m["per_class"].items()})
        per_all[arch].append(values)

    rows = []
    groups = [((a, t), v) for (a, t), v in sorted(runs.per_tile.items())] + [
        ((a, ALL_TILES), v) for a, v in sorted(per_all.items())
    ]
    codes = sorted({int(k[3:]) for _, group in groups for r in group for k in r if k.startswith("f1_")})
    for (arch, tile), group in groups:
        row: dict[str, Any] = {
            "architecture": arch,
            "tile": tile,
            "n_runs": len(group),
            "macro_f1_classes": " ".join(str(c) for c in sorted(runs.averaged[arch, tile])),
        }
        for key in [*METRICS, COMMISSION, *(f"f1_{c}" for c in codes)]:
            vals = np.array([r.get(key, np.nan) for r in group], dtype=float)
            vals = vals[~np.isnan(vals)]
            row[f"{key}_mean"] = float(vals.mean()) if vals.size else float("nan")
            row[f"{key}_std"] = float(vals.std(ddof=1)) if vals.size > 1 else float("nan")
        rows.append(row)
    return pd.DataFrame(rows), codes


def summarize(
    report_jsons: Sequence[str | os.PathLike],
    out_csv: str | os.PathLike,
    out_html: str | os.PathLike,
    *,
    pages: Sequence[str | os.PathLike] | None = None,
    quicklooks: Sequence[str | os.PathLike] | None = None,
) -> pd.DataFrame:
    """Mean and standard deviation over runs of every metric, per architecture and tile.

    Parameters
    ----------
    report_jsons : report JSONs written by :func:`cropchain.assessment.evaluate.write_report`.
    out_csv : summary table (one row per architecture and tile, plus tile ``"all"``).
    out_html : standalone HTML page: bar chart of the metrics per architecture (tiles pooled,
        mean ± std over runs; embedded as a ``data:`` URI), metric table (``mean ± std``;
        overall accuracy and F-scores in %, kappa with 3 decimals; the best architecture per
        tile and metric in bold), per-class F1 table, the maps (with ``pages``), list of input
        reports, generation date, cropchain version.
    pages : the map page of each report (:func:`write_map_page`), in the order of
        ``report_jsons``: linked (relative links) from a table architecture x tile x run.
    quicklooks : the quicklook of each report, same order: the first run's of each
        architecture and tile is shown (embedded) beside the links.

    Returns
    -------
    pandas.DataFrame
        columns ``architecture``, ``tile``, ``n_runs``, then ``<metric>_mean`` and
        ``<metric>_std`` for ``overall_accuracy``, ``kappa``, ``macro_f1``,
        ``commission_unvalidated_share`` (share of the scored pixels mapped to classes
        without validation pixels) and ``f1_<code>`` of every class (fractions 0-1), and
        ``macro_f1_classes`` (the codes averaged by the macro F-score in at least one run,
        space-separated). A class without validation pixels in a run has no F-score there
        and does not count in that class's mean.

    Raises
    ------
    InputError
        no report, a missing/invalid report, or two reports for the same
        (architecture, tile, run).
    """
    if not report_jsons:
        raise InputError(out_html, "no report to summarize", "evaluate at least one map first")
    paths = [Path(p) for p in report_jsons]
    runs = _collect_runs(paths)
    df, codes = _summary_table(runs)
    with atomic_output(out_csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6f")
    maps = ""
    if pages:
        if len(pages) != len(paths) or (quicklooks is not None and len(quicklooks) != len(paths)):
            raise InputError(
                out_html,
                f"{len(pages)} map pages and {len(quicklooks or [])} quicklooks for {len(paths)} reports",
                "pass one page (and quicklook) per report, in the same order",
            )
        ids = [next(k for k, v in runs.seen.items() if v == p) for p in paths]
        maps = _maps_section(
            ids,
            [Path(p) for p in pages],
            None if quicklooks is None else [Path(q) for q in quicklooks],
            Path(out_html),
        )
    write_text_atomic(out_html, _html(df, codes, runs.class_names, paths, _chart(df), maps))
    log.info(
        "summary of %d reports (%d architectures) -> %s, %s",
        len(paths),
        df["architecture"].nunique(),
        out_csv,
        out_html,
    )
    return df


def _cell(mean: float, std: float, percent: bool) -> str:
    if math.isnan(mean):
        return "–"
    if percent:
        s = f"{100 * mean:.1f}"
        return s + (f" ± {100 * std:.1f} %" if not math.isnan(std) else " %")
    s = f"{mean:.3f}"
    return s + (f" ± {std:.3f}" if not math.isnan(std) else "")


def _table(df: pd.DataFrame, columns: list[tuple[str, str, bool]], unranked: tuple[str, ...] = ()) -> str:
    """HTML table; the best (highest) mean per tile and column is bold (class ``best``), except in
    ``unranked`` columns."""
    best: dict[tuple[str, str], float] = {}
    for tile, g in df.groupby("tile"):
        for key, _, _ in columns:
            if key in unranked:
                continue
            vals = g[f"{key}_mean"].dropna()
            if len(vals) and g["architecture"].nunique() > 1:
                best[str(tile), key] = float(vals.max())
    head = "".join(f"<th>{html.escape(title)}</th>" for _, title, _ in columns)
    out = [f"<table><thead><tr><th>tile</th><th>architecture</th><th>runs</th>{head}</tr></thead><tbody>"]
    order = sorted(df["tile"].unique(), key=lambda t: (t == ALL_TILES, t))
    for tile in order:
        for _, r in df[df["tile"] == tile].sort_values("architecture").iterrows():
            cells = []
            for key, _, pct in columns:
                mean, std = r[f"{key}_mean"], r[f"{key}_std"]
                cls = ' class="best"' if best.get((str(tile), key)) == mean and not math.isnan(mean) else ""
                cells.append(f"<td{cls}>{_cell(mean, std, pct)}</td>")
            tr_cls = ' class="all"' if tile == ALL_TILES else ""
            out.append(
                f"<tr{tr_cls}><td>{html.escape(str(tile))}</td><td>{html.escape(r['architecture'])}</td>"
                f"<td>{int(r['n_runs'])}</td>{''.join(cells)}</tr>"
            )
    out.append("</tbody></table>")
    return "\n".join(out)


_CSS = """
body { font-family: system-ui, sans-serif; margin: 2em; color: #222; }
table { border-collapse: collapse; margin-bottom: 2em; }
th, td { border: 1px solid #ccc; padding: 0.3em 0.7em; text-align: right; }
th { background: #eef; } td:nth-child(-n+2) { text-align: left; }
td.best { font-weight: bold; background: #dfd; }
tr.all td { border-top: 2px solid #888; }
.meta { color: #666; font-size: 0.9em; }
img.chart { max-width: 100%; margin-bottom: 1em; }
table.maps td { text-align: center; vertical-align: top; }
img.thumb { width: 260px; border: 1px solid #ddd; }
"""


def _chart(df: pd.DataFrame) -> str:
    """Bar chart (PNG data URI) of overall accuracy, kappa and macro F-score per architecture,
    tiles pooled (rows ``all``), mean with the standard deviation over runs as error bars."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rows = df[df["tile"] == ALL_TILES].sort_values("architecture")
    archs = rows["architecture"].tolist()
    metrics = [("overall_accuracy", "overall accuracy"), ("kappa", "kappa"), ("macro_f1", "macro F-score")]
    fig = Figure(figsize=(max(5.0, 1.2 * len(archs) + 3), 3.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    x = np.arange(len(archs))
    width = 0.8 / len(metrics)
    for i, (key, label) in enumerate(metrics):
        mean = rows[f"{key}_mean"].to_numpy(dtype=float)
        std = np.nan_to_num(rows[f"{key}_std"].to_numpy(dtype=float))
        ax.bar(x + (i - 1) * width, mean, width, yerr=std, capsize=3, label=label)
    ax.set_xticks(x, archs)
    ax.set_ylim(0, 1)
    ax.set_ylabel("score (mean ± std over runs)")
    ax.set_title("All tiles pooled", fontsize=10)
    ax.legend(fontsize=8, loc="lower right")
    ax.grid(axis="y", alpha=0.3)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=100)
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode("ascii")


def _maps_section(
    ids: list[tuple[str, str, str]], pages: list[Path], quicklooks: list[Path] | None, out_html: Path
) -> str:
    """Table architecture x tile: the first run's quicklook (embedded) and a link to every run's page."""
    cells: dict[tuple[str, str], list[tuple[str, Path, Path | None]]] = defaultdict(list)
    for i, (arch, tile, run) in enumerate(ids):
        cells[arch, tile].append((run, pages[i], None if quicklooks is None else quicklooks[i]))
    tiles = sorted({t for _, t in cells})
    out = [
        '<table class="maps"><thead><tr><th>architecture</th>'
        + "".join(f"<th>{html.escape(t)}</th>" for t in tiles)
        + "</tr></thead><tbody>"
    ]
    for arch in sorted({a for a, _ in cells}):
        row = [f"<td>{html.escape(arch)}</td>"]
        for tile in tiles:
            runs = sorted(cells.get((arch, tile), []), key=lambda r: int(r[0]) if r[0].isdigit() else r[0])
            if not runs:
                row.append("<td>–</td>")
                continue
            first = runs[0]
            thumb = ""
            if first[2] is not None and first[2].is_file():
                thumb = (
                    f'<a href="{html.escape(os.path.relpath(first[1], out_html.parent))}"><img class="thumb" '
                    f'alt="{html.escape(arch)} {html.escape(tile)} run {html.escape(first[0])}" '
                    f'src="{_data_uri(first[2])}"></a><br>'
                )
            links = " · ".join(
                f'<a href="{html.escape(os.path.relpath(p, out_html.parent))}">run {html.escape(r)}</a>'
                for r, p, _ in runs
            )
            row.append(f"<td>{thumb}{links}</td>")
        out.append("<tr>" + "".join(row) + "</tr>")
    out.append("</tbody></table>")
    return (
        "<h2>Maps</h2>\n<p>Each map's page: quicklook with legend, confusion matrix, user's and producer's "
        "accuracies, "
        "F-scores, mapped (and, with an assessment, estimated) areas, training curves of the networks.</p>\n"
        + "\n".join(out)
    )


def _html(
    df: pd.DataFrame,
    codes: list[int],
    class_names: dict[int, str],
    paths: list[Path],
    chart: str = "",
    maps: str = "",
) -> str:
    metric_cols = [
        ("overall_accuracy", "overall accuracy", True),
        ("kappa", "kappa", False),
        ("macro_f1", "macro F-score", True),
        (COMMISSION, "predicted as classes without validation samples", True),
    ]
    class_cols = [(f"f1_{c}", f"{class_names.get(c, '')} ({c})".strip(), True) for c in codes]
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    reports = "\n".join(f"<li>{html.escape(str(p))}</li>" for p in paths)
    rows = df[df["tile"] != ALL_TILES][["architecture", "tile", "macro_f1_classes"]].itertuples(index=False)
    sets = {c for _, _, c in df[["architecture", "tile", "macro_f1_classes"]].itertuples(index=False)}
    averaged = next(iter(sets)) if len(sets) == 1 else "; ".join(f"{a} {t}: {c}" for a, t, c in rows)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>cropchain accuracy summary</title>
<style>{_CSS}</style></head><body>
<h1>cropchain accuracy summary</h1>
<p>Mean ± standard deviation over runs (each run redraws the learning/validation split).
Rows <em>all</em> pool the tiles of each run (summed confusion matrices). \
Best architecture per tile and metric in bold.</p>
<p class="definition">{html.escape(MACRO_F1_DEFINITION[0].upper() + MACRO_F1_DEFINITION[1:])}; \
classes averaged: {html.escape(averaged)}.</p>
<h2>Overall accuracy, kappa, macro F-score</h2>
<img class="chart" alt="metrics per architecture" src="{chart}">
{_table(df, metric_cols, unranked=(COMMISSION,))}
<h2>F-score per class</h2>
{_table(df, class_cols)}
{maps}
<h2>Input reports ({len(paths)})</h2>
<ul>
{reports}
</ul>
<p class="meta">Generated {now} by cropchain {html.escape(cropchain.__version__)}.</p>
</body></html>
"""


# --------------------------------------------------------------------------------------
# Map pages: one per run, tile and architecture (quicklook, confusion matrix, accuracies, areas)
# --------------------------------------------------------------------------------------

#: longest side of a quicklook in px (read from the COG's overviews, nearest neighbour)
QUICKLOOK_SIZE = 800
#: products of a tile listed (linked) on its map page when they exist beside the classification
MAP_PRODUCTS = ("classification", "confidence", "uncertainty", "probabilities", "validity")


def _data_uri(png: str | os.PathLike) -> str:
    """A PNG file as a ``data:`` URI: the page shows it without the file (self-contained)."""
    return "data:image/png;base64," + base64.b64encode(Path(png).read_bytes()).decode("ascii")


def write_quicklook(
    classification: str | os.PathLike,
    nomenclature: Nomenclature,
    out_png: str | os.PathLike,
    *,
    counts: dict[int, int] | None = None,
    title: str = "",
    max_size: int = QUICKLOOK_SIZE,
) -> None:
    """A PNG quicklook of a class map with its legend (class names and colours).

    Parameters
    ----------
    classification : uint8 class map (codes, nodata 0); read decimated to at most
        ``max_size`` px on its longest side (nearest neighbour; GDAL uses the COG's
        overviews), so memory is bounded by the quicklook, not by the tile.
    nomenclature : codes, names and RGB colours of the classes.
    out_png : the figure (written atomically): the map in the nomenclature's colours (nodata
        white), scale in km on the axes, legend of the classes mapped (those of ``counts``,
        default: those seen in the quicklook) with their mapped share in %.
    counts : class code -> mapped pixels of the full-resolution map (the legend's shares).
    title : figure title.

    Raises
    ------
    InputError
        missing/unreadable map.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure
    from matplotlib.patches import Patch

    path = Path(classification)
    with open_raster(path, "classification map") as src:
        scale = max(src.width, src.height) / max_size
        shape = (max(1, round(src.height / max(scale, 1))), max(1, round(src.width / max(scale, 1))))
        img = src.read(1, out_shape=shape, resampling=Resampling.nearest)
        left, bottom, right, top = src.bounds
        nodata = NODATA_CLASS if src.nodata is None else int(src.nodata)
    lut = np.full((256, 3), 255, dtype=np.uint8)
    for code, rgb in zip(nomenclature.codes, nomenclature.colors):
        lut[code] = rgb
    rgb_img = lut[img]
    rgb_img[img == nodata] = 255
    if counts is None:
        values, n = np.unique(img[img != nodata], return_counts=True)
        counts = dict(zip(values.tolist(), n.tolist()))
    total = sum(counts.values()) or 1
    handles = [
        Patch(
            facecolor=np.asarray(rgb) / 255,
            edgecolor="#444",
            label=f"{name} ({100 * counts[code] / total:.1f} %)",
        )
        for code, name, rgb in zip(nomenclature.codes, nomenclature.names, nomenclature.colors)
        if counts.get(code)
    ]
    width_in = 7.5
    fig = Figure(figsize=(width_in + 2.8, width_in * shape[0] / shape[1] + 0.6), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    ax.imshow(rgb_img, extent=(0, (right - left) / 1000, 0, (top - bottom) / 1000), interpolation="nearest")
    ax.set_xlabel("km")
    ax.set_ylabel("km")
    if title:
        ax.set_title(title, fontsize=10)
    fig.legend(
        handles=handles,
        loc="outside right upper",
        fontsize=8,
        title="class (mapped share)",
        title_fontsize=8,
        frameon=False,
    )
    with atomic_output(out_png) as tmp:
        fig.savefig(tmp, format="png", dpi=100)


def _fmt_pct(v: Any, ci: Any = None) -> str:
    if v is None or (isinstance(v, float) and math.isnan(v)):
        return "–"
    s = f"{100 * v:.1f}"
    return s + (
        f" ± {100 * ci:.1f}" if ci is not None and not (isinstance(ci, float) and math.isnan(ci)) else ""
    )


def _fmt_ha(v: Any, ci: Any = None) -> str:
    if v is None:
        return "–"
    s = f"{v:,.1f}"
    return s + (f" ± {ci:,.1f}" if ci is not None else "")


def _class_table(
    report: dict[str, Any],
    nomenclature: Nomenclature,
    counts: dict[int, int],
    pixel_ha: float,
    areas: dict[str, Any] | None,
) -> str:
    """Per-class rows: colour, name, user's/producer's accuracy and F-score on the validation pixels,
    mapped area and, with an assessment, the Olofsson estimates with their 95 % intervals."""
    per_class = {int(k): v for k, v in report["per_class"].items()}
    est = {} if areas is None else {int(k): v for k, v in areas["areas"].items()}
    ua = {} if areas is None else {int(k): v for k, v in areas["users_accuracy"].items()}
    pa = {} if areas is None else {int(k): v for k, v in areas["producers_accuracy"].items()}
    head = [
        "",
        "class",
        "code",
        "user's accuracy (%)",
        "producer's accuracy (%)",
        "F-score (%)",
        "validation pixels",
        "mapped area (ha)",
    ]
    if areas is not None:
        head += [
            "estimated area (ha, ± 95 %)",
            "user's accuracy, area-weighted (%, ± 95 %)",
            "producer's accuracy, area-weighted (%, ± 95 %)",
        ]
    out = [
        '<table class="classes"><thead><tr>'
        + "".join(f"<th>{html.escape(h)}</th>" for h in head)
        + "</tr></thead><tbody>"
    ]
    for code, name, rgb in zip(nomenclature.codes, nomenclature.names, nomenclature.colors):
        d = per_class.get(code)
        if d is None and not counts.get(code) and code not in est:
            continue
        swatch = (
            f'<td><span class="swatch" style="background:#{rgb[0]:02x}{rgb[1]:02x}{rgb[2]:02x}"></span></td>'
        )
        cells = [
            html.escape(name),
            str(code),
            _fmt_pct(d["precision"]) if d else "–",
            _fmt_pct(d["recall"]) if d else "–",
            _fmt_pct(d["f1"]) if d else "–",
            f"{d['support']:,}" if d else "0",
            _fmt_ha(counts.get(code, 0) * pixel_ha),
        ]
        if areas is not None:
            a = est.get(code)
            cells += [
                _fmt_ha(a["estimated_ha"], a["ci95_ha"]) if a else "–",
                _fmt_pct(ua[code]["value"], ua[code]["ci95"]) if code in ua else "–",
                _fmt_pct(pa[code]["value"], pa[code]["ci95"]) if code in pa else "–",
            ]
        out.append("<tr>" + swatch + "".join(f"<td>{c}</td>" for c in cells) + "</tr>")
    out.append("</tbody></table>")
    return "\n".join(out)


def _check_report_areas(report: dict[str, Any], assessment: dict[str, Any] | None, report_json: Path) -> None:
    """The estimated areas a report carries (rule evaluate with ``assessment.samples``) are those of the
    page's assessment (:func:`cropchain.assessment.olofsson.report_areas`): one source for the page.
    Raises InputError when the page has no assessment or the two differ (one of them is stale)."""
    from cropchain.assessment.olofsson import report_areas

    if "areas" not in report:
        return
    if assessment is None:
        raise InputError(
            report_json, "carries estimated areas but the page has no assessment", "give its areas JSON"
        )
    if report["areas"] != report_areas(assessment)["areas"]:
        raise InputError(
            report_json,
            "its estimated areas differ from those of the assessment",
            "rerun evaluate after assessment_estimate",
        )


def _headline_rows(report: dict[str, Any], mapped_ha: float, areas: dict[str, Any] | None) -> str:
    """Table rows of a map page's headline: accuracies, validation pixels, mapped area (ha)."""

    def fmt(v: Any, pct: bool) -> str:
        return _fmt_pct(v) + " %" if pct else ("–" if v is None else f"{v:.3f}")

    metrics = "".join(
        f"<tr><th>{label}</th><td>{fmt(report[key], pct)}</td></tr>"
        for key, label, pct in (
            ("overall_accuracy", "overall accuracy", True),
            ("kappa", "kappa", False),
            ("macro_f1", "macro F-score", True),
        )
    )
    metrics += f"<tr><th>validation pixels</th><td>{report.get('n_pixels', 0):,}</td></tr>"
    metrics += f"<tr><th>mapped area</th><td>{_fmt_ha(mapped_ha)} ha</td></tr>"
    if areas is not None:
        oa = areas["overall_accuracy"]
        metrics += (
            "<tr><th>overall accuracy, area-weighted (Olofsson)</th>"
            f"<td>{_fmt_pct(oa['value'], oa['ci95'])} % "
            f"({areas.get('n', '?')} sample points)</td></tr>"
        )
    return metrics


def _product_links(classification: Path, tile: str, out_html: Path) -> str:
    """List items linking (relative links) the map products written beside ``classification``."""
    products = []
    for name in MAP_PRODUCTS:
        f = classification.with_name(f"{tile}_{name}.tif")
        if f.is_file():
            href = html.escape(os.path.relpath(f, out_html.parent))
            products.append(f'<li><a href="{href}">{html.escape(f.name)}</a></li>')
    return "".join(products)


# 101 lines, of which 38 are the signature and docstring (shapes, units, errors): 63 of code
def write_map_page(
    classification: str | os.PathLike,
    report_json: str | os.PathLike,
    confusion_png: str | os.PathLike,
    nomenclature: Nomenclature | str | os.PathLike,
    out_html: str | os.PathLike,
    out_quicklook: str | os.PathLike,
    *,
    areas_json: str | os.PathLike | None = None,
    curves_png: str | os.PathLike | None = None,
    summary_html: str | os.PathLike | None = None,
) -> None:
    """The page of one map (run, tile, architecture): what a user looks at first.

    Parameters
    ----------
    classification : the tile's class map (``{tile}_classification.tif``); its mapped areas
        are counted by pixels (:func:`cropchain.assessment.olofsson.class_pixel_counts`).
    report_json : its accuracy report (:func:`cropchain.assessment.evaluate.write_report`).
    confusion_png : the confusion-matrix heat map written with the report.
    nomenclature : :class:`~cropchain.nomenclature.Nomenclature` or path of its CSV.
    out_html : the page, self-contained (images embedded as ``data:`` URIs, so it can be
        mailed or gathered by ``snakemake --report``): overall accuracy, kappa and macro
        F-score; quicklook with legend; per-class user's and producer's accuracies, F-scores
        and mapped areas (ha), with the estimated areas and area-weighted accuracies and their
        95 % intervals of Olofsson et al. (2014) when ``areas_json`` is given (the report's own
        ``areas``, if any, must be those of ``areas_json``); the confusion
        matrix; the training curves of a network; links to the map products beside the
        classification and to the summary.
    out_quicklook : the quicklook PNG (:func:`write_quicklook`), also a file of its own.
    areas_json : the map's assessment (:func:`cropchain.assessment.olofsson.write_assessment`).
    curves_png : training curves of a network (``training_curves.png``).
    summary_html : the summary page, linked (relative link) from this page.

    Raises
    ------
    InputError
        a missing or invalid input (report, images, map, assessment), or a report whose ``areas``
        are not those of ``areas_json``.
    """
    from cropchain.assessment.olofsson import class_pixel_counts, read_assessment

    nomenclature = nomenclature if isinstance(nomenclature, Nomenclature) else read_nomenclature(nomenclature)
    classification, out_html = Path(classification), Path(out_html)
    report = _read_report(Path(report_json))
    images = [Path(confusion_png)] + ([Path(curves_png)] if curves_png else [])
    for png in images:
        if not png.is_file():
            raise InputError(
                png, "image not found", "rerun the step that writes it (evaluate, train_network)"
            )
    areas = read_assessment(areas_json) if areas_json else None
    _check_report_areas(report, areas, Path(report_json))
    counts, pixel_ha = class_pixel_counts(classification)
    arch, tile, run = report["architecture"], report["tile"], report["run"]
    title = f"{arch} · {tile} · run {run}"
    write_quicklook(classification, nomenclature, out_quicklook, counts=counts, title=title)
    metrics = _headline_rows(report, sum(counts.values()) * pixel_ha, areas)
    products = _product_links(classification, tile, out_html)
    area_note = (
        "<p>Estimated areas and area-weighted accuracies: Olofsson et al. (2014), stratified estimators "
        "with the map classes as strata, from the labelled sample "
        f"<code>{html.escape(str(areas.get('samples', '')))}</code>.</p>"
        if areas is not None
        else "<p>Mapped areas count the map's pixels (no assessment sample configured: no "
        "error-adjusted estimate).</p>"
    )
    curves = (
        f'<h2>Training curves</h2>\n<img class="figure" alt="training curves" src="{_data_uri(curves_png)}">'
        if curves_png
        else ""
    )
    back = (
        f'<p><a href="{html.escape(os.path.relpath(summary_html, out_html.parent))}">'
        "← summary of all maps</a></p>"
        if summary_html
        else ""
    )
    now = dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC")
    page = f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>{html.escape(title)}</title>
<style>{_CSS}{_MAP_CSS}</style></head><body>
{back}
<h1>{html.escape(title)}</h1>
<table class="metrics"><tbody>{metrics}</tbody></table>
<h2>Map</h2>
<img class="figure" alt="quicklook of the map" src="{_data_uri(out_quicklook)}">
<h2>Accuracy and area per class</h2>
<p>User's accuracy = precision (share of the pixels mapped as the class that are the class), \
producer's accuracy =
recall (share of the class's validation pixels mapped as the class), on the validation polygons' pixels.</p>
{_class_table(report, nomenclature, counts, pixel_ha, areas)}
{area_note}
<h2>Confusion matrix</h2>
<img class="figure" alt="confusion matrix" src="{_data_uri(confusion_png)}">
{curves}
<h2>Products</h2>
<ul>{products}</ul>
<p class="meta">Generated {now} by cropchain {html.escape(cropchain.__version__)} \
from {html.escape(str(report_json))}.</p>
</body></html>
"""
    write_text_atomic(out_html, page)
    log.info("map page %s", out_html)


_MAP_CSS = """
img.figure { max-width: 100%; border: 1px solid #ddd; margin-bottom: 1.5em; }
span.swatch { display: inline-block; width: 1.2em; height: 1.2em; border: 1px solid #444; \
vertical-align: middle; }
table.metrics th { text-align: left; }
table.classes td:nth-child(2) { text-align: left; }
"""
