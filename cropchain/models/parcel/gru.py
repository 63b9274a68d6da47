"""Temporal-only parcel classifier: a GRU on each date's per-band mean and standard deviation.

Sainte Fare Garnot et al., IGARSS 2019: the recurrent baseline. The parcel's pixels are
summarised per date by the mean and standard deviation of each band (``2C`` values); a
single-layer GRU reads the ``T`` dates in order and its last hidden state is classified
by the MLP head 128-64.
"""

from __future__ import annotations

import torch
from torch import nn

from cropchain.models.parcel._layers import (
    MLPHead,
    ParcelClassifier,
    fit_width,
    masked_band_stats,
)
from cropchain.models.parcel.cnn import N_PARAMS


class ParcelGRU(ParcelClassifier):
    """GRU on per-date band statistics + MLP head.

    Parameters
    ----------
    n_bands : spectral bands ``C`` (the GRU reads ``2C`` values per date).
    n_classes : classes ``K``.
    patch_size : side of the patches (unused: the statistics do not depend on it).
    hidden : hidden size of the GRU; None: chosen so the model has about ``n_params`` parameters.
    n_params : parameter budget used when ``hidden`` is None.
    dropout : dropout in the head.
    """

    def __init__(
        self,
        n_bands: int,
        n_classes: int,
        *,
        patch_size: int = 32,
        hidden: int | None = None,
        n_params: int = N_PARAMS,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if hidden is None:
            hidden = fit_width(lambda h: ParcelGRU(n_bands, n_classes, hidden=h, dropout=dropout), n_params)
        self.hyperparameters = {"hidden": int(hidden), "dropout": float(dropout)}
        self.temporal = nn.GRU(2 * n_bands, hidden, batch_first=True)
        self.head = MLPHead(hidden, n_classes, dropout=dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` float32 ``[B, T, C, S, S]``, ``mask`` ``[B, S, S]`` -> logits ``[B, K]``."""
        _, h = self.temporal(masked_band_stats(x, mask))
        return self.head(h[-1])
