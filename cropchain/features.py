"""Spectral features of a gap-filled time series, in iota2's layout.

``features.tif`` holds, as float32 reflectance 0-1 (iota2's default feature set):

1. the gap-filled bands, date-major (``20180123_B02, 20180123_B03, ..., 20180202_B02, ...``);
2. NDVI for every date (``20180123_NDVI, ...``) = (B08 - B04) / (B08 + B04), Rouse et al. 1974;
3. NDWI for every date = (B08 - B11) / (B08 + B11), Gao 1996 (iota2's NDWI, NIR / SWIR);
4. brightness for every date = sqrt(sum of the squared reflectances of the date's bands).

A ratio whose denominator is 0 is 0. Where the gap-filled input is nodata the features are
nodata (-9999.0).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from tqdm import tqdm

from cropchain.errors import ConfigError, InputError
from cropchain.io.atomic import atomic_output
from cropchain.io.raster import block_windows, geotiff_profile, open_raster, read_dates

log = logging.getLogger(__name__)

#: nodata of ``features.tif``.
FEATURES_NODATA = -9999.0
#: reflectance scale of ``gapfilled.tif`` (int16 x10000).
REFLECTANCE_SCALE = 10000.0
#: nodata of ``gapfilled.tif``, used where the file declares none.
GAPFILLED_NODATA = -32768

#: Surface reflectance bands (Sentinel-2 names); brightness is computed over those present.
REFLECTANCE_BANDS = ("B01", "B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B09", "B11", "B12")

#: Each known index and the bands it needs (``None``: every reflectance band of the date).
INDEX_BANDS: dict[str, tuple[str, ...] | None] = {
    "NDVI": ("B08", "B04"),
    "NDWI": ("B08", "B11"),
    "brightness": None,
}
DEFAULT_INDICES = ("NDVI", "NDWI", "brightness")


class UnknownIndexError(ConfigError, ValueError):
    """A spectral index name cropchain does not know (a configuration error and a ValueError)."""


def _resolve_indices(bands: Sequence[str], indices: Sequence[str], *, warn: bool = True) -> list[str]:
    """The requested indices that ``bands`` can compute, in request order.

    Raises :class:`UnknownIndexError` for an unknown name; logs one warning per index skipped
    because its bands are absent.
    """
    unknown = [i for i in indices if i not in INDEX_BANDS]
    if unknown:
        raise UnknownIndexError(f"unknown spectral index {', '.join(map(repr, unknown))}: "
                                f"known indices are {', '.join(INDEX_BANDS)}")
    if len(set(indices)) != len(indices):
        raise UnknownIndexError(f"spectral indices {list(indices)} list one index twice: list each once")
    usable = []
    for name in indices:
        needed = INDEX_BANDS[name] or ()
        missing = [b for b in needed if b not in bands]
        if INDEX_BANDS[name] is None and not any(b in REFLECTANCE_BANDS for b in bands):
            missing = ["(any reflectance band)"]
        if missing or not bands:
            if warn:
                log.warning("skipping index %s: band %s absent from the gap-filled bands %s", name,
                            ", ".join(missing) if missing else "(any)", ", ".join(bands))
            continue
        usable.append(name)
    return usable


def feature_names(dates: list[str], bands: list[str], indices: Sequence[str] = DEFAULT_INDICES) -> list[str]:
    """Names of the features in iota2's order.

    Parameters
    ----------
    dates : output dates ``YYYYMMDD`` of the gap filling (``dates.txt``).
    bands : band names of one date, in the order of ``gapfilled.tif`` (e.g. ``["B02", "B03"]``).
    indices : spectral indices among ``NDVI``, ``NDWI``, ``brightness``; an index whose bands
        are absent from ``bands`` is skipped with a log warning.

    Returns
    -------
    ``["<date>_<band>" for each date for each band] + ["<date>_<index>" for each index for
    each date]``.

    Raises
    ------
    UnknownIndexError (a ConfigError and ValueError)
        An index name that is not known.
    """
    usable = _resolve_indices(bands, indices)
    return [f"{d}_{b}" for d in dates for b in bands] + [f"{d}_{i}" for i in usable for d in dates]


def _ratio(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """(a - b) / (a + b) with 0 where the denominator is 0 (float32)."""
    num = a - b
    den = a + b
    out = np.zeros_like(num)
    np.divide(num, den, out=out, where=den != 0)
    return out


def _date_features(raw: np.ndarray, nodata: float | None, bands: list[str], usable: list[str]) -> np.ndarray:
    """Features of one date: raw int16 [B, ...] -> float32 [B + len(usable), ...]."""
    refl = raw.astype(np.float32)
    refl /= REFLECTANCE_SCALE
    missing = np.isnan(refl) if nodata is None or np.isnan(nodata) else raw == nodata
    out = np.empty((len(bands) + len(usable),) + raw.shape[1:], dtype=np.float32)
    out[: len(bands)] = np.where(missing, np.float32(FEATURES_NODATA), refl)
    pos = {b: i for i, b in enumerate(bands)}
    for k, name in enumerate(usable, start=len(bands)):
        needed = INDEX_BANDS[name]
        if needed is None:
            sel = [pos[b] for b in bands if b in REFLECTANCE_BANDS]
            value = np.sqrt(np.einsum("b...,b...->...", refl[sel], refl[sel]))
            date_missing = missing[sel].any(axis=0)
        else:
            a, b = pos[needed[0]], pos[needed[1]]
            value = _ratio(refl[a], refl[b])
            date_missing = missing[a] | missing[b]
        value[date_missing] = FEATURES_NODATA
        out[k] = value
    return out


def compute_features(
    gapfilled: str | os.PathLike,
    dates_file: str | os.PathLike,
    out_features: str | os.PathLike,
    *,
    bands: list[str],
    indices: Sequence[str] = DEFAULT_INDICES,
    block: int = 512,
) -> list[str]:
    """Write ``features.tif`` (gap-filled bands + spectral indices per date), streaming by windows.

    Parameters
    ----------
    gapfilled : ``gapfilled.tif``, int16 reflectance x10000, T*B bands date-major, nodata -32768.
    dates_file : ``dates.txt`` of the gap filling (T lines ``YYYYMMDD``).
    out_features : ``features.tif`` written: float32, reflectance 0-1 and indices, bands named by
        :func:`feature_names`, nodata -9999.0 where the input is nodata.
    bands : band names of one date in the order of ``gapfilled.tif`` (checked against its band
        descriptions where it has them).
    indices : spectral indices among ``NDVI``, ``NDWI`` (NIR/SWIR, Gao 1996), ``brightness``;
        one whose bands are absent is skipped with a warning.
    block : window size in pixels; memory is bounded by one window.

    Returns
    -------
    The feature names, in band order of ``features.tif``.

    Raises
    ------
    InputError
        Raster or dates file missing / unreadable, band count not T*B, descriptions not
        matching ``dates`` x ``bands``.
    UnknownIndexError (a ConfigError and ValueError)
        An unknown index name.
    """
    gapfilled = Path(gapfilled)
    bands = list(bands)
    if not bands or len(set(bands)) != len(bands):
        raise ConfigError(f"feature bands {bands} must be a non-empty list of distinct band names")
    usable = _resolve_indices(bands, indices)
    dates = read_dates(dates_file)
    if not dates:
        raise InputError(dates_file, "dates file is empty", "rerun the gap filling")
    n_dates, n_bands = len(dates), len(bands)
    with open_raster(gapfilled, "gap-filled time series") as src:
        if src.count != n_dates * n_bands:
            raise InputError(gapfilled, f"{src.count} bands, expected {n_dates} dates x {n_bands} bands "
                             f"({', '.join(bands)}) = {n_dates * n_bands}",
                             f"give the bands of one date in order and the dates file {dates_file} of this stack")
        expected = [f"{d}_{b}" for d in dates for b in bands]
        if any(src.descriptions):
            for i, (got, want) in enumerate(zip(src.descriptions, expected), start=1):
                if got != want:
                    raise InputError(gapfilled, f"band {i} is described {got!r}, expected {want!r}",
                                     f"list the bands of one date in their order in the file, with {dates_file}")
        nodata = src.nodata if src.nodata is not None else GAPFILLED_NODATA
        names = expected + [f"{d}_{i}" for i in usable for d in dates]
        profile = geotiff_profile(src.profile, count=len(names), dtype="float32", nodata=FEATURES_NODATA)
        windows = list(block_windows(src.height, src.width, block))
        log.info("features of %s: %d dates x %d bands + %s -> %d bands", gapfilled, n_dates, n_bands,
                 ", ".join(usable) or "no index", len(names))
        with atomic_output(out_features) as tmp, rasterio.open(tmp, "w", **profile) as dst:
            for i, name in enumerate(names, start=1):
                dst.set_band_description(i, name)
            for win in tqdm(windows, desc="features", unit="window", disable=None):
                for t in range(n_dates):  # one date at a time: memory of B + len(usable) bands
                    band_rows = list(range(t * n_bands + 1, (t + 1) * n_bands + 1))
                    raw = src.read(band_rows, window=win)
                    rows = band_rows + [n_dates * n_bands + k * n_dates + t + 1 for k in range(len(usable))]
                    dst.write(_date_features(raw, nodata, bands, usable), indexes=rows, window=win)
    log.info("wrote %s (%d bands)", out_features, len(names))
    return names
