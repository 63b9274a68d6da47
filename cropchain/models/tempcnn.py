"""TempCNN: temporal convolutions of a pixel's time series (Pelletier et al., Remote Sensing 2019).

Pelletier, Webb and Petitjean, "Temporal Convolutional Neural Network for the
Classification of Satellite Image Time Series", Remote Sensing 2019, 11(5):523: the
strong pixel-wise baseline of time-series classification.

- input: the pixel's series ``[C, T]`` (bands and indices x dates,
  :func:`~cropchain.models.networks.feature_layout`);
- 3 temporal convolutions of 64 filters, kernel 5 ('same' padding), each with batch
  normalization, ReLU and dropout 0.2;
- flatten, a dense layer of 256 units (batch normalization, ReLU, dropout), and the
  softmax classifier.

Pixel-wise: margin 0, so tiled inference predicts only the clear pixels of each window
(:meth:`~cropchain.models.networks.NetworkClassifier.predict_proba`). The temporal
convolutions run as ``(1, k)`` 2D convolutions in channels-last memory order and, in
evaluation, with batch normalization folded into the convolutions and the dense layer,
the dense layer through oneDNN, by chunks of ``chunk_pixels`` pixels (the fastest path
of PyTorch's CPU kernels here: about 40,000 px/s per core of an AVX-512 CPU).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torch.nn.utils.fusion import fuse_linear_bn_eval

from cropchain.models import register
from cropchain.models.networks import (
    Architecture,
    NetworkClassifier,
    TemporalConvs,
    TemporalLayout,
    attach_layout,
    by_chunks,
    inference_linear,
    pixel_series,
    time_major_linear,
)

DEFAULTS: dict[str, Any] = {
    "filters": 64,
    "kernel": 5,
    "convs": 3,
    "dense": 256,
    "dropout": 0.2,
    "chunk_pixels": 256,  # pixels per forward pass in evaluation (fits the L2 cache)
}
#: a pixel-wise network learns from the labelled pixels of a patch only: small patches
#: centred on the drawn class keep the batches class-balanced at the pixel level
TRAIN_DEFAULTS: dict[str, Any] = {
    "patch_size": 16,
    "batch_size": 16,
    "patches_per_epoch": 256,
    # probability that a date of a training patch is dropped, all its channels set to 0 (the
    # standardized mean, as nodata): cropchain.learning.train_network.drop_dates; 0 = none
    "date_dropout": 0.0,
}


class TempCNN(nn.Module):
    """``forward``: float32 ``[N, F, h, w]`` standardized features -> logits ``[N, K, h, w]``,
    each pixel on its own."""

    pixelwise = True
    alignment = 1

    def __init__(
        self,
        n_features: int,
        n_classes: int,
        layout: TemporalLayout,
        *,
        filters: int = 64,
        kernel: int = 5,
        convs: int = 3,
        dense: int = 256,
        dropout: float = 0.2,
        chunk_pixels: int = 256,
    ) -> None:
        super().__init__()
        if convs < 1:
            raise ValueError(f"convs ({convs}) must be >= 1")
        attach_layout(self, layout, chunk_pixels)
        self.filters = int(filters)
        self.temporal = TemporalConvs(self.n_channels, [filters] * convs, kernel, dropout)
        self.dense = nn.Linear(filters * self.n_dates, dense)
        self.dense_bn = nn.BatchNorm1d(dense)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(dense, n_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        s = pixel_series(x, self.order, self.n_dates, self.n_channels)
        if self.training:
            z = self.dropout(torch.relu(self.dense_bn(self.dense(self.temporal(s)))))
            logits = self.classifier(z)
        else:  # batch normalization folded, by chunks of pixels (cache-friendly)
            convs = self.temporal.folded()
            dense = inference_linear(
                time_major_linear(fuse_linear_bn_eval(self.dense, self.dense_bn), self.filters, self.n_dates)
            )
            logits = by_chunks(
                lambda c: self.classifier(torch.relu_(dense(self.temporal(c, convs, time_major=True)))),
                s,
                self.chunk_pixels,
            )
        return logits.view(n, h, w, -1).permute(0, 3, 1, 2)


ARCHITECTURE = Architecture("tempcnn", TempCNN, DEFAULTS, TRAIN_DEFAULTS, needs_layout=True)


@register("tempcnn", kind="network")
def build(*, seed: int = 0, threads: int = 1, **hyperparameters: Any) -> NetworkClassifier:
    """Untrained TempCNN; ``hyperparameters``: :data:`DEFAULTS` and the training keys of
    :data:`cropchain.models.networks.TRAINING_DEFAULTS`."""
    return NetworkClassifier(ARCHITECTURE, seed=seed, threads=threads, **hyperparameters)
