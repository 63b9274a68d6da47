"""Dilated CNN without downsampling (Mboga et al., Remote Sensing 2019, 11(5):597).

After the fully convolutional network with dilated kernels of Mboga, Georganos, Grippa,
Lennert, Vanhuysse and Wolff, "Fully Convolutional Networks and Geographic Object-Based
Image Analysis for the Classification of VHR Imagery" (Remote Sensing 2019): the
resolution is never reduced; context comes from dilated kernels instead.

- a 1x1 convolution stem reduces the ``F`` features (all bands x dates) to ``stem``
  channels (an adaptation to the hundreds of channels of a time series; 0 disables it);
- each block: a 5x5 convolution with dilation ``d`` (``dilations``), a 3x3 convolution
  (batch normalization and ReLU after each) and a 3x3 max pooling of stride 1;
- the outputs of all blocks are concatenated (the skip architecture that keeps fine
  detail) and a 1x1 convolution gives per-pixel logits.

Receptive margin ``sum(2 d + 2)`` = 18 px with the default dilations 1, 2, 3; alignment 1.
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
    conv_bn_relu,
)

DEFAULTS: dict[str, Any] = {
    "stem": 64,  # 1x1 reduction of the input features (0: none)
    "filters": 32,  # filters of every block
    "dilations": [1, 2, 3],  # one block per dilation of its 5x5 convolution
    "dropout": 0.2,
}
TRAIN_DEFAULTS: dict[str, Any] = {}


class DilatedCNN(nn.Module):
    """``forward``: float32 ``[B, F, H, W]`` standardized features -> logits ``[B, K, H, W]``."""

    pixelwise = False
    alignment = 1

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        layout: TemporalLayout | None = None,
        *,
        stem: int = 64,
        filters: int = 32,
        dilations: Sequence[int] = (1, 2, 3),
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if not dilations or min(dilations) < 1:
            raise ValueError(f"dilations {list(dilations)} must be >= 1")
        self.stem = conv_bn_relu(n_features, stem, kernel=1) if stem else nn.Identity()
        cin = stem or n_features
        self.blocks = nn.ModuleList()
        for d in dilations:
            self.blocks.append(
                nn.Sequential(
                    conv_bn_relu(cin, filters, kernel=5, dilation=d),
                    conv_bn_relu(filters, filters, kernel=3),
                    nn.MaxPool2d(3, stride=1, padding=1),
                )
            )
            cin = filters
        self.head = nn.Sequential(nn.Dropout(dropout), nn.Conv2d(filters * len(dilations), n_classes, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.stem(x)
        outs = []
        for block in self.blocks:
            x = block(x)
            outs.append(x)
        return self.head(torch.cat(outs, dim=1))


ARCHITECTURE = Architecture("dilated_cnn", DilatedCNN, DEFAULTS, TRAIN_DEFAULTS)


@register("dilated_cnn", kind="network")
def build(*, seed: int = 0, threads: int = 1, **hyperparameters: Any) -> NetworkClassifier:
    """Untrained dilated CNN; ``hyperparameters``: :data:`DEFAULTS` and the training keys of
    :data:`cropchain.models.networks.TRAINING_DEFAULTS`."""
    return NetworkClassifier(ARCHITECTURE, seed=seed, threads=threads, **hyperparameters)
