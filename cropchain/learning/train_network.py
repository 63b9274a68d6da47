"""Training of the convolutional networks on patches of the feature rasters (the seed method).

As in Stoian et al. (Remote Sensing 2019) and Poulain et al. (ESA Phi-week 2018):

- 64 x 64 patches are drawn on the fly from the gap-filled features of every tile, the
  class of each patch first, so that rare classes are seen (:mod:`cropchain.learning.patches`);
- labels are sparse: only the pixels of the run's learning polygons carry a class; every
  other pixel, the validation polygons included, is ignored by the loss;
- the loss is the categorical cross-entropy weighted by class, weight = (frequency of
  the class among the labelled pixels of drawn patches) ** -``class_weight_power``;
- inputs are standardized with statistics of the learning pixels (saved with the model);
  patches are flipped and rotated by multiples of 90 degrees; Adam;
- early stopping on a part of the learning polygons held out from the loss (never on
  validation polygons): the weights of the epoch with the best held-out score
  (``monitor``: loss by default) are kept, and training stops after ``patience`` epochs
  without a better one; optionally (``ema_decay`` > 0) an exponential moving average of
  the weights is what is evaluated and kept (Polyak averaging; off by default: on T31TEJ
  it stopped the trainings too early);
- seeds fix the weights' initialisation, the hold-out, the patches and dropout, so that a
  run is reproducible with the same number of threads (``torch.set_num_threads``);
- optionally (``ensemble`` = n > 1) a seed ensemble: n networks trained in turn with seeds
  ``seed + 1000 i`` on the same standardization, hold-out and class weights, their
  probabilities averaged at inference (:class:`~cropchain.models.networks.SeedEnsemble`;
  Lakshminarayanan et al., NeurIPS 2017); member 0 is the network trained without it.

Outputs in ``out_dir``: ``model.pt`` (weights, normalization, classes, feature names,
hyper-parameters), ``model.json`` (the same metadata, readable), ``metrics.json`` (time,
epochs, curves; of member 0 for an ensemble, each member's under ``members``) and
``training_curves.png``.
"""

from __future__ import annotations

import contextlib
import copy
import json
import logging
import os
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

import cropchain
from cropchain.errors import ConfigError, InputError
from cropchain.io.atomic import atomic_output, write_text_atomic
from cropchain.learning.patches import (
    IGNORE_INDEX,
    PatchSampler,
    TileSource,
    read_learning_polygons,
    select_holdout,
    standardization,
)
from cropchain.metrics import macro_f1
from cropchain.models import check_tiling, get_model, is_network
from cropchain.models.networks import (
    WEIGHTS_FILE,
    NetworkClassifier,
    channel_groups,
    ensemble_members,
    library_versions,
    member_seeds,
)
from cropchain.series.features import FeatureSpec, features_path, open_features

log = logging.getLogger(__name__)

#: patches drawn to estimate the class frequencies of the loss weights
N_FREQUENCY_PATCHES = 256
#: held-out scores early stopping can follow
MONITORS = ("loss", "macro_f1", "overall_accuracy")


def masked_cross_entropy(
    logits: torch.Tensor, target: torch.Tensor, weight: torch.Tensor | None
) -> torch.Tensor:
    """Class-weighted cross-entropy over the labelled pixels only.

    Parameters
    ----------
    logits : float32 ``[B, K, H, W]`` (or ``[N, K]``).
    target : int64 ``[B, H, W]`` (or ``[N]``) class indices; :data:`~cropchain.learning.patches.IGNORE_INDEX`
        pixels contribute nothing, neither to the loss nor to its gradient.
    weight : float32 ``[K]`` class weights, or None.

    Returns
    -------
    Scalar: ``sum(w_y * nll) / sum(w_y)`` over labelled pixels (PyTorch's weighted mean).
    """
    return F.cross_entropy(logits, target, weight=weight, ignore_index=IGNORE_INDEX)


def _labelled_logits(
    net: torch.nn.Module, pixelwise: bool, x: torch.Tensor, y: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Logits and targets of a batch; a pixel-wise network sees its labelled pixels only."""
    if pixelwise:
        mask = y != IGNORE_INDEX
        pixels = x.permute(0, 2, 3, 1)[mask]  # [N, F]
        return net(pixels[:, :, None, None])[:, :, 0, 0], y[mask]
    return net(x), y


def _evaluate(
    net: torch.nn.Module,
    pixelwise: bool,
    sampler: PatchSampler,
    windows: list,
    weight: torch.Tensor | None,
    batch_size: int,
) -> dict[str, float]:
    """Loss, overall accuracy and macro F1 of ``net`` on the held-out pixels of fixed windows."""
    net.eval()
    total, norm = 0.0, 0.0
    truth, pred = [], []
    with torch.inference_mode():
        for i in range(0, len(windows), batch_size):
            xb, yb = sampler.window_batch(windows[i : i + batch_size])
            device = next(net.parameters()).device
            logits, target = _labelled_logits(
                net, pixelwise, torch.from_numpy(xb).to(device), torch.from_numpy(yb).to(device)
            )
            if not pixelwise:
                logits = logits.permute(0, 2, 3, 1)[target != IGNORE_INDEX]
                target = target[target != IGNORE_INDEX]
            nll = F.cross_entropy(logits, target, reduction="none")
            w = weight[target] if weight is not None else torch.ones_like(nll)
            total += float((w * nll).sum())
            norm += float(w.sum())
            truth.append(target.cpu().numpy())
            pred.append(logits.argmax(1).cpu().numpy())
    y, p = np.concatenate(truth), np.concatenate(pred)
    return {
        "loss": total / max(norm, 1e-12),
        "overall_accuracy": float((y == p).mean()),
        "macro_f1": macro_f1(y, p)[0],
    }


def train_network(
    features: Sequence[str | os.PathLike],
    validity: Sequence[str | os.PathLike],
    splits: Sequence[str | os.PathLike],
    architecture: str,
    hyperparameters: dict[str, Any],
    out_dir: str | os.PathLike,
    *,
    seed: int,
    threads: int = 1,
    tiles: Sequence[str] | None = None,
    classify_window: int | None = None,
    classify_overlap: int | None = None,
) -> dict[str, Any]:
    """Train network ``architecture`` on the learning polygons of one run and save it.

    Parameters
    ----------
    features, validity, splits : per tile (same order): the features
        (:class:`~cropchain.series.features.FeatureSpec`, float32 ``[F, H, W]``, reflectance
        0-1 and indices, nodata -9999, band descriptions = feature names, identical for all
        tiles), ``validity.tif`` (clear dates per pixel; 0 = nodata) and the run's
        ``split.gpkg`` (columns ``code``, ``split``).
    architecture : registry name of a network (``fg_unet``, ``temporal_unet``, ``dilated_cnn``, ``tempcnn``).
    hyperparameters : config ``architectures.<name>`` (architecture and training keys,
        see :data:`cropchain.models.networks.TRAINING_DEFAULTS` and each architecture's
        ``DEFAULTS``).
    out_dir : folder receiving ``model.pt``, ``model.json``, ``metrics.json`` and
        ``training_curves.png``.
    seed : random seed of the run.
    threads : PyTorch CPU threads.
    tiles : tile names (default ``tile0``, ``tile1``...), for logs and metadata.
    classify_window, classify_overlap : tiling of the inference to come; when given, an
        overlap below the network's margin stops here, before any training.

    Returns
    -------
    The metadata written to ``model.json``.

    Raises
    ------
    ConfigError
        not a network, unknown hyper-parameter, tiling that would show seams.
    InputError
        unreadable inputs, features that differ between tiles, no learning pixel.
    """
    tiles = _check_arguments(architecture, features, validity, splits, tiles)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()

    model = _build_model(architecture, hyperparameters, seed, threads)
    hp = model.training_hyperparameters
    rng = np.random.default_rng([int(seed), 20190917])

    names, polygons, holdout = _learning_polygons(features, splits, float(hp["holdout_fraction"]), seed)

    with contextlib.ExitStack() as open_sources:
        sources = _tile_sources(tiles, features, validity, polygons, holdout, splits, hp, open_sources)
        classes, n_train, n_holdout = _class_counts(sources, architecture)
        _prepare_model(model, sources, names, classes, architecture)
        if classify_window is not None and classify_overlap is not None:
            check_tiling(classify_window, classify_overlap, model.margin, model.alignment, model.architecture)

        sampler = PatchSampler(sources, classes, int(hp["patch_size"]), rng, augment=bool(hp["augment"]))
        weights, weight = _class_weights(sampler, hp, model.device)
        windows = _holdout_windows(sampler, hp)
        fits = _fit_members(model, sampler, windows, weight, hp, architecture)
        scores = {}
        if windows and len(fits) > 1:
            scores = _evaluate(model.net, model.pixelwise, sampler, windows, weight, int(hp["batch_size"]))
            log.info(
                "ensemble of %d %s: held-out loss %.4f, OA %.3f, macro F1 %.3f",
                len(fits),
                architecture,
                scores["loss"],
                scores["overall_accuracy"],
                scores["macro_f1"],
            )

    elapsed = time.perf_counter() - start
    class_weights = None if weight is None else dict(zip(classes, weights))
    meta = _metadata(
        model, architecture, seed, names, class_weights, tiles, polygons, holdout, n_train, n_holdout
    )
    curves, best, seconds = fits[0]
    metrics = _training_metrics(curves, best, elapsed, seconds, hp, threads, n_train, n_holdout)
    if len(fits) > 1:
        metrics["members"] = [
            {"seed": s, **_training_metrics(c, b, t, t, hp, threads, n_train, n_holdout)}
            for s, (c, b, t) in zip(member_seeds(seed, len(fits)), fits)
        ]
        metrics["fit_time_s"] = round(sum(t for _, _, t in fits), 3)
        metrics.update({f"ensemble_holdout_{k}": v for k, v in scores.items()})
    _save(model, out_dir, meta, metrics, title=f"{architecture} (seed {seed})")
    log.info(
        "trained %s in %.1f s: %d epochs, best epoch %s", architecture, elapsed, metrics["epochs_run"], best
    )
    return meta


def _save(model: NetworkClassifier, out_dir: Path, meta: dict, metrics: dict, *, title: str) -> None:
    """Write ``model.pt``, ``model.json``, ``metrics.json`` and ``training_curves.png``."""
    model.save(out_dir)
    write_text_atomic(out_dir / "model.json", json.dumps(meta, indent=2))
    write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    plot_curves(metrics["curves"], metrics["best_epoch"], out_dir / "training_curves.png", title=title)


def _learning_polygons(
    features: Sequence[Any], splits: Sequence[Any], fraction: float, seed: int
) -> tuple[list[str], list, list[np.ndarray]]:
    """The feature names, each tile's learning polygons (in its CRS) and those held out."""
    names, crs = _feature_names(features)
    polygons = [read_learning_polygons(s, crs[i]) for i, s in enumerate(splits)]
    return names, polygons, select_holdout(polygons, fraction, seed)


def _holdout_windows(sampler: PatchSampler, hp: dict[str, Any]) -> list:
    """The fixed windows of the held-out pixels (empty, with a warning, when none is held out)."""
    windows = sampler.holdout_windows()
    if not windows:
        log.warning(
            "no held-out polygon (too few learning polygons per class): no early stopping, %d epochs",
            hp["epochs"],
        )
    return windows


def _metadata(
    model: NetworkClassifier,
    architecture: str,
    seed: int,
    names: list[str],
    class_weights: dict | None,
    tiles: list[str],
    polygons: list,
    holdout: list,
    n_train: dict[int, int],
    n_holdout: dict[int, int],
) -> dict[str, Any]:
    """The content of ``model.json`` (``class_weights``: loss weight by class code, or None)."""
    return {
        "architecture": architecture,
        "kind": "network",
        "model_file": WEIGHTS_FILE,
        "hyperparameters": model.hyperparameters,
        "seed": seed,
        "classes": [int(c) for c in model.classes_],
        "feature_names": list(names),
        "normalization": {
            "mean": [float(v) for v in model.mean],
            "std": [float(v) for v in model.std],
            "pooled_over": "dates of each band or index",
            "nodata_to": 0.0,
        },
        "margin": model.margin,
        "alignment": model.alignment,
        "n_parameters": model.n_parameters,
        "class_weights": {int(c): round(float(w), 6) for c, w in class_weights.items()}
        if class_weights is not None
        else None,
        "holdout_polygons": {
            t: sorted(int(i) for i in p.loc[h, "polygon_id"]) for t, p, h in zip(tiles, polygons, holdout)
        },
        "n_learning_pixels": n_train,
        "n_holdout_pixels": n_holdout,
        "cropchain_version": cropchain.__version__,
        "library_versions": library_versions(),
    }


def _check_arguments(
    architecture: str,
    features: Sequence[Any],
    validity: Sequence[Any],
    splits: Sequence[Any],
    tiles: Sequence[str] | None,
) -> list[str]:
    """A network architecture, and the same (non-zero) number of tiles in each input list;
    the tile names (default ``tile0``, ``tile1``...)."""
    if not is_network(architecture):
        raise ConfigError(
            f"architectures.{architecture}: not a network; train it with cropchain.learning.train.train_model"
        )
    if not (len(features) == len(validity) == len(splits)) or not features:
        raise ValueError("features, validity and splits must list the same tiles (at least one)")
    return list(tiles) if tiles is not None else [f"tile{i}" for i in range(len(features))]


def _build_model(
    architecture: str, hyperparameters: dict[str, Any], seed: int, threads: int
) -> NetworkClassifier:
    """The untrained network, its monitor checked, PyTorch seeded and on ``threads`` threads."""
    model: NetworkClassifier = get_model(architecture, seed=seed, threads=threads, **hyperparameters)
    hp = model.training_hyperparameters
    if hp["monitor"] not in MONITORS:
        raise ConfigError(
            f"architectures.{architecture}.monitor: {hp['monitor']!r} is not one of {', '.join(MONITORS)}"
        )
    rate = float(hp.get("date_dropout", 0.0))  # a key of the temporal networks only
    if not 0 <= rate < 1:
        raise ConfigError(f"architectures.{architecture}.date_dropout: {rate} is not in [0, 1)")
    model.set_threads(threads)
    torch.manual_seed(seed)
    return model


def _tile_sources(
    tiles: list[str],
    features: Sequence[Any],
    validity: Sequence[Any],
    polygons: list,
    holdout: list,
    splits: Sequence[Any],
    hp: dict[str, Any],
    open_sources: contextlib.ExitStack,
) -> list[TileSource]:
    """The patch sources of the tiles with a clear learning pixel, each entered in ``open_sources``
    (which closes their feature readers).

    Raises
    ------
    InputError
        no tile has a learning polygon over a clear pixel.
    """
    sources = []
    for tile, fpath, vpath, polys, held in zip(tiles, features, validity, polygons, holdout):
        src = TileSource.build(tile, fpath, vpath, polys, held, pad=int(hp["patch_size"]))
        if src is not None:
            sources.append(open_sources.enter_context(src))
    if not sources:
        raise InputError(
            splits[0],
            "no learning polygon covers a clear pixel of any tile",
            "check that the reference polygons overlap the tiles and the split ratio",
        )
    return sources


def _class_counts(
    sources: list[TileSource], architecture: str
) -> tuple[np.ndarray, dict[int, int], dict[int, int]]:
    """The classes learnt (codes with a training pixel) and their training and held-out pixels."""
    codes = np.unique(np.concatenate([np.unique(s.train) for s in sources]))
    classes = codes[codes > 0]
    dropped = sorted(
        set(np.unique(np.concatenate([np.unique(s.holdout) for s in sources])).tolist())
        - set(classes.tolist())
        - {0}
    )
    if dropped:
        log.warning("classes %s have held-out pixels but no training pixel: not learnt", dropped)
    n_train = {int(c): int(sum((s.train == c).sum() for s in sources)) for c in classes}
    n_holdout = {int(c): int(sum((s.holdout == c).sum() for s in sources)) for c in classes}
    log.info(
        "%s: %d classes, training pixels %s, held-out pixels %s",
        architecture,
        len(classes),
        n_train,
        n_holdout,
    )
    return classes, n_train, n_holdout


def _prepare_model(
    model: NetworkClassifier,
    sources: list[TileSource],
    names: list[str],
    classes: np.ndarray,
    architecture: str,
) -> None:
    """Standardize the sources with the learning pixels' statistics and initialize the network
    with them, on its device."""
    mean, std = standardization(sources, channel_groups(names))
    for src in sources:
        src.standardize(mean, std)
    model.initialize(names, classes, mean, std)
    model.to_device()  # hyper-parameter device (auto: a CUDA GPU when present, else the CPU)
    log.info(
        "%s: %d parameters, receptive margin %d px, alignment %d px, on %s",
        architecture,
        model.n_parameters,
        model.margin,
        model.alignment,
        model.device,
    )


def _class_weights(
    sampler: PatchSampler, hp: dict[str, Any], device: Any
) -> tuple[np.ndarray, torch.Tensor | None]:
    """Loss weights ``frequency ** -class_weight_power`` (mean 1) from drawn patches, and
    their tensor (None when the power is 0)."""
    frequencies = sampler.class_frequencies(N_FREQUENCY_PATCHES)
    power = float(hp["class_weight_power"])
    raw = np.where(frequencies > 0, np.maximum(frequencies, 1e-12) ** -power, 0.0)
    weights = raw / max(raw.mean(), 1e-12)
    weight = torch.as_tensor(weights, dtype=torch.float32, device=device) if power else None
    return weights, weight


def _training_metrics(
    curves: dict[str, list],
    best: int | None,
    elapsed: float,
    seconds: float,
    hp: dict[str, Any],
    threads: int,
    n_train: dict[int, int],
    n_holdout: dict[int, int],
) -> dict[str, Any]:
    """The content of ``metrics.json``: times, epochs, curves and the best epoch's held-out scores."""
    metrics = {
        "training_time_s": round(elapsed, 3),
        "fit_time_s": round(seconds, 3),
        "epochs_run": len(curves["epoch"]),
        "best_epoch": best,
        "stopped_early": len(curves["epoch"]) < int(hp["epochs"]),
        "threads": threads,
        "n_learning_pixels": int(sum(n_train.values())),
        "n_holdout_pixels": int(sum(n_holdout.values())),
        "curves": curves,
    }
    if best is not None and curves["holdout_loss"]:
        i = curves["epoch"].index(best)
        metrics.update(
            {f"holdout_{k}": curves[f"holdout_{k}"][i] for k in ("loss", "overall_accuracy", "macro_f1")}
        )
    return metrics


def _feature_names(features: Sequence[FeatureSpec | str | os.PathLike]) -> tuple[list[str], list[Any]]:
    """Feature names (identical for all tiles) and the CRS of each tile."""
    names: list[str] | None = None
    crs = []
    for spec in features:
        with open_features(spec, "feature raster") as src:
            these = [d or "" for d in src.descriptions]
            crs.append(src.crs)
        if names is None:
            names = these
        elif these != names:
            raise InputError(
                features_path(spec),
                f"feature names differ from those of {features_path(features[0])}",
                "compute the features of all tiles with the same configuration",
            )
    assert names is not None
    return names, crs


def ema_update(decay: float):
    """Exponential moving average step for :class:`torch.optim.swa_utils.AveragedModel`, with
    TensorFlow's warm-up: the decay at step ``n`` is ``min(decay, (1 + n) / (10 + n))``, so
    that a short training is not dominated by the initial weights. Integer buffers (batch
    normalization counters) are copied."""

    def update(averaged: list[torch.Tensor], current: list[torch.Tensor], n_averaged: torch.Tensor) -> None:
        n = float(n_averaged)
        d = min(decay, (1.0 + n) / (10.0 + n))
        for a, c in zip(averaged, current):
            if a.is_floating_point():
                a.lerp_(c, 1.0 - d)
            else:
                a.copy_(c)

    return update


def _fit_members(
    model: NetworkClassifier,
    sampler: PatchSampler,
    windows: list,
    weight: torch.Tensor | None,
    hp: dict[str, Any],
    architecture: str,
) -> list[tuple[dict[str, list], int | None, float]]:
    """Train the network, or each member of a seed ensemble in turn, with :func:`_fit`; the
    curves, best epoch and fit seconds of each.

    Member 0 trains exactly as a lone network (the run's seed, ``sampler``'s generator);
    member ``i`` > 0 reseeds PyTorch (dropout) and draws its patches with its own seed
    (:func:`~cropchain.models.networks.member_seeds`). All members share the standardization,
    the held-out polygons, the class weights and the early-stopping rule.
    """
    members = ensemble_members(model._module())
    seeds = member_seeds(model.seed, len(members))
    fits = []
    for i, (net, seed) in enumerate(zip(members, seeds)):
        if i > 0:
            torch.manual_seed(seed)
            sampler = copy.copy(sampler)
            sampler.rng = np.random.default_rng([seed, 20190917])
            log.info("%s: ensemble member %d of %d (seed %d)", architecture, i + 1, len(members), seed)
        fits.append(_fit(model, net, sampler, windows, weight, hp, architecture))
    model._module().eval()
    return fits


def _fit(
    model: NetworkClassifier,
    net: torch.nn.Module,
    sampler: PatchSampler,
    windows: list,
    weight: torch.Tensor | None,
    hp: dict[str, Any],
    architecture: str,
) -> tuple[dict[str, list], int | None, float]:
    """The training loop of ``net`` (``model``'s module or one member of it): Adam, an
    exponential moving average of the weights (evaluated and kept), early stopping on the
    held-out loss, the best weights restored."""
    from torch.optim.swa_utils import AveragedModel

    opt = torch.optim.Adam(
        net.parameters(), lr=float(hp["learning_rate"]), weight_decay=float(hp["weight_decay"])
    )
    decay = float(hp["ema_decay"])
    ema = AveragedModel(net, multi_avg_fn=ema_update(decay), use_buffers=True) if decay > 0 else None
    kept = ema.module if ema is not None else net  # the weights evaluated and kept
    batch, epochs = int(hp["batch_size"]), int(hp["epochs"])
    steps = max(1, -(-int(hp["patches_per_epoch"]) // batch))
    curves: dict[str, list] = {
        "epoch": [],
        "train_loss": [],
        "holdout_loss": [],
        "holdout_overall_accuracy": [],
        "holdout_macro_f1": [],
        "seconds": [],
    }
    stopping = _EarlyStopping(str(hp["monitor"]), int(hp["patience"]))
    t0 = time.perf_counter()
    for epoch in tqdm(range(1, epochs + 1), desc=f"train {architecture}", unit="epoch", disable=None):
        losses = _train_epoch(model, net, sampler, opt, ema, weight, batch, steps)
        curves["epoch"].append(epoch)
        curves["train_loss"].append(float(np.mean(losses)))
        curves["seconds"].append(round(time.perf_counter() - t0, 2))
        if windows:
            scores = _evaluate(kept, model.pixelwise, sampler, windows, weight, batch)
            for k, v in scores.items():
                curves[f"holdout_{k}"].append(v)
            log.info(
                "epoch %d: train loss %.4f, held-out loss %.4f, OA %.3f, macro F1 %.3f (%.0f s)",
                epoch,
                curves["train_loss"][-1],
                scores["loss"],
                scores["overall_accuracy"],
                scores["macro_f1"],
                curves["seconds"][-1],
            )
            if stopping.stop(epoch, scores, kept):
                break
        else:
            log.info(
                "epoch %d: train loss %.4f (%.0f s)", epoch, curves["train_loss"][-1], curves["seconds"][-1]
            )
    best_state = stopping.best_state
    if best_state is None:  # no held-out polygon: the last (averaged) weights
        best_state = _state_copy(kept)
    net.load_state_dict(best_state)
    net.eval()
    return curves, stopping.best_epoch, time.perf_counter() - t0


def _train_epoch(
    model: NetworkClassifier,
    net: torch.nn.Module,
    sampler: PatchSampler,
    opt: torch.optim.Optimizer,
    ema: Any,
    weight: torch.Tensor | None,
    batch: int,
    steps: int,
) -> list[float]:
    """One epoch of ``steps`` Adam steps of ``net`` on drawn batches (the average ``ema``
    updated after each); returns the batch losses."""
    net.train()
    losses = []
    rate = float(model.training_hyperparameters.get("date_dropout", 0.0))
    for _ in range(steps):
        x, y = sampler.draw(batch)
        if rate > 0:
            x = drop_dates(x, net.order.cpu().numpy(), net.n_dates, rate, sampler.rng)
        logits, target = _labelled_logits(
            net,
            model.pixelwise,
            torch.from_numpy(x).to(model.device),
            torch.from_numpy(y).to(model.device),
        )
        loss = masked_cross_entropy(logits, target, weight)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        if ema is not None:
            ema.update_parameters(net)
        losses.append(float(loss.detach()))
    return losses


def drop_dates(
    x: np.ndarray, order: np.ndarray, n_dates: int, rate: float, rng: np.random.Generator
) -> np.ndarray:
    """Random date dropout, an augmentation of the series for small reference sets.

    Each date of each patch is dropped with probability ``rate``: all its channels (bands and
    indices) set to 0, the standardized mean, which is also what nodata becomes; one date drawn
    at random is kept when all would be dropped. Training only; inference sees every date.

    Parameters
    ----------
    x : float32 ``[n, F, P, P]`` standardized patches, modified in place.
    order : int64 ``[T * C]``, the feature indices of each (date, channel), date-major
        (:class:`cropchain.models.networks.TemporalLayout`).
    n_dates : ``T``.
    rate : probability of dropping a date, in [0, 1).
    rng : the patch sampler's generator (the draws are seeded with the run).

    Returns
    -------
    ``x``.
    """
    n = x.shape[0]
    drop = rng.random((n, n_dates)) < rate
    every = drop.all(axis=1)
    if every.any():
        drop[every, rng.integers(0, n_dates, int(every.sum()))] = False
    by_feature = np.zeros((n, x.shape[1]), dtype=bool)
    by_feature[:, order] = np.repeat(drop, len(order) // n_dates, axis=1)
    x[by_feature] = 0.0
    return x


def _state_copy(net: torch.nn.Module) -> dict[str, torch.Tensor]:
    """A detached copy of the weights and buffers of ``net``."""
    return {k: v.detach().clone() for k, v in net.state_dict().items()}


class _EarlyStopping:
    """Early stopping on a held-out score: keeps a copy of the weights of the best epoch and
    says when ``patience`` epochs went by without a better one."""

    def __init__(self, monitor: str, patience: int) -> None:
        self.monitor, self.patience = monitor, patience
        self.sign = 1.0 if monitor == "loss" else -1.0  # lower is better
        self.best_score, self.best_epoch, self.best_state, self.waited = float("inf"), None, None, 0

    def stop(self, epoch: int, scores: dict[str, float], kept: torch.nn.Module) -> bool:
        """Record the held-out ``scores`` of ``epoch`` (copying ``kept``'s weights when they are
        the best); whether training stops here."""
        if self.sign * scores[self.monitor] < self.best_score:
            self.best_score, self.best_epoch, self.waited = self.sign * scores[self.monitor], epoch, 0
            self.best_state = _state_copy(kept)
            return False
        self.waited += 1
        if self.waited >= self.patience:
            log.info(
                "early stop after epoch %d: no better held-out %s since epoch %d",
                epoch,
                self.monitor,
                self.best_epoch,
            )
            return True
        return False


def plot_curves(
    curves: dict[str, list], best_epoch: int | None, out: str | os.PathLike, *, title: str = ""
) -> None:
    """PNG of the training and held-out loss and of the held-out accuracy / macro F1 per epoch."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (a, b) = plt.subplots(1, 2, figsize=(10, 3.8))
    a.plot(curves["epoch"], curves["train_loss"], label="training patches")
    if curves["holdout_loss"]:
        a.plot(curves["epoch"], curves["holdout_loss"], label="held-out polygons")
        b.plot(curves["epoch"], curves["holdout_overall_accuracy"], label="overall accuracy")
        b.plot(curves["epoch"], curves["holdout_macro_f1"], label="macro F1")
    for ax in (a, b):
        if best_epoch is not None:
            ax.axvline(best_epoch, color="grey", ls="--", lw=1, label="kept (best held-out loss)")
        ax.set_xlabel("epoch")
        ax.legend(fontsize=8)
        ax.grid(alpha=0.3)
    a.set_ylabel("weighted cross-entropy")
    b.set_ylabel("held-out pixels")
    b.set_ylim(0, 1)
    fig.suptitle(title)
    fig.tight_layout()
    with atomic_output(out) as tmp:
        fig.savefig(tmp, dpi=90, format="png")
    plt.close(fig)
