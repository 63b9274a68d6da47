"""Spatial-only parcel classifier: a CNN applied to each date, maximum over dates.

Sainte Fare Garnot et al., "Time-Space tradeoff in deep learning models for crop
classification on satellite multi-spectral image time series", IGARSS 2019: the CNN
baseline. Each date's patch ``[C, 32, 32]`` goes through 3 blocks of (3x3 convolution
without padding, batch norm, ReLU, 2x2 max-pool), widths ``(w, 2w, 2w)``; the flattened
``2w x 2 x 2`` maps of the dates are reduced by an element-wise maximum over dates (the
model ignores the order of the dates) and classified by the MLP head 128-64.
"""

from __future__ import annotations

import torch

from cropchain.models.parcel._layers import (
    ConvEncoder,
    MLPHead,
    ParcelClassifier,
    fit_width,
)

#: default parameter budget of every parcel model (the paper's ~90k)
N_PARAMS = 90_000


class ParcelCNN(ParcelClassifier):
    """Per-date CNN + maximum over dates + MLP head.

    Parameters
    ----------
    n_bands : spectral bands ``C``.
    n_classes : classes ``K``.
    patch_size : side ``S`` of the patches (32).
    width : channels ``w`` of the first block (then ``2w``, ``2w``); None: chosen so the
        model has about ``n_params`` parameters.
    n_params : parameter budget used when ``width`` is None.
    dropout : dropout in the head.
    """

    def __init__(
        self,
        n_bands: int,
        n_classes: int,
        *,
        patch_size: int = 32,
        width: int | None = None,
        n_params: int = N_PARAMS,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if width is None:
            width = fit_width(
                lambda w: ParcelCNN(n_bands, n_classes, patch_size=patch_size, width=w, dropout=dropout),
                n_params,
            )
        self.hyperparameters = {"width": int(width), "dropout": float(dropout)}
        self.spatial = ConvEncoder(n_bands, (width, 2 * width, 2 * width), patch_size)
        self.head = MLPHead(self.spatial.out_features, n_classes, dropout=dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` float32 ``[B, T, C, S, S]``, ``mask`` ``[B, S, S]`` (unused: 0 outside) ->
        logits ``[B, K]``."""
        b, t = x.shape[:2]
        emb = self.spatial(x.flatten(0, 1)).view(b, t, -1)
        return self.head(emb.amax(dim=1))
