"""Presto: a pre-trained transformer encoder of pixel time series (Tseng et al., 2023).

Tseng, Cartuyvels, Zvonkov, Purohit, Rolnick and Kerner, "Lightweight, Pre-trained
Transformers for Remote Sensing Timeseries", arXiv 2304.14065. Written here from the paper
and from ``../shared/models/presto/FACTS.md`` (no Presto code is used); it loads the published
weights (``default_model.pt`` of github.com/nasaharvest/presto, MIT licence, "Copyright (c)
2024 Presto Authors") and reproduces the original embeddings to about 1e-6
(``tests/test_presto.py``).

Inputs of the encoder (:class:`PrestoEncoder`), per pixel and timestep ``t`` (``T`` <= 24,
12 monthly steps in pre-training):

- 17 channels (:data:`CHANNELS`): Sentinel-1 VV, VH (dB), Sentinel-2 B2 B3 B4 B5 B6 B7 B8 B8A
  B11 B12 (reflectance x10000, as Google Earth Engine exports it), ERA5 temperature and
  precipitation, SRTM elevation and slope, NDVI; normalised by ``(v + shift) / div``
  (:data:`SHIFT`, :data:`DIV`); cropchain supplies only Sentinel-2 (and NDVI): the other
  channels are masked;
- a mask (1 = missing) per channel; a *token* is one channel group (:data:`GROUPS`) at one
  timestep, dropped when any channel of the group is masked there;
- the Dynamic World class per timestep (9 = missing: cropchain has none, every DW token is
  dropped);
- latitude and longitude (degrees), one token;
- the month of the first timestep (0 = January).

Architecture (``Presto.construct()`` defaults, matching the weights): width 128, per-group
linear projections, additive [month (32, fixed sinusoid) | channel group (32, learned) |
position (64, fixed sinusoid of base 1000)] embeddings, 2 pre-norm transformer blocks (8
heads, MLP 512 with exact GELU), mean of the kept tokens (lat/lon token included) then a final
LayerNorm: one 128-d embedding per pixel. 402,240 learned values in the encoder.

Sentinel-2 units: the model divides reflectance x10000 by 10000 itself. Pre-training used
Level-1C top-of-atmosphere exports; cropchain gives Level-2A surface reflectance (with the
``BOA_ADD_OFFSET`` of baseline >= 04.00 already removed by the ingest): a domain shift the
model tolerates, which fine-tuning or a head trained on the embeddings absorbs.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import math
import os
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from affine import Affine
from torch import nn

from cropchain.errors import ConfigError, InputError
from cropchain.models.device import resolve_device  # noqa: F401 (re-exported)
from cropchain.models.networks import load_torch_file
from cropchain.series.tile import GAPFILLED_NODATA

#: sha256 of the published ``default_model.pt`` (nasaharvest/presto, commit 5afde40, 3,321,716 bytes)
WEIGHTS_SHA256 = "559c9d76f525bdf2dd3774da8b1e7f1510769b73baacac12e9e4d8d5c67fbe65"
#: where a user gets the weights
WEIGHTS_URL = "https://github.com/nasaharvest/presto/raw/main/data/default_model.pt"

#: the 17 normalised input channels, in the order of ``x`` and ``mask``
CHANNELS: tuple[str, ...] = (
    "VV",
    "VH",
    "B2",
    "B3",
    "B4",
    "B5",
    "B6",
    "B7",
    "B8",
    "B8A",
    "B11",
    "B12",
    "temperature_2m",
    "total_precipitation",
    "elevation",
    "slope",
    "NDVI",
)
#: normalisation ``(v + SHIFT) / DIV`` of each channel (NDVI is computed, not normalised)
SHIFT = np.array([25, 25] + [0] * 10 + [-272.15, 0, 0, 0, 0], dtype=np.float64)
DIV = np.array([25, 25] + [10000] * 10 + [35, 0.03, 2000, 50, 1], dtype=np.float64)
#: channel groups: name -> (channel-embedding row, channel indices); Dynamic World is row 9
GROUPS: dict[str, tuple[int, tuple[int, ...]]] = {
    "S1": (0, (0, 1)),
    "S2_RGB": (1, (2, 3, 4)),
    "S2_Red_Edge": (2, (5, 6, 7)),
    "S2_NIR_10m": (3, (8,)),
    "S2_NIR_20m": (4, (9,)),
    "S2_SWIR": (5, (10, 11)),
    "ERA5": (6, (12, 13)),
    "SRTM": (7, (14, 15)),
    "NDVI": (8, (16,)),
}
DW_GROUP = 9
DW_MISSING = 9
#: the Sentinel-2 bands Presto reads, in cropchain's names, in the order of CHANNELS[2:12]
S2_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")
S2_CHANNELS = slice(2, 12)
NDVI_CHANNEL = 16
EMBEDDING_SIZE = 128
MAX_TIMESTEPS = 24


def presto_inputs(
    s2: np.ndarray, clear: np.ndarray | None = None
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Normalised encoder inputs of Sentinel-2 series (no S1, ERA5, SRTM or Dynamic World).

    Parameters
    ----------
    s2 : int16 (or any number) ``[N, T, 10]`` reflectance x10000, bands in the order of
        :data:`S2_BANDS` (B02 B03 B04 B05 B06 B07 B08 B8A B11 B12).
    clear : bool ``[N, T]``, True where the timestep holds a clear observation; None: all clear.

    Returns
    -------
    x : float32 ``[N, T, 17]`` normalised channels (:data:`CHANNELS`); reflectance / 10000 and
        NDVI = (B8 - B4) / (B8 + B4) (0 where B8 + B4 <= 0); 0 in the channels cropchain lacks.
    mask : float32 ``[N, T, 17]``, 1 = missing: S1, ERA5 and SRTM everywhere, the Sentinel-2
        channels and NDVI at the timesteps that are not clear.
    dynamic_world : int64 ``[N, T]``, all 9 (missing).

    Raises
    ------
    ValueError
        ``s2`` not ``[N, T, 10]`` or ``clear`` not ``[N, T]``.
    """
    s2 = np.asarray(s2)
    if s2.ndim != 3 or s2.shape[2] != len(S2_BANDS):
        raise ValueError(f"s2 must be [N, T, {len(S2_BANDS)}] ({', '.join(S2_BANDS)}), got {s2.shape}")
    n, t, _ = s2.shape
    x = np.zeros((n, t, len(CHANNELS)), dtype=np.float32)
    x[:, :, S2_CHANNELS] = (s2.astype(np.float64) + SHIFT[S2_CHANNELS]) / DIV[S2_CHANNELS]
    b4, b8 = x[:, :, CHANNELS.index("B4")], x[:, :, CHANNELS.index("B8")]
    total = b8 + b4
    with np.errstate(divide="ignore", invalid="ignore"):
        x[:, :, NDVI_CHANNEL] = np.where(total > 0, (b8 - b4) / np.where(total > 0, total, 1), 0)
    mask = np.ones((n, t, len(CHANNELS)), dtype=np.float32)
    mask[:, :, S2_CHANNELS] = 0
    mask[:, :, NDVI_CHANNEL] = 0
    if clear is not None:
        clear = np.asarray(clear, dtype=bool)
        if clear.shape != (n, t):
            raise ValueError(f"clear must be [N, T] = {(n, t)}, got {clear.shape}")
        mask[~clear] = 1
    return x, mask, np.full((n, t), DW_MISSING, dtype=np.int64)


def input_names(months: Sequence[dt.date]) -> tuple[str, ...]:
    """Names of the encoder-input features of ``M`` monthly composites: for each month ``t``
    (``mm`` its calendar month) the 10 bands of :data:`S2_BANDS`
    ``presto_t{t:02d}_m{mm:02d}_{band}`` (reflectance x10000) then
    ``presto_t{t:02d}_m{mm:02d}_clear`` (1 = a clear observation in the month, 0 = masked);
    then ``presto_lat`` and ``presto_lon`` (degrees). ``M * 11 + 2`` names."""
    names = []
    for t, m in enumerate(months):
        head = f"presto_t{t:02d}_m{m.month:02d}"
        names += [f"{head}_{b}" for b in S2_BANDS] + [f"{head}_clear"]
    return (*names, "presto_lat", "presto_lon")


def split_inputs(
    X: np.ndarray, names: Sequence[str]
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Encoder inputs of pixels from their :func:`input_names` features.

    Parameters
    ----------
    X : float32 ``[N, M * 11 + 2]`` features in the order of ``names``.
    names : :func:`input_names` of the ``M`` months.

    Returns
    -------
    series : int16 ``[N, M, 10]`` reflectance x10000; clear : bool ``[N, M]``; latlon : float32
    ``[N, 2]``; months : int64 ``[M]`` month indices (0 = January).

    Raises
    ------
    ValueError
        names that are not :func:`input_names`.
    """
    n_months = (len(names) - 2) // 11
    months = [int(n[len("presto_t00_m") :][:2]) - 1 for n in names[: n_months * 11 : 11]]
    expected = input_names([dt.date(2000, m + 1, 1) for m in months])
    if tuple(names) != expected:
        raise ValueError(
            "features are not the Presto encoder inputs (presto_tTT_mMM_<band>, _clear, lat, lon)"
        )
    X = np.asarray(X, dtype=np.float32)
    cube = X[:, : n_months * 11].reshape(len(X), n_months, 11)
    series = np.rint(cube[:, :, : len(S2_BANDS)]).astype(np.int16)
    return series, cube[:, :, -1] > 0.5, X[:, -2:], np.asarray(months, dtype=np.int64)


def month_table(n_months: int = 12, dim: int = 32) -> torch.Tensor:
    """Fixed month embedding ``[12, dim]``: row ``m`` is sin(2 pi m / 12) in its first half and
    cos(2 pi m / 12) in its second half (one frequency, repeated)."""
    a = 2 * math.pi * torch.arange(n_months, dtype=torch.float64) / n_months
    half = dim // 2
    return torch.cat([a.sin()[:, None].expand(-1, half), a.cos()[:, None].expand(-1, half)], dim=1).float()


def position_table(n_positions: int = MAX_TIMESTEPS, dim: int = 64, base: float = 1000.0) -> torch.Tensor:
    """Fixed sinusoid position embedding ``[n_positions, dim]`` (base 1000, sin at even and
    cos at odd dimensions)."""
    p = torch.arange(n_positions, dtype=torch.float64)[:, None]
    j = torch.arange(dim)
    angle = p / base ** (2 * (j // 2) / dim).double()
    return torch.where(j % 2 == 0, angle.sin(), angle.cos()).float()


class Attention(nn.Module):
    """Multi-head self-attention (``qkv`` 128 -> 384 with bias, 8 heads of 16, ``proj``)."""

    def __init__(self, dim: int, heads: int) -> None:
        super().__init__()
        self.heads = heads
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        """``x`` ``[B, L, D]``; ``keep`` bool ``[B, L]``: the keys taking part."""
        b, n, d = x.shape
        q, k, v = self.qkv(x).view(b, n, 3, self.heads, d // self.heads).permute(2, 0, 3, 1, 4)
        out = F.scaled_dot_product_attention(q, k, v, attn_mask=keep[:, None, None, :])
        return self.proj(out.transpose(1, 2).reshape(b, n, d))


class Mlp(nn.Module):
    """``fc1`` (D -> 4 D), exact GELU, ``fc2`` (4 D -> D)."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.fc2(F.gelu(self.fc1(x)))


class Block(nn.Module):
    """Pre-norm transformer block: ``x + attn(norm1(x))``, then ``x + mlp(norm2(x))``."""

    def __init__(self, dim: int, heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.norm1 = nn.LayerNorm(dim)
        self.attn = Attention(dim, heads)
        self.norm2 = nn.LayerNorm(dim)
        self.mlp = Mlp(dim, dim * mlp_ratio)

    def forward(self, x: torch.Tensor, keep: torch.Tensor) -> torch.Tensor:
        x = x + self.attn(self.norm1(x), keep)
        return x + self.mlp(self.norm2(x))


class PrestoEncoder(nn.Module):
    """The Presto encoder; parameter names are those of the published state dict without
    its ``encoder.`` prefix (:func:`load_presto`).

    ``forward(x, mask, latlons, month, dynamic_world=None)``:

    - ``x`` float32 ``[B, T, 17]`` normalised channels (:func:`presto_inputs`);
    - ``mask`` float ``[B, T, 17]`` (1 = missing) or None (all valid);
    - ``latlons`` float32 ``[B, 2]``: latitude, longitude in degrees;
    - ``month``: int, int64 ``[B]`` (month of the first timestep, 0 = January; timestep ``t``
      is month ``(month + t) mod 12``) or int64 ``[B, T]`` (month of every timestep);
    - ``dynamic_world`` int64 ``[B, T]`` (9 = missing) or None (all missing);

    returns float32 ``[B, 128]`` embeddings. The tokens of each sample are those it keeps
    (as in the original, where masked tokens are removed); a batch is padded to its longest
    sample and padding takes no part in attention or pooling, so a pixel's embedding does
    not depend on the rest of its batch (up to float rounding).
    """

    def __init__(self, dim: int = EMBEDDING_SIZE, depth: int = 2, heads: int = 8, mlp_ratio: int = 4) -> None:
        super().__init__()
        self.dim = dim
        self.eo_patch_embed = nn.ModuleDict({g: nn.Linear(len(ch), dim) for g, (_, ch) in GROUPS.items()})
        self.dw_embed = nn.Embedding(DW_MISSING + 1, dim)
        self.latlon_embed = nn.Linear(3, dim)
        self.channel_embed = nn.Embedding(DW_GROUP + 1, dim // 4)
        self.month_embed = nn.Embedding(12, dim // 4)
        self.month_embed.weight.data.copy_(month_table(12, dim // 4))
        self.month_embed.weight.requires_grad_(False)
        self.pos_embed = nn.Parameter(position_table(MAX_TIMESTEPS, dim // 2)[None], requires_grad=False)
        self.blocks = nn.ModuleList(Block(dim, heads, mlp_ratio) for _ in range(depth))
        self.norm = nn.LayerNorm(dim)

    def _embed(self, chan: int, months: torch.Tensor, t: int) -> torch.Tensor:
        """[month | channel | position] ``[B, T, D]`` for channel-embedding row ``chan``."""
        b = months.shape[0]
        q = self.dim // 4
        return torch.cat(
            [
                self.month_embed(months),
                self.channel_embed.weight[chan].expand(b, t, q),
                self.pos_embed[0, :t].expand(b, t, 2 * q),
            ],
            dim=-1,
        )

    def tokens(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        latlons: torch.Tensor,
        month: int | torch.Tensor,
        dynamic_world: torch.Tensor | None = None,
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """Every token ``[B, 9 T + 2, D]`` in the original order (lat/lon, the groups of
        :data:`GROUPS` by timestep with SRTM once, Dynamic World) and whether each is kept, bool
        ``[B, 9 T + 2]``."""
        b, t, c = x.shape
        if c != len(CHANNELS) or not 1 <= t <= MAX_TIMESTEPS:
            raise ValueError(f"x must be [B, T <= {MAX_TIMESTEPS}, {len(CHANNELS)}], got {tuple(x.shape)}")
        steps = torch.arange(t, device=x.device)
        if isinstance(month, int):
            months = ((month + steps) % 12).expand(b, t)
        else:
            month = month.to(x.device).long()
            months = month if month.ndim == 2 else (month[:, None] + steps) % 12
        masked = mask.to(x.device) > 0 if mask is not None else torch.zeros_like(x, dtype=torch.bool)
        lat, lon = torch.deg2rad(latlons[:, 0].double()), torch.deg2rad(latlons[:, 1].double())
        xyz = torch.stack([lat.cos() * lon.cos(), lat.cos() * lon.sin(), lat.sin()], dim=-1).to(x.dtype)
        toks = [self.latlon_embed(xyz)[:, None]]
        keep = [torch.ones(b, 1, dtype=torch.bool, device=x.device)]
        q = self.dim // 4
        for name, (chan, idx) in GROUPS.items():
            if name == "SRTM":  # static: one token from the first timestep, no month or position
                static = torch.cat(
                    [x.new_zeros(b, q), self.channel_embed.weight[chan].expand(b, q), x.new_zeros(b, 2 * q)],
                    -1,
                )
                toks.append((self.eo_patch_embed[name](x[:, 0, list(idx)]) + static)[:, None])
                keep.append(~masked[:, 0, list(idx)].any(-1)[:, None])
                continue
            toks.append(self.eo_patch_embed[name](x[:, :, list(idx)]) + self._embed(chan, months, t))
            keep.append(~masked[:, :, list(idx)].any(-1))
        dw = (
            dynamic_world.to(x.device).long()
            if dynamic_world is not None
            else torch.full((b, t), DW_MISSING, device=x.device)
        )
        toks.append(self.dw_embed(dw) + self._embed(DW_GROUP, months, t))
        keep.append(dw != DW_MISSING)
        return torch.cat(toks, dim=1), torch.cat(keep, dim=1)

    def forward(
        self,
        x: torch.Tensor,
        mask: torch.Tensor | None,
        latlons: torch.Tensor,
        month: int | torch.Tensor = 0,
        dynamic_world: torch.Tensor | None = None,
    ) -> torch.Tensor:
        tokens, keep = self.tokens(x, mask, latlons, month, dynamic_world)
        # the kept tokens of each sample first, in their order; then cut the common padding
        order = torch.argsort((~keep).to(torch.int8), dim=1, stable=True)
        length = int(keep.sum(1).max())
        order = order[:, :length]
        keep = torch.gather(keep, 1, order)
        h = torch.gather(tokens, 1, order[:, :, None].expand(-1, -1, self.dim))
        for block in self.blocks:
            h = block(h, keep)
        w = keep.to(h.dtype)[:, :, None]
        return self.norm((h * w).sum(1) / w.sum(1))


def sha256_of(path: str | os.PathLike) -> str:
    """Hex sha256 of a file, read by chunks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def check_weights(path: str | os.PathLike, sha256: str | None = WEIGHTS_SHA256) -> Path:
    """The Presto weights file, checked: it exists and has the expected sha256.

    Raises
    ------
    InputError
        the file is missing or its sha256 differs (``presto.weights`` / ``presto.sha256`` of the
        configuration).
    """
    path = Path(path)
    fix = (
        f"download default_model.pt (MIT licence) from {WEIGHTS_URL} and set presto.weights "
        "in the configuration to its path (see README, 'Presto')"
    )
    if not path.is_file():
        raise InputError(path, "Presto weights not found (configuration key presto.weights)", fix)
    if sha256:
        got = sha256_of(path)
        if got != sha256.lower():
            raise InputError(
                path,
                f"sha256 {got} differs from the expected {sha256.lower()} (presto.sha256)",
                f"use the published default_model.pt ({WEIGHTS_URL}), or set presto.sha256 to the "
                "sha256 of the weights you mean to use",
            )
    return path


def load_presto(path: str | os.PathLike, sha256: str | None = WEIGHTS_SHA256) -> PrestoEncoder:
    """The Presto encoder with the published weights, in evaluation mode.

    Parameters
    ----------
    path : ``default_model.pt``, a state dict of the whole Presto (encoder and decoder); the
        ``encoder.*`` entries are loaded.
    sha256 : expected sha256 of the file (:data:`WEIGHTS_SHA256`); None skips the check.

    Raises
    ------
    InputError
        missing file, sha256 mismatch, unreadable file or a state dict without the encoder's
        weights (names and shapes of FACTS.md section 3).
    """
    path = check_weights(path, sha256)
    state = load_torch_file(path, "download the weights again")
    encoder = PrestoEncoder()
    prefix = "encoder."
    weights = (
        {k[len(prefix) :]: v for k, v in state.items() if k.startswith(prefix)}
        if isinstance(state, dict)
        else {}
    )
    try:
        encoder.load_state_dict(weights, strict=True)
    except RuntimeError as exc:
        raise InputError(
            path,
            f"not the Presto encoder's state dict ({str(exc).splitlines()[0]} ...)",
            "use the published default_model.pt",
        ) from None
    return encoder.eval()


def presto_from_config(config: dict) -> PrestoEncoder:
    """The encoder of a validated configuration's ``presto`` section (:func:`load_presto` of
    ``presto.weights``, checked against ``presto.sha256``).

    Raises
    ------
    ConfigError
        no ``presto`` section.
    InputError
        as :func:`load_presto`.
    """
    section = config.get("presto")
    if not section:
        raise ConfigError(
            "presto.weights: a Presto architecture needs the published weights; add a `presto:` section "
            f"with `weights: <path of default_model.pt>` (download: {WEIGHTS_URL}, MIT licence)"
        )
    return load_presto(section["weights"], section.get("sha256", WEIGHTS_SHA256))


# --------------------------------------------------------------------------------------
# embeddings of a tile's monthly composites
# --------------------------------------------------------------------------------------


def pixel_latlon(transform: Affine, crs: Any, height: int, width: int) -> np.ndarray:
    """Latitude and longitude (degrees, WGS 84) of the centre of every pixel of a grid.

    Parameters
    ----------
    transform : the grid's affine geotransform (``rasterio``; for a window,
        ``rasterio.windows.transform(window, tile_transform)``).
    crs : its coordinate reference system (anything ``pyproj.CRS.from_user_input`` reads:
        ``rasterio.crs.CRS``, ``"EPSG:32631"``...).
    height, width : grid size in px.

    Returns
    -------
    float64 ``[2, H, W]``: latitude then longitude.
    """
    from pyproj import CRS, Transformer

    rows, cols = np.mgrid[0:height, 0:width] + 0.5
    t = transform
    x, y = t.a * cols + t.b * rows + t.c, t.d * cols + t.e * rows + t.f
    to_wgs84 = Transformer.from_crs(CRS.from_user_input(crs), CRS.from_epsg(4326), always_xy=True)
    lon, lat = to_wgs84.transform(np.asarray(x, dtype=np.float64), np.asarray(y, dtype=np.float64))
    return np.stack([lat, lon])


def month_indices(dates: Sequence[str | dt.date]) -> np.ndarray:
    """Month index (0 = January) of each date (``YYYYMMDD`` strings or dates)."""
    out = []
    for d in dates:
        out.append((d.month if isinstance(d, dt.date) else int(str(d)[4:6])) - 1)
    return np.asarray(out, dtype=np.int64)


def embed_composites(
    composites: np.ndarray,
    clear: np.ndarray,
    bands: Sequence[str],
    dates: Sequence[str | dt.date],
    transform: Affine,
    crs: Any,
    encoder: PrestoEncoder,
    *,
    batch_size: int = 256,
    nodata: int = GAPFILLED_NODATA,
    source: str | os.PathLike = "gapfilled.tif",
) -> np.ndarray:
    """Presto embeddings of every pixel of a block of monthly composites.

    Parameters
    ----------
    composites : int16 ``[T, B, H, W]`` reflectance x10000 (``gapfilled.tif`` of the
        ``monthly_median`` temporal step, read as dates x bands; ``T`` <= 24, 12 in
        pre-training); must hold the bands of :data:`S2_BANDS`, in any order.
    clear : bool ``[T, H, W]``, True where the month had at least one clear observation at the
        pixel (:func:`cropchain.series.composite.clear_months`); the other months' tokens are masked
        (the composite filled them from the neighbouring months: Presto does not see them).
    bands : the ``B`` band names of ``composites`` (``"B02"`` ...).
    dates : the ``T`` dates of the composites (``YYYYMMDD`` or dates): their months.
    transform, crs : geotransform and CRS of the block (latitude/longitude of each pixel).
    encoder : :func:`load_presto`'s encoder (its device is used).
    batch_size : pixels per forward pass (256: the fastest on the CPU measured, 1.3x 4096's speed).
    nodata : value of pixels without any clear observation (every band and month).
    source : file named in errors.

    Returns
    -------
    float32 ``[128, H, W]`` embeddings; NaN at pixels that are nodata or have no clear month.
    Each pixel's embedding depends on its own series and position only (not on the batch,
    up to float rounding, ~1e-6).

    Raises
    ------
    InputError
        a band of :data:`S2_BANDS` missing, or inconsistent shapes.
    """
    composites = np.asarray(composites)
    t, b, h, w = composites.shape
    missing = [name for name in S2_BANDS if name not in bands]
    if missing or len(bands) != b:
        raise InputError(
            source,
            f"Presto reads the bands {', '.join(S2_BANDS)}; bands {list(bands)} ({b} in the array), missing "
            f"{missing}",
            "ingest every 10 m and 20 m band (tiles.<tile>.bands)",
        )
    clear = np.asarray(clear, dtype=bool)
    if clear.shape != (t, h, w) or len(dates) != t or not 1 <= t <= MAX_TIMESTEPS:
        raise InputError(
            source,
            f"composites [T={t}, B, {h}, {w}], clear mask {clear.shape} and {len(dates)} dates do not match "
            f"(T <= {MAX_TIMESTEPS})",
            "rerun the monthly_median temporal step",
        )
    order = [list(bands).index(name) for name in S2_BANDS]
    series = composites[:, order].reshape(t, len(S2_BANDS), h * w).transpose(2, 0, 1)  # [N, T, 10]
    latlon = pixel_latlon(transform, crs, h, w).reshape(2, -1).T  # [N, 2]
    out = embed_series(
        series, clear.reshape(t, h * w).T, latlon, dates, encoder, batch_size=batch_size, nodata=nodata
    )
    return np.ascontiguousarray(out.T.reshape(EMBEDDING_SIZE, h, w))


def embed_series(
    series: np.ndarray,
    clear: np.ndarray,
    latlon: np.ndarray,
    dates: Sequence[str | dt.date],
    encoder: PrestoEncoder,
    *,
    batch_size: int = 256,
    nodata: int = GAPFILLED_NODATA,
) -> np.ndarray:
    """Presto embeddings of pixel series (the per-pixel core of :func:`embed_composites`).

    Parameters
    ----------
    series : int16 ``[N, T, 10]`` reflectance x10000, bands in the order of :data:`S2_BANDS`.
    clear : bool ``[N, T]``, True where the timestep holds a clear observation (others masked).
    latlon : float ``[N, 2]`` latitude, longitude in degrees.
    dates : the ``T`` dates of the timesteps (``YYYYMMDD`` or dates): their months.
    encoder : :func:`load_presto`'s encoder; the batches go to its device (CPU or GPU).
    batch_size : pixels per forward pass.
    nodata : a timestep where any band equals it is masked.

    Returns
    -------
    float32 ``[N, 128]``; NaN for pixels without any clear timestep.
    """
    n = series.shape[0]
    ok = clear_timesteps(series, clear, nodata)  # [N, T]
    todo = np.flatnonzero(ok.any(axis=1))
    latlon = np.asarray(latlon, dtype=np.float32)
    months = month_indices(dates)
    out = np.full((n, EMBEDDING_SIZE), np.nan, dtype=np.float32)
    encoder.eval()
    with torch.inference_mode():
        for start in range(0, todo.size, int(batch_size)):
            idx = todo[start : start + int(batch_size)]
            out[idx] = encode(encoder, series[idx], ok[idx], latlon[idx], months).float().cpu().numpy()
    return out


def clear_timesteps(series: np.ndarray, clear: np.ndarray, nodata: int = GAPFILLED_NODATA) -> np.ndarray:
    """bool ``[N, T]``: the timesteps the encoder sees, clear and without a ``nodata`` band
    (``series`` int16 ``[N, T, 10]``, ``clear`` bool ``[N, T]``)."""
    return np.asarray(clear, dtype=bool) & ~(np.asarray(series) == nodata).any(axis=2)


def encode(
    encoder: PrestoEncoder, series: np.ndarray, clear: np.ndarray, latlon: np.ndarray, months: np.ndarray
) -> torch.Tensor:
    """One forward pass of the encoder over pixels, on its device (with gradients unless the
    caller disables them: :func:`embed_series` embeds, ``presto_finetune`` trains).

    Parameters
    ----------
    series : int16 ``[n, T, 10]`` reflectance x10000 (:data:`S2_BANDS`); clear : bool ``[n, T]``
    timesteps seen; latlon : float ``[n, 2]`` degrees; months : int64 ``[T]`` month indices.

    Returns
    -------
    float32 ``[n, 128]`` embeddings (a tensor on the encoder's device).
    """
    device = next(encoder.parameters()).device
    x, mask, dw = presto_inputs(series, clear)
    return encoder(
        torch.from_numpy(x).to(device),
        torch.from_numpy(mask).to(device),
        torch.from_numpy(np.ascontiguousarray(latlon, dtype=np.float32)).to(device),
        torch.from_numpy(np.asarray(months, dtype=np.int64)).expand(len(series), -1).to(device),
        torch.from_numpy(dw).to(device),
    )
