"""Hybrid parcel classifier: a per-date CNN followed by a GRU over dates.

Sainte Fare Garnot et al., IGARSS 2019, Table 1: the hybrid CNN+GRU at a given temporal
parameter ratio. Each date's patch is embedded by the CNN of :mod:`.cnn` (widths
``(w, 2w, 2w)``, flattened ``2w x 2 x 2``); a single-layer GRU of hidden size ``h`` reads
the embeddings in date order and its last hidden state is classified by the MLP head
128-64.

The *temporal parameter ratio* is the fraction of the spatial + temporal parameters held
by the GRU: ``ratio = GRU / (CNN + GRU)`` (the head counts in neither). Given a ratio and
a budget, ``h`` is, for each width ``w``, the hidden size whose GRU is closest to
``ratio / (1 - ratio) x CNN(w)`` parameters, and ``w`` the width whose whole model comes
closest to the budget. The paper's three ratios are registered as
``parcel_cnn_gru70``, ``parcel_cnn_gru80`` and ``parcel_cnn_gru90``.
"""

from __future__ import annotations

import torch
from torch import nn

from cropchain.models import count_parameters
from cropchain.models.parcel._layers import (
    ConvEncoder,
    MLPHead,
    ParcelClassifier,
    fit_width,
)
from cropchain.models.parcel.cnn import N_PARAMS


def _gru_parameters(n_in: int, hidden: int) -> int:
    """Parameters of a single-layer ``torch.nn.GRU``: ``3 (h (n_in + h) + 2 h)``."""
    return 3 * (hidden * (n_in + hidden) + 2 * hidden)


def _hidden_for(n_in: int, target: int) -> int:
    """Hidden size (>= 1) whose GRU has the number of parameters closest to ``target``."""
    h = 1
    while _gru_parameters(n_in, h) < target:
        h += 1
    if h > 1 and abs(_gru_parameters(n_in, h - 1) - target) <= abs(_gru_parameters(n_in, h) - target):
        return h - 1
    return h


class ParcelCNNGRU(ParcelClassifier):
    """Per-date CNN embedding + GRU over dates + MLP head.

    Parameters
    ----------
    n_bands : spectral bands ``C``.
    n_classes : classes ``K``.
    patch_size : side ``S`` of the patches (32).
    temporal_ratio : wanted fraction of the spatial + temporal parameters in the GRU, in (0, 1).
    width, hidden : CNN width ``w`` and GRU hidden size ``h``; None (both): chosen from
        ``temporal_ratio`` and ``n_params``. Give both or neither.
    n_params : parameter budget used when the sizes are None.
    dropout : dropout in the head.

    Raises
    ------
    ValueError
        ``temporal_ratio`` outside (0, 1), or only one of ``width`` / ``hidden`` given.
    """

    def __init__(
        self,
        n_bands: int,
        n_classes: int,
        *,
        patch_size: int = 32,
        temporal_ratio: float = 0.8,
        width: int | None = None,
        hidden: int | None = None,
        n_params: int = N_PARAMS,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if not 0.0 < float(temporal_ratio) < 1.0:
            raise ValueError(f"temporal_ratio must be in (0, 1), got {temporal_ratio}")
        if (width is None) != (hidden is None):
            raise ValueError(
                "give both `width` and `hidden`, or neither (then they follow temporal_ratio and n_params)"
            )
        if width is None:

            def sized(w: int) -> ParcelCNNGRU:
                enc = ConvEncoder(n_bands, (w, 2 * w, 2 * w), patch_size)
                h = _hidden_for(
                    enc.out_features, round(temporal_ratio / (1 - temporal_ratio) * count_parameters(enc))
                )
                return ParcelCNNGRU(
                    n_bands,
                    n_classes,
                    patch_size=patch_size,
                    temporal_ratio=temporal_ratio,
                    width=w,
                    hidden=h,
                    dropout=dropout,
                )

            with torch.device("meta"):
                model = sized(fit_width(sized, n_params))
            width, hidden = model.hyperparameters["width"], model.hyperparameters["hidden"]
        self.hyperparameters = {
            "temporal_ratio": float(temporal_ratio),
            "width": int(width),
            "hidden": int(hidden),
            "dropout": float(dropout),
        }
        self.spatial = ConvEncoder(n_bands, (width, 2 * width, 2 * width), patch_size)
        self.temporal = nn.GRU(self.spatial.out_features, hidden, batch_first=True)
        self.head = MLPHead(hidden, n_classes, dropout=dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` float32 ``[B, T, C, S, S]``, ``mask`` ``[B, S, S]`` (unused: 0 outside) ->
        logits ``[B, K]``."""
        b, t = x.shape[:2]
        emb = self.spatial(x.flatten(0, 1)).view(b, t, -1)
        _, h = self.temporal(emb)
        return self.head(h[-1])
