"""L-TAE: lightweight temporal self-attention of a pixel's series (Sainte Fare Garnot & Landrieu, 2020).

Sainte Fare Garnot and Landrieu, "Lightweight Temporal Self-Attention for Classifying
Satellite Images Time Series", AALTD 2020 (arXiv 2007.00586). :class:`LTAE` is the temporal
encoder (also used by the parcel model PSE+L-TAE, :mod:`cropchain.models.parcel.pse_ltae`);
``ltae`` is the pixel-wise architecture built on it:

- input: the pixel's series ``[T, C]`` (bands and indices x dates,
  :func:`~cropchain.models.networks.feature_layout`);
- per date: LayerNorm of the ``C`` values, a linear map to ``d_model`` (256; the paper's 1x1
  convolution) and LayerNorm, plus a fixed sinusoid encoding of the date (days since the first
  date, period 1000) of ``d_model / n_head`` dimensions repeated for every head;
- ``n_head`` (16) heads, each with one learned *master query* of ``d_k`` (8) dimensions (no
  query per date): keys ``Linear(d_model, n_head * d_k)``, attention softmax(q . k / sqrt(d_k))
  over the dates (dropout 0.1), and each head averages its own ``d_model / n_head`` channels of
  the inputs (channel grouping: no value projection);
- the concatenated heads (``d_model``) go through the MLP 256-128 (Linear, batch
  normalization, ReLU), dropout 0.2 and LayerNorm: a 128-d embedding;
- the paper's decoder MLP 64-32 (Linear, batch normalization, ReLU) and the linear classifier.

Departure from the authors' code: the LayerNorm after the input map normalises each date over
its ``d_model`` values (theirs normalises ``[d_model, T]`` jointly, which ties the weights to
``T``). With T31TEJ's 13 channels (10 bands, 3 indices) and 8 classes: 81,346 parameters,
whatever the number of dates (``tests/test_networks.py`` checks the count term by term).
Pixel-wise: margin 0, so tiled inference predicts only the clear pixels, by chunks of
``chunk_pixels``. In the attention, the
master queries are folded into the key map (``q . (W_k h + b_k) = (q W_k) h + q . b_k``): 16
instead of 128 outputs per date, the same function.
"""

from __future__ import annotations

import datetime as dt
import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from cropchain.models import register
from cropchain.models.networks import (
    Architecture,
    NetworkClassifier,
    TemporalLayout,
    attach_layout,
    by_chunks,
    pixel_series,
)

DEFAULTS: dict[str, Any] = {
    "d_model": 256,  # width of the attention inputs
    "n_head": 16,
    "d_k": 8,  # key / master query size per head
    "mlp": [256, 128],  # MLP after the attention (first = d_model)
    "decoder": [64, 32],  # hidden layers of the classifier
    "dropout": 0.2,
    "attention_dropout": 0.1,
    "period": 1000.0,  # of the date encoding, in days
    # pixels per forward pass in evaluation (the [256, T, d_model] temporaries fit the L2 cache)
    "chunk_pixels": 256,
}
#: pixel-wise like TempCNN: small patches centred on the drawn class
TRAIN_DEFAULTS: dict[str, Any] = {
    "patch_size": 16,
    "batch_size": 16,
    "patches_per_epoch": 256,
    # probability that a date of a training patch is dropped, all its channels set to 0 (the
    # standardized mean, as nodata): cropchain.learning.train_network.drop_dates; 0 = none
    "date_dropout": 0.0,
}


def date_encoding(positions: Sequence[float] | np.ndarray, dim: int, period: float = 1000.0) -> torch.Tensor:
    """Fixed sinusoid encoding ``[T, dim]`` of positions (days): ``sin(p / period^(2i/dim))`` at
    even dimensions ``2i``, ``cos`` at odd dimensions ``2i + 1`` (Vaswani et al. 2017)."""
    p = torch.as_tensor(np.asarray(positions, dtype=np.float64))[:, None]
    j = torch.arange(dim)
    angle = p / float(period) ** (2 * (j // 2) / dim).double()
    return torch.where(j % 2 == 0, angle.sin(), angle.cos()).float()


def days_since_first(dates: Sequence[str]) -> list[int]:
    """Days from the first date of ``YYYYMMDD`` strings."""
    days = [dt.date(int(d[:4]), int(d[4:6]), int(d[6:8])) for d in dates]
    return [(d - days[0]).days for d in days]


def mlp_bn(widths: Sequence[int], dropout: float = 0.0) -> nn.Sequential:
    """``Linear, BatchNorm1d, ReLU`` between consecutive ``widths`` (then dropout if > 0)."""
    layers: list[nn.Module] = []
    for a, b in zip(widths[:-1], widths[1:]):
        layers += [nn.Linear(a, b), nn.BatchNorm1d(b), nn.ReLU(inplace=True)]
    if dropout > 0:
        layers.append(nn.Dropout(dropout))
    return nn.Sequential(*layers)


class LTAE(nn.Module):
    """Lightweight temporal attention encoder (see the module docstring).

    Parameters
    ----------
    in_channels : values per date ``C``.
    positions : the ``T`` dates in days (e.g. since the first one): the encoder then handles
        series of these dates only; None: the dates are given to each ``forward``.
    d_model, n_head, d_k, mlp, dropout, attention_dropout, period : as in :data:`DEFAULTS`;
        ``d_model`` must be a multiple of ``n_head`` and ``mlp[0] == d_model``.

    ``forward(x, positions=None)``: float32 ``[N, T, C]`` (and, when the encoder was built
    without them, the ``T`` dates in days) -> ``[N, mlp[-1]]``; with ``return_attention``, also
    the attention weights ``[N, n_head, T]``.
    """

    def __init__(
        self,
        in_channels: int,
        positions: Sequence[float] | None = None,
        *,
        d_model: int = 256,
        n_head: int = 16,
        d_k: int = 8,
        mlp: Sequence[int] = (256, 128),
        dropout: float = 0.2,
        attention_dropout: float = 0.1,
        period: float = 1000.0,
    ) -> None:
        super().__init__()
        if d_model % n_head or not mlp or mlp[0] != d_model:
            raise ValueError(
                f"d_model ({d_model}) must be a multiple of n_head ({n_head}) and mlp {list(mlp)} start "
                "with d_model"
            )
        self.n_head, self.d_k, self.d_model = int(n_head), int(d_k), int(d_model)
        self.in_norm = nn.LayerNorm(in_channels)
        self.in_map = nn.Linear(in_channels, d_model)
        self.in_map_norm = nn.LayerNorm(d_model)
        self.period = float(period)
        self.register_buffer(
            "position", None if positions is None else self.encode_dates(positions), persistent=False
        )
        self.key = nn.Linear(d_model, n_head * d_k)
        nn.init.normal_(self.key.weight, mean=0, std=math.sqrt(2.0 / d_k))
        self.query = nn.Parameter(
            torch.randn(n_head, d_k) * math.sqrt(2.0 / d_k)
        )  # one master query per head
        self.attention_dropout = nn.Dropout(attention_dropout)
        self.mlp = mlp_bn(list(mlp), dropout)
        self.out_norm = nn.LayerNorm(mlp[-1])
        self.out_features = int(mlp[-1])

    def encode_dates(self, positions: Sequence[float] | np.ndarray) -> torch.Tensor:
        """Date encoding ``[T, d_model]``: :func:`date_encoding` of ``d_model / n_head``
        dimensions, once per head."""
        return date_encoding(positions, self.d_model // self.n_head, self.period).repeat(1, self.n_head)

    def forward(
        self, x: torch.Tensor, positions: Sequence[float] | None = None, return_attention: bool = False
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        n, t, _ = x.shape
        if positions is not None:
            position = self.encode_dates(positions).to(x.device)
        elif self.position is not None:
            position = self.position
        else:
            raise ValueError("the dates of the series (days) are needed: the encoder was built without them")
        if t != position.shape[0]:
            raise ValueError(f"series of {t} dates, the encoder was built for {position.shape[0]}")
        h = self.in_map_norm(self.in_map(self.in_norm(x))) + position  # [N, T, d_model]
        # q . (W_k h + b_k) = (q W_k) h + q . b_k: the master queries folded into the key map
        # (n_head instead of n_head * d_k outputs per date; the same function and gradients)
        w = torch.einsum("hd,hdc->hc", self.query, self.key.weight.view(self.n_head, self.d_k, self.d_model))
        b = (self.query * self.key.bias.view(self.n_head, self.d_k)).sum(-1)
        scores = torch.nn.functional.linear(h, w, b).transpose(1, 2) / math.sqrt(self.d_k)  # [N, heads, T]
        attention = torch.softmax(scores, dim=-1)
        v = h.view(
            n, t, self.n_head, self.d_model // self.n_head
        )  # channel grouping: head j reads its own channels
        out = torch.einsum("nht,nthc->nhc", self.attention_dropout(attention), v).reshape(n, self.d_model)
        out = self.out_norm(self.mlp(out))
        return (out, attention) if return_attention else out


class LTAEPixel(nn.Module):
    """``forward``: float32 ``[N, F, h, w]`` standardized features -> logits ``[N, K, h, w]``,
    each pixel on its own (L-TAE then the decoder MLP)."""

    pixelwise = True
    alignment = 1

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        layout: TemporalLayout,
        *,
        d_model: int = 256,
        n_head: int = 16,
        d_k: int = 8,
        mlp: Sequence[int] = (256, 128),
        decoder: Sequence[int] = (64, 32),
        dropout: float = 0.2,
        attention_dropout: float = 0.1,
        period: float = 1000.0,
        chunk_pixels: int = 256,
    ) -> None:
        super().__init__()
        attach_layout(self, layout, chunk_pixels)
        self.encoder = LTAE(
            self.n_channels,
            days_since_first(layout.dates),
            d_model=d_model,
            n_head=n_head,
            d_k=d_k,
            mlp=mlp,
            dropout=dropout,
            attention_dropout=attention_dropout,
            period=period,
        )
        self.decoder = mlp_bn([self.encoder.out_features, *decoder])
        self.classifier = nn.Linear(([self.encoder.out_features, *decoder])[-1], n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        s = pixel_series(x, self.order, self.n_dates, self.n_channels)[:, :, 0, :].transpose(
            1, 2
        )  # [P, T, C]
        if self.training:
            logits = self.classifier(self.decoder(self.encoder(s)))
        else:
            logits = by_chunks(lambda c: self.classifier(self.decoder(self.encoder(c))), s, self.chunk_pixels)
        return logits.view(n, h, w, -1).permute(0, 3, 1, 2)


ARCHITECTURE = Architecture("ltae", LTAEPixel, DEFAULTS, TRAIN_DEFAULTS, needs_layout=True)


@register("ltae", kind="network")
def build(*, seed: int = 0, threads: int = 1, **hyperparameters: Any) -> NetworkClassifier:
    """Untrained L-TAE; ``hyperparameters``: :data:`DEFAULTS` and the training keys of
    :data:`cropchain.models.networks.TRAINING_DEFAULTS`."""
    return NetworkClassifier(ARCHITECTURE, seed=seed, threads=threads, **hyperparameters)
