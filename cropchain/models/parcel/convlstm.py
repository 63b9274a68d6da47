"""Spatio-temporal parcel classifier: a convolutional LSTM over the dates.

Sainte Fare Garnot et al., IGARSS 2019: the ConvLSTM (Shi et al., NeurIPS 2015) reads
the patches date by date with 3x3 convolutional gates (padding 1, so the hidden state
keeps the patch's size); its last hidden state is averaged over the parcel's pixels and
classified by the MLP head 128-64. ``pool`` > 1 first averages the patch over ``pool x
pool`` px blocks (parcel pixels only) to cut the cost of the recurrence on a CPU, which
is ``T x (S / pool)^2`` gate convolutions per parcel. Its parameters all count as temporal
(the recurrent unit).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from cropchain.models.parcel._layers import MLPHead, ParcelClassifier, fit_width
from cropchain.models.parcel.cnn import N_PARAMS


class ConvLSTMCell(nn.Module):
    """ConvLSTM cell: the four gates (input, forget, output, candidate) from one 3x3
    convolution of ``[x_t, h_{t-1}]``; ``c_t = f c_{t-1} + i g``, ``h_t = o tanh(c_t)``."""

    def __init__(self, n_in: int, hidden: int, kernel_size: int = 3) -> None:
        super().__init__()
        self.hidden = hidden
        self.gates = nn.Conv2d(n_in + hidden, 4 * hidden, kernel_size, padding=kernel_size // 2)

    def forward(
        self, x: torch.Tensor, state: tuple[torch.Tensor, torch.Tensor]
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``x`` ``[B, C, H, W]``, ``state`` ``(h, c)`` each ``[B, hidden, H, W]`` -> new ``(h, c)``."""
        h, c = state
        i, f, o, g = self.gates(torch.cat([x, h], dim=1)).chunk(4, dim=1)
        c = torch.sigmoid(f) * c + torch.sigmoid(i) * torch.tanh(g)
        h = torch.sigmoid(o) * torch.tanh(c)
        return h, c


class ParcelConvLSTM(ParcelClassifier):
    """ConvLSTM over dates + masked spatial mean + MLP head.

    Parameters
    ----------
    n_bands : spectral bands ``C``.
    n_classes : classes ``K``.
    patch_size : side ``S`` of the patches (32); must be a multiple of ``pool``.
    hidden : hidden channels of the ConvLSTM; None: chosen so the model has about ``n_params`` parameters.
    pool : side of the blocks averaged before the recurrence (1 = full resolution).
    n_params : parameter budget used when ``hidden`` is None.
    dropout : dropout in the head.

    Raises
    ------
    ValueError
        ``patch_size`` not a multiple of ``pool``.
    """

    def __init__(
        self,
        n_bands: int,
        n_classes: int,
        *,
        patch_size: int = 32,
        hidden: int | None = None,
        pool: int = 2,
        n_params: int = N_PARAMS,
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        if pool < 1 or patch_size % pool:
            raise ValueError(f"pool ({pool}) must be >= 1 and divide patch_size ({patch_size})")
        if hidden is None:
            hidden = fit_width(
                lambda h: ParcelConvLSTM(
                    n_bands, n_classes, patch_size=patch_size, hidden=h, pool=pool, dropout=dropout
                ),
                n_params,
            )
        self.hyperparameters = {"hidden": int(hidden), "pool": int(pool), "dropout": float(dropout)}
        self.pool = int(pool)
        self.temporal = ConvLSTMCell(n_bands, hidden)
        self.head = MLPHead(hidden, n_classes, dropout=dropout)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` float32 ``[B, T, C, S, S]``, ``mask`` ``[B, S, S]`` -> logits ``[B, K]``."""
        m = mask[:, None]  # [B, 1, S, S]
        if self.pool > 1:  # mean of the parcel pixels of each block; 0 where a block has none
            b, t = x.shape[:2]
            xs = F.avg_pool2d(x.flatten(0, 1), self.pool).view(b, t, x.shape[2], x.shape[3] // self.pool, -1)
            m = F.avg_pool2d(m, self.pool)
            x = xs / m[:, None].clamp_min(1e-6)
            m = (m > 0).to(x.dtype)
        b, t, _, hgt, wid = x.shape
        h = x.new_zeros(b, self.temporal.hidden, hgt, wid)
        c = torch.zeros_like(h)
        for i in range(t):
            h, c = self.temporal(x[:, i], (h, c))
        pooled = (h * m).sum(dim=(-1, -2)) / m.sum(dim=(-1, -2)).clamp_min(1.0)
        return self.head(pooled)
