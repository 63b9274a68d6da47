"""Parcel classifiers of Sainte Fare Garnot et al., "Time-Space tradeoff in deep learning
models for crop classification on satellite multi-spectral image time series", IGARSS 2019.

Each model classifies one parcel from its patch series: ``forward(x, mask)`` with ``x``
float32 ``[B, T, C, S, S]`` (dates, bands, 32 x 32 px, normalized, 0 outside the parcel)
and ``mask`` float32 ``[B, S, S]`` (1 inside the parcel) -> logits ``[B, K]``. All end
with the MLP head 128-64 and are sized to about 90k parameters by default
(``n_params``); explicit sizes (``width``, ``hidden``) override the budget.

========================  ==================================================================
name                      model
========================  ==================================================================
``parcel_cnn``            per-date CNN (3 x conv 3x3 valid, BN, ReLU, max-pool 2), max over dates
``parcel_gru``            GRU on per-date band mean and std of the parcel
``parcel_cnn_gru70``      CNN + GRU, temporal parameter ratio 0.7
``parcel_cnn_gru80``      CNN + GRU, temporal parameter ratio 0.8
``parcel_cnn_gru90``      CNN + GRU, temporal parameter ratio 0.9
``parcel_convlstm``       ConvLSTM over dates, mean over the parcel
``parcel_pse_ltae``       Pixel-Set Encoder + L-TAE (Sainte Fare Garnot et al., CVPR 2020;
                          :mod:`cropchain.models.parcel.pse_ltae`): a set of pixels drawn
                          inside the parcel, not a sized-to-90k model (130k parameters)
========================  ==================================================================
"""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

from cropchain.errors import ConfigError
from cropchain.models.parcel._layers import ParcelClassifier
from cropchain.models.parcel.cnn import ParcelCNN
from cropchain.models.parcel.cnn_gru import ParcelCNNGRU
from cropchain.models.parcel.convlstm import ParcelConvLSTM
from cropchain.models.parcel.gru import ParcelGRU
from cropchain.models.parcel.pse_ltae import ParcelPSELTAE

__all__ = ["ParcelClassifier", "available_parcel_models", "get_parcel_model", "register_parcel_model"]

_REGISTRY: dict[str, Callable[..., ParcelClassifier]] = {}


def register_parcel_model(name: str, constructor: Callable[..., ParcelClassifier]) -> None:
    """Add a parcel model constructor ``(n_bands, n_classes, *, patch_size, **hp)`` under ``name``."""
    _REGISTRY[name] = constructor


register_parcel_model("parcel_cnn", ParcelCNN)
register_parcel_model("parcel_gru", ParcelGRU)
for _ratio in (70, 80, 90):
    register_parcel_model(
        f"parcel_cnn_gru{_ratio}", functools.partial(ParcelCNNGRU, temporal_ratio=_ratio / 100)
    )
register_parcel_model("parcel_convlstm", ParcelConvLSTM)
register_parcel_model("parcel_pse_ltae", ParcelPSELTAE)


def available_parcel_models() -> list[str]:
    """Names of the registered parcel models."""
    return sorted(_REGISTRY)


def _accepted(constructor: Callable[..., Any]) -> set[str]:
    """Keyword hyper-parameters of a constructor (``patch_size`` is passed separately)."""
    fn = constructor.func if isinstance(constructor, functools.partial) else constructor
    params = inspect.signature(fn).parameters
    return {n for n, p in params.items() if p.kind == p.KEYWORD_ONLY} - {"patch_size"}


def get_parcel_model(
    name: str, *, n_bands: int, n_classes: int, patch_size: int = 32, **hyperparameters: Any
) -> ParcelClassifier:
    """Build an untrained parcel model.

    Parameters
    ----------
    name : registry name (see the module docstring).
    n_bands : spectral bands ``C`` of the patches.
    n_classes : number of classes ``K``.
    patch_size : side ``S`` of the patches in px.
    **hyperparameters : the model's keyword arguments (``n_params``, ``width``, ``hidden``,
        ``pool``, ``dropout``; see each model). The resolved sizes a model reports in its
        ``hyperparameters`` attribute are accepted back (``temporal_ratio`` only with the
        value its name fixes).

    Raises
    ------
    ConfigError
        unknown model name, unknown or invalid hyper-parameter (the message names
        ``parcels.models.<name>``).
    """
    if name not in _REGISTRY:
        raise ConfigError(
            f"parcels.models.{name}: unknown parcel model; available: {', '.join(available_parcel_models())}"
        )
    constructor = _REGISTRY[name]
    fixed = dict(constructor.keywords) if isinstance(constructor, functools.partial) else {}
    accepted = _accepted(constructor) - set(fixed)
    unknown = sorted(set(hyperparameters) - accepted - set(fixed))
    if unknown:
        raise ConfigError(
            f"parcels.models.{name}: unknown hyper-parameter(s) {unknown}; accepted: "
            f"{', '.join(sorted(accepted))}"
        )
    for key, value in fixed.items():  # e.g. temporal_ratio, fixed by the name (saved in model.json)
        if key in hyperparameters and hyperparameters.pop(key) != value:
            raise ConfigError(
                f"parcels.models.{name}: {key} is {value} for this model; choose the model of another {key}"
            )
    try:
        return constructor(int(n_bands), int(n_classes), patch_size=int(patch_size), **hyperparameters)
    except ValueError as exc:
        raise ConfigError(f"parcels.models.{name}: {exc}") from None
