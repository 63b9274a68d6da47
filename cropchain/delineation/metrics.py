"""Instance-level scores of field polygons: RC matching, precision / recall / F1, fragmentation,
agglomeration.

**RC matching** (CESBIO study "Feedback on Mask R-CNN for croplands delineation"): a
predicted polygon P matches a target (reference) polygon T when

    RC(T, P) = min(area(T ∩ P) / area(T), area(T ∩ P) / area(P)) >= rc_threshold,

among the predictions whose confidence is >= a confidence threshold. Matches are one to one
(greedy by decreasing RC; with rc_threshold > 0.5 a target can only have one candidate
anyway, for non-overlapping predictions). Precision = matched predictions / counted
predictions, recall = matched targets / targets, F1 their harmonic mean (0 when both are 0).
The study reports (confidence 0.8, RC 0.8) and (confidence 0.7, RC 0.5); :func:`score_curves`
gives both thresholds on grids.

**Targets**: the validation parcels of the run's split (``split == "validation"``), the
same ones as the pixel reports. **Counted predictions**: the reference covers only part of
the land, so a prediction over unlabelled land can neither be called right nor wrong. As
the study evaluates inside annotated zones, a prediction counts (for precision,
fragmentation and agglomeration) when at least half of its area lies inside validation
parcels, or when it covers at least half of a validation parcel (so that a prediction
merging a validation parcel with its unlabelled neighbours still counts, as a false
positive). Predictions lying mostly over learning parcels or unlabelled land are left out.

**Beyond the study** (it says it cannot measure them):

- *Fragmentation*: a counted prediction P is a fragment of target T when most of P lies
  in T (``area(T ∩ P) >= 0.5 area(P)``). The per-target count is the number of fragments
  of T; T is fragmented when it has 2 or more. Fragmentation rate = fragmented targets /
  targets.
- *Agglomeration*: a counted prediction P covers target T when most of T lies in P
  (``area(T ∩ P) >= 0.5 area(T)``). P agglomerates when it covers 2 or more targets.
  Agglomeration rate = agglomerating predictions / counted predictions covering at least one
  target; agglomerated-target rate = targets covered by an agglomerating prediction /
  targets. The per-target count is the number of targets in the prediction that covers T
  (0: none covers it, 1: alone, >= 2: agglomerated). Only validation parcels are known as
  separate fields, so merges with unlabelled or learning fields are not seen: both rates
  are lower bounds.

Both use the predictions with a confidence >= the threshold of the pair they are reported
with. Areas in the unit of the CRS (m² in a projected CRS).
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely

from cropchain.errors import InputError
from cropchain.io.atomic import atomic_output, write_text_atomic
from cropchain.reference.split import VALIDATION, read_split

log = logging.getLogger(__name__)

#: the study's (confidence, RC) threshold pairs
THRESHOLD_PAIRS: tuple[tuple[float, float], ...] = ((0.8, 0.8), (0.7, 0.5))
CONFIDENCE_GRID = tuple(np.round(np.arange(0.05, 1.0, 0.05), 2))
RC_GRID = tuple(np.round(np.arange(0.1, 1.0, 0.1), 2))
#: share of a prediction (inside validation parcels) or of a target (covered) for counting / covering
INSIDE = 0.5


def intersection_areas(targets: Sequence[Any], predictions: Sequence[Any]) -> np.ndarray:
    """Pairwise intersection areas, float64 ``[n_targets, n_predictions]`` (0 where disjoint)."""
    t = np.asarray(targets, dtype=object)
    p = np.asarray(predictions, dtype=object)
    inter = np.zeros((len(t), len(p)), dtype=np.float64)
    if len(t) == 0 or len(p) == 0:
        return inter
    tree = shapely.STRtree(p)
    ti, pi = tree.query(t, predicate="intersects")
    if len(ti):
        inter[ti, pi] = shapely.area(shapely.intersection(t[ti], p[pi]))
    return inter


def rc_matrix(inter: np.ndarray, target_area: np.ndarray, pred_area: np.ndarray) -> np.ndarray:
    """RC = min(|T∩P| / |T|, |T∩P| / |P|), float64 ``[n_targets, n_predictions]``."""
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(target_area[:, None] > 0, inter / target_area[:, None], 0.0)
        b = np.where(pred_area[None, :] > 0, inter / pred_area[None, :], 0.0)
    return np.minimum(a, b)


def match(rc: np.ndarray, rc_threshold: float) -> list[tuple[int, int]]:
    """One-to-one matches (target, prediction) with RC >= ``rc_threshold``, greedy by decreasing RC."""
    ti, pi = np.nonzero(rc >= rc_threshold)
    order = np.argsort(-rc[ti, pi], kind="stable")
    used_t, used_p, out = set(), set(), []
    for k in order:
        t, p = int(ti[k]), int(pi[k])
        if t in used_t or p in used_p:
            continue
        used_t.add(t)
        used_p.add(p)
        out.append((t, p))
    return out


def prf(n_matches: int, n_predictions: int, n_targets: int) -> dict[str, float]:
    """Precision, recall, F1 (fractions 0-1; 0 for an empty denominator)."""
    p = n_matches / n_predictions if n_predictions else 0.0
    r = n_matches / n_targets if n_targets else 0.0
    return {"precision": p, "recall": r, "f1": 2 * p * r / (p + r) if p + r else 0.0}


class InstanceScores:
    """Geometry relations between targets and predictions, computed once and scored at any thresholds.

    Parameters
    ----------
    targets : polygons of the target fields (validation parcels).
    predictions : predicted polygons (same CRS).
    scores : float ``[n_predictions]`` confidence 0-1.
    """

    def __init__(self, targets: Sequence[Any], predictions: Sequence[Any], scores: Sequence[float]):
        self.targets = np.asarray(list(targets), dtype=object)
        self.predictions = np.asarray(list(predictions), dtype=object)
        self.scores = np.asarray(scores, dtype=np.float64)
        self.t_area = shapely.area(self.targets) if len(self.targets) else np.zeros(0)
        self.p_area = shapely.area(self.predictions) if len(self.predictions) else np.zeros(0)
        self.inter = intersection_areas(self.targets, self.predictions)
        self.rc = rc_matrix(self.inter, self.t_area, self.p_area)
        with np.errstate(divide="ignore", invalid="ignore"):
            self.share_of_p = np.where(
                self.p_area[None, :] > 0, self.inter / self.p_area[None, :], 0.0
            )  # |T∩P| / |P|
            self.share_of_t = np.where(
                self.t_area[:, None] > 0, self.inter / self.t_area[:, None], 0.0
            )  # |T∩P| / |T|
        inside = self.inter.sum(axis=0)  # targets do not overlap each other (reference parcels)
        with np.errstate(divide="ignore", invalid="ignore"):
            inside_share = np.where(self.p_area > 0, inside / self.p_area, 0.0)
        #: bool [n_predictions]: inside the evaluation zone (module docstring)
        self.counted = (
            (inside_share >= INSIDE) | (self.share_of_t >= INSIDE).any(axis=0)
            if len(self.targets)
            else np.zeros(len(self.predictions), bool)
        )

    def selected(self, confidence: float) -> np.ndarray:
        """Indices of the counted predictions with a score >= ``confidence``."""
        return np.flatnonzero(self.counted & (self.scores >= confidence))

    def at(self, confidence: float, rc_threshold: float) -> dict[str, Any]:
        """Scores at one threshold pair: precision, recall, f1, counts, fragmentation and agglomeration."""
        sel = self.selected(confidence)
        matches = match(self.rc[:, sel], rc_threshold)
        out: dict[str, Any] = {
            "confidence": confidence,
            "rc": rc_threshold,
            "n_targets": len(self.targets),
            "n_predictions": int(sel.size),
            "n_matches": len(matches),
        }
        out.update(prf(len(matches), int(sel.size), len(self.targets)))
        out.update(self.fragmentation_agglomeration(confidence))
        return out

    def fragmentation_agglomeration(self, confidence: float) -> dict[str, Any]:
        """Fragmentation and agglomeration at a confidence threshold (definitions in the module docstring)."""
        sel = self.selected(confidence)
        n_t = len(self.targets)
        fragments = (self.share_of_p[:, sel] >= INSIDE) & (
            self.inter[:, sel] > 0
        )  # [T, P]: P mostly inside T
        covers = self.share_of_t[:, sel] >= INSIDE  # [T, P]: T mostly inside P
        n_fragments = fragments.sum(axis=1)
        n_covered = covers.sum(axis=0)  # targets per prediction
        covering = n_covered >= 1
        agglomerating = n_covered >= 2
        agglomerated_with = np.zeros(
            n_t, dtype=np.int64
        )  # per target: targets in the prediction covering it most
        for t in range(n_t):
            cand = np.flatnonzero(covers[t])
            if cand.size:
                best = cand[np.argmax(self.share_of_t[t, sel[cand]])]
                agglomerated_with[t] = n_covered[best]
        return {
            "fragmentation_rate": float((n_fragments >= 2).sum() / n_t) if n_t else 0.0,
            "mean_fragments_per_target": float(n_fragments.mean()) if n_t else 0.0,
            "agglomeration_rate": float(agglomerating.sum() / covering.sum()) if covering.any() else 0.0,
            "agglomerated_target_rate": float((agglomerated_with >= 2).sum() / n_t) if n_t else 0.0,
            "mean_targets_per_covering_prediction": float(n_covered[covering].mean())
            if covering.any()
            else 0.0,
            "per_target_fragments": n_fragments.astype(int).tolist(),
            "per_target_agglomerated_with": agglomerated_with.astype(int).tolist(),
        }


def score_curves(
    scores: InstanceScores, confidences: Sequence[float] = CONFIDENCE_GRID, rcs: Sequence[float] = RC_GRID
) -> pd.DataFrame:
    """Precision, recall, F1, fragmentation and agglomeration rates over a grid of
    (confidence, RC) thresholds: one row per pair."""
    rows = []
    for c in confidences:
        fa = scores.fragmentation_agglomeration(float(c))
        sel = scores.selected(float(c))
        for r in rcs:
            m = match(scores.rc[:, sel], float(r))
            rows.append(
                {
                    "confidence": float(c),
                    "rc": float(r),
                    "n_predictions": int(sel.size),
                    "n_matches": len(m),
                    **prf(len(m), int(sel.size), len(scores.targets)),
                    "fragmentation_rate": fa["fragmentation_rate"],
                    "agglomeration_rate": fa["agglomeration_rate"],
                }
            )
    return pd.DataFrame(rows)


def plot_curves(curves: pd.DataFrame, png: str | os.PathLike, title: str) -> None:
    """Two panels: F1 over the confidence threshold (one line per RC threshold), and precision,
    recall, F1 over the RC threshold at confidence 0.7; written atomically."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 4))
    for r, g in curves.groupby("rc"):
        a.plot(g["confidence"], g["f1"], label=f"RC {r:.1f}")
    a.set(xlabel="confidence threshold", ylabel="F1", ylim=(0, 1), title="F1")
    a.legend(fontsize=7, ncol=2)
    near = curves["confidence"].sub(0.7).abs()
    g = curves[near == near.min()]
    for key in ("precision", "recall", "f1"):
        b.plot(g["rc"], g[key], marker="o", label=key)
    b.set(xlabel="RC threshold", ylim=(0, 1), title=f"confidence {g['confidence'].iloc[0]:.2f}")
    b.legend()
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_output(png) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)


def pair_key(confidence: float, rc: float) -> str:
    """Key of a threshold pair in the report JSON: ``conf0.8_rc0.8``."""
    return f"conf{confidence:g}_rc{rc:g}"


def read_predictions(path: str | os.PathLike, score_column: str | None = "score") -> gpd.GeoDataFrame:
    """Predicted polygons with a ``score`` column (1.0 where the file has no ``score_column``,
    as for the polygons of a vectorized pixel map).

    Raises
    ------
    InputError
        missing or unreadable file.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(path, "prediction file not found", "run the step that writes it first")
    try:
        gdf = pyogrio.read_dataframe(path)
    except Exception as exc:
        raise InputError(
            path, f"cannot be read as a vector file ({exc})", "rerun the step that writes it"
        ) from None
    if score_column and score_column in gdf.columns:
        gdf["score"] = gdf[score_column].astype(np.float64)
    else:
        gdf["score"] = 1.0
    return gdf


def evaluate_instances(
    predictions: str | os.PathLike,
    split: str | os.PathLike,
    out_json: str | os.PathLike,
    curves_csv: str | os.PathLike,
    curves_png: str | os.PathLike,
    targets_csv: str | os.PathLike,
    *,
    name: str,
    tile: str,
    run: str | int,
    kind: str = "mask_rcnn",
) -> dict[str, Any]:
    """Score predicted field polygons against the validation parcels of a run's split.

    Writes ``out_json`` (the two threshold pairs of the study with precision, recall, F1,
    fragmentation and agglomeration; counts), ``curves_csv`` / ``curves_png``
    (:func:`score_curves`) and ``targets_csv`` (per validation parcel: ``polygon_id``,
    area in ha, best RC, number of fragments and agglomerated-with count at each pair's
    confidence), all atomically.

    Parameters
    ----------
    predictions : GeoPackage of predicted polygons (``score`` column; none: score 1).
    split : the run's ``split.gpkg`` of the tile.
    name : the delineation variant or baseline name (report key ``architecture``).
    kind : ``mask_rcnn`` or ``vectorized_map`` (the baseline).
    """
    pred = read_predictions(predictions)
    targets = read_split(split, VALIDATION)
    if pred.crs is not None and targets.crs is not None and pred.crs != targets.crs:
        pred = pred.to_crs(targets.crs)
    scores = InstanceScores(list(targets.geometry), list(pred.geometry), pred["score"].to_numpy())
    report: dict[str, Any] = {
        "tile": tile,
        "run": str(run),
        "architecture": name,
        "kind": kind,
        "predictions": str(predictions),
        "split": str(split),
        "n_targets": len(targets),
        "n_predictions_total": len(pred),
        "n_predictions_counted": int(scores.counted.sum()),
        "pairs": {},
    }
    per_target = pd.DataFrame(
        {
            "polygon_id": targets["polygon_id"].to_numpy(),
            "area_ha": scores.t_area / 1e4,
            "best_rc": scores.rc.max(axis=1) if len(pred) else np.zeros(len(targets)),
        }
    )
    for c, r in THRESHOLD_PAIRS:
        res = scores.at(c, r)
        key = pair_key(c, r)
        per_target[f"fragments_{key}"] = res.pop("per_target_fragments")
        per_target[f"agglomerated_with_{key}"] = res.pop("per_target_agglomerated_with")
        report["pairs"][key] = res
        report[f"f1_{key}"] = res["f1"]
    curves = score_curves(scores)
    with atomic_output(curves_csv) as tmp:
        curves.to_csv(tmp, index=False)
    with atomic_output(targets_csv) as tmp:
        per_target.to_csv(tmp, index=False)
    plot_curves(curves, curves_png, f"{name}, run {run}, {tile}")
    write_text_atomic(out_json, json.dumps(report, indent=2))
    log.info(
        "%s run %s %s: %d targets, %d/%d predictions counted; %s",
        name,
        run,
        tile,
        len(targets),
        report["n_predictions_counted"],
        len(pred),
        "; ".join(
            f"{k}: P {v['precision']:.2f} R {v['recall']:.2f} F1 {v['f1']:.2f}"
            for k, v in report["pairs"].items()
        ),
    )
    return report


SUMMARY_METRICS = (
    "precision",
    "recall",
    "f1",
    "fragmentation_rate",
    "agglomeration_rate",
    "agglomerated_target_rate",
)


def summarize_delineation(
    reports: Sequence[str | os.PathLike],
    metrics: Sequence[str | os.PathLike],
    out_csv: str | os.PathLike,
    out_html: str | os.PathLike,
) -> pd.DataFrame:
    """Mean and standard deviation over runs of every score, per architecture (variant or
    baseline), tile and threshold pair; mean training time per variant.

    Parameters
    ----------
    reports : the report JSONs of :func:`evaluate_instances`.
    metrics : the ``metrics.json`` of the trained models (``training_time_s``).

    Writes ``out_csv`` (one row per architecture, tile and pair: ``<metric>_mean``,
    ``<metric>_std``, ``n_runs``, ``training_time_s_mean`` / ``_std``) and ``out_html``.
    """
    rows = []
    for path in reports:
        rep = json.loads(Path(path).read_text())
        for key, res in rep["pairs"].items():
            rows.append(
                {
                    "architecture": rep["architecture"],
                    "kind": rep["kind"],
                    "tile": rep["tile"],
                    "run": rep["run"],
                    "pair": key,
                    **{m: res[m] for m in SUMMARY_METRICS},
                    "n_targets": res["n_targets"],
                    "n_predictions": res["n_predictions"],
                }
            )
    times = [json.loads(Path(p).read_text()) for p in metrics]
    table = pd.DataFrame(rows)
    if table.empty:
        raise InputError(
            out_csv, "no delineation report to summarize", "check the delineation section of the config"
        )
    agg = table.groupby(["architecture", "kind", "tile", "pair"], sort=False)
    out = agg[list(SUMMARY_METRICS) + ["n_predictions"]].agg(["mean", "std"])
    out.columns = [f"{a}_{b}" for a, b in out.columns]
    out["n_targets"] = agg["n_targets"].mean()
    out["n_runs"] = agg["run"].nunique()
    out = out.reset_index()
    if times:
        tt = pd.DataFrame(
            [{"architecture": t["variant"], "training_time_s": t["training_time_s"]} for t in times]
        )
        tt = (
            tt.groupby("architecture")["training_time_s"]
            .agg(["mean", "std"])
            .add_prefix("training_time_s_")
            .reset_index()
        )
        out = out.merge(tt, on="architecture", how="left")
    with atomic_output(out_csv) as tmp:
        out.to_csv(tmp, index=False, float_format="%.4f")
    html = [
        "<html><head><meta charset='utf-8'><title>Field delineation</title></head><body>",
        "<h1>Field delineation: Mask R-CNN and vectorized pixel maps</h1>",
        "<p>Instance scores against the validation parcels (RC matching, cropchain.delineation.metrics); "
        "mean &plusmn; standard deviation over runs.</p><table border='1' cellspacing='0' cellpadding='3'>",
        "<tr><th>architecture</th><th>tile</th><th>thresholds</th>"
        + "".join(f"<th>{m.replace('_', ' ')}</th>" for m in SUMMARY_METRICS)
        + "<th>runs</th><th>training time (s)</th></tr>",
    ]
    for _, r in out.iterrows():
        cells = "".join(
            f"<td>{r[m + '_mean']:.3f} &plusmn; {0 if pd.isna(r[m + '_std']) else r[m + '_std']:.3f}</td>"
            for m in SUMMARY_METRICS
        )
        tt = r.get("training_time_s_mean")
        html.append(
            f"<tr><td>{r['architecture']}</td><td>{r['tile']}</td><td>{r['pair']}</td>{cells}<td>{r['n_runs']}</td>"
            f"<td>{'' if tt is None or pd.isna(tt) else f'{tt:.0f}'}</td></tr>"
        )
    html.append("</table></body></html>")
    write_text_atomic(out_html, "\n".join(html))
    return out
