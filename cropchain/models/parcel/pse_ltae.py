"""PSE+L-TAE: a Pixel-Set Encoder per date, then lightweight temporal attention.

Sainte Fare Garnot, Landrieu, Giordano and Chehata, "Satellite Image Time Series
Classification with Pixel-Set Encoders and Temporal Self-Attention", CVPR 2020, with the
temporal attention replaced by its lightweight version (L-TAE, Sainte Fare Garnot & Landrieu
2020, :class:`cropchain.models.ltae.LTAE`), as the authors' code does.

- **pixel set**: a parcel is a *set* of its pixels, not an image. In training, ``n_pixels``
  (64) pixels are drawn at random inside the parcel at every forward pass (without
  replacement; a parcel with fewer pixels gives them all, the rest of the set is masked
  padding), a regularisation the paper credits for its robustness. In evaluation every pixel
  of the parcel is used (no randomness: the same input gives the same prediction);
- **Pixel-Set Encoder** (each date): a shared MLP 32-64 (Linear, batch normalization, ReLU) on
  each pixel's ``C`` bands, the mean and standard deviation of the set (masked, 128 values),
  then Linear 128-128 and batch normalization;
- **L-TAE** over the ``T`` dates (``d_model`` 256, 16 heads of ``d_k`` 8, MLP 256-128), dates
  encoded as ``t * day_step`` days (the chain's regular date grid: ``day_step`` must be its
  step, ``dates.step_days``, 10 by default);
- the paper's decoder MLP 64-32 and the linear classifier.

cropchain's parcel patches are each parcel's bounding box resized to ``S x S`` px (the IGARSS
2019 models' input): the set is drawn from those resampled pixels, and the paper's extra
geometric features (perimeter, area...) are not used. With 10 bands and 8 classes:
130,248 parameters (PSE 19,424, L-TAE 100,224, decoder 10,600), ``tests/test_parcel_models.py``.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from torch import nn

from cropchain.models.ltae import LTAE, mlp_bn
from cropchain.models.parcel._layers import MLPHead, ParcelClassifier

#: parcels encoded at once in evaluation (every pixel of a 32 x 32 patch: bounded memory)
EVAL_CHUNK = 8


def masked_mean_std(x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """Mean and standard deviation over a set, padding excluded.

    Parameters
    ----------
    x : float32 ``[..., N, F]`` the set's ``N`` elements.
    mask : float32 ``[..., N]`` 1 for an element of the set, 0 for padding.

    Returns
    -------
    float32 ``[..., 2F]``: mean then standard deviation (``ddof=1`` as in the authors' code;
    0 for a set of one element, both 0 for an empty set).
    """
    m = mask[..., None]
    n = m.sum(-2)
    mean = (x * m).sum(-2) / n.clamp_min(1.0)
    var = (((x - mean[..., None, :]) ** 2) * m).sum(-2) / (n - 1).clamp_min(1.0)
    return torch.cat([mean, torch.sqrt(var + 1e-12)], dim=-1)


class PixelSetEncoder(nn.Module):
    """``forward(pixels, set_mask)``: float32 ``[B, T, N, C]`` sets of ``N`` pixels and their
    mask ``[B, N]`` -> ``[B, T, mlp2[-1]]``."""

    def __init__(self, n_bands: int, mlp1: Sequence[int] = (32, 64), mlp2: Sequence[int] = (128,)) -> None:
        super().__init__()
        self.mlp1 = mlp_bn([n_bands, *mlp1])
        layers: list[nn.Module] = []
        n_in = 2 * mlp1[-1]
        for i, w in enumerate(mlp2):
            layers += [nn.Linear(n_in, w), nn.BatchNorm1d(w)]
            if i < len(mlp2) - 1:
                layers.append(nn.ReLU(inplace=True))
            n_in = w
        self.mlp2 = nn.Sequential(*layers)
        self.out_features = n_in

    def forward(self, pixels: torch.Tensor, set_mask: torch.Tensor) -> torch.Tensor:
        b, t, n, c = pixels.shape
        f = self.mlp1(pixels.reshape(-1, c)).view(b, t, n, -1)
        pooled = masked_mean_std(f, set_mask[:, None, :].expand(b, t, n))  # [B, T, 2 F]
        return self.mlp2(pooled.reshape(b * t, -1)).view(b, t, -1)


def draw_pixel_sets(x: torch.Tensor, mask: torch.Tensor, n_pixels: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n_pixels`` pixels drawn at random inside each parcel (``torch``'s global generator).

    Parameters
    ----------
    x : float32 ``[B, T, C, S, S]`` patches; mask float32 ``[B, S, S]`` (1 inside the parcel).

    Returns
    -------
    pixels float32 ``[B, T, n_pixels, C]`` and set mask ``[B, n_pixels]`` (0 for padding where
    a parcel has fewer than ``n_pixels`` pixels).
    """
    b, t, c = x.shape[:3]
    flat_mask = mask.reshape(b, -1)
    scores = (
        torch.rand(flat_mask.shape, device=x.device) + flat_mask * 2.0
    )  # inside pixels first, in random order
    k = min(int(n_pixels), flat_mask.shape[1])
    idx = scores.topk(k, dim=1).indices  # [B, k]
    pixels = x.reshape(b, t, c, -1).gather(-1, idx[:, None, None, :].expand(b, t, c, k))
    return pixels.transpose(2, 3), flat_mask.gather(1, idx)


class ParcelPSELTAE(ParcelClassifier):
    """Pixel-Set Encoder + L-TAE + decoder (see the module docstring).

    Parameters
    ----------
    n_bands : spectral bands ``C``.
    n_classes : classes ``K``.
    patch_size : side of the patches (unused: a parcel is a set of pixels).
    n_pixels : pixels drawn per parcel in training (64 in the paper).
    day_step : days between consecutive dates of the series (the date encoding).
    d_model, n_head, d_k : L-TAE sizes (256, 16, 8).
    dropout : dropout of the L-TAE's MLP and of the decoder.

    ``forward(x, mask)``: float32 ``[B, T, C, S, S]`` (normalized, 0 outside the parcel) and
    ``[B, S, S]`` (1 inside) -> logits ``[B, K]``.
    """

    def __init__(
        self,
        n_bands: int,
        n_classes: int,
        *,
        patch_size: int = 32,
        n_pixels: int = 64,
        day_step: float = 10.0,
        d_model: int = 256,
        n_head: int = 16,
        d_k: int = 8,
        dropout: float = 0.2,
    ) -> None:
        super().__init__()
        if n_pixels < 2:
            raise ValueError(f"n_pixels ({n_pixels}) must be >= 2 (a standard deviation needs two pixels)")
        self.hyperparameters = {
            "n_pixels": int(n_pixels),
            "day_step": float(day_step),
            "d_model": int(d_model),
            "n_head": int(n_head),
            "d_k": int(d_k),
            "dropout": float(dropout),
        }
        self.n_pixels, self.day_step = int(n_pixels), float(day_step)
        self.spatial = PixelSetEncoder(n_bands)
        self.temporal = LTAE(
            self.spatial.out_features,
            None,
            d_model=d_model,
            n_head=n_head,
            d_k=d_k,
            mlp=(d_model, 128),
            dropout=dropout,
        )
        self.head = MLPHead(self.temporal.out_features, n_classes, hidden=(64, 32), dropout=dropout)

    def encode(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """Parcel embeddings ``[B, 128]`` (before the decoder)."""
        positions = [t * self.day_step for t in range(x.shape[1])]
        if self.training:
            return self.temporal(self.spatial(*draw_pixel_sets(x, mask, self.n_pixels)), positions)
        out = []
        for i in range(0, x.shape[0], EVAL_CHUNK):  # every pixel of the parcel
            xb, mb = x[i : i + EVAL_CHUNK], mask[i : i + EVAL_CHUNK]
            b, t, c = xb.shape[:3]
            pixels = xb.reshape(b, t, c, -1).transpose(2, 3)
            out.append(self.temporal(self.spatial(pixels, mb.reshape(b, -1)), positions))
        return torch.cat(out)

    def forward(self, x: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
        """``x`` float32 ``[B, T, C, S, S]``, ``mask`` ``[B, S, S]`` -> logits ``[B, K]``."""
        return self.head(self.encode(x, mask))
