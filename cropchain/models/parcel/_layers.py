"""Building blocks shared by the parcel classifiers (Sainte Fare Garnot et al., IGARSS 2019).

* :class:`ConvEncoder`: the per-date CNN of the paper, 3 blocks of 3x3 convolution
  without padding, batch norm, ReLU and 2x2 max-pooling;
* :class:`MLPHead`: the classification head, hidden layers 128 and 64;
* :func:`masked_band_stats`: per-date, per-band mean and standard deviation of the pixels
  inside the parcel (the input of the GRU);
* :func:`fit_width`: the integer width giving a model closest to a parameter budget.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import torch
from torch import nn

from cropchain.models import count_parameters

#: hidden layers of the classification head (the paper's MLP 128-64)
HEAD_HIDDEN = (128, 64)


class MLPHead(nn.Module):
    """Multi-layer perceptron ``in -> 128 -> 64 -> K`` with ReLU (and optional dropout).

    Parameters
    ----------
    n_in : input features.
    n_classes : output logits ``K``.
    hidden : hidden layer sizes (default the paper's 128, 64).
    dropout : dropout probability after each hidden layer (0 = none).
    """

    def __init__(
        self, n_in: int, n_classes: int, hidden: Sequence[int] = HEAD_HIDDEN, dropout: float = 0.0
    ) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        for n_out in hidden:
            layers += [nn.Linear(n_in, n_out), nn.ReLU()]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            n_in = n_out
        layers.append(nn.Linear(n_in, n_classes))
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` float32 ``[B, n_in]`` -> logits ``[B, K]``."""
        return self.net(x)


def conv_output_size(patch_size: int, n_blocks: int = 3) -> int:
    """Side of the feature map after ``n_blocks`` of (3x3 valid convolution, 2x2 max-pool).

    32 px -> 30 -> 15 -> 13 -> 6 -> 4 -> 2.
    """
    size = int(patch_size)
    for _ in range(n_blocks):
        size = (size - 2) // 2
    return size


class ConvEncoder(nn.Module):
    """Per-date image encoder: 3 x (Conv 3x3 without padding, BatchNorm, ReLU, MaxPool 2x2).

    Parameters
    ----------
    n_bands : input channels ``C`` (spectral bands).
    widths : output channels of the three blocks.
    patch_size : side ``S`` of the input patches (32 in the paper); the output is
        flattened to ``widths[-1] * s * s`` features with ``s = conv_output_size(S)``.

    Raises
    ------
    ValueError
        a patch too small for three blocks (``S < 22``).
    """

    def __init__(self, n_bands: int, widths: Sequence[int], patch_size: int = 32) -> None:
        super().__init__()
        side = conv_output_size(patch_size, len(widths))
        if side < 1:
            raise ValueError(
                f"patch_size {patch_size} px is too small for {len(widths)} blocks of 3x3 convolution + 2x2 "
                "pooling"
            )
        blocks: list[nn.Module] = []
        n_in = n_bands
        for w in widths:
            blocks += [
                nn.Conv2d(n_in, w, kernel_size=3, padding=0),
                nn.BatchNorm2d(w),
                nn.ReLU(),
                nn.MaxPool2d(2),
            ]
            n_in = w
        self.net = nn.Sequential(*blocks)
        self.out_features = int(widths[-1]) * side * side
        # channels-last convolutions run about 1.5x faster on CPUs (oneDNN); same results
        self.net.to(memory_format=torch.channels_last)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``x`` float32 ``[N, C, S, S]`` -> ``[N, out_features]`` (flattened in C, H, W order)."""
        return self.net(x.contiguous(memory_format=torch.channels_last)).flatten(1)


def masked_band_stats(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean and standard deviation of each date and band over the parcel's pixels.

    Parameters
    ----------
    x : float32 ``[B, T, C, S, S]`` normalized patches.
    mask : float32 ``[B, S, S]``, 1 inside the parcel, 0 outside.

    Returns
    -------
    torch.Tensor
        float32 ``[B, T, 2C]``: the ``C`` means then the ``C`` standard deviations
        (population, ``ddof=0``) of each date; 0 for a parcel with an empty mask.
    """
    m = mask[:, None, None]  # [B, 1, 1, S, S]
    n = m.sum(dim=(-1, -2)).clamp_min(1.0)  # [B, 1, 1]
    mean = (x * m).sum(dim=(-1, -2)) / n
    var = (((x - mean[..., None, None]) ** 2) * m).sum(dim=(-1, -2)) / n
    return torch.cat([mean, torch.sqrt(var + 1e-8)], dim=-1)


def fit_width(build: Callable[[int], nn.Module], target: int, lo: int = 1, hi: int = 512) -> int:
    """Integer width ``w`` in ``[lo, hi]`` whose model ``build(w)`` has the number of
    parameters closest to ``target`` (the smaller ``w`` on a tie).

    The models are built on PyTorch's ``meta`` device (no memory, no initialisation), and
    the parameter count is assumed to grow with ``w`` (bisection).
    """

    def n(w: int) -> int:
        with torch.device("meta"):
            return count_parameters(build(w))

    a, b = lo, hi
    while a < b:  # smallest w with n(w) >= target
        mid = (a + b) // 2
        if n(mid) >= target:
            b = mid
        else:
            a = mid + 1
    if a > lo and abs(n(a - 1) - target) <= abs(n(a) - target):
        return a - 1
    return a


class ParcelClassifier(nn.Module):
    """Base class of the parcel classifiers.

    ``forward(x, mask)``: ``x`` float32 ``[B, T, C, S, S]`` (normalized reflectance, 0
    outside the parcel), ``mask`` float32 ``[B, S, S]`` (1 inside the parcel) -> logits
    float32 ``[B, K]``.

    Attributes
    ----------
    hyperparameters : the resolved sizes (widths, hidden sizes), enough to rebuild the
        same network with :func:`cropchain.models.parcel.get_parcel_model`.
    spatial, temporal : the sub-modules counted as spatial and temporal parameters
        (absent where the model has no such part); the head is counted in neither.
    """

    hyperparameters: dict

    def spatial_parameters(self) -> int:
        """Parameters of the spatial part (sub-module ``spatial``: the per-date CNN)."""
        part = self._modules.get("spatial")
        return count_parameters(part) if part is not None else 0

    def temporal_parameters(self) -> int:
        """Parameters of the temporal part (sub-module ``temporal``: the recurrent unit)."""
        part = self._modules.get("temporal")
        return count_parameters(part) if part is not None else 0

    def temporal_ratio(self) -> float:
        """Temporal parameter ratio: temporal / (spatial + temporal) parameters (Table 1 of the paper)."""
        total = self.spatial_parameters() + self.temporal_parameters()
        return self.temporal_parameters() / total if total else float("nan")
