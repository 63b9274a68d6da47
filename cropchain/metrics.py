"""Accuracy metrics of class codes: confusion matrix, overall accuracy, Cohen's kappa,
per-class precision / recall / F-score and the macro F-score every report uses.

Metrics are scikit-learn's (``zero_division=0``). The macro F-score (:func:`macro_f1`) is the
unweighted mean of the F-scores of the classes that have reference (validation) samples, as
iota2 and OTB ``ComputeConfusionMatrix`` report per reference class: a class that is only
predicted has no F-score to average (it would add a 0 that comes and goes with a few stray
pixels) and is reported as ``commission_unvalidated`` instead; a reference class that is
never predicted counts with F1 = 0. Used by training (held-out scores), map assessment
(:mod:`cropchain.assessment.evaluate`) and the parcel reports.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np
from sklearn import metrics as skm

from cropchain.nomenclature import Nomenclature

MACRO_F1_DEFINITION = (
    "macro F-score: unweighted mean of the F-scores of the classes that have validation "
    "(reference) samples on the tile and run (macro_f1_classes); predictions of classes "
    "without validation samples are reported apart (commission_unvalidated)"
)


def macro_f1(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    sample_weight: np.ndarray | None = None,
) -> tuple[float, list[int]]:
    """Macro F-score over the classes that have reference samples.

    The unweighted mean of scikit-learn's per-class F-scores
    (``precision_recall_fscore_support(labels=<reference classes>, average="macro",
    zero_division=0)``) over the classes present in ``y_true``; a class present only in
    ``y_pred`` is not averaged (its predictions still lower the precision of the classes
    whose samples it took), a reference class never predicted counts with F1 = 0. This is
    the per-reference-class score of iota2 and OTB ``ComputeConfusionMatrix``.

    Parameters
    ----------
    y_true : int ``[N]`` reference class codes (or class indices).
    y_pred : int ``[N]`` predicted class codes.
    sample_weight : optional ``[N]`` weights (counts); a class whose reference samples all
        weigh 0 has no reference sample.

    Returns
    -------
    tuple
        (macro F-score, a fraction 0-1; the sorted list of the class codes averaged).

    Raises
    ------
    ValueError
        empty input, lengths that differ, or no sample with a positive weight.
    """
    y_true = np.asarray(y_true).astype(np.int64).ravel()
    y_pred = np.asarray(y_pred).astype(np.int64).ravel()
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true ({y_true.size}) and y_pred ({y_pred.size}) differ in length")
    sw = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).ravel()
    weighted = y_true if sw is None else y_true[sw > 0]
    classes = [int(c) for c in np.unique(weighted)]
    if not classes:
        raise ValueError("no reference sample to compute a macro F-score")
    _, _, f1, _ = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=classes, average="macro", zero_division=0, sample_weight=sw
    )
    return float(f1), classes


def confusion_metrics(
    y_true: np.ndarray,
    y_pred: np.ndarray,
    labels: Sequence[int],
    sample_weight: np.ndarray | None = None,
    unit: str = "pixels",
) -> dict[str, Any]:
    """Accuracy metrics of predicted vs reference class codes.

    Parameters
    ----------
    y_true : int ``[N]`` reference class codes.
    y_pred : int ``[N]`` predicted class codes.
    labels : class codes of the confusion matrix, in order; callers pass the nomenclature
        codes present in the reference or the prediction. Every value of ``y_true`` and
        ``y_pred`` must be one of them.
    sample_weight : optional ``[N]`` weights (counts), e.g. to recompute metrics from a
        confusion matrix (see :func:`metrics_from_matrix`).
    unit : what a sample is (``"pixels"``, ``"parcels"``): the count key of
        ``commission_unvalidated``.

    Returns
    -------
    dict
        ``overall_accuracy``, ``kappa`` (Cohen; NaN when undefined, i.e. reference and
        prediction are both a single identical class), ``macro_f1`` (:func:`macro_f1`;
        fractions 0-1), ``macro_f1_classes`` (the codes it averages: those with reference
        samples), ``per_class`` ``{code: {precision, recall, f1, support}}`` of those same
        classes (int codes, support in samples), ``commission_unvalidated``
        ``{code: {<unit>: n, share: n / n_pixels}}`` of the classes predicted without a
        reference sample (empty when there is none), ``confusion_matrix``
        ``{labels: [...], matrix: [[...]]}`` over all ``labels`` with rows = reference and
        columns = predicted, ``n_pixels`` (number of samples).

    Raises
    ------
    ValueError
        empty input, lengths that differ, or codes missing from ``labels``.
    """
    y_true = np.asarray(y_true).astype(np.int64).ravel()
    y_pred = np.asarray(y_pred).astype(np.int64).ravel()
    labels = [int(c) for c in labels]
    if y_true.shape != y_pred.shape:
        raise ValueError(f"y_true ({y_true.size}) and y_pred ({y_pred.size}) differ in length")
    if y_true.size == 0:
        raise ValueError("no sample to evaluate")
    outside = sorted((set(np.unique(y_true).tolist()) | set(np.unique(y_pred).tolist())) - set(labels))
    if outside:
        raise ValueError(f"codes {outside} are not in labels {labels}")
    sw = None if sample_weight is None else np.asarray(sample_weight, dtype=np.float64).ravel()
    cm = skm.confusion_matrix(y_true, y_pred, labels=labels, sample_weight=sw)
    precision, recall, f1, support = skm.precision_recall_fscore_support(
        y_true, y_pred, labels=labels, zero_division=0, sample_weight=sw
    )
    kappa = skm.cohen_kappa_score(y_true, y_pred, labels=labels, sample_weight=sw)
    macro, validated = macro_f1(y_true, y_pred, sample_weight=sw)
    n = float(cm.sum())
    return {
        "overall_accuracy": float(skm.accuracy_score(y_true, y_pred, sample_weight=sw)),
        "kappa": float(kappa),
        "macro_f1": macro,
        "macro_f1_classes": validated,
        "per_class": {
            code: {"precision": float(p), "recall": float(r), "f1": float(f), "support": int(round(s))}
            for code, p, r, f, s in zip(labels, precision, recall, f1, cm.sum(axis=1))
            if code in validated
        },
        "commission_unvalidated": {
            code: {unit: int(round(c)), "share": float(c / n)}
            for code, c in zip(labels, cm.sum(axis=0))
            if code not in validated and c > 0
        },
        "confusion_matrix": {"labels": labels, "matrix": np.rint(cm).astype(np.int64).tolist()},
        "n_pixels": int(round(cm.sum())),
    }


def metrics_from_matrix(
    matrix: np.ndarray | Sequence[Sequence[int]], labels: Sequence[int]
) -> dict[str, Any]:
    """:func:`confusion_metrics` of a confusion matrix (rows = reference, columns = predicted).

    Used to pool several tiles: summing their matrices and recomputing gives the metrics
    of all their pixels together. Rows and columns that are both empty are dropped from
    the labels.
    """
    cm = np.asarray(matrix, dtype=np.int64)
    labels = [int(c) for c in labels]
    if cm.shape != (len(labels), len(labels)):
        raise ValueError(f"matrix shape {cm.shape} does not match {len(labels)} labels")
    keep = (cm.sum(axis=0) + cm.sum(axis=1)) > 0
    kept = [c for c, k in zip(labels, keep) if k]
    rows, cols = np.nonzero(cm)
    lab = np.asarray(labels)
    return confusion_metrics(lab[rows], lab[cols], kept, sample_weight=cm[rows, cols])


def matrix_from_cells(cells: Mapping[tuple[int, int], int]) -> tuple[np.ndarray, list[int]]:
    """Confusion matrix of pooled cells ``(reference code, predicted code) -> pixels``.

    Returns ``(matrix, labels)``: ``labels`` the sorted codes met in the cells (either side),
    ``matrix`` ``[K, K]`` int64, rows = reference, for :func:`metrics_from_matrix`. Used to pool
    the confusion matrices of several tiles' reports on the union of their labels.
    """
    labels = sorted({a for a, _ in cells} | {b for _, b in cells})
    index = {c: i for i, c in enumerate(labels)}
    cm = np.zeros((len(labels), len(labels)), dtype=np.int64)
    for (a, b), n in cells.items():
        cm[index[a], index[b]] = n
    return cm, labels


def name_classes(metrics: dict[str, Any], nomenclature: Nomenclature) -> None:
    """Add the class ``name`` to ``per_class`` and ``commission_unvalidated`` of
    :func:`confusion_metrics` (in place)."""
    for key in ("per_class", "commission_unvalidated"):
        for code, d in metrics[key].items():
            d["name"] = nomenclature.name_of(code)


def json_ready(obj: Any) -> Any:
    """NaN -> None (JSON null), numpy scalars -> Python, dict keys -> str."""
    if isinstance(obj, dict):
        return {str(k): json_ready(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [json_ready(v) for v in obj]
    if isinstance(obj, np.generic):
        obj = obj.item()
    if isinstance(obj, float) and not math.isfinite(obj):
        return None
    return obj
