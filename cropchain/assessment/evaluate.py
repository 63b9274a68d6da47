"""Map accuracy against the validation polygons: confusion matrix, overall accuracy, kappa, F-score.

Follows iota2's validation (and OTB ``ComputeConfusionMatrix``): the polygons drawn as
``validation`` by the run's split are rasterized on the map grid, and every labelled pixel
where the map has a class is one sample. Metrics are scikit-learn's (Cohen's kappa,
per-class precision / recall / F1 with ``zero_division=0``).

The macro F-score (:func:`macro_f1`, the one definition every report uses) is the
unweighted mean of the F-scores of the classes that have reference (validation) samples,
as iota2 and OTB ``ComputeConfusionMatrix`` report per reference class: a class that is
only predicted has no F-score to average (it would add a 0 that comes and goes with a few
stray pixels) and is reported as ``commission_unvalidated`` instead; a reference class
that is never predicted counts with F1 = 0.
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import rasterio.features
import rasterio.windows
import shapely

from cropchain.errors import InputError
from cropchain.io.atomic import atomic_output, write_text_atomic
from cropchain.io.raster import block_windows, open_raster
from cropchain.metrics import confusion_metrics, json_ready, name_classes
from cropchain.nomenclature import (
    NODATA_CLASS,
    Nomenclature,
    as_nomenclature,
    require_codes,
)
from cropchain.reference.split import VALIDATION

log = logging.getLogger(__name__)

_CODES = 256  # uint8 class codes


def _read_validation(split_gpkg: Path, nomenclature: Nomenclature, crs: Any) -> gpd.GeoDataFrame:
    if not split_gpkg.exists():
        raise InputError(split_gpkg, "split file not found", "run the split step of this run first")
    try:
        gdf = gpd.read_file(split_gpkg, engine="pyogrio")
    except Exception as exc:  # pyogrio raises DataSourceError and friends for broken files
        raise InputError(
            split_gpkg, f"cannot be read as a vector file ({exc})", "rerun the split step"
        ) from None
    missing = {"code", "split"} - set(gdf.columns)
    if missing:
        raise InputError(
            split_gpkg,
            f"missing column(s) {sorted(missing)}",
            "the split GeoPackage needs columns code and split (learn | validation)",
        )
    if gdf.crs is None:
        raise InputError(split_gpkg, "no CRS", "write the split with the CRS of the reference polygons")
    gdf = gdf[gdf["split"] == VALIDATION]
    if gdf.empty:
        raise InputError(
            split_gpkg,
            "no polygon with split == 'validation'",
            "check the split ratio: each class needs validation polygons",
        )
    require_codes(
        nomenclature,
        gdf["code"].astype(int),
        split_gpkg,
        "fuse the reference with the same nomenclature",
        "codes",
    )
    gdf = gdf[~gdf.geometry.is_empty & gdf.geometry.notna()]
    return gdf.to_crs(crs)


def _count_pairs(src: rasterio.io.DatasetReader, gdf: gpd.GeoDataFrame) -> tuple[np.ndarray, int]:
    """Pixel counts of (reference, predicted) pairs of the polygons ``gdf`` on the open map ``src``.

    Window by window: the polygons are rasterized on the window grid and the labelled pixels
    counted into ``[256 * 256]`` int64 counts (index ``reference * 256 + predicted``).
    Labelled pixels where the map is nodata are not counted; their number is returned too.
    """
    nodata = NODATA_CLASS if src.nodata is None else int(src.nodata)
    codes = gdf["code"].astype(int).to_numpy()
    geoms = gdf.geometry.to_numpy()
    tree = gdf.sindex
    counts = np.zeros(_CODES * _CODES, dtype=np.int64)  # (reference, predicted) pixel counts
    n_unclassified = 0
    for win in block_windows(src.height, src.width, 1024):
        bounds = rasterio.windows.bounds(win, src.transform)
        idx = tree.query(shapely.box(*bounds))
        if idx.size == 0:
            continue
        ref = rasterio.features.rasterize(
            zip(geoms[idx], codes[idx]),
            out_shape=(int(win.height), int(win.width)),
            transform=src.window_transform(win),
            fill=0,
            dtype="int32",
        )
        labelled = ref > 0
        if not labelled.any():
            continue
        pred = src.read(1, window=win)[labelled]
        ref = ref[labelled]
        classified = pred != nodata
        n_unclassified += int((~classified).sum())
        counts += np.bincount(
            ref[classified].astype(np.int64) * _CODES + pred[classified], minlength=_CODES * _CODES
        )
    return counts, n_unclassified


# 93 lines, of which 45 are the signature and docstring (shapes, units, errors): 48 of code
def evaluate_map(
    classification: str | os.PathLike,
    split_gpkg: str | os.PathLike,
    nomenclature: Nomenclature | str | os.PathLike,
    *,
    tile: str,
    run: str | int,
    architecture: str,
) -> dict[str, Any]:
    """Evaluate a classification map on the validation polygons of a run.

    The polygons with ``split == "validation"`` are rasterized on the map grid (a pixel is
    labelled when its centre lies in a polygon; where polygons overlap the last one wins),
    window by window, and counted into a confusion matrix, so memory is bounded by a window,
    not by the number of validation pixels. Learning polygons are ignored.
    Labelled pixels where the map is nodata are not scored; they are counted in
    ``n_unclassified``.

    Parameters
    ----------
    classification : uint8 class map (class codes, nodata 0).
    split_gpkg : the run's ``split.gpkg`` (columns ``code``, ``split``; any CRS).
    nomenclature : :class:`~cropchain.nomenclature.Nomenclature` or path of its CSV.
    tile, run, architecture : identifiers copied into the report.

    Returns
    -------
    dict
        the report of DESIGN.md section 2: ``tile``, ``run``, ``architecture``,
        ``overall_accuracy``, ``kappa``, ``macro_f1`` (fractions; the mean F-score of
        the classes with validation pixels, :func:`macro_f1`), ``macro_f1_classes`` (those
        codes), ``per_class`` (int code -> precision, recall, f1, support, name, for those
        codes), ``commission_unvalidated`` (int code -> pixels, share of the scored
        validation pixels, name, for the classes mapped on validation pixels without
        validation pixels of their own), ``confusion_matrix`` (``labels``, ``matrix``;
        rows = reference; the nomenclature codes present in the reference or the
        prediction), ``n_pixels`` (scored pixels), plus ``n_unclassified``,
        ``n_validation_polygons``, ``classification``, ``split``.

    Raises
    ------
    InputError
        missing/unreadable inputs, missing columns, no validation polygon, codes outside
        the nomenclature, or no validation pixel classified on the map.
    """
    nomenclature = as_nomenclature(nomenclature)
    classification, split_gpkg = Path(classification), Path(split_gpkg)
    with open_raster(classification, "classification map") as src:
        gdf = _read_validation(split_gpkg, nomenclature, src.crs)
        counts, n_unclassified = _count_pairs(src, gdf)
    # the pairs seen, weighted by their counts: the metrics of every pixel, from a matrix
    # (memory bounded by the windows, not by the number of validation pixels)
    pairs = np.flatnonzero(counts)
    y_true_a, y_pred_a, weights = pairs // _CODES, pairs % _CODES, counts[pairs]
    if y_true_a.size == 0:
        raise InputError(
            split_gpkg,
            f"no validation pixel is classified on {classification} ({n_unclassified} fall on nodata)",
            "check that the split and the map cover the same tile",
        )
    present = set(np.unique(y_true_a).tolist()) | set(np.unique(y_pred_a).tolist())
    require_codes(
        nomenclature, present, classification, "evaluate with the nomenclature the map was made with"
    )
    labels = [c for c in nomenclature.codes if c in present]
    m = confusion_metrics(y_true_a, y_pred_a, labels, sample_weight=weights)
    name_classes(m, nomenclature)
    report = {
        "tile": str(tile),
        "run": run,
        "architecture": str(architecture),
        **m,
        "n_unclassified": n_unclassified,
        "n_validation_polygons": int(len(gdf)),
        "classification": str(classification),
        "split": str(split_gpkg),
    }
    log.info(
        "%s run %s %s: OA %.4f kappa %.4f macro F1 %.4f on %d px (%d unclassified)",
        tile,
        run,
        architecture,
        m["overall_accuracy"],
        m["kappa"],
        m["macro_f1"],
        m["n_pixels"],
        n_unclassified,
    )
    return report


def _class_labels(codes: Sequence[int], nomenclature: Nomenclature) -> list[str]:
    names = [nomenclature.name_of(c) if c in nomenclature.codes else str(c) for c in codes]
    if len(set(names)) != len(names):
        names = [f"{n} ({c})" for n, c in zip(names, codes)]
    return names


def write_report(
    report: dict[str, Any],
    out_json: str | os.PathLike,
    out_csv: str | os.PathLike,
    out_png: str | os.PathLike,
    nomenclature: Nomenclature | str | os.PathLike,
) -> None:
    """Write a map report as JSON, its confusion matrix as CSV and as a PNG heatmap.

    Parameters
    ----------
    report : dict from :func:`evaluate_map` (int codes become string keys in the JSON;
        NaN becomes ``null``).
    out_json : report JSON.
    out_csv : confusion matrix, rows = reference, columns = predicted, labelled with class
        names (``name (code)`` where names repeat); counts in pixels.
    out_png : heatmap, colors normalised per reference row (recall), counts as text, title
        with overall accuracy, kappa and macro F1.
    nomenclature : names of the codes.

    All three are written atomically.
    """
    nomenclature = as_nomenclature(nomenclature)
    write_text_atomic(out_json, json.dumps(json_ready(report), indent=2, allow_nan=False) + "\n")
    codes = [int(c) for c in report["confusion_matrix"]["labels"]]
    cm = np.asarray(report["confusion_matrix"]["matrix"], dtype=np.int64).reshape(len(codes), len(codes))
    names = _class_labels(codes, nomenclature)
    df = pd.DataFrame(cm, index=pd.Index(names, name="reference \\ predicted"), columns=names)
    with atomic_output(out_csv) as tmp:
        df.to_csv(tmp)
    with atomic_output(out_png) as tmp:
        _heatmap(cm, names, report).savefig(tmp, format="png", dpi=120)


def _heatmap(cm: np.ndarray, names: list[str], report: dict[str, Any]) -> Any:
    """Row-normalised confusion-matrix figure (object-oriented matplotlib, Agg canvas, no pyplot state)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    k = len(names)
    rows = cm.sum(axis=1, keepdims=True)
    norm = np.divide(cm, rows, out=np.zeros(cm.shape, dtype=float), where=rows > 0)
    size = max(4.0, 0.7 * k + 2.5)
    fig = Figure(figsize=(size + 1.0, size), layout="constrained")
    FigureCanvasAgg(fig)
    ax = fig.add_subplot()
    im = ax.imshow(norm, cmap="Blues", vmin=0.0, vmax=1.0)
    fig.colorbar(im, ax=ax, label="fraction of the reference class", shrink=0.8)
    ax.set_xticks(range(k), names, rotation=45, ha="right")
    ax.set_yticks(range(k), names)
    ax.set_xlabel("predicted")
    ax.set_ylabel("reference")
    for i in range(k):
        for j in range(k):
            ax.text(
                j,
                i,
                f"{cm[i, j]}",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if norm[i, j] > 0.5 else "black",
            )

    def fmt(v: Any) -> str:
        return "n/a" if v is None or (isinstance(v, float) and not math.isfinite(v)) else f"{v:.3f}"

    ax.set_title(
        f"{report.get('architecture', '')} {report.get('tile', '')} run {report.get('run', '')}\n"
        f"OA {100 * report['overall_accuracy']:.1f}%  kappa {fmt(report['kappa'])}  "
        f"macro F1 {fmt(report['macro_f1'])}",
        fontsize=10,
    )
    return fig
