"""Temporal gap filling of image time series onto a regular date grid.

Follows Orfeo ToolBox's ``ImageTimeSeriesGapFilling`` (remote module OTBTemporalGapFilling,
J. Inglada, CESBIO; used by iota2, Inglada et al. 2017, *Remote Sensing* 9(1):95):

* a date is valid where the mask is 0 (OTB's convention: 1 = cloud / shadow / nodata);
* **linear** mode: linear interpolation in time between the nearest valid dates before and
  after each output date; before the first valid date the first valid value is copied, after
  the last valid date the last valid value is copied;
* **spline** mode: the same as linear below 3 valid dates, a natural cubic spline for 3 or 4
  valid dates (GSL ``cspline``), an Akima spline for 5 or more (GSL ``akima``); outside the
  range of the valid dates the first / last valid value is copied, as in linear mode.

Every band of a date shares the date's mask (OTB's ``-comp`` components per date). Where a
pixel has no valid date at all, the series is NaN (:func:`gapfill_series`) or nodata
(:func:`gapfill_tile`); OTB writes 0 there, which cannot be told apart from a reflectance.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import importlib
import logging
import os
import shutil
import subprocess
import tempfile
import threading
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import rasterio
from scipy.interpolate import Akima1DInterpolator, CubicSpline
from tqdm import tqdm

from cropchain.errors import ConfigError, CropchainError, InputError
from cropchain.io.atomic import atomic_output, write_text_atomic
from cropchain.io.raster import (
    block_windows,
    geotiff_profile,
    map_windows,
    open_raster,
    read_dates,
)

log = logging.getLogger(__name__)

#: nodata of ``gapfilled.tif`` (int16 reflectance x10000).
GAPFILLED_NODATA = -32768
#: reflectance scale of ``raw.tif`` and ``gapfilled.tif``.
REFLECTANCE_SCALE = 10000
MODES = ("linear", "spline")
BACKENDS = ("numpy", "otb")
OTB_APP = "ImageTimeSeriesGapFilling"
OTB_CLI = "otbcli_ImageTimeSeriesGapFilling"


# --------------------------------------------------------------------------- date grid
def parse_date(value: dt.date | str, what: str) -> dt.date:
    """A date from a ``datetime.date`` or a ``YYYY-MM-DD`` / ``YYYYMMDD`` string; ``what`` names it in errors."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise ConfigError(f"gap filling {what} date {value!r} is not a date: write it as YYYY-MM-DD")


def output_date_grid(start: dt.date, end: dt.date, step_days: int) -> list[dt.date]:
    """Regular output date grid of the gap filling: ``start, start + step, ... <= end``.

    Parameters
    ----------
    start, end : first and last admissible date (``end`` is included when it falls on the grid).
    step_days : grid step in days (iota2's temporal resolution), >= 1.

    Returns
    -------
    list of :class:`datetime.date`, never empty.

    Raises
    ------
    ConfigError
        ``step_days < 1`` or ``end`` before ``start``.
    """
    if int(step_days) != step_days or step_days < 1:
        raise ConfigError(f"gap filling step of {step_days!r} days: it must be a whole number of days >= 1")
    if end < start:
        raise ConfigError(f"gap filling end date {end} is before the start date {start}: swap them")
    n = (end - start).days // int(step_days) + 1
    return [start + dt.timedelta(days=i * int(step_days)) for i in range(n)]


# --------------------------------------------------------------------------- per-pixel series
def _check_series(values: np.ndarray, valid: np.ndarray, in_days: np.ndarray, out_days: np.ndarray) -> None:
    if values.ndim not in (2, 3):
        raise ValueError(f"values must be [T_in, N] or [T_in, B, N], got shape {values.shape}")
    if valid.shape != (values.shape[0], values.shape[-1]):
        raise ValueError(
            f"valid must be [T_in, N] = {(values.shape[0], values.shape[-1])}, got {valid.shape}"
        )
    if in_days.shape != (values.shape[0],):
        raise ValueError(f"in_days must hold one day per input date ({values.shape[0]}), got {in_days.shape}")
    if out_days.ndim != 1:
        raise ValueError(f"out_days must be 1-D, got shape {out_days.shape}")
    if in_days.size > 1 and np.any(np.diff(in_days) <= 0):
        raise ValueError("in_days must be strictly increasing (one acquisition per date)")


def _linear_plan(
    valid: np.ndarray, in_days: np.ndarray, out_days: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Bracketing valid dates and weights of every (output date, pixel).

    Returns ``prev, next`` (intp [T_out, N], input date indices, equal where one side is
    missing or the output date is a valid input date), ``weight`` (float32 [T_out, N], the
    share of ``next``) and ``empty`` (bool [N], pixels without any valid date).
    """
    t_in, n = valid.shape
    idx_dtype = np.int16 if t_in < 2**15 - 1 else np.int32
    rows = np.arange(t_in, dtype=idx_dtype)[:, None]
    # prev_pad[k] = last valid index among the first k input dates (-1: none)
    prev_pad = np.empty((t_in + 1, n), dtype=idx_dtype)
    prev_pad[0] = -1
    np.maximum.accumulate(np.where(valid, rows, idx_dtype(-1)), axis=0, out=prev_pad[1:])
    # next_pad[k] = first valid index >= k (t_in: none)
    next_pad = np.empty((t_in + 1, n), dtype=idx_dtype)
    next_pad[t_in] = t_in
    nxt = np.where(valid, rows, idx_dtype(t_in))[::-1]
    np.minimum.accumulate(nxt, axis=0, out=nxt)
    next_pad[:t_in] = nxt[::-1]
    del nxt

    k_right = np.searchsorted(in_days, out_days, side="right")  # number of input dates <= out date
    k_left = np.searchsorted(in_days, out_days, side="left")  # first input date >= out date
    prev = prev_pad[k_right].astype(np.intp)
    nxt_o = next_pad[k_left].astype(np.intp)
    del prev_pad, next_pad
    empty = ~valid.any(axis=0)
    no_prev = prev < 0
    no_next = nxt_o >= t_in
    np.copyto(prev, nxt_o, where=no_prev)  # before the first valid date: copy the first one
    np.copyto(nxt_o, prev, where=no_next)  # after the last valid date: copy the last one
    prev[:, empty] = 0
    nxt_o[:, empty] = 0

    days = np.asarray(in_days, dtype=np.float64)
    origin = days[0] if days.size else 0.0
    days32 = (days - origin).astype(np.float32)
    od32 = (np.asarray(out_days, dtype=np.float64) - origin).astype(np.float32)
    d_prev = days32[prev]
    span = days32[nxt_o]
    span -= d_prev
    weight = od32[:, None] - d_prev
    np.divide(weight, span, out=weight, where=span > 0)
    weight[span <= 0] = 0.0
    return prev, nxt_o, weight, empty


def _apply_linear(
    values: np.ndarray,
    prev: np.ndarray,
    nxt: np.ndarray,
    weight: np.ndarray,
    empty: np.ndarray,
    out: np.ndarray,
) -> None:
    """Fill ``out`` [T_out, B, N] from ``values`` [T_in, B, N] with a plan of :func:`_linear_plan`.

    ``out`` float32: NaN for pixels without a valid date. ``out`` int16 (the chain's storage):
    rounded, clipped off the nodata value, :data:`GAPFILLED_NODATA` for pixels without a valid
    date; the same numbers as :func:`to_int16` of the float32 result, in fewer passes over memory
    and no float32 copy of the whole block. ``prev`` and ``nxt`` are overwritten (turned into
    flat indices).
    """
    n = values.shape[-1]
    cols = np.arange(n, dtype=np.intp)
    flat_prev = np.multiply(prev, n, out=prev)  # in place: indices into one band's [T_in, N] series
    flat_prev += cols
    flat_next = np.multiply(nxt, n, out=nxt)
    flat_next += cols
    to_int = out.dtype == np.int16
    buf = np.empty(weight.shape, dtype=np.float32)
    for b in range(values.shape[1]):
        band = np.ascontiguousarray(values[:, b, :]).ravel()
        v0 = band.take(flat_prev)
        v1 = band.take(flat_next)
        np.subtract(v1, v0, out=buf, dtype=np.float32)
        buf *= weight
        np.add(buf, v0, out=buf, dtype=np.float32)
        if to_int:
            np.rint(buf, out=buf)
            np.clip(buf, GAPFILLED_NODATA + 1, np.iinfo(np.int16).max, out=buf)
            out[:, b, :] = buf
            out[:, b, empty] = GAPFILLED_NODATA
        else:
            buf[:, empty] = np.nan
            out[:, b, :] = buf


def _pattern_groups(valid: np.ndarray, pixels: np.ndarray) -> list[np.ndarray]:
    """Split ``pixels`` (indices into N) into groups sharing one validity pattern over the dates."""
    if pixels.size == 0:
        return []
    packed = np.packbits(valid[:, pixels], axis=0, bitorder="little")  # [ceil(T/8), M] uint8
    if packed.shape[0] <= 8:
        padded = np.zeros((8, pixels.size), dtype=np.uint8)
        padded[: packed.shape[0]] = packed
        keys = np.ascontiguousarray(padded.T).view(np.uint64).ravel()
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
    else:
        _, inverse, counts = np.unique(packed, axis=1, return_inverse=True, return_counts=True)
    order = np.argsort(inverse.ravel(), kind="stable")
    return np.split(pixels[order], np.cumsum(counts)[:-1])


def _apply_spline(
    values: np.ndarray, valid: np.ndarray, in_days: np.ndarray, out_days: np.ndarray, out: np.ndarray
) -> None:
    """Overwrite ``out`` inside the valid range of pixels with >= 3 valid dates by splines."""
    n_valid = valid.sum(axis=0)
    x_all = np.asarray(in_days, dtype=np.float64)
    od = np.asarray(out_days, dtype=np.float64)
    for group in _pattern_groups(valid, np.flatnonzero(n_valid >= 3)):
        dates_idx = np.flatnonzero(valid[:, group[0]])
        x = x_all[dates_idx]
        # strictly inside the valid range and not on a valid date (kept exact from the plan)
        inside = np.flatnonzero((od > x[0]) & (od < x[-1]) & ~np.isin(od, x))
        if inside.size == 0:
            continue
        bands = np.arange(values.shape[1])
        y = values[np.ix_(dates_idx, bands, group)].astype(np.float64)  # [k, B, M]
        if dates_idx.size <= 4:
            spline = CubicSpline(x, y, axis=0, bc_type="natural")
        else:
            spline = Akima1DInterpolator(x, y, axis=0)
        filled = spline(od[inside]).astype(np.float32)  # [len(inside), B, M]
        out[np.ix_(inside, bands, group)] = filled


def gapfill_series(
    values: np.ndarray,
    valid: np.ndarray,
    in_days: Sequence[float] | np.ndarray,
    out_days: Sequence[float] | np.ndarray,
    mode: str = "linear",
    out_dtype: str = "float32",
) -> np.ndarray:
    """Gap-fill pixel time series onto output dates (OTB ``ImageTimeSeriesGapFilling``).

    Parameters
    ----------
    values : array [T_in, N] or [T_in, B, N], any numeric dtype (e.g. int16 reflectance
        x10000); values at invalid dates are ignored.
    valid : bool [T_in, N], True where the date is clear (OTB mask == 0); with a band axis in
        ``values`` every band of a date shares the date's validity.
    in_days : [T_in] acquisition days (e.g. days since an origin), strictly increasing.
    out_days : [T_out] output days on the same axis, any order, may lie outside ``in_days``.
    mode : ``"linear"`` or ``"spline"`` (linear below 3 valid dates, natural cubic spline for
        3-4, Akima for 5 or more), see the module docstring.
    out_dtype : ``"float32"`` (default) or ``"int16"``: the chain's storage, equal to
        :func:`to_int16` of the float32 result (rounded; nodata -32768 for pixels without any
        valid date), computed without a float32 copy of the block.

    Returns
    -------
    float32 array [T_out, N] (or [T_out, B, N]) in the unit of ``values``; NaN for pixels
    without any valid date (int16 and nodata with ``out_dtype="int16"``).

    Raises
    ------
    ValueError
        Unknown mode, inconsistent shapes, or input days not strictly increasing.
    """
    if mode not in MODES:
        raise ValueError(f"unknown gap filling mode {mode!r}: choose one of {', '.join(MODES)}")
    values = np.asarray(values)
    valid = np.asarray(valid, dtype=bool)
    in_days = np.asarray(in_days, dtype=np.float64)
    out_days = np.asarray(out_days, dtype=np.float64)
    _check_series(values, valid, in_days, out_days)
    if out_dtype not in ("float32", "int16"):
        raise ValueError(f"out_dtype must be float32 or int16, got {out_dtype!r}")
    squeeze = values.ndim == 2
    v3 = values[:, None, :] if squeeze else values
    fast_int16 = out_dtype == "int16" and mode == "linear"
    out = np.empty((out_days.size, v3.shape[1], v3.shape[2]), dtype=np.int16 if fast_int16 else np.float32)
    if v3.shape[2] and out_days.size:
        if in_days.size == 0:
            out.fill(GAPFILLED_NODATA if fast_int16 else np.nan)
        else:
            _apply_linear(v3, *_linear_plan(valid, in_days, out_days), out=out)
            if mode == "spline":
                _apply_spline(v3, valid, in_days, out_days, out)
    if out_dtype == "int16" and not fast_int16:
        out = to_int16(out)
    return out[:, 0, :] if squeeze else out


# --------------------------------------------------------------------------- tiles
def _days(dates: Sequence[dt.date], origin: dt.date) -> np.ndarray:
    return np.array([(d - origin).days for d in dates], dtype=np.float64)


def _read_input_dates(path: str | os.PathLike) -> list[dt.date]:
    try:
        texts = read_dates(path)
    except UnicodeDecodeError:
        raise InputError(
            path, "dates file is not a text file", "write one date per line as YYYYMMDD"
        ) from None
    except OSError as exc:
        raise InputError(
            path, f"dates file cannot be read ({exc.strerror})", "check the file's permissions"
        ) from None
    if not texts:
        raise InputError(path, "dates file is empty", "write one acquisition date per line as YYYYMMDD")
    try:
        dates = [dt.datetime.strptime(t, "%Y%m%d").date() for t in texts]
    except ValueError as exc:
        raise InputError(path, f"invalid date ({exc})", "write real calendar dates as YYYYMMDD") from None
    for a, b in zip(dates, dates[1:]):
        if b <= a:
            raise InputError(
                path,
                f"dates are not strictly increasing ({a:%Y%m%d} then {b:%Y%m%d})",
                "sort the dates and stack one acquisition per date (rerun ingest)",
            )
    return dates


def _band_names(
    raw_path: Path, descriptions: Sequence[str | None], dates: Sequence[dt.date], n_bands: int
) -> list[str]:
    """Band names of one date from ``raw.tif``'s descriptions ``YYYYMMDD_Bxx`` (checked against the dates)."""
    if not any(descriptions):
        names = [f"B{i + 1}" for i in range(n_bands)]
        log.warning(
            "%s has no band descriptions; naming its %d bands per date %s",
            raw_path,
            n_bands,
            ", ".join(names),
        )
        return names
    names: list[str] = []
    for i, desc in enumerate(descriptions):
        t, b = divmod(i, n_bands)
        want = f"{dates[t]:%Y%m%d}_"
        if not desc or not desc.startswith(want) or len(desc) == len(want):
            raise InputError(
                raw_path,
                f"band {i + 1} is described {desc!r}, expected '{want}<band>' "
                f"(date-major order, {n_bands} bands per date, dates from the dates file)",
                "rerun ingest so that raw.tif, raw_mask.tif and raw_dates.txt match",
            )
        name = desc[len(want) :]
        if t == 0:
            names.append(name)
        elif name != names[b]:
            raise InputError(
                raw_path,
                f"band {i + 1} is {name!r} but band {b + 1} of the first date is {names[b]!r}",
                "every date must hold the same bands in the same order; rerun ingest",
            )
    return names


def check_inputs(raw: Path, mask: Path, raw_dates: Path) -> tuple[list[dt.date], list[str], dict]:
    """Check the ingest contract of a tile; return its dates, band names and raw profile.

    Raises :class:`InputError` naming the file for band counts that do not fit the dates,
    a mask with another number of dates, or rasters on different grids.
    """
    dates = _read_input_dates(raw_dates)
    with open_raster(raw, "raw time series") as src, open_raster(mask, "raw mask") as msk:
        n_dates = len(dates)
        if src.count % n_dates:
            raise InputError(
                raw,
                f"{src.count} bands is not a multiple of the {n_dates} dates of {raw_dates}",
                "use the dates file written with this stack (rerun ingest)",
            )
        if msk.count != n_dates:
            raise InputError(
                mask,
                f"{msk.count} mask bands for {n_dates} dates in {raw_dates}",
                "the mask needs one band per date (rerun ingest)",
            )
        if (
            (src.width, src.height) != (msk.width, msk.height)
            or src.crs != msk.crs
            or not src.transform.almost_equals(msk.transform)
        ):
            raise InputError(
                mask,
                f"grid {msk.width}x{msk.height} {msk.crs} {tuple(msk.transform)[:6]} differs from "
                f"{raw}'s {src.width}x{src.height} {src.crs} {tuple(src.transform)[:6]}",
                "the mask and the stack must share one grid (rerun ingest)",
            )
        n_bands = src.count // n_dates
        names = _band_names(raw, src.descriptions, dates, n_bands)
        profile = src.profile
    return dates, names, profile


#: defaults of the coverage checks (config keys gapfill.max_gap_days, gapfill.max_gap_share,
#: gapfill.max_unclear_share).
MAX_GAP_DAYS = 60
MAX_GAP_SHARE = 0.2
MAX_UNCLEAR_SHARE = 0.5


def _tile_name(raw: Path) -> str:
    """The tile of ``results/tiles/{tile}/raw.tif`` (the parent folder's name)."""
    return raw.parent.name


def check_coverage(
    raw: str | os.PathLike,
    mask: str | os.PathLike,
    dates: Sequence[dt.date],
    grid: Sequence[dt.date],
    *,
    max_gap_days: int = MAX_GAP_DAYS,
    max_gap_share: float = MAX_GAP_SHARE,
    max_unclear_share: float = MAX_UNCLEAR_SHARE,
    block: int = 512,
    bands: Sequence[int] | None = None,
) -> np.ndarray:
    """Check that the output date grid is backed by clear acquisitions, before any output is written.

    Gap filling copies the first / last clear value beyond the acquisitions and interpolates
    across any gap, so a grid of another year, or a tile with no clear observation, would give
    a map that looks fine and is wrong. This pass reads only the mask, window by window.

    Parameters
    ----------
    raw : the tile's ``raw.tif`` (its folder names the tile; the first band of each date tells
        pixels never observed, nodata on every date, from cloudy ones).
    mask : ``raw_mask.tif``, uint8, T_in bands, 0 = clear.
    dates : [T_in] acquisition dates, strictly increasing.
    grid : [T_out] output dates.
    max_gap_days : a grid date is *far* from a pixel's data when no clear acquisition of that
        pixel lies within this many days of it (config ``gapfill.max_gap_days``).
    max_gap_share : WARNING for every grid date far from the data of more than this share of
        the pixels that have a clear date (config ``gapfill.max_gap_share``).
    max_unclear_share : stop when more than this share of the observed pixels has no clear
        date at all (config ``gapfill.max_unclear_share``); pixels that are nodata in ``raw`` on
        every date (outside the swath) are not counted.
    block : window size in pixels.
    bands : 0-based mask bands of ``dates`` when only some of the mask's dates are used
        (None: all, ``len(dates)`` bands).

    Returns
    -------
    numpy.ndarray
        [T_out] float64, share of the pixels with a clear date for which each grid date is far.

    Raises
    ------
    ConfigError
        more than half of the grid dates lie more than ``max_gap_days`` outside the span of
        the acquisitions (``dates.start`` / ``dates.end`` named, with the products' span).
    InputError
        more than ``max_unclear_share`` of the pixels have no clear date at all (the tile,
        the mask file and the dates named).

    Warns (log)
    -----------
    a single date with any clear pixel in the whole series, or most clear pixels with a single
    clear date (gap filling is then a constant in time); grid dates far from the data.
    """
    raw, mask = Path(raw), Path(mask)
    tile = _tile_name(raw)
    in_days = _days(dates, dates[0])
    out_days = _days(grid, dates[0])
    outside = (out_days < in_days[0] - max_gap_days) | (out_days > in_days[-1] + max_gap_days)
    if outside.mean() > 0.5:
        raise ConfigError(
            f"dates.start / dates.end: {int(outside.sum())} of the {len(grid)} output dates ({grid[0]} to {grid[-1]}) "
            f"lie more than {max_gap_days} days outside the acquisitions of tile {tile} ({dates[0]} to {dates[-1]}, "
            f"{len(dates)} dates, {raw}): set dates.start / dates.end within the products' span, or give products "
            f"of the period mapped"
        )
    # Clear acquisitions within max_gap_days of each grid date: [lo, hi) into the input dates.
    lo = np.searchsorted(in_days, out_days - max_gap_days, side="left")
    hi = np.searchsorted(in_days, out_days + max_gap_days, side="right")
    n_in = len(dates)
    far = np.zeros(len(grid), dtype=np.int64)
    per_date = np.zeros(n_in, dtype=np.int64)
    n_pixels = n_clear = n_single = n_seen = 0
    with open_raster(mask, "raw mask") as msk, open_raster(raw, "raw time series") as src:
        n_bands = max(src.count // max(msk.count, 1), 1)
        used = range(n_in) if bands is None else [int(b) for b in bands]
        mask_indexes = [b + 1 for b in used]
        first_band = [b * n_bands + 1 for b in used]  # nodata there = outside the swath on that date
        for win in block_windows(msk.height, msk.width, block):
            valid = msk.read(mask_indexes, window=win).reshape(n_in, -1) == 0
            seen = (
                (src.read(first_band, window=win).reshape(n_in, -1) != src.nodata).any(axis=0)
                if src.nodata is not None
                else np.ones(valid.shape[1], bool)
            )
            count = valid.sum(axis=0)
            has = count > 0
            n_pixels += valid.shape[1]
            n_seen += int((seen | has).sum())
            n_clear += int(has.sum())
            n_single += int((count == 1).sum())
            per_date += valid.sum(axis=1)
            cum = np.zeros((n_in + 1, int(has.sum())), dtype=np.int32)
            np.cumsum(valid[:, has], axis=0, out=cum[1:])
            far += ((cum[hi] - cum[lo]) == 0).sum(axis=1)
    # Pixels never observed (nodata on every date: a tile at the edge of the swath) are not
    # counted against the products: they are nodata in the output, as they should be.
    unclear = 1 - n_clear / n_seen if n_seen else 1.0
    clear_dates = [d for d, n in zip(dates, per_date) if n > 0]
    if n_seen < n_pixels:
        log.info(
            "tile %s: %.1f%% of the pixels are nodata on every date (outside the swath)",
            tile,
            100.0 * (n_pixels - n_seen) / n_pixels,
        )
    if unclear > max_unclear_share:
        raise InputError(
            mask,
            f"tile {tile}: {unclear:.0%} of the observed pixels have no clear observation in any of the {n_in} dates "
            f"({', '.join(f'{d:%Y-%m-%d}' for d in dates)}); dates with any clear pixel: "
            f"{', '.join(f'{d:%Y-%m-%d}' for d in clear_dates) or 'none'}",
            "give products with clear observations of this tile (cloud cover, nodata, the right tile), "
            f"or relax ingest's masked classes; gapfill.max_unclear_share is {max_unclear_share}",
        )
    if len(clear_dates) == 1:
        log.warning(
            "tile %s: a single date with clear pixels (%s) among %d dates: the gap-filled series is "
            "constant in time (no temporal information for the classifier)",
            tile,
            clear_dates[0],
            n_in,
        )
    elif n_clear and n_single / n_clear > 0.5:
        log.warning(
            "tile %s: %.0f%% of the pixels have a single clear date among %d: their gap-filled series "
            "is constant in time",
            tile,
            100 * n_single / n_clear,
            n_in,
        )
    share = far / n_clear if n_clear else np.zeros(len(grid))
    bad = np.flatnonzero(share > max_gap_share)
    if bad.size:
        shown = ", ".join(f"{grid[i]} ({share[i]:.0%})" for i in bad[:10])
        if bad.size > 10:
            shown += f", ... ({bad.size} dates in all)"
        log.warning(
            "tile %s: %d of %d output date(s) lie more than %d days from any clear acquisition for more than %.0f%% of "
            "the pixels, their values are extrapolated or interpolated over a long gap: %s (acquisitions %s to %s)",
            tile,
            bad.size,
            len(grid),
            max_gap_days,
            100 * max_gap_share,
            shown,
            dates[0],
            dates[-1],
        )
    return share


def validity_dtype(n_dates: int) -> str:
    """dtype of the validity raster (count of clear dates) for ``n_dates`` input dates."""
    return "uint8" if n_dates <= 254 else "uint16"


def to_int16(block: np.ndarray) -> np.ndarray:
    """float32 reflectance x10000 -> int16, rounded, clipped off the nodata value; NaN -> nodata.

    ``block`` is overwritten.
    """
    missing = np.isnan(block)
    np.rint(block, out=block)
    np.clip(block, GAPFILLED_NODATA + 1, np.iinfo(np.int16).max, out=block)
    block[missing] = 0
    out = block.astype(np.int16)
    out[missing] = GAPFILLED_NODATA
    return out


def gapfill_tile(
    raw: str | os.PathLike,
    mask: str | os.PathLike,
    raw_dates: str | os.PathLike,
    out_gapfilled: str | os.PathLike,
    out_dates: str | os.PathLike,
    out_validity: str | os.PathLike,
    *,
    start: dt.date | str | None,
    end: dt.date | str | None,
    step_days: int = 10,
    mode: str = "linear",
    backend: str = "numpy",
    block: int = 256,
    max_gap_days: int = MAX_GAP_DAYS,
    max_gap_share: float = MAX_GAP_SHARE,
    max_unclear_share: float = MAX_UNCLEAR_SHARE,
    threads: int = 1,
) -> None:
    """Gap-fill a tile's time series onto a regular date grid, streaming by windows.

    Parameters
    ----------
    raw : ``raw.tif``, int16 reflectance x10000, T_in*B bands, date-major (date1 b1..bB,
        date2 b1..), described ``YYYYMMDD_Bxx``.
    mask : ``raw_mask.tif``, uint8, T_in bands, 1 = cloud / shadow / nodata, 0 = clear.
    raw_dates : ``raw_dates.txt``, one ``YYYYMMDD`` per line, strictly increasing.
    out_gapfilled : ``gapfilled.tif`` written: int16 reflectance x10000 (rounded), T_out*B bands
        date-major, described ``YYYYMMDD_Bxx``, nodata -32768 where a pixel has no clear date.
    out_dates : ``dates.txt`` written: the output date grid, one ``YYYYMMDD`` per line.
    out_validity : ``validity.tif`` written: number of clear input dates per pixel (uint8, or
        uint16 above 254 dates).
    start, end : first / last date of the grid (``datetime.date`` or ``"YYYY-MM-DD"``); None:
        the first / last input date.
    step_days : grid step in days.
    mode : ``"linear"`` or ``"spline"`` (see :func:`gapfill_series`).
    backend : ``"numpy"`` (default, streaming) or ``"otb"`` (OTB's ``ImageTimeSeriesGapFilling``
        through ``otbApplication`` or ``otbcli_ImageTimeSeriesGapFilling``).
    block : window size in pixels; memory is bounded by ``threads + 1`` windows.
    threads : windows gap-filled in parallel (:func:`cropchain.io.raster.map_windows`).
    max_gap_days, max_gap_share, max_unclear_share : coverage checks of the grid by clear
        acquisitions, see :func:`check_coverage`.

    Raises
    ------
    InputError
        Band count of ``raw`` not a multiple of the number of dates, mask band count different
        from the number of dates, grids differ, descriptions inconsistent with the dates, dates
        file missing / unreadable / not increasing, a raster unreadable, or most pixels without
        any clear date (:func:`check_coverage`).
    ConfigError
        Bad ``start`` / ``end`` / ``step_days`` / ``mode`` / ``backend``, or an output grid
        mostly outside the acquisitions (:func:`check_coverage`).
    CropchainError
        ``backend="otb"`` without OTB's gap filling application installed.
    """
    if mode not in MODES:
        raise ConfigError(f"gap filling mode {mode!r} is unknown: choose one of {', '.join(MODES)}")
    if backend not in BACKENDS:
        raise ConfigError(f"gap filling backend {backend!r} is unknown: choose one of {', '.join(BACKENDS)}")
    raw, mask, raw_dates = Path(raw), Path(mask), Path(raw_dates)
    dates, names, profile = check_inputs(raw, mask, raw_dates)
    start_d = dates[0] if start is None else parse_date(start, "start")
    end_d = dates[-1] if end is None else parse_date(end, "end")
    grid = output_date_grid(start_d, end_d, step_days)
    check_coverage(
        raw,
        mask,
        dates,
        grid,
        max_gap_days=max_gap_days,
        max_gap_share=max_gap_share,
        max_unclear_share=max_unclear_share,
        block=block,
    )
    if backend == "otb":
        otb = _find_otb()  # fail before writing anything
    n_bands, n_in, n_out = len(names), len(dates), len(grid)
    log.info(
        "gap filling %s: %d dates x %d bands -> %d dates (%s to %s every %d days, %s, %s backend)",
        raw,
        n_in,
        n_bands,
        n_out,
        grid[0],
        grid[-1],
        step_days,
        mode,
        backend,
    )

    gf_profile = geotiff_profile(profile, count=n_out * n_bands, dtype="int16", nodata=GAPFILLED_NODATA)
    va_profile = geotiff_profile(profile, count=1, dtype=validity_dtype(n_in), nodata=None)
    descriptions = [f"{d:%Y%m%d}_{b}" for d in grid for b in names]
    windows = list(block_windows(profile["height"], profile["width"], block))
    grid_text = "".join(f"{d:%Y%m%d}\n" for d in grid)

    with atomic_output(out_gapfilled) as tmp_gf, atomic_output(out_validity) as tmp_va:
        work_dir = (
            tempfile.TemporaryDirectory(dir=Path(tmp_gf).parent, prefix=".otb-gapfill-")
            if backend == "otb"
            else contextlib.nullcontext(None)
        )
        with work_dir as work:
            otb_out = None
            if backend == "otb":
                od_file = Path(work) / "out_dates.txt"
                od_file.write_text(grid_text)
                otb_out = Path(work) / "gapfilled_otb.tif"
                _run_otb(otb, raw, mask, raw_dates, od_file, otb_out, n_bands, mode)
            in_days, out_days = _days(dates, dates[0]), _days(grid, dates[0])
            with (
                open_raster(raw, "raw time series") as src,
                open_raster(mask, "raw mask") as msk,
                rasterio.open(tmp_gf, "w", **gf_profile) as gf,
                rasterio.open(tmp_va, "w", **va_profile) as va,
            ):
                otb_src = rasterio.open(otb_out) if otb_out is not None else None
                try:
                    for i, desc in enumerate(descriptions, start=1):
                        gf.set_band_description(i, desc)
                    va.set_band_description(1, "clear_dates")
                    lock = threading.Lock()  # the datasets are shared by the worker threads

                    def fill(win):
                        h, w = win.height, win.width
                        with lock:
                            valid = msk.read(window=win).reshape(n_in, h * w) == 0
                            values = (
                                src.read(window=win)
                                if otb_src is None
                                else otb_src.read(window=win, out_dtype="float32")
                            )
                        count = valid.sum(axis=0)
                        if otb_src is None:
                            filled = gapfill_series(
                                values.reshape(n_in, n_bands, h * w),
                                valid,
                                in_days,
                                out_days,
                                mode=mode,
                                out_dtype="int16",
                            )
                        else:
                            filled = values.reshape(n_out, n_bands, h * w)
                            filled[:, :, count == 0] = np.nan
                            filled = to_int16(filled)
                        return filled.reshape(n_out * n_bands, h, w), count.astype(
                            va_profile["dtype"]
                        ).reshape(1, h, w)

                    done = map_windows(fill, windows, threads)
                    for win, (filled, count) in tqdm(
                        done, total=len(windows), desc="gap filling", unit="window", disable=None
                    ):
                        with lock:
                            gf.write(filled, window=win)
                            va.write(count, window=win)
                finally:
                    if otb_src is not None:
                        otb_src.close()
        write_text_atomic(out_dates, grid_text)
    log.info("wrote %s (%d bands), %s and %s", out_gapfilled, n_out * n_bands, out_dates, out_validity)


# --------------------------------------------------------------------------- OTB backend
def _find_otb() -> tuple[str, object]:
    """Locate OTB's gap filling: ``("python", otbApplication)`` or ``("cli", path)``."""
    try:
        otb_app = importlib.import_module("otbApplication")
    except ImportError:
        otb_app = None
    if otb_app is not None:
        if OTB_APP in otb_app.Registry.GetAvailableApplications():
            return "python", otb_app
        log.warning("otbApplication is importable but has no %s application; trying %s", OTB_APP, OTB_CLI)
    cli = shutil.which(OTB_CLI)
    if cli:
        return "cli", cli
    found = (
        "the Python module otbApplication has no ImageTimeSeriesGapFilling application"
        if otb_app is not None
        else "the Python module otbApplication is not importable"
    )
    raise CropchainError(
        f"gap filling backend 'otb' needs Orfeo ToolBox's {OTB_APP} application, but {found} and "
        f"{OTB_CLI} is not on PATH. Install OTB with its remote module OTBTemporalGapFilling "
        f"(build OTB with -DModule_OTBTemporalGapFilling=ON; Debian's otb-bin does not ship it) and "
        f"source its otbenv.profile, or set `gapfill.backend: numpy` (same results, the default)."
    )


def _run_otb(
    otb: tuple[str, object],
    raw: Path,
    mask: Path,
    in_dates: Path,
    out_dates: Path,
    out: Path,
    n_bands: int,
    mode: str,
) -> None:
    kind, handle = otb
    if kind == "python":
        app = handle.Registry.CreateApplication(OTB_APP)
        app.SetParameterString("in", str(raw))
        app.SetParameterString("mask", str(mask))
        app.SetParameterString("out", str(out))
        app.SetParameterOutputImagePixelType("out", handle.ImagePixelType_float)
        app.SetParameterInt("comp", n_bands)
        app.SetParameterString("it", mode)
        app.SetParameterString("id", str(in_dates))
        app.SetParameterString("od", str(out_dates))
        if app.ExecuteAndWriteOutput() not in (None, 0):
            raise CropchainError(f"OTB {OTB_APP} failed on {raw}")
        return
    cmd = [
        str(handle),
        "-in",
        str(raw),
        "-mask",
        str(mask),
        "-out",
        str(out),
        "float",
        "-comp",
        str(n_bands),
        "-it",
        mode,
        "-id",
        str(in_dates),
        "-od",
        str(out_dates),
    ]
    log.info("running %s", " ".join(cmd))
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0 or not out.exists():
        tail = "\n".join((proc.stderr or proc.stdout).strip().splitlines()[-10:])
        raise CropchainError(f"{OTB_CLI} failed on {raw} (exit {proc.returncode}):\n{tail}")
