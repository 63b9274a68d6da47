"""Temporal 1D-CNN + U-Net: a per-pixel temporal encoder feeding a small U-Net.

As in the public project MoisePlacier/Crop_type_classification ("a hybrid CNN: 1D
convolutions for temporal encoding and a simplified U-Net for spatial segmentation"):

1. the features ``[B, F, H, W]`` are reshaped to ``[B, C, T, H, W]`` (channels = bands
   and indices, ``T`` dates; :func:`~cropchain.models.networks.feature_layout`);
2. each pixel's series ``[C, T]`` goes through a 1D CNN (``temporal_filters`` convolutions,
   16 and 32 filters of kernel ``temporal_kernel`` 3, with batch normalization and ReLU,
   then a linear layer over the flattened ``filters x T`` map) giving a ``embedding``-dim
   vector (D = 32);
3. the embeddings are reshaped to ``[B, D, H, W]`` and a small U-Net (depth 2, widths
   32, 64, 128) gives per-pixel logits (1x1 convolution classifier).

Receptive margin 23 px, alignment 4 px.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from cropchain.models import register
from cropchain.models.networks import (
    Architecture,
    NetworkClassifier,
    TemporalConvs,
    TemporalLayout,
    UNet,
    attach_layout,
    by_chunks,
    pixel_series,
)

DEFAULTS: dict[str, Any] = {
    "temporal_filters": [16, 32],  # 1D convolutions over each pixel's series
    "temporal_kernel": 3,
    "embedding": 32,  # D: size of a pixel's temporal embedding
    "widths": [32, 64, 128],  # U-Net widths per level (depth = len - 1)
    "convs_per_level": 2,
    "dropout": 0.5,
    "chunk_pixels": 65536,  # pixels encoded at once in evaluation (memory bound)
}
#: the encoder runs on every pixel of a patch: fewer patches per epoch keep the training
#: time of the others; stronger regularization (measured on T31TEJ)
TRAIN_DEFAULTS: dict[str, Any] = {"patches_per_epoch": 96, "weight_decay": 1e-3}


class TemporalUNet(nn.Module):
    """``forward``: float32 ``[B, F, H, W]`` standardized features (``H``, ``W`` multiples of
    ``alignment``) -> logits ``[B, K, H, W]``."""

    pixelwise = False

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        layout: TemporalLayout,
        *,
        temporal_filters: Sequence[int] = (16, 32),
        temporal_kernel: int = 3,
        embedding: int = 32,
        widths: Sequence[int] = (32, 64, 128),
        convs_per_level: int = 2,
        dropout: float = 0.5,
        chunk_pixels: int = 65536,
    ) -> None:
        super().__init__()
        attach_layout(self, layout, chunk_pixels)
        self.temporal = TemporalConvs(self.n_channels, temporal_filters, temporal_kernel)
        self.project = nn.Sequential(
            nn.Linear(temporal_filters[-1] * self.n_dates, embedding, bias=False),
            nn.BatchNorm1d(embedding),
            nn.ReLU(inplace=True),
        )
        self.unet = UNet(embedding, widths, convs_per_level, dropout)
        self.alignment = self.unet.alignment
        self.head = nn.Conv2d(widths[0], n_classes, 1)

    def encode(self, series: torch.Tensor, folded: list[nn.Conv2d] | None = None) -> torch.Tensor:
        """Pixel series ``[P, C, 1, T]`` -> embeddings ``[P, D]``."""
        return self.project(self.temporal(series, folded))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, _, h, w = x.shape
        series = pixel_series(x, self.order, self.n_dates, self.n_channels)  # [B*H*W, C, 1, T]
        if self.training or series.shape[0] <= self.chunk_pixels:
            emb = self.encode(series)
        else:  # evaluation: pixels are independent here, encode them by chunks (memory bound)
            folded = self.temporal.folded()
            emb = by_chunks(lambda c: self.encode(c, folded), series, self.chunk_pixels)
        emb = emb.view(b, h, w, -1).permute(0, 3, 1, 2).contiguous()  # [B, D, H, W]
        return self.head(self.unet(emb))


ARCHITECTURE = Architecture("temporal_unet", TemporalUNet, DEFAULTS, TRAIN_DEFAULTS, needs_layout=True)


@register("temporal_unet", kind="network")
def build(*, seed: int = 0, threads: int = 1, **hyperparameters: Any) -> NetworkClassifier:
    """Untrained temporal 1D-CNN + U-Net; ``hyperparameters``: :data:`DEFAULTS` and the
    training keys of :data:`cropchain.models.networks.TRAINING_DEFAULTS`."""
    return NetworkClassifier(ARCHITECTURE, seed=seed, threads=threads, **hyperparameters)
