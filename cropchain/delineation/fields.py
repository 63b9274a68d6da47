"""Field delineation: Mask R-CNN instances of cropland parcels, trained and predicted on a tile.

Follows the CESBIO study "Feedback on Mask R-CNN for croplands delineation" (one foreground
class, cropland parcel; inputs B-G-R-NIR or B-G-R-NDVI of one date, or the NDVI of every
date, the study's best), on the chain's products: the features of ``tiles/{tile}/gapfilled.tif`` (float32,
reflectance 0-1 and NDVI, iota2 band names ``YYYYMMDD_B02`` ... ``YYYYMMDD_NDVI``) and the
run's learning/validation split ``runs/{run}/tiles/{tile}/split.gpkg`` (same runs and seeds
as the rest of the chain). Pixel maps merge neighbouring fields of one crop; one polygon
per field needs instance segmentation.

Training (:func:`train_delineation`): square patches of ``patch_size`` px are cut around
learning parcels (a learning parcel drawn at random, the patch centre shifted at random by
up to half a patch), every learning parcel that has at least ``min_instance_px`` pixels in
the patch is one instance (its pixels rasterized with :func:`rasterio.features.rasterize`,
all-touched off; its box = the bounding box of those pixels). Validation parcels and
unlabelled land in a patch are background: the only labels used are the learning ones.
Random flips and 90-degree rotations (``augment``). AdamW with a linear warm-up over the
first 5% of ``steps`` and a cosine decay; a fixed number of steps (the dataset is too small
to hold out parcels for early stopping). Seeded by the run's seed. The normalization
(per-channel mean and standard deviation over the valid pixels of ``n_stats_patches``
patches drawn like the training ones) goes into the model's transform and ``model.json``.

Inference (:func:`predict_delineation`): overlapping square windows of ``window`` px with
``overlap`` px shared between neighbours (the last window of a row or column is shifted
back inside the tile; a tile smaller than a window is padded with the channel means).
Instances found twice or cut by a window edge are resolved by :func:`merge_detections`
(rule in its docstring): each field appears once. Output: a GeoPackage (layer ``fields``)
of field polygons with ``score`` (Mask R-CNN's confidence 0-1), ``area_ha`` and
``n_pieces`` (detections merged into the polygon), written atomically.
"""

from __future__ import annotations

import datetime as dt
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
import pyogrio
import rasterio
import rasterio.features
import shapely
import torch
from affine import Affine

import cropchain
from cropchain.errors import ConfigError, InputError
from cropchain.io.atomic import atomic_output, write_text_atomic
from cropchain.learning.augment import random_dihedral
from cropchain.models import count_parameters
from cropchain.models.mask_rcnn import MODEL_DEFAULTS, build_mask_rcnn, set_input_size
from cropchain.reference.split import LEARN, read_split
from cropchain.series.features import FeatureSpec, features_path, open_features

log = logging.getLogger(__name__)

LAYER = "fields"

#: the input variants of the study: name -> description
VARIANTS: dict[str, str] = {
    "bgrn": "one date's B02, B03, B04, B08 (blue, green, red, near infrared reflectance 0-1)",
    "bgr_ndvi": "one date's B02, B03, B04 reflectance and NDVI",
    "ndvi_stack": "the NDVI of every date of the grid (multi-temporal, the study's best)",
}

#: training settings (config ``delineation.training``; a variant's own section may override them)
TRAINING_DEFAULTS: dict[str, Any] = {
    "patch_size": 64,  # px at 10 m
    "upscale": 2,  # the model sees patches scaled by this factor (small fields, FPN strides >= 4)
    "steps": 300,  # optimizer steps
    "batch_size": 4,
    "learning_rate": 1e-3,
    "weight_decay": 1e-4,
    "augment": True,
    "min_instance_px": 4,  # a parcel with fewer pixels in a patch is not an instance there
    "n_stats_patches": 64,
}

#: inference settings (config ``delineation.inference``)
INFERENCE_DEFAULTS: dict[str, Any] = {
    "window": 128,  # px
    "overlap": 32,  # px shared by neighbouring windows: fields up to this size are seen whole
    "min_score": 0.05,  # detections below are dropped before merging
    "mask_threshold": 0.5,  # a pixel belongs to an instance where its mask probability is above
    "iou_threshold": 0.5,  # two detections overlapping more are the same field found twice
    "min_area_px": 4,  # smaller instances are dropped
}


# --------------------------------------------------------------------------- inputs


def select_date(dates: Sequence[str], date: str | None) -> str:
    """The date (``YYYYMMDD``) of a single-date variant.

    ``date`` given: it must be one of ``dates``. ``None``: the date of the grid closest to
    July 1st of the series' year (summer crops are up and winter crops not yet harvested
    everywhere).

    Raises
    ------
    ConfigError
        ``date`` not on the grid.
    """
    dates = list(dates)
    if date is not None:
        date = str(date).replace("-", "")
        if date not in dates:
            raise ConfigError(
                f"delineation: date {date} is not on the output date grid "
                f"({dates[0]} ... {dates[-1]}, {len(dates)} dates)"
            )
        return date
    year = int(dates[len(dates) // 2][:4])
    target = dt.date(year, 7, 1)
    return min(dates, key=lambda d: abs((dt.date(int(d[:4]), int(d[4:6]), int(d[6:])) - target).days))


def variant_channels(
    descriptions: Sequence[str], variant: str, date: str | None
) -> tuple[list[int], list[str]]:
    """1-based feature indices in the tile's features and channel names of an input variant.

    Parameters
    ----------
    descriptions : the feature names of the tile (``YYYYMMDD_B02`` ...).
    variant : a key of :data:`VARIANTS`.
    date : ``YYYYMMDD`` or None (:func:`select_date`); ignored by ``ndvi_stack``.

    Raises
    ------
    ConfigError
        unknown variant; a band the variant needs is not in the features (e.g. NDVI not in
        ``features.indices``).
    """
    if variant not in VARIANTS:
        raise ConfigError(f"delineation: unknown input variant {variant!r} (valid: {', '.join(VARIANTS)})")
    index = {d: i + 1 for i, d in enumerate(descriptions)}
    dates = sorted({d.split("_", 1)[0] for d in descriptions if "_" in d})
    if variant == "ndvi_stack":
        names = [f"{d}_NDVI" for d in dates]
    else:
        day = select_date(dates, date)
        last = "B08" if variant == "bgrn" else "NDVI"
        names = [f"{day}_{b}" for b in ("B02", "B03", "B04", last)]
    missing = [n for n in names if n not in index]
    if missing:
        raise ConfigError(
            f"delineation: variant {variant} needs feature band(s) {missing[:3]} "
            "absent from features of the tile "
            "(add B02 B03 B04 B08 to ingest.bands and NDVI to features.indices)"
        )
    return [index[n] for n in names], names


@dataclass
class TileImage:
    """The input of one tile for a variant: ``x`` float32 ``[C, H, W]`` (reflectance 0-1 or
    NDVI; nodata pixels hold 0 and are False in ``valid``), ``valid`` bool ``[H, W]``,
    ``transform`` and ``crs`` of the tile grid, ``channels`` (band names)."""

    x: np.ndarray
    valid: np.ndarray
    transform: Affine
    crs: Any
    channels: list[str]


def read_variant(features: FeatureSpec | str | os.PathLike, variant: str, date: str | None) -> TileImage:
    """Read the channels of ``variant`` from the tile's features (whole tile, float32
    ``C x H x W x 4`` bytes): a :class:`~cropchain.series.features.FeatureSpec` (computed from the
    gap-filled series) or a feature GeoTIFF.

    Raises
    ------
    InputError
        missing or unreadable file, no band descriptions.
    """
    with open_features(features, "features") as src:
        if not all(src.descriptions):
            raise InputError(
                features_path(features),
                "bands have no descriptions (YYYYMMDD_BAND)",
                "give features named YYYYMMDD_BAND (the chain's FeatureSpec)",
            )
        bands, names = variant_channels(src.descriptions, variant, date)
        x = src.read(bands).astype(np.float32)
        nodata = src.nodatavals[0]
        transform, crs = src.transform, src.crs
    valid = np.ones(x.shape[1:], dtype=bool)
    if nodata is not None:
        valid = ~(x == nodata).any(axis=0)
    x[:, ~valid] = 0.0
    return TileImage(x, valid, transform, crs, names)


def instance_raster(geometries: Sequence[Any], transform: Affine, shape: tuple[int, int]) -> np.ndarray:
    """Rasterize polygons as instances: int32 ``[H, W]``, 0 outside, ``i + 1`` inside polygon ``i``
    (pixel centres inside, :func:`rasterio.features.rasterize`; a later polygon wins where two overlap)."""
    if len(geometries) == 0:
        return np.zeros(shape, dtype=np.int32)
    return rasterio.features.rasterize(
        ((g, i + 1) for i, g in enumerate(geometries)),
        out_shape=shape,
        transform=transform,
        fill=0,
        dtype="int32",
    )


def patch_targets(instances: np.ndarray, min_px: int, scale: float | None = None) -> dict[str, torch.Tensor]:
    """Mask R-CNN targets of a patch of an instance raster (int ``[S, S]``, 0 = background).

    Returns ``boxes`` float32 ``[N, 4]`` (x0, y0, x1, y1, px, x1/y1 exclusive), ``labels``
    int64 ``[N]`` (all 1) and ``masks`` uint8 ``[N, S, S]`` for the instances with at least
    ``min_px`` pixels; with ``scale`` (model input px per patch px) also ``labelled`` bool
    ``[S, S]`` (every parcel pixel, small ones included) and ``labelled_scale``, for a model
    that ignores unlabelled land (:mod:`cropchain.models.mask_rcnn`).
    """
    ids, counts = np.unique(instances[instances > 0], return_counts=True)
    ids = ids[counts >= min_px]
    masks = (
        np.stack([instances == i for i in ids]) if len(ids) else np.zeros((0, *instances.shape), dtype=bool)
    )
    boxes = np.zeros((len(ids), 4), dtype=np.float32)
    for k, m in enumerate(masks):
        rows, cols = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
        boxes[k] = (cols[0], rows[0], cols[-1] + 1, rows[-1] + 1)
    out = {
        "boxes": torch.from_numpy(boxes),
        "labels": torch.ones(len(ids), dtype=torch.int64),
        "masks": torch.from_numpy(masks.astype(np.uint8)),
    }
    if scale is not None:
        out["labelled"] = torch.from_numpy(instances > 0)
        out["labelled_scale"] = torch.tensor(float(scale))
    return out


class PatchSampler:
    """Draws training patches of a set of tiles around their learning parcels.

    ``images`` and ``instances`` are per tile (``[C, H, W]`` float32, ``[H, W]`` int32). A
    draw picks a learning parcel uniformly over all tiles, centres the patch on a random
    pixel of it shifted by up to ``size // 4`` px, and clips the patch inside the tile
    (tiles smaller than the patch are padded with 0 and no instance).
    """

    def __init__(
        self,
        images: Sequence[np.ndarray],
        instances: Sequence[np.ndarray],
        size: int,
        rng: np.random.Generator,
    ):
        self.images, self.instances, self.size, self.rng = images, instances, size, rng
        self.pixels = []  # (tile, ids) -> the pixels of each parcel
        for t, inst in enumerate(instances):
            for pid in np.unique(inst[inst > 0]):
                rr, cc = np.nonzero(inst == pid)
                self.pixels.append((t, rr, cc))
        if not self.pixels:
            raise InputError(
                "split", "no learning parcel has a pixel on the tile grid", "check the split and the features"
            )

    def draw(self) -> tuple[np.ndarray, np.ndarray]:
        """One patch: float32 ``[C, S, S]`` and its instance raster int32 ``[S, S]``."""
        t, rr, cc = self.pixels[int(self.rng.integers(len(self.pixels)))]
        k = int(self.rng.integers(len(rr)))
        s, j = self.size, self.size // 4
        img, inst = self.images[t], self.instances[t]
        h, w = inst.shape
        cy, cx = rr[k] + int(self.rng.integers(-j, j + 1)), cc[k] + int(self.rng.integers(-j, j + 1))
        y0 = int(np.clip(cy - s // 2, 0, max(h - s, 0)))
        x0 = int(np.clip(cx - s // 2, 0, max(w - s, 0)))
        x = np.zeros((img.shape[0], s, s), dtype=np.float32)
        m = np.zeros((s, s), dtype=np.int32)
        ph, pw = min(s, h), min(s, w)
        x[:, :ph, :pw] = img[:, y0 : y0 + ph, x0 : x0 + pw]
        m[:ph, :pw] = inst[y0 : y0 + ph, x0 : x0 + pw]
        return x, m


def augment(x: np.ndarray, m: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """A random element of the dihedral group (90-degree rotations, flips), same for image ``[C, S, S]``
    and instances ``[S, S]`` (:func:`cropchain.learning.augment.random_dihedral`); contiguous copies."""
    x, m = random_dihedral(x, m, rng)
    return np.ascontiguousarray(x), np.ascontiguousarray(m)


def normalization_stats(sampler: PatchSampler, n: int) -> tuple[list[float], list[float]]:
    """Per-channel mean and standard deviation of ``n`` drawn patches (all their pixels)."""
    xs = np.stack([sampler.draw()[0] for _ in range(n)])  # [n, C, S, S]
    mean = xs.mean(axis=(0, 2, 3)).astype(np.float64)
    std = np.maximum(xs.std(axis=(0, 2, 3)).astype(np.float64), 1e-3)
    return mean.tolist(), std.tolist()


# --------------------------------------------------------------------------- training


def resolve_settings(
    section: dict[str, Any] | None, training: dict[str, Any] | None = None
) -> tuple[dict[str, Any], dict[str, Any], str | None]:
    """(training settings, model hyper-parameters, date) of a variant's config section over
    ``delineation.training`` and the defaults (either may hold model hyper-parameters).

    Raises
    ------
    ConfigError
        a key that is neither a training setting, a model hyper-parameter nor ``date``.
    """
    train = dict(TRAINING_DEFAULTS)
    model = dict(MODEL_DEFAULTS)
    date = None
    for key, value in {**(training or {}), **(section or {})}.items():
        if key == "date":
            date = None if value is None else str(value)
        elif key in TRAINING_DEFAULTS:
            train[key] = value
        elif key in MODEL_DEFAULTS:
            model[key] = value
        else:
            raise ConfigError(
                f"delineation.variants: unknown key {key!r} (valid: date, "
                f"{', '.join(list(TRAINING_DEFAULTS) + list(MODEL_DEFAULTS))})"
            )
    return train, model, date


def _learning_tiles(
    features: Sequence[str | os.PathLike], splits: Sequence[str | os.PathLike], variant: str, date: Any
) -> tuple[list[np.ndarray], list[np.ndarray], list[str], int]:
    """Images ``[C, H, W]`` and learning-parcel instance rasters ``[H, W]`` of every tile.

    Returns ``(images, instances, channels, n_parcels)``; instances are 0 where a tile has no
    valid pixel.

    Raises
    ------
    InputError
        tiles whose channels differ.
    """
    images, instances, channels = [], [], None
    n_parcels = 0
    for feat, split in zip(features, splits, strict=True):
        tile = read_variant(feat, variant, date)
        learn = read_split(split, LEARN)
        if learn.crs is not None and tile.crs is not None and learn.crs != tile.crs:
            learn = learn.to_crs(tile.crs)
        inst = instance_raster(list(learn.geometry), tile.transform, tile.valid.shape)
        inst[~tile.valid] = 0
        images.append(tile.x)
        instances.append(inst)
        n_parcels += len(learn)
        if channels is not None and channels != tile.channels:
            raise InputError(
                feat,
                f"channels {tile.channels[:3]}... differ from the first tile's",
                "use one date grid for all tiles",
            )
        channels = tile.channels
    return images, instances, channels, n_parcels


def _train_steps(
    net: torch.nn.Module,
    opt: torch.optim.Optimizer,
    sampler: PatchSampler,
    train: dict[str, Any],
    model_hp: dict[str, Any],
    input_size: int,
    rng: np.random.Generator,
    variant: str,
) -> list[float]:
    """``train["steps"]`` optimizer steps on drawn (and augmented) patches; returns the loss of each step.

    The learning rate rises linearly over the first 5 % of the steps, then follows a cosine
    decay to 0.

    Raises
    ------
    RuntimeError
        the loss is not finite.
    """
    size, steps = int(train["patch_size"]), int(train["steps"])
    warmup = max(1, steps // 20)

    def lr_factor(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        return 0.5 * (1 + math.cos(math.pi * (step - warmup) / max(1, steps - warmup)))

    sched = torch.optim.lr_scheduler.LambdaLR(opt, lr_factor)
    net.train()
    curve: list[float] = []
    for step in range(steps):
        xs, ts = [], []
        for _ in range(int(train["batch_size"])):
            x, m = sampler.draw()
            if train["augment"]:
                x, m = augment(x, m, rng)
            xs.append(torch.from_numpy(x))
            ts.append(
                patch_targets(
                    m,
                    int(train["min_instance_px"]),
                    input_size / size if model_hp["ignore_unlabelled"] else None,
                )
            )
        losses = net(xs, ts)
        loss = sum(losses.values())
        if not torch.isfinite(loss):
            raise RuntimeError(
                f"delineation {variant}: the training loss became {float(loss)} at step {step} "
                "(lower learning_rate)"
            )
        opt.zero_grad()
        loss.backward()
        opt.step()
        sched.step()
        curve.append(float(loss.detach()))
        if step % 50 == 0 or step == steps - 1:
            log.info(
                "step %d/%d loss %.3f (%s)",
                step + 1,
                steps,
                curve[-1],
                ", ".join(f"{k.removeprefix('loss_')} {float(v.detach()):.3f}" for k, v in losses.items()),
            )
    return curve


# 99 lines, of which 30 are the signature and docstring (shapes, units, errors): 69 of code
def train_delineation(
    features: Sequence[str | os.PathLike],
    splits: Sequence[str | os.PathLike],
    variant: str,
    settings: dict[str, Any] | None,
    out_dir: str | os.PathLike,
    *,
    seed: int,
    threads: int = 1,
    training: dict[str, Any] | None = None,
) -> dict[str, Any]:
    """Train a Mask R-CNN on the learning parcels of a run and save it in ``out_dir``.

    Parameters
    ----------
    features : the features of each tile (:class:`~cropchain.series.features.FeatureSpec`, or a
        feature GeoTIFF).
    splits : the run's ``split.gpkg`` of each tile, same order.
    variant : input variant (:data:`VARIANTS`).
    settings : the variant's config section (``date``, training and model overrides).
    out_dir : model folder: ``model.pt`` (state_dict), ``model.json`` (variant, channels,
        normalization, input size, hyper-parameters, seed, versions), ``metrics.json``
        (training time in s, steps, loss curve).
    seed : the run's seed (``split.seed + run``).
    training : ``delineation.training`` (over :data:`TRAINING_DEFAULTS`).

    Returns
    -------
    The metrics dict written to ``metrics.json``.
    """
    train, model_hp, date = resolve_settings(settings, training)
    torch.set_num_threads(max(1, int(threads)))
    rng = np.random.default_rng(seed)
    torch.manual_seed(seed)
    images, instances, channels, n_parcels = _learning_tiles(features, splits, variant, date)
    size = int(train["patch_size"])
    sampler = PatchSampler(images, instances, size, rng)
    mean, std = normalization_stats(sampler, int(train["n_stats_patches"]))
    input_size = int(round(size * float(train["upscale"])))
    net = build_mask_rcnn(len(channels), mean, std, input_size=input_size, **model_hp)
    opt = torch.optim.AdamW(
        net.parameters(), lr=float(train["learning_rate"]), weight_decay=float(train["weight_decay"])
    )
    steps = int(train["steps"])
    log.info(
        "delineation %s: %d learning parcels, %d channels (%s ... %s), %d parameters, "
        "%d steps of %d patches of %d px (x%s)",
        variant,
        n_parcels,
        len(channels),
        channels[0],
        channels[-1],
        count_parameters(net),
        steps,
        train["batch_size"],
        size,
        train["upscale"],
    )
    start = time.perf_counter()
    curve = _train_steps(net, opt, sampler, train, model_hp, input_size, rng, variant)
    elapsed = time.perf_counter() - start
    out_dir = Path(out_dir)
    meta = {
        "variant": variant,
        "channels": channels,
        "date": None if variant == "ndvi_stack" else channels[0].split("_")[0],
        "image_mean": mean,
        "image_std": std,
        "patch_size": size,
        "upscale": float(train["upscale"]),
        "input_size": input_size,
        "model": model_hp,
        "training": train,
        "seed": seed,
        "threads": int(threads),
        "n_learning_parcels": n_parcels,
        "n_parameters": count_parameters(net),
        "backbone": "resnet18 stages 1-3 + FPN",
        "cropchain": cropchain.__version__,
        "torch": torch.__version__,
        "torchvision": _torchvision_version(),
        "features": [str(features_path(f)) for f in features],
        "splits": [str(s) for s in splits],
    }
    metrics = {
        "variant": variant,
        "seed": seed,
        "training_time_s": elapsed,
        "steps": steps,
        "threads": int(threads),
        "final_loss": float(np.mean(curve[-20:])),
        "loss_curve": curve,
    }
    with atomic_output(out_dir / "model.pt") as tmp:
        torch.save(net.state_dict(), tmp)
    write_text_atomic(out_dir / "model.json", json.dumps(meta, indent=2))
    write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    log.info("delineation %s trained in %.1f s, final loss %.3f", variant, elapsed, metrics["final_loss"])
    return metrics


def _torchvision_version() -> str:
    import torchvision

    return torchvision.__version__


def load_delineation_model(model_dir: str | os.PathLike) -> tuple[torch.nn.Module, dict[str, Any]]:
    """The trained model (evaluation mode) and its ``model.json``.

    Raises
    ------
    InputError
        missing ``model.pt`` / ``model.json``.
    """
    model_dir = Path(model_dir)
    for name in ("model.pt", "model.json"):
        if not (model_dir / name).is_file():
            raise InputError(
                model_dir / name, "model file not found", "run the delineation training of this run first"
            )
    meta = json.loads((model_dir / "model.json").read_text())
    net = build_mask_rcnn(
        len(meta["channels"]),
        meta["image_mean"],
        meta["image_std"],
        input_size=meta["input_size"],
        **meta["model"],
    )
    net.load_state_dict(torch.load(model_dir / "model.pt", map_location="cpu", weights_only=True))
    net.eval()
    return net, meta


# --------------------------------------------------------------------------- inference


def window_origins(length: int, window: int, overlap: int) -> list[int]:
    """Start offsets of windows of ``window`` px along an axis of ``length`` px, neighbours
    sharing at least ``overlap`` px; the last one ends at the border (fewer than 1 window: [0])."""
    if window <= overlap:
        raise ConfigError(f"delineation.inference: window ({window}) must exceed overlap ({overlap})")
    if length <= window:
        return [0]
    stride = window - overlap
    starts = list(range(0, length - window, stride)) + [length - window]
    return sorted(set(starts))


@dataclass
class Detection:
    """One instance found in a window, in tile pixel coordinates: ``mask`` bool ``[h, w]`` whose
    top-left pixel is at (``row``, ``col``); ``score`` 0-1; ``cut``: it touches an edge of its
    window that is not the tile border (the field may continue in the neighbouring window)."""

    row: int
    col: int
    mask: np.ndarray
    score: float
    cut: bool
    pieces: int = 1

    @property
    def area(self) -> int:
        return int(self.mask.sum())

    def box(self) -> tuple[int, int, int, int]:
        return self.row, self.col, self.row + self.mask.shape[0], self.col + self.mask.shape[1]


def overlap_px(a: Detection, b: Detection) -> int:
    """Number of pixels shared by two detections."""
    r0, c0 = max(a.row, b.row), max(a.col, b.col)
    r1, c1 = (
        min(a.row + a.mask.shape[0], b.row + b.mask.shape[0]),
        min(a.col + a.mask.shape[1], b.col + b.mask.shape[1]),
    )
    if r1 <= r0 or c1 <= c0:
        return 0
    ma = a.mask[r0 - a.row : r1 - a.row, c0 - a.col : c1 - a.col]
    mb = b.mask[r0 - b.row : r1 - b.row, c0 - b.col : c1 - b.col]
    return int((ma & mb).sum())


def union(a: Detection, b: Detection) -> Detection:
    """The union of two detections (score: the maximum; cut: both cut)."""
    r0, c0 = min(a.row, b.row), min(a.col, b.col)
    r1, c1 = (
        max(a.row + a.mask.shape[0], b.row + b.mask.shape[0]),
        max(a.col + a.mask.shape[1], b.col + b.mask.shape[1]),
    )
    m = np.zeros((r1 - r0, c1 - c0), dtype=bool)
    for d in (a, b):
        m[d.row - r0 : d.row - r0 + d.mask.shape[0], d.col - c0 : d.col - c0 + d.mask.shape[1]] |= d.mask
    return Detection(r0, c0, m, max(a.score, b.score), a.cut and b.cut, a.pieces + b.pieces)


def merge_detections(
    detections: Sequence[Detection], iou_threshold: float = 0.5, cut_overlap: float = 0.3
) -> list[Detection]:
    """Resolve the detections of overlapping windows so that each field appears once.

    Rule, in this order:

    1. **Whole detections** (not touching an inner window edge), by decreasing score: one is
       kept unless its mask IoU with an already kept one is above ``iou_threshold`` (the same
       field found in two windows, or twice in one: the higher score stays).
    2. **Cut detections** (touching an inner window edge, so possibly a part of a field) are
       dropped when at least half of their pixels lie in a kept whole detection: the
       neighbouring window saw the field whole (guaranteed for fields up to ``overlap`` px
       across).
    3. The remaining cut detections are merged (pixel union, maximum score) with each other
       when they share at least ``cut_overlap`` of the smaller one's pixels: the parts of a
       field larger than the overlap, seen from both sides of a window edge. Each merged group
       is kept unless half of it lies in a kept detection.

    Parameters
    ----------
    detections : from all windows of a tile, in tile pixel coordinates.

    Returns
    -------
    The kept detections (whole ones first, by decreasing score); ``pieces`` counts the
    detections merged into each.
    """
    whole = sorted((d for d in detections if not d.cut), key=lambda d: -d.score)
    cut = sorted((d for d in detections if d.cut), key=lambda d: -d.score)
    kept: list[Detection] = []
    for d in whole:
        if all(_iou(d, k) <= iou_threshold for k in kept):
            kept.append(d)
    rest = [d for d in cut if not any(overlap_px(d, k) >= 0.5 * d.area for k in kept)]
    groups: list[Detection] = []
    for d in rest:  # greedy union-find over the remaining cut pieces
        merged = d
        changed = True
        while changed:
            changed = False
            for i, g in enumerate(groups):
                if overlap_px(merged, g) >= cut_overlap * min(merged.area, g.area):
                    merged = union(merged, groups.pop(i))
                    changed = True
                    break
        groups.append(merged)
    for g in sorted(groups, key=lambda d: -d.score):
        if not any(overlap_px(g, k) >= 0.5 * g.area for k in kept):
            kept.append(g)
    return kept


def _iou(a: Detection, b: Detection) -> float:
    inter = overlap_px(a, b)
    return inter / (a.area + b.area - inter) if inter else 0.0


def detect_windows(
    net: torch.nn.Module, meta: dict[str, Any], image: np.ndarray, settings: dict[str, Any]
) -> list[Detection]:
    """Run the model over overlapping windows of a tile image ``[C, H, W]`` (float32).

    Returns every detection with a score >= ``min_score`` and at least ``min_area_px``
    pixels above ``mask_threshold``, in tile pixel coordinates, with its ``cut`` flag.
    """
    window, overlap = int(settings["window"]), int(settings["overlap"])
    _, h, w = image.shape
    set_input_size(net, int(round(window * float(meta["upscale"]))))
    mean = np.asarray(meta["image_mean"], dtype=np.float32)[:, None, None]
    out: list[Detection] = []
    rows, cols = window_origins(h, window, overlap), window_origins(w, window, overlap)
    with torch.no_grad():
        for r0 in rows:
            for c0 in cols:
                ph, pw = min(window, h - r0), min(window, w - c0)
                x = np.broadcast_to(mean, (image.shape[0], window, window)).copy()
                x[:, :ph, :pw] = image[:, r0 : r0 + ph, c0 : c0 + pw]
                pred = net([torch.from_numpy(x)])[0]
                inner = (r0 > 0, c0 > 0, r0 + ph < h, c0 + pw < w)  # top, left, bottom, right are inner edges
                for score, mask in zip(pred["scores"].numpy(), pred["masks"][:, 0].numpy(), strict=True):
                    if score < settings["min_score"]:
                        continue
                    m = mask[:ph, :pw] > settings["mask_threshold"]
                    if m.sum() < settings["min_area_px"]:
                        continue
                    rr, cc = np.flatnonzero(m.any(axis=1)), np.flatnonzero(m.any(axis=0))
                    y0, y1, x0, x1 = rr[0], rr[-1] + 1, cc[0], cc[-1] + 1
                    cut = (
                        (inner[0] and y0 == 0)
                        or (inner[1] and x0 == 0)
                        or (inner[2] and y1 == ph)
                        or (inner[3] and x1 == pw)
                    )
                    out.append(
                        Detection(r0 + int(y0), c0 + int(x0), m[y0:y1, x0:x1].copy(), float(score), bool(cut))
                    )
    return out


def detections_to_frame(detections: Sequence[Detection], transform: Affine, crs: Any) -> gpd.GeoDataFrame:
    """Polygons of detections (GDAL polygonize of each mask, 4-connectivity, parts unioned,
    made valid): ``score``, ``area_ha``, ``n_pieces``, MultiPolygon geometry in the tile CRS."""
    geoms, scores, pieces = [], [], []
    for d in detections:
        t = transform @ Affine.translation(d.col, d.row)
        polys = [
            shapely.geometry.shape(g)
            for g, v in rasterio.features.shapes(
                d.mask.astype(np.uint8), mask=d.mask, transform=t, connectivity=4
            )
            if v == 1
        ]
        if not polys:
            continue
        geom = shapely.make_valid(shapely.union_all(polys))
        parts = [p for p in shapely.get_parts(geom) if isinstance(p, shapely.Polygon)]
        if not parts:
            continue
        geoms.append(shapely.MultiPolygon(parts))
        scores.append(d.score)
        pieces.append(d.pieces)
    gdf = gpd.GeoDataFrame(
        {"score": np.asarray(scores, dtype=np.float64), "n_pieces": np.asarray(pieces, dtype=np.int32)},
        geometry=gpd.GeoSeries(geoms, crs=crs),
    )
    gdf["area_ha"] = gdf.geometry.area / 1e4
    return gdf[["score", "area_ha", "n_pieces", "geometry"]]


def predict_delineation(
    model_dir: str | os.PathLike,
    features: str | os.PathLike,
    out_gpkg: str | os.PathLike,
    settings: dict[str, Any] | None = None,
    *,
    threads: int = 1,
) -> gpd.GeoDataFrame:
    """Field polygons of a tile: tiled inference, merging (:func:`merge_detections`), GeoPackage.

    Parameters
    ----------
    model_dir : folder with ``model.pt`` and ``model.json`` (:func:`train_delineation`).
    features : the tile's features (:class:`~cropchain.series.features.FeatureSpec`, or a feature GeoTIFF).
    out_gpkg : output GeoPackage, layer ``fields`` (``score``, ``area_ha``, ``n_pieces``),
        sorted by decreasing score; written atomically.
    settings : ``delineation.inference`` (over :data:`INFERENCE_DEFAULTS`).
    """
    cfg = {**INFERENCE_DEFAULTS, **(settings or {})}
    torch.set_num_threads(max(1, int(threads)))
    net, meta = load_delineation_model(model_dir)
    tile = read_variant(features, meta["variant"], meta["date"])
    if tile.channels != meta["channels"]:
        raise InputError(
            features,
            f"channels {tile.channels[:2]}... differ from the model's {meta['channels'][:2]}...",
            "retrain the model on this date grid",
        )
    mean = np.asarray(meta["image_mean"], dtype=np.float32)
    x = np.where(
        tile.valid[None], tile.x, mean[:, None, None]
    )  # nodata -> the channel mean (0 after normalization)
    start = time.perf_counter()
    found = detect_windows(net, meta, x, cfg)
    kept = merge_detections(found, float(cfg["iou_threshold"]))
    gdf = (
        detections_to_frame(kept, tile.transform, tile.crs)
        .sort_values("score", ascending=False)
        .reset_index(drop=True)
    )
    log.info(
        "delineation %s: %d detections in windows -> %d fields in %.1f s",
        meta["variant"],
        len(found),
        len(gdf),
        time.perf_counter() - start,
    )
    with atomic_output(out_gpkg) as tmp:
        pyogrio.write_dataframe(gdf, tmp, layer=LAYER, driver="GPKG")
    return gdf
