"""Monthly median composites: the alternative to gap filling as the chain's temporal step.

Follows the compositing of MoisePlacier/Crop_type_classification (Sentinel-2 L2A, SCL classes
4-7 kept, per-pixel monthly median, gaps filled from the neighbouring months):

1. an observation is **clear** where the ingest mask is 0 (for SAFE products the ingest then
   writes its mask from the SCL classes *kept*, 4-7 by default, instead of the classes masked
   for gap filling; see :func:`cropchain.sources.sentinel2.scl_masked_for_kept`) and no band of
   the date is nodata;
2. the composite of a month is, per pixel and band, the **median of the clear observations**
   of that month (the mean of the two middle values for an even count);
3. a month without any clear observation at a pixel takes the **mean of the nearest previous
   and next months** that have one; before the first (after the last) month with a clear
   observation, the nearest such month is copied (the first and last months of the series);
4. a pixel without any clear observation in the whole period is nodata.

The months are those spanned by the configuration's ``dates.start`` .. ``dates.end``; each is
dated on its 15th (or its first day), so that ``gapfilled.tif`` / ``dates.txt`` / ``validity.tif``
keep the gap filling's contract (DESIGN.md section 1) and the features, samples and models
downstream are unchanged. Values are int16 reflectance x10000, rounded to the nearest integer
(half to even) at the end. Everything is vectorized (sorting along time) and streams by windows.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cropchain.errors import ConfigError, InputError
from cropchain.io.raster import block_windows, open_raster
from cropchain.series.dates import parse_date
from cropchain.series.tile import (
    MAX_GAP_DAYS,
    MAX_GAP_SHARE,
    MAX_UNCLEAR_SHARE,
    check_coverage,
    check_inputs,
    open_series_outputs,
    to_int16,
)

log = logging.getLogger(__name__)

COMPOSITE_DAYS = (1, 15)


def month_grid(start: dt.date | str, end: dt.date | str, day: int = 15) -> list[dt.date]:
    """The months spanned by ``start`` .. ``end``, each dated on its ``day`` (1 or 15).

    Parameters
    ----------
    start, end : first and last date (``datetime.date`` or ``"YYYY-MM-DD"``); every month
        touched by the interval is included.
    day : day of the month used as the composite's date.

    Returns
    -------
    list of :class:`datetime.date`, one per month, never empty.

    Raises
    ------
    ConfigError
        ``end`` before ``start``, a date that is not a date, or ``day`` not 1 or 15.
    """
    if day not in COMPOSITE_DAYS:
        raise ConfigError(f"gapfill.composite_day: {day!r}, choose 1 or 15")
    s, e = parse_date(start, "start"), parse_date(end, "end")
    if e < s:
        raise ConfigError(f"composite end date {e} is before the start date {s}: swap them")
    months = []
    y, m = s.year, s.month
    while (y, m) <= (e.year, e.month):
        months.append(dt.date(y, m, day))
        y, m = (y + 1, 1) if m == 12 else (y, m + 1)
    return months


def _month_index(dates: Sequence[dt.date], months: Sequence[dt.date]) -> np.ndarray:
    """Index into ``months`` of each date (-1 outside the months)."""
    pos = {(m.year, m.month): i for i, m in enumerate(months)}
    return np.array([pos.get((d.year, d.month), -1) for d in dates], dtype=np.intp)


def _monthly_medians(
    values: np.ndarray, valid: np.ndarray, month_of: np.ndarray, n_months: int
) -> np.ndarray:
    """Per-month medians of the valid observations: float32 [M, B, N], NaN where none."""
    t, b, n = values.shape
    out = np.full((n_months, b, n), np.nan, dtype=np.float32)
    for k in range(n_months):
        idx = np.flatnonzero(month_of == k)
        if idx.size == 0:
            continue
        x = values[idx].astype(np.float32)  # [k, B, N]
        ok = valid[idx]  # [k, N]
        x[np.broadcast_to(~ok[:, None, :], x.shape)] = np.nan
        x.sort(axis=0)  # NaN last
        count = ok.sum(axis=0)  # [N]
        lo = np.maximum((count - 1) // 2, 0)
        hi = count // 2
        hi = np.minimum(hi, idx.size - 1)
        a = np.take_along_axis(x, np.broadcast_to(lo[None, None, :], (1, b, n)), axis=0)[0]
        c = np.take_along_axis(x, np.broadcast_to(hi[None, None, :], (1, b, n)), axis=0)[0]
        med = (a + c) * np.float32(0.5)
        med[:, count == 0] = np.nan
        out[k] = med
    return out


def _fill_months(comp: np.ndarray, has: np.ndarray) -> np.ndarray:
    """Fill empty months from the nearest months before / after (mean of both, or the one there is).

    ``comp`` float32 [M, B, N] (values where ``has``), ``has`` bool [M, N]; returns a new array,
    NaN only for pixels without any month.
    """
    m, b, n = comp.shape
    rows = np.arange(m)[:, None]
    prev = np.maximum.accumulate(np.where(has, rows, -1), axis=0)  # [M, N]
    nxt = np.minimum.accumulate(np.where(has, rows, m)[::-1], axis=0)[::-1]  # [M, N]
    has_prev, has_next = prev >= 0, nxt < m
    p = np.where(has_prev, prev, np.where(has_next, nxt, 0))
    q = np.where(has_next, nxt, p)
    cols = np.arange(n)[None, :]
    out = np.empty_like(comp)
    for k in range(b):
        band = comp[:, k, :]
        out[:, k, :] = (band[p, cols] + band[q, cols]) * np.float32(0.5)
    out[:, :, ~has.any(axis=0)] = np.nan
    return out


def composite_series(
    values: np.ndarray,
    valid: np.ndarray,
    dates: Sequence[dt.date],
    months: Sequence[dt.date],
) -> np.ndarray:
    """Monthly median composites of pixel time series, gaps filled from the neighbouring months.

    Parameters
    ----------
    values : [T, N] or [T, B, N], any numeric dtype (e.g. int16 reflectance x10000); values at
        invalid observations are ignored.
    valid : bool [T, N], True where the observation is clear (shared by the bands of a date).
    dates : [T] acquisition dates (any order).
    months : [M] the months of the output (one date per month, e.g. from :func:`month_grid`);
        dates outside these months are ignored.

    Returns
    -------
    float32 [M, N] (or [M, B, N]) in the unit of ``values``: the median of the clear
    observations of each month; a month without one takes the mean of the nearest previous and
    next months with one, or the nearest of them where only one side has one; NaN for pixels
    without any clear observation in the months.

    Raises
    ------
    ValueError
        inconsistent shapes.
    """
    values = np.asarray(values)
    valid = np.asarray(valid, dtype=bool)
    squeeze = values.ndim == 2
    v3 = values[:, None, :] if squeeze else values
    if v3.ndim != 3 or valid.shape != (v3.shape[0], v3.shape[2]) or len(dates) != v3.shape[0]:
        raise ValueError(
            f"values [T, N] or [T, B, N], valid [T, N] and T dates expected, got {values.shape}, "
            f"{valid.shape}, {len(dates)} dates"
        )
    month_of = _month_index(dates, months)
    comp = _monthly_medians(v3, valid, month_of, len(months))
    has = ~np.isnan(comp[:, 0, :]) if comp.shape[1] else np.zeros((len(months), v3.shape[2]), bool)
    out = _fill_months(comp, has)
    return out[:, 0, :] if squeeze else out


def clear_months(valid: np.ndarray, dates: Sequence[dt.date], months: Sequence[dt.date]) -> np.ndarray:
    """Whether each month holds at least one clear observation, per pixel: the months that
    :func:`composite_series` takes as a median, the others being filled from their neighbours
    (what a model reading the composites, e.g. Presto, masks).

    Parameters
    ----------
    valid : bool ``[T, ...]``, True where the observation is clear (as for :func:`composite_series`).
    dates : ``[T]`` acquisition dates; months : ``[M]`` the months of the composites.

    Returns
    -------
    bool ``[M, ...]``.
    """
    valid = np.asarray(valid, dtype=bool)
    if len(dates) != valid.shape[0]:
        raise ValueError(f"valid [T, ...] and T dates expected, got {valid.shape} and {len(dates)} dates")
    month_of = _month_index(dates, months)
    out = np.zeros((len(months),) + valid.shape[1:], dtype=bool)
    for k in range(len(months)):
        sel = month_of == k
        if sel.any():
            out[k] = valid[sel].any(axis=0)
    return out


# 93 lines, of which 44 are the signature and docstring (shapes, units, errors): 49 of code
def monthly_composite_tile(
    raw: str | os.PathLike,
    mask: str | os.PathLike,
    raw_dates: str | os.PathLike,
    out_gapfilled: str | os.PathLike,
    out_dates: str | os.PathLike,
    out_validity: str | os.PathLike,
    *,
    start: dt.date | str | None,
    end: dt.date | str | None,
    day: int = 15,
    block: int = 512,
    max_gap_days: int = MAX_GAP_DAYS,
    max_gap_share: float = MAX_GAP_SHARE,
    max_unclear_share: float = MAX_UNCLEAR_SHARE,
) -> None:
    """Monthly median composites of a tile's raw time series, streaming by windows.

    Parameters
    ----------
    raw : ``raw.tif``, int16 reflectance x10000, T*B bands date-major, described ``YYYYMMDD_Bxx``.
    mask : ``raw_mask.tif``, uint8, T bands, 0 = clear (kept) observation, 1 = masked.
    raw_dates : ``raw_dates.txt``, one ``YYYYMMDD`` per line, strictly increasing.
    out_gapfilled : ``gapfilled.tif`` written: int16 reflectance x10000, M*B bands month-major,
        described ``YYYYMMDD_Bxx`` (the month's ``day``), nodata -32768 where a pixel has no
        clear observation in any month.
    out_dates : ``dates.txt`` written: one ``YYYYMMDD`` per month.
    out_validity : ``validity.tif`` written: number of clear observations per pixel within the
        months (uint8, or uint16 above 254 dates); 0 where the composite is nodata.
    start, end : the period (``datetime.date`` or ``"YYYY-MM-DD"``); every month it touches is
        composited. None: the first / last input date.
    day : 15 (default) or 1, the day of the month that dates each composite.
    block : window size in pixels; memory is bounded by one window.
    max_gap_days, max_gap_share, max_unclear_share : coverage checks of the months by clear
        acquisitions (see :func:`cropchain.series.tile.check_coverage`).

    Raises
    ------
    InputError
        inconsistent inputs (as :func:`cropchain.series.gapfill.gapfill_tile`), no input date within
        the months (``raw_dates`` named), or most pixels without any clear date.
    ConfigError
        bad period or ``day``; months mostly outside the acquisitions.
    """
    raw, mask, raw_dates = Path(raw), Path(mask), Path(raw_dates)
    dates, names, profile = check_inputs(raw, mask, raw_dates)
    months = month_grid(dates[0] if start is None else start, dates[-1] if end is None else end, day)
    month_of = _month_index(dates, months)
    used = np.flatnonzero(month_of >= 0)
    if used.size == 0:
        raise InputError(
            raw_dates,
            f"no acquisition date within the months {months[0]:%Y-%m} .. {months[-1]:%Y-%m} "
            f"(dates {dates[0]} .. {dates[-1]})",
            "set dates.start / dates.end to the period of the images",
        )
    check_coverage(
        raw,
        mask,
        [dates[i] for i in used],
        months,
        max_gap_days=max_gap_days,
        max_gap_share=max_gap_share,
        max_unclear_share=max_unclear_share,
        block=block,
        bands=used,
    )
    _log_months(raw, dates, months, month_of, used, len(names))
    n_bands, n_months = len(names), len(months)
    windows = list(block_windows(profile["height"], profile["width"], block))
    sub_dates = [dates[i] for i in used]
    band_rows = [int(t) * n_bands + b + 1 for t in used for b in range(n_bands)]
    mask_rows = [int(t) + 1 for t in used]
    src_nodata = profile.get("nodata")

    outputs = open_series_outputs(
        out_gapfilled, out_validity, out_dates, profile, months, names, int(used.size)
    )
    with (
        outputs as (gf, va),
        open_raster(raw, "raw time series") as src,
        open_raster(mask, "raw mask") as msk,
    ):
        for win in tqdm(windows, desc="monthly composites", unit="window", disable=None):
            h, w = win.height, win.width
            values = src.read(band_rows, window=win).reshape(used.size, n_bands, h * w)
            valid = msk.read(mask_rows, window=win).reshape(used.size, h * w) == 0
            if src_nodata is not None:
                valid &= ~(values == src_nodata).any(axis=1)
            filled = composite_series(values, valid, sub_dates, months)
            gf.write(to_int16(filled).reshape(n_months * n_bands, h, w), window=win)
            va.write(valid.sum(axis=0).astype(va.dtypes[0]).reshape(1, h, w), window=win)
    log.info("wrote %s (%d bands), %s and %s", out_gapfilled, n_months * n_bands, out_dates, out_validity)


def _log_months(
    raw: Path,
    dates: Sequence[dt.date],
    months: Sequence[dt.date],
    month_of: np.ndarray,
    used: np.ndarray,
    n_bands: int,
) -> None:
    """INFO on the months composited: the empty ones (filled from their neighbours) and the dates outside."""
    per_month = np.bincount(month_of[used], minlength=len(months))
    empty = [f"{m:%Y-%m}" for m, c in zip(months, per_month) if c == 0]
    log.info(
        "monthly median composites of %s: %d dates x %d bands -> %d months (%s .. %s)%s",
        raw,
        used.size,
        n_bands,
        len(months),
        f"{months[0]:%Y-%m}",
        f"{months[-1]:%Y-%m}",
        f"; no acquisition in {', '.join(empty)} (filled from the neighbouring months)" if empty else "",
    )
    if used.size < len(dates):
        log.info("%d acquisition date(s) outside the months ignored", len(dates) - used.size)
