"""Model registry: one module per architecture, found by name (BreizhCrops/utae-paps style).

A *pixel classifier* is any object with

- ``classes_``: ``np.ndarray`` of int class codes (nomenclature codes), shape ``[K]``;
- ``feature_names``: list of the ``F`` feature names it was trained on (the band
  names of the tile's features (:func:`cropchain.series.features.feature_names`), e.g.
  ``"20180123_B02"``, ``"20180123_NDVI"``);
- ``predict_proba(X)``: ``X`` float32 ``[N, F]`` -> float32 ``[N, K]`` class probabilities,
  columns in the order of ``classes_``.

A *spatial* model (a CNN looking at neighbours) has instead
``predict_proba_image(block)``: float32 ``[F, H, W]`` -> float32 ``[K, H, W]``, and an
integer ``margin`` (receptive-field half-width, px) and ``alignment`` (px multiple that
window offsets must keep); :func:`cropchain.mapping.classify.classify_tile` uses them.

Two kinds of architectures are registered:

- ``"pixel"``: :func:`get_model` returns an untrained scikit-learn-like classifier that
  :func:`cropchain.learning.train.train_model` fits on the pixel table (``rf``, ``xgboost``);
- ``"network"``: :func:`get_model` returns an untrained
  :class:`~cropchain.models.networks.NetworkClassifier` that
  :func:`cropchain.learning.train_network.train_network` trains on patches of the feature rasters
  (``fg_unet``, ``temporal_unet``, ``dilated_cnn``, ``tempcnn``, ``ltae``).

``presto_rf`` and ``presto_xgboost`` are pixel classifiers whose features are the 128 Presto
embeddings (:mod:`cropchain.learning.presto_features`) rather than the spectral features.

Built-in modules are imported only when their architecture is asked for, so that a
random forest never pays PyTorch's import. :func:`cropchain.learning.train.load_model` reloads
either kind from its folder.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from typing import Any

from cropchain.errors import ConfigError

#: built-in architectures: name -> (module under cropchain.models, kind)
BUILTIN: dict[str, tuple[str, str]] = {
    "rf": ("random_forest", "pixel"),
    "xgboost": ("xgboost", "pixel"),
    "fg_unet": ("fg_unet", "network"),
    "temporal_unet": ("temporal_unet", "network"),
    "dilated_cnn": ("dilated_cnn", "network"),
    "tempcnn": ("tempcnn", "network"),
    "ltae": ("ltae", "network"),
    # heads on Presto embeddings (cropchain.learning.presto_features): pixel classifiers whose features
    # are the 128 embeddings instead of the spectral features
    "presto_rf": ("presto_heads", "pixel"),
    "presto_xgboost": ("presto_heads", "pixel"),
    # the Presto encoder fine-tuned with a linear head, on the encoder's inputs
    "presto_finetune": ("presto_finetune", "pixel"),
}
#: architectures whose features are Presto embeddings or the encoder's inputs (need the
#: configuration's `presto` section)
PRESTO_ARCHS = ("presto_rf", "presto_xgboost", "presto_finetune")
KINDS = ("pixel", "network")

_REGISTRY: dict[str, Callable[..., Any]] = {}
_KIND: dict[str, str] = {}


def register(name: str, kind: str = "pixel") -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator adding a model constructor ``(*, seed, threads, **hyperparameters)`` to the
    registry under ``name``; ``kind`` is ``"pixel"`` or ``"network"``."""
    if kind not in KINDS:
        raise ValueError(f"kind must be one of {KINDS}")

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY[name] = fn
        _KIND[name] = kind
        return fn

    return deco


def available() -> list[str]:
    """Names of the registered architectures (built-in and registered)."""
    return sorted(set(BUILTIN) | set(_REGISTRY))


def kind(name: str) -> str:
    """``"pixel"`` or ``"network"``: how architecture ``name`` is trained.

    Raises
    ------
    ConfigError
        unknown architecture name.
    """
    if name in BUILTIN:
        return BUILTIN[name][1]
    if name in _KIND:
        return _KIND[name]
    raise ConfigError(f"architectures.{name}: unknown architecture; available: {', '.join(available())}")


def is_network(name: str) -> bool:
    """Whether ``name`` is a convolutional network (trained on patches, saved as ``model.pt``)."""
    return kind(name) == "network"


def get_model(name: str, *, seed: int = 0, threads: int = 1, **hyperparameters: Any) -> Any:
    """Build an untrained model of architecture ``name`` with the given hyper-parameters.

    Raises
    ------
    ConfigError
        unknown architecture name; for networks, an unknown hyper-parameter.
    """
    if name not in _REGISTRY and name in BUILTIN:
        importlib.import_module(f"cropchain.models.{BUILTIN[name][0]}")  # registration side effect
    if name not in _REGISTRY:
        raise ConfigError(f"architectures.{name}: unknown architecture; available: {', '.join(available())}")
    return _REGISTRY[name](seed=seed, threads=threads, **hyperparameters)


def count_parameters(module: Any) -> int:
    """Number of trainable parameters of a PyTorch ``module`` (``torch.nn.Module``)."""
    return sum(p.numel() for p in module.parameters() if p.requires_grad)


def check_tiling(window: int, overlap: int, margin: int, alignment: int, name: str) -> None:
    """Refuse a tiled inference that would show seams: the one check of a tiling (window and
    overlap in px) against a predictor's receptive ``margin`` (px) and ``alignment`` (px, the
    U-Nets' pooling grid), made before training (:func:`cropchain.learning.train_network.train_network`)
    and before classifying (:func:`cropchain.mapping.classify.classify_tile`); ``name`` names the
    predictor in the messages. (Here rather than in :mod:`cropchain.models.networks`: the
    classification of pixel classifiers does not import PyTorch.)

    Raises
    ------
    ConfigError
        ``overlap`` below ``margin``, or ``window`` / ``overlap`` not multiples of ``alignment``.
    """
    if overlap < margin:
        raise ConfigError(
            f"classify.overlap: {overlap} px is smaller than the receptive margin of {name} ({margin} px); "
            f"the map would show seams; set classify.overlap >= {margin} (a multiple of {alignment})"
        )
    if window % alignment or overlap % alignment:
        raise ConfigError(
            f"classify.window ({window}) and classify.overlap ({overlap}) must be multiples of "
            f"{alignment} px for {name} (its pooling grid); the map would show seams"
        )
