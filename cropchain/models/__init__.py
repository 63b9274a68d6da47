"""Model registry: one module per architecture, found by name (BreizhCrops/utae-paps style).

A *pixel classifier* is any object with

- ``classes_``: ``np.ndarray`` of int class codes (nomenclature codes), shape ``[K]``;
- ``feature_names``: list of the ``F`` feature names it was trained on (the band
  descriptions of ``features.tif``, e.g. ``"20180123_B02"``, ``"20180123_NDVI"``);
- ``predict_proba(X)``: ``X`` float32 ``[N, F]`` -> float32 ``[N, K]`` class probabilities,
  columns in the order of ``classes_``.

:func:`get_model` builds an untrained one from hyper-parameters; :mod:`cropchain.train`
fits and saves it, :func:`cropchain.train.load_model` reloads it.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from cropchain.errors import ConfigError

_REGISTRY: dict[str, Callable[..., Any]] = {}


def register(name: str) -> Callable[[Callable[..., Any]], Callable[..., Any]]:
    """Decorator adding a model constructor to the registry under ``name``."""

    def deco(fn: Callable[..., Any]) -> Callable[..., Any]:
        _REGISTRY[name] = fn
        return fn

    return deco


def available() -> list[str]:
    """Names of the registered architectures."""
    _load_builtin()
    return sorted(_REGISTRY)


def get_model(name: str, *, seed: int = 0, threads: int = 1, **hyperparameters: Any) -> Any:
    """Build an untrained model of architecture ``name`` with the given hyper-parameters.

    Raises
    ------
    ConfigError
        unknown architecture name.
    """
    _load_builtin()
    if name not in _REGISTRY:
        raise ConfigError(f"architectures.{name}: unknown architecture; available: {', '.join(sorted(_REGISTRY))}")
    return _REGISTRY[name](seed=seed, threads=threads, **hyperparameters)


def _load_builtin() -> None:
    from cropchain.models import random_forest, xgboost  # noqa: F401  (registration side effect)
