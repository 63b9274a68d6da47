"""Summary of the map reports across tiles, runs and architectures (iota2's "mean ± std over seeds").

For each architecture and tile, the metrics of the runs (learning/validation splits
redrawn with their own seed) are averaged; the spread is the sample standard deviation
(``ddof=1``; undefined, NaN, with a single run). The row ``tile == "all"`` of an
architecture pools its tiles run by run: the confusion matrices of the tiles of a run are
summed and the metrics recomputed (pixel-weighted, as if the tiles were one map), then
averaged over runs.

Every macro F-score is :func:`cropchain.evaluate.macro_f1`'s: the mean F-score of the classes
that have validation pixels (``macro_f1_classes`` of each report); the pixels mapped to
classes without validation pixels are summed apart (``commission_unvalidated_share``).
"""

from __future__ import annotations

import datetime as dt
import html
import json
import logging
import math
import os
from collections import defaultdict
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

import cropchain
from cropchain.errors import InputError
from cropchain.evaluate import MACRO_F1_DEFINITION, metrics_from_matrix
from cropchain.io.atomic import atomic_output, write_text_atomic

log = logging.getLogger(__name__)

ALL_TILES = "all"
METRICS = ("overall_accuracy", "kappa", "macro_f1")
REQUIRED = ("tile", "run", "architecture", *METRICS, "macro_f1_classes", "per_class", "commission_unvalidated", "confusion_matrix")
COMMISSION = "commission_unvalidated_share"


def _read_report(path: Path) -> dict[str, Any]:
    if not path.exists():
        raise InputError(path, "report not found", "run the evaluation of this tile, run and architecture first")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not a valid JSON file ({exc})", "rerun the evaluation that writes it") from None
    missing = [k for k in REQUIRED if k not in report]
    if missing:
        raise InputError(path, f"missing key(s) {missing}", "rerun the evaluation with this version of cropchain")
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


def summarize(
    report_jsons: Sequence[str | os.PathLike],
    out_csv: str | os.PathLike,
    out_html: str | os.PathLike,
) -> pd.DataFrame:
    """Mean and standard deviation over runs of every metric, per architecture and tile.

    Parameters
    ----------
    report_jsons : report JSONs written by :func:`cropchain.evaluate.write_report`.
    out_csv : summary table (one row per architecture and tile, plus tile ``"all"``).
    out_html : standalone HTML page: metric table (``mean ± std``; overall accuracy and
        F-scores in %, kappa with 3 decimals; the best architecture per tile and metric in
        bold), per-class F1 table, list of input reports, generation date, cropchain version.

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
    seen: dict[tuple[str, str, str], Path] = {}
    per_tile: dict[tuple[str, str], list[dict[str, float]]] = defaultdict(list)
    averaged: dict[tuple[str, str], set[int]] = defaultdict(set)
    pooled: dict[tuple[str, str], dict[int, np.ndarray]] = {}
    class_names: dict[int, str] = {}
    for path in paths:
        rep = _read_report(path)
        arch, tile, run = str(rep["architecture"]), str(rep["tile"]), str(rep["run"])
        if (arch, tile, run) in seen:
            raise InputError(path, f"second report for architecture {arch}, tile {tile}, run {run} (first: {seen[arch, tile, run]})",
                             "pass each report once")
        seen[arch, tile, run] = path
        values, names = _row_values(rep)
        class_names.update(names)
        per_tile[arch, tile].append(values)
        averaged[arch, tile].update(int(c) for c in rep["macro_f1_classes"])
        averaged[arch, ALL_TILES].update(int(c) for c in rep["macro_f1_classes"])
        # pool the tiles of a run: sum confusion matrices on the union of their labels
        labels = [int(c) for c in rep["confusion_matrix"]["labels"]]
        cm = np.asarray(rep["confusion_matrix"]["matrix"], dtype=np.int64)
        acc = pooled.setdefault((arch, run), {})
        for i, a in enumerate(labels):
            for j, b in enumerate(labels):
                if cm[i, j]:
                    acc[(a, b)] = acc.get((a, b), 0) + int(cm[i, j])
    per_all: dict[str, list[dict[str, float]]] = defaultdict(list)
    for (arch, run), cells in sorted(pooled.items()):
        labels = sorted({a for a, _ in cells} | {b for _, b in cells})
        index = {c: i for i, c in enumerate(labels)}
        cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
        for (a, b), n in cells.items():
            cm[index[a], index[b]] = n
        m = metrics_from_matrix(cm, labels)
        values = {k: float(m[k]) for k in METRICS}
        values[COMMISSION] = float(sum(d["share"] for d in m["commission_unvalidated"].values()))
        values.update({f"f1_{c}": float(d["f1"]) for c, d in m["per_class"].items()})
        per_all[arch].append(values)

    rows = []
    groups = [((a, t), v) for (a, t), v in sorted(per_tile.items())] + [((a, ALL_TILES), v) for a, v in sorted(per_all.items())]
    codes = sorted({int(k[3:]) for _, runs in groups for r in runs for k in r if k.startswith("f1_")})
    for (arch, tile), runs in groups:
        row: dict[str, Any] = {"architecture": arch, "tile": tile, "n_runs": len(runs),
                               "macro_f1_classes": " ".join(str(c) for c in sorted(averaged[arch, tile]))}
        for key in [*METRICS, COMMISSION, *(f"f1_{c}" for c in codes)]:
            vals = np.array([r.get(key, np.nan) for r in runs], dtype=float)
            vals = vals[~np.isnan(vals)]
            row[f"{key}_mean"] = float(vals.mean()) if vals.size else float("nan")
            row[f"{key}_std"] = float(vals.std(ddof=1)) if vals.size > 1 else float("nan")
        rows.append(row)
    df = pd.DataFrame(rows)
    with atomic_output(out_csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6f")
    write_text_atomic(out_html, _html(df, codes, class_names, paths))
    log.info("summary of %d reports (%d architectures) -> %s, %s", len(paths), df["architecture"].nunique(), out_csv, out_html)
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
    """HTML table; the best (highest) mean per tile and column is bold (class ``best``), except in ``unranked`` columns."""
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
            out.append(f"<tr{tr_cls}><td>{html.escape(str(tile))}</td><td>{html.escape(r['architecture'])}</td>"
                       f"<td>{int(r['n_runs'])}</td>{''.join(cells)}</tr>")
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
"""


def _html(df: pd.DataFrame, codes: list[int], class_names: dict[int, str], paths: list[Path]) -> str:
    metric_cols = [("overall_accuracy", "overall accuracy", True), ("kappa", "kappa", False), ("macro_f1", "macro F-score", True),
                   (COMMISSION, "predicted as classes without validation samples", True)]
    class_cols = [(f"f1_{c}", f"{class_names.get(c, '')} ({c})".strip(), True) for c in codes]
    now = dt.datetime.now(dt.timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    reports = "\n".join(f"<li>{html.escape(str(p))}</li>" for p in paths)
    rows = df[df["tile"] != ALL_TILES][["architecture", "tile", "macro_f1_classes"]].itertuples(index=False)
    sets = {c for _, _, c in df[["architecture", "tile", "macro_f1_classes"]].itertuples(index=False)}
    averaged = next(iter(sets)) if len(sets) == 1 else "; ".join(f"{a} {t}: {c}" for a, t, c in rows)
    return f"""<!DOCTYPE html>
<html lang="en"><head><meta charset="utf-8"><title>cropchain accuracy summary</title>
<style>{_CSS}</style></head><body>
<h1>cropchain accuracy summary</h1>
<p>Mean ± standard deviation over runs (each run redraws the learning/validation split).
Rows <em>all</em> pool the tiles of each run (summed confusion matrices). Best architecture per tile and metric in bold.</p>
<p class="definition">{html.escape(MACRO_F1_DEFINITION[0].upper() + MACRO_F1_DEFINITION[1:])}; classes averaged: {html.escape(averaged)}.</p>
<h2>Overall accuracy, kappa, macro F-score</h2>
{_table(df, metric_cols, unranked=(COMMISSION,))}
<h2>F-score per class</h2>
{_table(df, class_cols)}
<h2>Input reports ({len(paths)})</h2>
<ul>
{reports}
</ul>
<p class="meta">Generated {now} by cropchain {html.escape(cropchain.__version__)}.</p>
</body></html>
"""
