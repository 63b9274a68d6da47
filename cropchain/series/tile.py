"""What gap filling and monthly compositing share on a tile: the ingest's contract of the raw
series (:func:`check_inputs`), the check that the output dates are backed by clear acquisitions
(:func:`check_coverage`), and the products they both write, ``gapfilled.tif`` (int16
reflectance x10000, :func:`to_int16`), ``validity.tif`` (:func:`validity_dtype`) and
``dates.txt`` (:func:`open_series_outputs`).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from cropchain.errors import ConfigError, InputError
from cropchain.io.atomic import atomic_output, write_text_atomic
from cropchain.io.raster import block_windows, geotiff_profile, open_raster, read_date_list
from cropchain.series.dates import days_since

log = logging.getLogger(__name__)

#: nodata of ``gapfilled.tif`` (int16 reflectance x10000).
GAPFILLED_NODATA = -32768


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
    dates = read_date_list(raw_dates)
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
    in_days = days_since(dates, dates[0])
    out_days = days_since(grid, dates[0])
    _check_grid_span(raw, tile, dates, grid, in_days, out_days, max_gap_days)
    # Clear acquisitions within max_gap_days of each grid date: [lo, hi) into the input dates.
    lo = np.searchsorted(in_days, out_days - max_gap_days, side="left")
    hi = np.searchsorted(in_days, out_days + max_gap_days, side="right")
    cov = _count_coverage(raw, mask, len(dates), lo, hi, block, bands)
    _check_clear_pixels(mask, tile, dates, cov, max_unclear_share)
    share = cov.far / cov.n_clear if cov.n_clear else np.zeros(len(grid))
    _warn_far_dates(tile, dates, grid, share, max_gap_days, max_gap_share)
    return share


def _check_grid_span(
    raw: Path,
    tile: str,
    dates: Sequence[dt.date],
    grid: Sequence[dt.date],
    in_days: np.ndarray,
    out_days: np.ndarray,
    max_gap_days: int,
) -> None:
    """ConfigError when more than half of the grid lies ``max_gap_days`` outside the acquisitions."""
    outside = (out_days < in_days[0] - max_gap_days) | (out_days > in_days[-1] + max_gap_days)
    if outside.mean() > 0.5:
        raise ConfigError(
            f"dates.start / dates.end: {int(outside.sum())} of the {len(grid)} output dates "
            f"({grid[0]} to {grid[-1]}) lie more than {max_gap_days} days outside the acquisitions of "
            f"tile {tile} ({dates[0]} to {dates[-1]}, {len(dates)} dates, {raw}): set dates.start / "
            f"dates.end within the products' span, or give products of the period mapped"
        )


@dataclass
class _Coverage:
    """Counts of the coverage pass over a tile's mask."""

    far: np.ndarray  # int64 [T_out]: pixels with a clear date and none within max_gap_days of the grid date
    per_date: np.ndarray  # int64 [T_in]: clear pixels of each input date
    n_pixels: int = 0
    n_clear: int = 0  # pixels with at least one clear date
    n_single: int = 0  # pixels with a single clear date
    n_seen: int = 0  # pixels observed (not nodata on every date) or clear


def _count_coverage(
    raw: Path,
    mask: Path,
    n_in: int,
    lo: np.ndarray,
    hi: np.ndarray,
    block: int,
    bands: Sequence[int] | None,
) -> _Coverage:
    """Read the mask (and the first band of each date of ``raw``) window by window and count."""
    cov = _Coverage(far=np.zeros(len(lo), dtype=np.int64), per_date=np.zeros(n_in, dtype=np.int64))
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
            cov.n_pixels += valid.shape[1]
            cov.n_seen += int((seen | has).sum())
            cov.n_clear += int(has.sum())
            cov.n_single += int((count == 1).sum())
            cov.per_date += valid.sum(axis=1)
            cum = np.zeros((n_in + 1, int(has.sum())), dtype=np.int32)
            np.cumsum(valid[:, has], axis=0, out=cum[1:])
            cov.far += ((cum[hi] - cum[lo]) == 0).sum(axis=1)
    return cov


def _check_clear_pixels(
    mask: Path, tile: str, dates: Sequence[dt.date], cov: _Coverage, max_unclear_share: float
) -> None:
    """InputError when too many observed pixels have no clear date; WARNING for single-date series."""
    n_in = len(dates)
    # Pixels never observed (nodata on every date: a tile at the edge of the swath) are not
    # counted against the products: they are nodata in the output, as they should be.
    unclear = 1 - cov.n_clear / cov.n_seen if cov.n_seen else 1.0
    clear_dates = [d for d, n in zip(dates, cov.per_date) if n > 0]
    if cov.n_seen < cov.n_pixels:
        log.info(
            "tile %s: %.1f%% of the pixels are nodata on every date (outside the swath)",
            tile,
            100.0 * (cov.n_pixels - cov.n_seen) / cov.n_pixels,
        )
    if unclear > max_unclear_share:
        raise InputError(
            mask,
            f"tile {tile}: {unclear:.0%} of the observed pixels have no clear observation in any of the "
            f"{n_in} dates ({', '.join(f'{d:%Y-%m-%d}' for d in dates)}); dates with any clear pixel: "
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
    elif cov.n_clear and cov.n_single / cov.n_clear > 0.5:
        log.warning(
            "tile %s: %.0f%% of the pixels have a single clear date among %d: their gap-filled series "
            "is constant in time",
            tile,
            100 * cov.n_single / cov.n_clear,
            n_in,
        )


def _warn_far_dates(
    tile: str,
    dates: Sequence[dt.date],
    grid: Sequence[dt.date],
    share: np.ndarray,
    max_gap_days: int,
    max_gap_share: float,
) -> None:
    """WARNING naming the grid dates far from the data of more than ``max_gap_share`` of the pixels."""
    bad = np.flatnonzero(share > max_gap_share)
    if bad.size:
        shown = ", ".join(f"{grid[i]} ({share[i]:.0%})" for i in bad[:10])
        if bad.size > 10:
            shown += f", ... ({bad.size} dates in all)"
        log.warning(
            "tile %s: %d of %d output date(s) lie more than %d days from any clear acquisition for more "
            "than %.0f%% of the pixels, their values are extrapolated or interpolated over a long gap: %s "
            "(acquisitions %s to %s)",
            tile,
            bad.size,
            len(grid),
            max_gap_days,
            100 * max_gap_share,
            shown,
            dates[0],
            dates[-1],
        )


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


@contextlib.contextmanager
def open_series_outputs(
    out_gapfilled: str | os.PathLike,
    out_validity: str | os.PathLike,
    out_dates: str | os.PathLike,
    profile: dict,
    grid: Sequence[dt.date],
    names: Sequence[str],
    n_dates: int,
) -> Iterator[tuple[rasterio.io.DatasetWriter, rasterio.io.DatasetWriter]]:
    """Open the products of the temporal step for writing, atomically, on the grid of ``profile``.

    Yields ``(gapfilled, validity)``, open rasterio datasets: ``gapfilled.tif`` int16
    reflectance x10000, ``len(grid) * len(names)`` bands date-major described
    ``YYYYMMDD_<band>``, nodata :data:`GAPFILLED_NODATA`; ``validity.tif`` one band
    ``clear_dates`` of :func:`validity_dtype` for ``n_dates`` input dates, no nodata. When the
    block ends without an error, ``dates.txt`` (``grid``, one ``YYYYMMDD`` per line) is written
    and the three files replace ``out_*``; on an error none of them is touched.
    """
    gf_profile = geotiff_profile(
        profile, count=len(grid) * len(names), dtype="int16", nodata=GAPFILLED_NODATA
    )
    va_profile = geotiff_profile(profile, count=1, dtype=validity_dtype(n_dates), nodata=None)
    with atomic_output(out_gapfilled) as tmp_gf, atomic_output(out_validity) as tmp_va:
        with rasterio.open(tmp_gf, "w", **gf_profile) as gf, rasterio.open(tmp_va, "w", **va_profile) as va:
            for i, desc in enumerate((f"{d:%Y%m%d}_{b}" for d in grid for b in names), start=1):
                gf.set_band_description(i, desc)
            va.set_band_description(1, "clear_dates")
            yield gf, va
        write_text_atomic(out_dates, "".join(f"{d:%Y%m%d}\n" for d in grid))
