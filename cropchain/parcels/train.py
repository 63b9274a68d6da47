"""Parcel classification: training, prediction, parcel maps, reports, majority vote, ablation.

The parcel models of :mod:`cropchain.models.parcel` (Sainte Fare Garnot et al., IGARSS
2019) are trained on the parcel datasets of :mod:`cropchain.parcels.dataset` with the learning
parcels of a run's split (``runs/{run}/tiles/{tile}/split.gpkg``: the same polygons,
runs and seeds as the pixel chain), and predict one class per parcel. The predictions
become a parcel map (GeoPackage and its raster on the tile grid) evaluated at parcel
level on the validation parcels, and at pixel level with
:func:`cropchain.assessment.evaluate.evaluate_map`, so that they compare with the pixel
architectures. :func:`majority_vote_tile` gives the usual post-processing of a pixel map
(one label per parcel, the most frequent class of its pixels) in the same form.

Training (Adam, learning rate 1e-3, batch 32, cross-entropy): a stratified part of the
learning parcels (``holdout_fraction``) is held out for early stopping, never the
validation parcels; the weights of the epoch with the lowest hold-out loss are kept.
Normalization statistics (mean and standard deviation per date and band) come from the
run's learning parcels and are saved with the model.

Model folder ``runs/{run}/parcels/{model}/``: ``model.pt`` (PyTorch ``state_dict``),
``model.json`` (model name and resolved sizes, training settings, classes, dates,
bands, normalization, seed, parameter counts, versions), ``metrics.json`` (training
time, epochs, learning curves).
"""

from __future__ import annotations

import copy
import json
import logging
import math
import os
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import rasterio
import rasterio.features
import rasterio.windows
import shapely
import torch
from tqdm import tqdm

import cropchain
from cropchain.assessment.evaluate import evaluate_map, write_report
from cropchain.errors import ConfigError, InputError
from cropchain.io.atomic import atomic_output, write_text_atomic
from cropchain.io.raster import block_windows, geotiff_profile, open_raster
from cropchain.learning.augment import random_dihedral_batch
from cropchain.metrics import (
    confusion_metrics,
    json_ready,
    matrix_from_cells,
    metrics_from_matrix,
    name_classes,
)
from cropchain.models import count_parameters
from cropchain.models.parcel import get_parcel_model
from cropchain.nomenclature import (
    NODATA_CLASS,
    Nomenclature,
    as_nomenclature,
    require_codes,
)
from cropchain.parcels.dataset import (
    ParcelDataset,
    check_compatible,
    load_parcel_dataset,
    normalization_stats,
    normalize,
    parcel_window_mask,
    permute_dates,
)
from cropchain.reference.split import LEARN, VALIDATION, read_split

log = logging.getLogger(__name__)

LAYER = "parcels"
#: the products of a parcel-level prediction or vote (keys of ``outputs``, :func:`predict_parcel_tile`)
PARCEL_OUTPUTS = ("gpkg", "tif", "json", "csv", "png", "pixel_json")

#: training settings (config ``parcels.training``; a model's own section may override them)
TRAINING_DEFAULTS: dict[str, Any] = {
    "epochs": 40,  # maximum number of epochs
    "patience": 8,  # epochs without a lower hold-out loss before stopping
    "batch_size": 32,
    "learning_rate": 1e-3,
    "weight_decay": 0.0,
    "holdout_fraction": 0.2,  # of each class's learning parcels, for early stopping
    "class_weights": False,  # inverse class frequency in the loss
    "augment": False,  # random flips and 90-degree rotations of the patches
}


def split_hyperparameters(
    settings: dict[str, Any], defaults: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any]]:
    """Separate a model's config section into (training settings, model hyper-parameters).

    Keys of :data:`TRAINING_DEFAULTS` are training settings (over ``defaults``, e.g. the
    config's ``parcels.training``); the others go to the model constructor.
    """
    training = {**TRAINING_DEFAULTS, **(defaults or {})}
    model_hp = {}
    for key, value in settings.items():
        if key in TRAINING_DEFAULTS:
            training[key] = value
        else:
            model_hp[key] = value
    return training, model_hp


# --------------------------------------------------------------------------- labels


def label_rows(
    dataset: ParcelDataset, split: pd.DataFrame, which: str, split_path: str | os.PathLike = "split"
) -> tuple[np.ndarray, np.ndarray]:
    """Patches of ``dataset`` in the split set ``which`` (``"learn"`` or ``"validation"``).

    Returns
    -------
    rows : int64 ``[n]`` patch indices in the dataset; codes : int64 ``[n]`` reference codes.

    Raises
    ------
    InputError
        a parcel of the dataset is absent from the split or has another code there (the
        dataset and the split come from different reference files).
    """
    sp = split.set_index("polygon_id")
    ids = dataset.index["polygon_id"].to_numpy()
    absent = ~np.isin(ids, sp.index.to_numpy())
    if absent.any():
        raise InputError(
            split_path,
            f"{int(absent.sum())} parcel(s) of {dataset.path} are not in the split "
            f"(e.g. id {int(ids[absent][0])})",
            "rebuild the parcel dataset from the reference the split was drawn from",
        )
    codes = sp.loc[ids, "code"].to_numpy().astype(np.int64)
    differ = codes != dataset.index["code"].to_numpy()
    if differ.any():
        raise InputError(
            split_path,
            f"{int(differ.sum())} parcel(s) have another code than in {dataset.path}",
            "rebuild the parcel dataset from the reference the split was drawn from",
        )
    sel = sp.loc[ids, "split"].to_numpy() == which
    return np.flatnonzero(sel).astype(np.int64), codes[sel]


def holdout_mask(codes: np.ndarray, fraction: float, rng: np.random.Generator) -> np.ndarray:
    """Stratified hold-out draw for early stopping.

    Per class with ``n >= 2`` parcels, ``round(fraction * n)`` of them (at least 1, at most
    ``n - 1``) are held out; a class with one parcel stays in training.

    Returns
    -------
    np.ndarray
        bool ``[N]``, True for the held-out parcels.
    """
    held = np.zeros(codes.size, dtype=bool)
    if fraction <= 0:
        return held
    for code in np.unique(codes):
        idx = np.flatnonzero(codes == code)
        if idx.size < 2:
            continue
        k = min(max(int(math.floor(fraction * idx.size + 0.5)), 1), idx.size - 1)
        held[rng.permutation(idx)[:k]] = True
    return held


# --------------------------------------------------------------------------- batches


def _gather(
    datasets: Sequence[ParcelDataset], items: np.ndarray, mean: np.ndarray, std: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """Normalized patches ``[n, T, C, S, S]`` and masks ``[n, S, S]`` (float32) of ``items``
    (``[n, 2]``: dataset, row)."""
    first = datasets[0]
    n, s = len(items), first.patch_size
    x = np.empty((n, len(first.dates), len(first.bands), s, s), dtype=np.float32)
    m = np.empty((n, s, s), dtype=np.float32)
    for d in np.unique(items[:, 0]):
        sel = np.flatnonzero(items[:, 0] == d)
        rows = items[sel, 1]
        masks = np.asarray(datasets[d].masks[rows])
        x[sel] = normalize(datasets[d].patches[rows], masks, mean, std)
        m[sel] = masks
    return x, m


def _logits(
    net: torch.nn.Module,
    datasets: Sequence[ParcelDataset],
    items: np.ndarray,
    mean: np.ndarray,
    std: np.ndarray,
    perm: np.ndarray | None = None,
    batch_size: int = 64,
) -> torch.Tensor:
    """Logits ``[n, K]`` of ``items`` in evaluation mode, read a batch at a time; ``perm``
    (int ``[n, T]``) reorders the dates of each item."""
    net.eval()
    out = []
    with torch.no_grad():
        for start in range(0, len(items), batch_size):
            x, m = _gather(datasets, items[start : start + batch_size], mean, std)
            if perm is not None:
                x = x[np.arange(len(x))[:, None], perm[start : start + batch_size]]
            out.append(net(*_as_tensors(x, m)))
    return torch.cat(out)


def _as_tensors(x: np.ndarray, m: np.ndarray) -> tuple[torch.Tensor, torch.Tensor]:
    return torch.from_numpy(np.ascontiguousarray(x)), torch.from_numpy(np.ascontiguousarray(m))


# --------------------------------------------------------------------------- training


def _learning_items(
    dsets: Sequence[ParcelDataset], splits: Sequence[str | os.PathLike]
) -> tuple[np.ndarray, np.ndarray]:
    """The learning parcels of every tile: ``items [N, 2]`` int64 (dataset, row), class codes ``[N]``.

    Raises
    ------
    InputError
        a dataset that does not match its split (:func:`label_rows`), or no learning parcel.
    """
    items, codes = [], []
    for d, (ds, sp) in enumerate(zip(dsets, splits)):
        rows, c = label_rows(ds, read_split(sp), LEARN, sp)
        items.append(np.stack([np.full(rows.size, d), rows], axis=1))
        codes.append(c)
    items_a = np.concatenate(items).astype(np.int64)
    codes_a = np.concatenate(codes)
    if codes_a.size == 0:
        raise InputError(
            splits[0],
            "no learning parcel in the parcel datasets",
            "check the split and that the parcels have clear pixels",
        )
    return items_a, codes_a


def _criterion(y_fit: np.ndarray, n_classes: int, class_weights: bool) -> torch.nn.CrossEntropyLoss:
    """Cross-entropy, weighted by the inverse class frequency of ``y_fit`` (class indices) if asked."""
    weights = None
    if class_weights:
        counts = np.bincount(y_fit, minlength=n_classes).astype(np.float64)
        weights = torch.tensor(
            np.where(counts > 0, counts.sum() / (n_classes * np.maximum(counts, 1)), 0.0),
            dtype=torch.float32,
        )
    return torch.nn.CrossEntropyLoss(weight=weights)


@dataclass
class _LearningData:
    """The learning parcels of a training: datasets, ``items [N, 2]`` (dataset, row), class indices ``[N]``
    and the per date and band normalization ``[T, C]``."""

    dsets: Sequence[ParcelDataset]
    items: np.ndarray
    y: np.ndarray
    mean: np.ndarray
    std: np.ndarray


@dataclass
class _Fitted:
    """Outcome of :func:`_fit_epochs`: one curve row per epoch, the best epoch and its hold-out loss."""

    curves: list[dict[str, float]]
    best_epoch: int
    best_loss: float
    elapsed: float


def _train_epoch(
    net: torch.nn.Module,
    criterion: torch.nn.Module,
    optim: torch.optim.Optimizer,
    data: _LearningData,
    fit: np.ndarray,
    training: dict[str, Any],
    rng: np.random.Generator,
    permute: bool,
) -> float:
    """One epoch over the ``fit`` items in random batches; returns the mean training loss."""
    batch = int(training["batch_size"])
    net.train()
    order = rng.permutation(fit)
    batches = [order[i : i + batch] for i in range(0, order.size, batch)]
    if len(batches) > 1 and batches[-1].size == 1:  # a batch of one breaks batch norm statistics
        batches[-2] = np.concatenate(batches[-2:])
        batches.pop()
    total, seen = 0.0, 0
    for sel in batches:
        x, m = _gather(data.dsets, data.items[sel], data.mean, data.std)
        if training["augment"]:
            x, m = random_dihedral_batch(x, m, rng)
        if permute:
            x = permute_dates(x, rng)
        xt, mt = _as_tensors(x, m)
        yt = torch.from_numpy(data.y[sel])
        optim.zero_grad()
        loss = criterion(net(xt, mt), yt)
        loss.backward()
        optim.step()
        total += loss.item() * sel.size
        seen += sel.size
    return total / max(seen, 1)


def _fit_epochs(
    net: torch.nn.Module,
    model: str,
    criterion: torch.nn.Module,
    optim: torch.optim.Optimizer,
    data: _LearningData,
    fit: np.ndarray,
    hold: np.ndarray,
    training: dict[str, Any],
    rng: np.random.Generator,
    hold_perm: np.ndarray | None,
    permute: bool,
) -> _Fitted:
    """Train ``net`` for up to ``training["epochs"]`` epochs, stopping early on the hold-out loss.

    ``hold_perm`` (``[len(hold), T]`` or None) permutes the hold-out parcels' dates. ``net``
    ends with the weights of the best epoch (lowest hold-out loss; the last epoch without
    hold-out parcels).
    """
    curves: list[dict[str, float]] = []
    best_state, best_loss, best_epoch, since = copy.deepcopy(net.state_dict()), math.inf, 0, 0
    start = time.perf_counter()
    for epoch in tqdm(
        range(1, int(training["epochs"]) + 1), desc=f"train {model}", unit="epoch", disable=None
    ):
        row = {
            "epoch": epoch,
            "train_loss": _train_epoch(net, criterion, optim, data, fit, training, rng, permute),
        }
        if hold.size:
            logits = _logits(net, data.dsets, data.items[hold], data.mean, data.std, hold_perm)
            y_hold = torch.from_numpy(data.y[hold])
            with torch.no_grad():
                row["holdout_loss"] = float(criterion(logits, y_hold))
            row["holdout_overall_accuracy"] = float((logits.argmax(1) == y_hold).float().mean())
            if row["holdout_loss"] < best_loss:
                best_loss, best_epoch, since = row["holdout_loss"], epoch, 0
                best_state = copy.deepcopy(net.state_dict())
            else:
                since += 1
        else:
            best_state, best_epoch = copy.deepcopy(net.state_dict()), epoch
        curves.append(row)
        log.info(
            "%s epoch %d: %s", model, epoch, ", ".join(f"{k} {v:.4f}" for k, v in row.items() if k != "epoch")
        )
        if hold.size and since >= int(training["patience"]):
            break
    elapsed = time.perf_counter() - start
    net.load_state_dict(best_state)
    log.info(
        "trained %s in %.1f s: %d epochs, best epoch %d (hold-out loss %.4f)",
        model,
        elapsed,
        len(curves),
        best_epoch,
        best_loss,
    )
    return _Fitted(curves, best_epoch, best_loss, elapsed)


def _log_training_start(
    model: str,
    net: torch.nn.Module,
    classes: np.ndarray,
    y_all: np.ndarray,
    fit: np.ndarray,
    hold: np.ndarray,
    training: dict[str, Any],
    permute: bool,
) -> None:
    """Log what is trained on what; warn when there is no hold-out set (no early stopping)."""
    log.info(
        "training %s (%d parameters, %s) on %d learning parcel(s) (%d held out for early stopping), "
        "classes %s%s",
        model,
        count_parameters(net),
        net.hyperparameters,
        fit.size,
        hold.size,
        dict(zip(classes.tolist(), np.bincount(y_all, minlength=len(classes)).tolist())),
        ", dates permuted" if permute else "",
    )
    if not hold.size:
        log.warning(
            "%s: no class has 2 learning parcels: no hold-out set, "
            "training for %d epochs without early stopping",
            model,
            training["epochs"],
        )


def _model_metadata(
    model: str,
    net: torch.nn.Module,
    settings: dict[str, Any],
    training: dict[str, Any],
    classes: np.ndarray,
    data: _LearningData,
    hold: np.ndarray,
    seed: int,
    permute: bool,
) -> dict[str, Any]:
    """The ``model.json`` of a trained parcel model (see :func:`train_parcel_model`)."""
    dsets, items_a, first = data.dsets, data.items, data.dsets[0]
    ids = [dsets[d].index["polygon_id"].iat[r] for d, r in items_a[hold]]
    return {
        "model": model,
        "hyperparameters": net.hyperparameters,
        "settings": dict(settings),
        "training": training,
        "n_bands": len(first.bands),
        "patch_size": first.patch_size,
        "classes": [int(c) for c in classes],
        "dates": first.dates,
        "bands": first.bands,
        "normalization": {
            "mean": data.mean.tolist(),
            "std": data.std.tolist(),
            "unit": "reflectance 0-1, per date and band",
        },
        "seed": int(seed),
        "permute_dates": bool(permute),
        "n_parameters": count_parameters(net),
        "spatial_parameters": net.spatial_parameters(),
        "temporal_parameters": net.temporal_parameters(),
        "temporal_ratio": net.temporal_ratio(),
        "n_learning_parcels": {
            int(c): int(n) for c, n in zip(classes, np.bincount(data.y, minlength=len(classes)))
        },
        "holdout_parcels": [
            {"tile": dsets[d].tile, "polygon_id": int(i)} for (d, _), i in zip(items_a[hold], ids)
        ],
        "tiles": [ds.tile for ds in dsets],
        "cropchain_version": cropchain.__version__,
        "library_versions": {"torch": torch.__version__, "numpy": np.__version__},
    }


# 99 lines, of which 40 are the signature and docstring (shapes, units, errors): 59 of code
def train_parcel_model(
    datasets: Sequence[str | os.PathLike],
    splits: Sequence[str | os.PathLike],
    model: str,
    settings: dict[str, Any],
    out_dir: str | os.PathLike,
    *,
    seed: int,
    threads: int = 1,
    training_defaults: dict[str, Any] | None = None,
    permute: bool = False,
) -> dict[str, Any]:
    """Train a parcel model on the learning parcels of a run and save it in ``out_dir``.

    Parameters
    ----------
    datasets : the parcel dataset index (``parcels.parquet``) of each tile.
    splits : the run's ``split.gpkg`` of each tile, in the same order.
    model : parcel model name (:func:`cropchain.models.parcel.get_parcel_model`).
    settings : the model's config section: hyper-parameters and training overrides
        (:func:`split_hyperparameters`).
    out_dir : model folder (``model.pt``, ``model.json``, ``metrics.json``).
    seed : the run's seed (weights initialisation, batch order, hold-out draw, permutations).
    threads : PyTorch CPU threads.
    training_defaults : the config's ``parcels.training`` (over :data:`TRAINING_DEFAULTS`).
    permute : the paper's ablation: the dates of each parcel are randomly permuted in
        every batch (a new permutation each time).

    Returns
    -------
    dict
        the metadata written to ``model.json``.

    Raises
    ------
    InputError
        datasets and splits that disagree, or no learning parcel.
    ConfigError
        unknown model or hyper-parameter, bad training settings.
    """
    if len(datasets) != len(splits) or not datasets:
        raise InputError(
            "parcel datasets",
            f"{len(datasets)} dataset(s) for {len(splits)} split file(s)",
            "give one split per tile dataset",
        )
    training, model_hp = split_hyperparameters(dict(settings), training_defaults)
    _check_training(model, training)
    out_dir = Path(out_dir)
    torch.set_num_threads(int(threads))
    torch.manual_seed(int(seed))
    rng = np.random.default_rng([int(seed), 7])
    dsets = [load_parcel_dataset(p) for p in datasets]
    check_compatible(dsets)
    items_a, codes_a = _learning_items(dsets, splits)
    classes = np.unique(codes_a)
    y_all = np.searchsorted(classes, codes_a)
    held = holdout_mask(codes_a, float(training["holdout_fraction"]), rng)
    fit, hold = np.flatnonzero(~held), np.flatnonzero(held)
    mean, std = normalization_stats(dsets, [items_a[items_a[:, 0] == d, 1] for d in range(len(dsets))])

    first = dsets[0]
    net = get_parcel_model(
        model, n_bands=len(first.bands), n_classes=len(classes), patch_size=first.patch_size, **model_hp
    )
    criterion = _criterion(y_all[fit], len(classes), bool(training["class_weights"]))
    optim = torch.optim.Adam(
        net.parameters(), lr=float(training["learning_rate"]), weight_decay=float(training["weight_decay"])
    )
    # dates of the hold-out parcels permuted once (a fixed draw, so that epochs compare)
    hold_perm = np.argsort(
        np.random.default_rng([int(seed), 11]).random((hold.size, len(first.dates))), axis=1
    )
    _log_training_start(model, net, classes, y_all, fit, hold, training, permute)

    data = _LearningData(dsets, items_a, y_all, mean, std)
    hold_perm = hold_perm if permute else None
    fitted = _fit_epochs(net, model, criterion, optim, data, fit, hold, training, rng, hold_perm, permute)

    meta = _model_metadata(model, net, settings, training, classes, data, hold, seed, permute)
    metrics = {
        "training_time_s": round(fitted.elapsed, 3),
        "epochs": len(fitted.curves),
        "best_epoch": fitted.best_epoch,
        "holdout_loss": None if not math.isfinite(fitted.best_loss) else fitted.best_loss,
        "holdout_overall_accuracy": next(
            (r.get("holdout_overall_accuracy") for r in fitted.curves if r["epoch"] == fitted.best_epoch),
            None,
        ),
        "n_learning_parcels": int(codes_a.size),
        "n_holdout_parcels": int(hold.size),
        "threads": int(threads),
        "curves": fitted.curves,
    }
    with atomic_output(out_dir / "model.pt") as tmp:
        torch.save(net.state_dict(), tmp)
    write_text_atomic(out_dir / "model.json", json.dumps(meta, indent=2))
    write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    return meta


def _check_training(model: str, t: dict[str, Any]) -> None:
    for key in ("epochs", "patience", "batch_size"):
        if not isinstance(t[key], int) or t[key] < 1:
            raise ConfigError(f"parcels.models.{model}.{key}: must be an integer >= 1, got {t[key]!r}")
    if not 0 <= float(t["holdout_fraction"]) < 1:
        raise ConfigError(
            f"parcels.models.{model}.holdout_fraction: must be in [0, 1), got {t['holdout_fraction']!r}"
        )
    if not float(t["learning_rate"]) > 0:
        raise ConfigError(f"parcels.models.{model}.learning_rate: must be > 0, got {t['learning_rate']!r}")


@dataclass
class TrainedParcelModel:
    """A parcel model reloaded by :func:`load_parcel_model`.

    Attributes
    ----------
    net : the network, in evaluation mode.
    meta : ``model.json``.
    classes : int64 ``[K]`` class codes of the logits' columns.
    mean, std : float32 ``[T, C]`` normalization (reflectance 0-1).
    """

    net: torch.nn.Module
    meta: dict[str, Any]
    classes: np.ndarray
    mean: np.ndarray
    std: np.ndarray


def load_parcel_model(model_dir: str | os.PathLike, *, threads: int = 1) -> TrainedParcelModel:
    """Reload a model saved by :func:`train_parcel_model`.

    Raises
    ------
    InputError
        missing or unreadable model files.
    """
    model_dir = Path(model_dir)
    meta_path, weights = model_dir / "model.json", model_dir / "model.pt"
    for p in (meta_path, weights):
        if not p.exists():
            raise InputError(
                p, "parcel model file not found", "run the train_parcel step of this model and run"
            )
    torch.set_num_threads(int(threads))
    meta = json.loads(meta_path.read_text(encoding="utf-8"))
    net = get_parcel_model(
        meta["model"],
        n_bands=meta["n_bands"],
        n_classes=len(meta["classes"]),
        patch_size=meta["patch_size"],
        **meta["hyperparameters"],
    )
    try:
        net.load_state_dict(torch.load(weights, map_location="cpu", weights_only=True))
    except (RuntimeError, OSError, ValueError) as exc:
        raise InputError(
            weights, f"weights cannot be loaded ({str(exc).splitlines()[0]})", "retrain the model"
        ) from None
    net.eval()
    norm = meta["normalization"]
    return TrainedParcelModel(
        net,
        meta,
        np.asarray(meta["classes"], dtype=np.int64),
        np.asarray(norm["mean"], dtype=np.float32),
        np.asarray(norm["std"], dtype=np.float32),
    )


def predict_parcels(
    model: TrainedParcelModel, dataset: ParcelDataset, *, batch_size: int = 64, permute: bool = False
) -> np.ndarray:
    """Class probabilities of every parcel of a dataset.

    Parameters
    ----------
    model : from :func:`load_parcel_model`.
    dataset : the tile's parcel dataset (same dates and bands as the model's).
    batch_size : parcels per forward pass (memory bound).
    permute : randomly permute the dates of each parcel (the ablation's test), drawn from
        the model's seed: reproducible.

    Returns
    -------
    np.ndarray
        float32 ``[N, K]``, columns in the order of ``model.classes``.

    Raises
    ------
    InputError
        dataset dates, bands or patch size differ from the model's.
    """
    meta = model.meta
    if (
        dataset.dates != meta["dates"]
        or dataset.bands != meta["bands"]
        or dataset.patch_size != meta["patch_size"]
    ):
        raise InputError(
            dataset.path,
            "dates/bands/patch size differ from the model's "
            f"({len(dataset.dates)} vs {len(meta['dates'])} dates, "
            f"{dataset.bands} vs {meta['bands']})",
            "predict with a model trained on datasets of the same configuration",
        )
    items = np.stack(
        [np.zeros(len(dataset), dtype=np.int64), np.arange(len(dataset), dtype=np.int64)], axis=1
    )
    perm = None
    if permute:
        perm = np.argsort(
            np.random.default_rng([int(meta["seed"]), 13]).random((len(dataset), len(dataset.dates))), axis=1
        )
    logits = _logits(model.net, [dataset], items, model.mean, model.std, perm, batch_size)
    out = torch.softmax(logits, dim=1).numpy().astype(np.float32)
    return out


# --------------------------------------------------------------------------- maps and reports


def write_parcel_map(
    parcels: gpd.GeoDataFrame,
    grid: str | os.PathLike,
    nomenclature: Nomenclature,
    out_gpkg: str | os.PathLike,
    out_tif: str | os.PathLike,
    *,
    description: str,
) -> None:
    """Write a parcel map as GeoPackage and as a class raster on the tile grid.

    Parameters
    ----------
    parcels : columns ``polygon_id``, ``code`` (predicted), ``confidence`` (0-100),
        ``reference_code``, ``split``, geometry.
    grid : a raster of the tile (its CRS, transform and size are used).
    nomenclature : names and colors of the codes.
    out_gpkg : layer ``parcels``: ``polygon_id``, ``code``, ``name`` (predicted),
        ``confidence`` (%), ``reference_code``, ``reference_name``, ``split``, geometry.
    out_tif : uint8 class codes, nodata 0 outside the parcels, color table (the pixel
        maps' conventions); a pixel belongs to a parcel when its centre is inside it;
        rasterized window by window (memory bounded by a 1024 px window).
    description : what made the map (tags of the raster).
    """
    gdf = parcels.copy()
    gdf["name"] = [nomenclature.name_of(c) for c in gdf["code"]]
    known = gdf["reference_code"].isin(nomenclature.codes)
    gdf["reference_name"] = [
        nomenclature.name_of(c) if k else "" for c, k in zip(gdf["reference_code"], known)
    ]
    gdf = gdf[
        ["polygon_id", "code", "name", "confidence", "reference_code", "reference_name", "split", "geometry"]
    ]
    with atomic_output(out_gpkg) as tmp:
        pyogrio.write_dataframe(gdf, tmp, layer=LAYER, driver="GPKG", promote_to_multi=True)
    with open_raster(grid, "tile grid raster") as src:
        profile = geotiff_profile(src.profile, count=1, dtype="uint8", nodata=NODATA_CLASS)
        height, width, transform = src.height, src.width, src.transform
        geoms = gdf.to_crs(src.crs).geometry.to_numpy()
    codes = gdf["code"].to_numpy().astype(np.int32)
    tree = shapely.STRtree(geoms)
    with atomic_output(out_tif) as tmp, rasterio.open(tmp, "w", **profile) as dst:
        dst.write_colormap(1, nomenclature.color_table())  # before any pixel (libtiff)
        dst.set_band_description(1, "class code")
        dst.update_tags(
            CLASSES=";".join(f"{c}:{n}" for c, n in zip(nomenclature.codes, nomenclature.names)),
            NODATA="0 = outside the parcels",
            SOURCE=description,
            CROPCHAIN_VERSION=cropchain.__version__,
        )
        for win in block_windows(height, width, 1024):
            out = np.zeros((int(win.height), int(win.width)), dtype=np.uint8)
            idx = tree.query(shapely.box(*rasterio.windows.bounds(win, transform)))
            if idx.size:
                out = rasterio.features.rasterize(
                    zip(geoms[idx], codes[idx]),
                    out_shape=out.shape,
                    fill=NODATA_CLASS,
                    transform=rasterio.windows.transform(win, transform),
                    dtype="uint8",
                )
            dst.write(out, 1, window=win)


# 82 lines, of which 40 are the signature and docstring (shapes, units, errors): 42 of code
def parcel_report(
    predicted: pd.DataFrame,
    split: pd.DataFrame,
    nomenclature: Nomenclature,
    *,
    tile: str,
    run: int,
    architecture: str,
    pixel_counts: dict[int, int] | None = None,
) -> dict[str, Any]:
    """Parcel-level accuracy on the validation parcels.

    Parameters
    ----------
    predicted : ``polygon_id``, ``code`` (predicted) of the parcels that have a prediction.
    split : the run's split (``polygon_id``, ``code``, ``split``).
    nomenclature : class names.
    tile, run, architecture : identifiers.
    pixel_counts : polygon_id -> pixels of the parcel (for ``n_pixels``).

    Returns
    -------
    dict
        DESIGN.md's report keys at parcel level (one sample per validation parcel):
        ``tile``, ``run``, ``architecture``, ``level`` ("parcel"), ``overall_accuracy``,
        ``kappa``, ``macro_f1`` (mean F-score of the classes with validation parcels,
        :func:`cropchain.metrics.macro_f1`), ``macro_f1_classes`` (those codes),
        ``per_class`` (code -> precision, recall, f1, support in parcels, name, for those
        codes), ``commission_unvalidated`` (code -> parcels, share of the scored parcels,
        name, for the classes predicted without a validation parcel of their own),
        ``confusion_matrix`` (rows = reference, counts in parcels),
        ``n_parcels`` (scored), ``n_pixels`` (pixels of the scored parcels),
        ``n_validation_parcels``, ``n_unclassified_parcels`` (validation parcels without
        a prediction: no clear pixel, or no classified pixel for a vote).

    Raises
    ------
    InputError
        no validation parcel has a prediction.
    """
    val = split[split["split"] == VALIDATION][["polygon_id", "code"]].rename(columns={"code": "reference"})
    merged = val.merge(predicted[["polygon_id", "code"]], on="polygon_id", how="inner")
    if merged.empty:
        raise InputError(
            f"{architecture} {tile} run {run}",
            "no validation parcel has a prediction",
            "check that the split and the parcel predictions come from the same tile and reference",
        )
    y_true, y_pred = (
        merged["reference"].to_numpy().astype(np.int64),
        merged["code"].to_numpy().astype(np.int64),
    )
    present = set(y_true.tolist()) | set(y_pred.tolist())
    labels = [c for c in nomenclature.codes if c in present]
    m = confusion_metrics(y_true, y_pred, labels, unit="parcels")
    name_classes(m, nomenclature)
    m.pop("n_pixels")
    n_pixels = int(sum((pixel_counts or {}).get(int(i), 0) for i in merged["polygon_id"]))
    report = {
        "tile": str(tile),
        "run": int(run),
        "architecture": str(architecture),
        "level": "parcel",
        **m,
        "n_parcels": int(len(merged)),
        "n_pixels": n_pixels,
        "n_validation_parcels": int(len(val)),
        "n_unclassified_parcels": int(len(val) - len(merged)),
    }
    log.info(
        "%s %s run %s: parcel level OA %.4f kappa %.4f macro F1 %.4f "
        "on %d validation parcels (%d without prediction)",
        architecture,
        tile,
        run,
        m["overall_accuracy"],
        m["kappa"],
        m["macro_f1"],
        len(merged),
        len(val) - len(merged),
    )
    return report


def _finish(
    parcels: gpd.GeoDataFrame,
    split: gpd.GeoDataFrame,
    split_path: Path,
    grid: str | os.PathLike,
    nomenclature: Nomenclature,
    outputs: dict[str, str | os.PathLike],
    *,
    tile: str,
    run: int,
    architecture: str,
    description: str,
    pixel_counts: dict[int, int],
) -> dict[str, Any]:
    """Parcel map (GeoPackage + raster), parcel-level report with its pixel-level part."""
    write_parcel_map(parcels, grid, nomenclature, outputs["gpkg"], outputs["tif"], description=description)
    report = parcel_report(
        parcels, split, nomenclature, tile=tile, run=run, architecture=architecture, pixel_counts=pixel_counts
    )
    pixel = evaluate_map(
        outputs["tif"], split_path, nomenclature, tile=tile, run=run, architecture=architecture
    )
    report["pixel_level"] = {
        k: pixel[k]
        for k in (
            "overall_accuracy",
            "kappa",
            "macro_f1",
            "macro_f1_classes",
            "per_class",
            "commission_unvalidated",
            "confusion_matrix",
            "n_pixels",
            "n_unclassified",
        )
    }
    report["parcel_map"] = str(outputs["gpkg"])
    report["split"] = str(split_path)
    write_report(report, outputs["json"], outputs["csv"], outputs["png"], nomenclature)
    write_text_atomic(
        outputs["pixel_json"],
        json.dumps(json_ready({**pixel, "level": "pixel"}), indent=2, allow_nan=False) + "\n",
    )
    return report


def predict_parcel_tile(
    model_dir: str | os.PathLike,
    dataset_index: str | os.PathLike,
    split_gpkg: str | os.PathLike,
    grid: str | os.PathLike,
    nomenclature: Nomenclature | str | os.PathLike,
    outputs: dict[str, str | os.PathLike],
    *,
    tile: str,
    run: int,
    threads: int = 1,
    permute: bool = False,
) -> dict[str, Any]:
    """Classify every parcel of a tile with a trained parcel model; write the parcel map and reports.

    Parameters
    ----------
    model_dir : folder of :func:`train_parcel_model`.
    dataset_index : the tile's ``parcels.parquet``.
    split_gpkg : the run's ``split.gpkg`` of the tile (geometries, reference codes, split).
    grid : a raster on the tile grid (e.g. ``validity.tif``) for the parcel raster.
    nomenclature : nomenclature or its CSV.
    outputs : paths ``gpkg``, ``tif`` (parcel map), ``json`` (parcel-level report with its
        ``pixel_level`` part), ``csv``, ``png`` (parcel confusion matrix), ``pixel_json``
        (pixel-level report of the parcel raster, as :func:`cropchain.assessment.evaluate.evaluate_map`).
    tile, run : identifiers.
    threads : PyTorch CPU threads.
    permute : the ablation's test: dates randomly permuted per parcel.

    Returns
    -------
    dict
        the parcel-level report.

    Raises
    ------
    InputError
        missing inputs, a dataset that does not match the split or the model.
    """
    nomenclature = as_nomenclature(nomenclature)
    model = load_parcel_model(model_dir, threads=threads)
    dataset = load_parcel_dataset(dataset_index)
    split_path = Path(split_gpkg)
    split = read_split(split_path)
    label_rows(dataset, split, LEARN, split_path)  # checks that the dataset matches the split
    require_codes(
        nomenclature,
        model.classes.tolist(),
        Path(model_dir) / "model.json",
        "train and predict with the same nomenclature file",
    )
    t0 = time.perf_counter()
    proba = predict_parcels(model, dataset, permute=permute)
    log.info("%s: %d parcels classified in %.1f s", tile, len(dataset), time.perf_counter() - t0)
    best = proba.argmax(axis=1)
    pred = pd.DataFrame(
        {
            "polygon_id": dataset.index["polygon_id"].to_numpy(),
            "code": model.classes[best].astype(np.int32),
            "confidence": np.clip(np.rint(100 * proba[np.arange(len(best)), best]), 0, 100).astype(np.int32),
        }
    )
    parcels = _with_geometry(pred, split)
    name = model.meta["model"] + ("_permuted" if permute else "")
    counts = dict(zip(dataset.index["polygon_id"].astype(int), dataset.index["n_pixels"].astype(int)))
    return _finish(
        parcels,
        split,
        split_path,
        grid,
        nomenclature,
        outputs,
        tile=tile,
        run=run,
        architecture=name,
        description=f"parcel model {name} ({Path(model_dir)})",
        pixel_counts=counts,
    )


def _with_geometry(pred: pd.DataFrame, split: gpd.GeoDataFrame) -> gpd.GeoDataFrame:
    sp = split[["polygon_id", "code", "split", "geometry"]].rename(columns={"code": "reference_code"})
    out = sp.merge(pred, on="polygon_id", how="inner")
    out = gpd.GeoDataFrame(out, geometry="geometry", crs=split.crs)
    out["reference_code"] = out["reference_code"].astype(np.int32)
    return out.sort_values("polygon_id").reset_index(drop=True)


def majority_vote(labels: np.ndarray, nodata: int = NODATA_CLASS) -> tuple[int, float]:
    """Most frequent class among a parcel's pixels.

    Parameters
    ----------
    labels : integer ``[n]`` class codes of the parcel's pixels (``nodata`` ignored).
    nodata : code of unclassified pixels.

    Returns
    -------
    (code, fraction)
        the most frequent code (the smallest code on a tie) and the fraction of the
        classified pixels voting for it; ``(nodata, 0.0)`` when no pixel is classified.
    """
    values = np.asarray(labels).ravel()
    values = values[values != nodata].astype(np.int64)
    if values.size == 0:
        return nodata, 0.0
    codes, counts = np.unique(values, return_counts=True)
    best = int(np.argmax(counts))  # first maximum: the smallest tied code (codes are sorted)
    return int(codes[best]), float(counts[best] / values.size)


# 83 lines, of which 37 are the signature and docstring (shapes, units, errors): 46 of code
def majority_vote_tile(
    classification: str | os.PathLike,
    split_gpkg: str | os.PathLike,
    nomenclature: Nomenclature | str | os.PathLike,
    outputs: dict[str, str | os.PathLike],
    *,
    tile: str,
    run: int,
    architecture: str,
) -> dict[str, Any]:
    """Aggregate a pixel classification map to one label per parcel (majority vote) and report it.

    Each reference parcel of the split takes the most frequent class of its pixels on the
    map (:func:`majority_vote`; the parcel's pixels as in the parcel dataset,
    :func:`cropchain.parcels.dataset.parcel_window_mask`); its confidence is the share of its
    classified pixels that voted for it (%). A parcel without any classified pixel gets no
    label. Each parcel's window is read on its own: memory is bounded by the largest parcel.

    Parameters
    ----------
    classification : uint8 class map of a pixel architecture (``{tile}_classification.tif``).
    split_gpkg : the run's split of the tile.
    nomenclature : nomenclature or its CSV.
    outputs : as :func:`predict_parcel_tile`.
    tile, run : identifiers.
    architecture : the pixel architecture; the report is named ``vote_<architecture>``.

    Returns
    -------
    dict
        the parcel-level report.

    Raises
    ------
    InputError
        missing inputs, a parcel outside the map.
    """
    nomenclature = as_nomenclature(nomenclature)
    split_path = Path(split_gpkg)
    split = read_split(split_path)
    rows, counts = [], {}
    with open_raster(classification, "classification map") as src:
        nodata = NODATA_CLASS if src.nodata is None else int(src.nodata)
        geoms = split.to_crs(src.crs).geometry
        for pid, geom in zip(split["polygon_id"], geoms):
            try:
                win, inside = parcel_window_mask(
                    shapely.make_valid(geom), src.transform, src.height, src.width
                )
            except ValueError as exc:
                raise InputError(
                    split_path,
                    f"parcel {int(pid)} has no pixel on {classification} ({exc})",
                    "vote with the map of the same tile",
                ) from None
            code, share = majority_vote(src.read(1, window=win)[inside], nodata)
            counts[int(pid)] = int(inside.sum())
            if code == nodata:
                continue
            rows.append({"polygon_id": int(pid), "code": code, "confidence": int(round(100 * share))})
    pred = pd.DataFrame(rows, columns=["polygon_id", "code", "confidence"])
    require_codes(
        nomenclature,
        pred["code"].tolist(),
        classification,
        "vote with the nomenclature the map was made with",
    )
    parcels = _with_geometry(pred, split)
    name = f"vote_{architecture}"
    return _finish(
        parcels,
        split,
        split_path,
        classification,
        nomenclature,
        outputs,
        tile=tile,
        run=run,
        architecture=name,
        description=f"majority vote of {classification} per parcel",
        pixel_counts=counts,
    )


# --------------------------------------------------------------------------- summaries


def _read_json(path: Path, what: str) -> dict[str, Any]:
    if not path.exists():
        raise InputError(path, f"{what} not found", "run the step that writes it")
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(path, f"not a valid JSON file ({exc})", "rerun the step that writes it") from None


def _pooled(reports: list[dict[str, Any]]) -> dict[str, float]:
    """Metrics of several tiles' reports pooled (summed parcel confusion matrices)."""
    cells: dict[tuple[int, int], int] = {}
    for rep in reports:
        labels = [int(c) for c in rep["confusion_matrix"]["labels"]]
        cm = np.asarray(rep["confusion_matrix"]["matrix"], dtype=np.int64)
        for i, a in enumerate(labels):
            for j, b in enumerate(labels):
                cells[a, b] = cells.get((a, b), 0) + int(cm[i, j])
    m = metrics_from_matrix(*matrix_from_cells(cells))
    return {k: float(m[k]) for k in ("overall_accuracy", "kappa", "macro_f1")}


def ablation_table(
    reports: Sequence[str | os.PathLike],
    permuted_reports: Sequence[str | os.PathLike],
    out_csv: str | os.PathLike,
) -> pd.DataFrame:
    """F-score change when the dates are randomly permuted (the paper's ablation).

    Parameters
    ----------
    reports : parcel-level report JSONs of the models trained and tested in date order.
    permuted_reports : the same models, runs and tiles trained and tested with permuted
        dates (architecture ``<model>_permuted``).
    out_csv : one row per model and run (tiles pooled), then one row per model with
        ``run == "mean"`` (mean over runs) and ``run == "std"`` (sample std): columns
        ``model``, ``run``, ``macro_f1``, ``macro_f1_permuted``, ``delta_macro_f1``
        (permuted - ordered), the same for ``overall_accuracy`` and ``kappa``.

    Raises
    ------
    InputError
        a report missing its permuted counterpart, or the reverse.
    """
    groups: dict[tuple[str, int, bool], list[dict[str, Any]]] = {}
    for permuted, paths in ((False, reports), (True, permuted_reports)):
        for p in paths:
            rep = _read_json(Path(p), "parcel report")
            model = str(rep["architecture"]).removesuffix("_permuted")
            groups.setdefault((model, int(rep["run"]), permuted), []).append(rep)
    keys = {(m, r) for m, r, _ in groups}
    rows = []
    for model, run in sorted(keys):
        if (model, run, False) not in groups or (model, run, True) not in groups:
            raise InputError(
                out_csv,
                f"model {model} run {run} lacks its "
                f"{'permuted' if (model, run, False) in groups else 'ordered'} report",
                "give the reports of both variants",
            )
        a, b = _pooled(groups[model, run, False]), _pooled(groups[model, run, True])
        row: dict[str, Any] = {"model": model, "run": str(run)}
        for k in ("macro_f1", "overall_accuracy", "kappa"):
            row[k], row[f"{k}_permuted"], row[f"delta_{k}"] = a[k], b[k], b[k] - a[k]
        rows.append(row)
    df = pd.DataFrame(rows)
    stats = []
    for model, g in df.groupby("model", sort=True):
        num = g.drop(columns=["model", "run"])
        stats.append({"model": model, "run": "mean", **num.mean().to_dict()})
        stats.append(
            {
                "model": model,
                "run": "std",
                **(num.std(ddof=1) if len(g) > 1 else num.mean() * np.nan).to_dict(),
            }
        )
    df = pd.concat([df, pd.DataFrame(stats)], ignore_index=True)
    with atomic_output(out_csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.6f")
    log.info("ablation (permuted dates) of %d model(s) -> %s", df["model"].nunique(), out_csv)
    return df


def training_table(metrics_jsons: Sequence[str | os.PathLike], out_csv: str | os.PathLike) -> pd.DataFrame:
    """Training time and size of each parcel model and run.

    Parameters
    ----------
    metrics_jsons : ``metrics.json`` of the models (``model.json`` is read beside each).
    out_csv : columns ``model``, ``run`` (the model folder's run), ``permute_dates``,
        ``n_parameters``, ``temporal_ratio``, ``epochs``, ``best_epoch``,
        ``training_time_s``, ``threads``, ``n_learning_parcels``.
    """
    rows = []
    for p in map(Path, metrics_jsons):
        m = _read_json(p, "training metrics")
        meta = _read_json(p.with_name("model.json"), "model metadata")
        rows.append(
            {
                "model": meta["model"],
                "run": p.parent.parent.parent.name,
                "permute_dates": meta["permute_dates"],
                "n_parameters": meta["n_parameters"],
                "temporal_ratio": meta["temporal_ratio"],
                "epochs": m["epochs"],
                "best_epoch": m["best_epoch"],
                "training_time_s": m["training_time_s"],
                "threads": m.get("threads"),
                "n_learning_parcels": m["n_learning_parcels"],
            }
        )
    columns = [
        "model",
        "run",
        "permute_dates",
        "n_parameters",
        "temporal_ratio",
        "epochs",
        "best_epoch",
        "training_time_s",
        "threads",
        "n_learning_parcels",
    ]
    df = pd.DataFrame(rows, columns=columns)
    with atomic_output(out_csv) as tmp:
        df.to_csv(tmp, index=False, float_format="%.4f")
    return df
