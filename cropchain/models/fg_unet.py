"""FG-UNet: a U-Net beside a pixel-wise path (Stoian et al., Remote Sensing 2019, 11(17):1986).

"Fine-Grained U-Net" of Stoian, Poulain, Inglada, Poughon and Derksen, "Land Cover Maps
Production with High Resolution Satellite Image Time Series and Convolutional Neural
Networks: Adaptations and Limits for Operational Systems" (Remote Sensing 2019), first
shown by Poulain et al. at ESA Phi-week 2018. As in the issue that asked for it, the
input is every band and index of every date as channels (``F`` channels of
the tile's features):

- a U-Net of depth 2 (widths 32, 64, 96; two 3x3 convolutions per level, 2x2 max
  pooling, nearest upsampling and skip concatenation) gives spatial context;
- a pixel-wise path of 1x1 convolutions (200, 100, 50: the paper's MLP) keeps the
  fine, parcel-edge detail that pooling blurs;
- both are concatenated before a 1x1 convolution classifier (per-pixel logits).

With T31TEJ's 338 features it has 0.56 M parameters (the paper's model: 526 k).
Batch normalization follows each convolution (the paper uses dropout only; batch
normalization makes the short CPU trainings here converge). Receptive margin 23 px,
alignment 4 px (two poolings).
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
    TemporalLayout,
    UNet,
    pixel_mlp,
)

DEFAULTS: dict[str, Any] = {
    "widths": [32, 64, 96],  # U-Net widths per level (depth = len - 1)
    "convs_per_level": 2,
    "mlp": [200, 100, 50],  # pixel-wise path (1x1 convolutions)
    "dropout": 0.2,
}
TRAIN_DEFAULTS: dict[str, Any] = {}


class FGUNet(nn.Module):
    """``forward``: float32 ``[B, F, H, W]`` standardized features (``H``, ``W`` multiples of
    ``alignment``) -> logits ``[B, K, H, W]``."""

    pixelwise = False

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        layout: TemporalLayout | None = None,
        *,
        widths: Sequence[int] = (32, 64, 96),
        convs_per_level: int = 2,
        mlp: Sequence[int] = (200, 100, 50),
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        self.unet = UNet(n_features, widths, convs_per_level, dropout)
        self.alignment = self.unet.alignment
        self.pixel = pixel_mlp(n_features, mlp, dropout)
        merged = widths[0] + (mlp[-1] if len(mlp) else n_features)
        self.head = nn.Conv2d(merged, n_classes, 1)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(torch.cat([self.unet(x), self.pixel(x)], dim=1))


ARCHITECTURE = Architecture("fg_unet", FGUNet, DEFAULTS, TRAIN_DEFAULTS)


@register("fg_unet", kind="network")
def build(*, seed: int = 0, threads: int = 1, **hyperparameters: Any) -> NetworkClassifier:
    """Untrained FG-UNet; ``hyperparameters``: :data:`DEFAULTS` and the training keys of
    :data:`cropchain.models.networks.TRAINING_DEFAULTS`."""
    return NetworkClassifier(ARCHITECTURE, seed=seed, threads=threads, **hyperparameters)
