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
from collections.abc import Iterator, Sequence
from pathlib import Path

import numpy as np
import rasterio
from scipy.interpolate import Akima1DInterpolator, CubicSpline
from tqdm import tqdm

from cropchain.errors import ConfigError, CropchainError
from cropchain.io.raster import block_windows, map_windows, open_raster
from cropchain.series.dates import days_since, output_date_grid, parse_date
from cropchain.series.tile import (
    GAPFILLED_NODATA,
    MAX_GAP_DAYS,
    MAX_GAP_SHARE,
    MAX_UNCLEAR_SHARE,
    check_coverage,
    check_inputs,
    open_series_outputs,
    to_int16,
)

log = logging.getLogger(__name__)

MODES = ("linear", "spline")
BACKENDS = ("numpy", "otb")
OTB_APP = "ImageTimeSeriesGapFilling"
OTB_CLI = "otbcli_ImageTimeSeriesGapFilling"


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
    date; the same numbers as :func:`~cropchain.series.tile.to_int16` of the float32 result, in
    fewer passes over memory and no float32 copy of the whole block. ``prev`` and ``nxt`` are
    overwritten (turned into flat indices).
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
        :func:`~cropchain.series.tile.to_int16` of the float32 result (rounded; nodata -32768 for
        pixels without any valid date), computed without a float32 copy of the block.

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
# 107 lines, of which 56 are the signature and docstring (shapes, units, errors): 51 of code
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
        acquisitions, see :func:`~cropchain.series.tile.check_coverage`.

    Raises
    ------
    InputError
        Band count of ``raw`` not a multiple of the number of dates, mask band count different
        from the number of dates, grids differ, descriptions inconsistent with the dates, dates
        file missing / unreadable / not increasing, a raster unreadable, or most pixels without
        any clear date (:func:`~cropchain.series.tile.check_coverage`).
    ConfigError
        Bad ``start`` / ``end`` / ``step_days`` / ``mode`` / ``backend``, or an output grid
        mostly outside the acquisitions (:func:`~cropchain.series.tile.check_coverage`).
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
    otb = _find_otb() if backend == "otb" else None  # fail before writing anything
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
    windows = list(block_windows(profile["height"], profile["width"], block))
    with open_series_outputs(out_gapfilled, out_validity, out_dates, profile, grid, names, n_in) as (gf, va):
        with (
            _otb_gapfilled(otb, raw, mask, raw_dates, grid, Path(gf.name).parent, n_bands, mode) as otb_src,
            open_raster(raw, "raw time series") as src,
            open_raster(mask, "raw mask") as msk,
        ):
            lock = threading.Lock()  # the datasets are shared by the worker threads
            in_days, out_days = days_since(dates, dates[0]), days_since(grid, dates[0])
            fill = _window_filler(src, msk, otb_src, lock, in_days, out_days, n_bands, mode, va.dtypes[0])
            done = map_windows(fill, windows, threads)
            for win, (filled, count) in tqdm(
                done, total=len(windows), desc="gap filling", unit="window", disable=None
            ):
                with lock:
                    gf.write(filled, window=win)
                    va.write(count, window=win)
    log.info("wrote %s (%d bands), %s and %s", out_gapfilled, n_out * n_bands, out_dates, out_validity)


def _window_filler(src, msk, otb_src, lock, in_days, out_days, n_bands: int, mode: str, va_dtype: str):
    """The step of :func:`gapfill_tile` on one window: ``fill(win) -> (gapfilled, count)``.

    ``gapfilled`` int16 [T_out*B, h, w] (from the raw series ``src`` and mask ``msk``, or read
    from OTB's float32 output ``otb_src``), ``count`` [1, h, w] of ``va_dtype``, the clear input
    dates. Reads hold ``lock`` (the datasets are shared by the worker threads).
    """
    n_in, n_out = in_days.size, out_days.size

    def fill(win):
        h, w = win.height, win.width
        with lock:
            valid = msk.read(window=win).reshape(n_in, h * w) == 0
            values = (
                src.read(window=win) if otb_src is None else otb_src.read(window=win, out_dtype="float32")
            )
        count = valid.sum(axis=0)
        if otb_src is None:
            filled = gapfill_series(
                values.reshape(n_in, n_bands, h * w), valid, in_days, out_days, mode=mode, out_dtype="int16"
            )
        else:
            filled = values.reshape(n_out, n_bands, h * w)
            filled[:, :, count == 0] = np.nan
            filled = to_int16(filled)
        return filled.reshape(n_out * n_bands, h, w), count.astype(va_dtype).reshape(1, h, w)

    return fill


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


@contextlib.contextmanager
def _otb_gapfilled(
    otb: tuple[str, object] | None,
    raw: Path,
    mask: Path,
    raw_dates: Path,
    grid: Sequence[dt.date],
    work_parent: Path,
    n_bands: int,
    mode: str,
) -> Iterator[rasterio.io.DatasetReader | None]:
    """OTB's gap filling of the tile, open for reading (float32, T_out*B bands), in a temporary
    folder under ``work_parent`` removed afterwards; None without OTB (``otb`` None)."""
    if otb is None:
        yield None
        return
    with tempfile.TemporaryDirectory(dir=work_parent, prefix=".otb-gapfill-") as work:
        od_file = Path(work) / "out_dates.txt"
        od_file.write_text("".join(f"{d:%Y%m%d}\n" for d in grid))
        otb_out = Path(work) / "gapfilled_otb.tif"
        _run_otb(otb, raw, mask, raw_dates, od_file, otb_out, n_bands, mode)
        with rasterio.open(otb_out) as otb_src:
            yield otb_src


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
