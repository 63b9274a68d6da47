"""GeoTIFF time series of any origin -> the chain's raw time series of a tile.

Two layouts, for users without SAFE or Theia products (exports from their own archives, from
Google Earth Engine, openEO, Sentinel Hub ...):

* **per-date files** (:func:`find_stack_files` + :func:`ingest_stack`): a folder of GeoTIFFs,
  one per date, each with the same bands in the same order (any number of them, named in the
  configuration: ``[B02, B03, B04, B08]`` or a single ``[NDVI]``). The date of each file is
  parsed from its name with a regular expression and a ``strptime`` format. Clouds come from
  per-date mask files (non-zero = masked, OTB's convention), from a nodata value, or both;
* **one multi-band file** (:func:`ingest_stack_file`): all dates in one GeoTIFF, band order
  date1b1 .. date1bN, date2b1 .. (Orfeo ToolBox's convention for image time series, as in
  ``ImageTimeSeriesGapFilling``), with a dates file (one ``YYYYMMDD`` per line) and optionally a
  mask file with one band per date.

Both write the ingest contract of DESIGN.md section 1: ``raw.tif`` (int16, value x ``scale``
after adding ``offset``, e.g. reflectance x10000; bands described ``YYYYMMDD_<band>`` with the
configuration's band names), ``raw_mask.tif`` (uint8, 1 = masked) and ``raw_dates.txt``. Every
file must be on one grid (CRS, transform, size): nothing is resampled. Processing streams by
windows of the grid: memory is bounded by one window of one date.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio

from cropchain.errors import ConfigError, InputError
from cropchain.io.atomic import require_utf8_path
from cropchain.io.raster import block_windows, read_date_list
from cropchain.sources.common import RAW_NODATA, write_raw_series, write_windows

log = logging.getLogger(__name__)

#: Default file name pattern of per-date files: the first run of 8 digits is the date (YYYYMMDD).
DEFAULT_DATE_PATTERN = r"(?<!\d)(?P<date>\d{8})(?!\d)"
DEFAULT_DATE_FORMAT = "%Y%m%d"
DEFAULT_FILES = "*.tif"
_INT16_MAX = np.iinfo(np.int16).max


@dataclass(frozen=True)
class StackDate:
    """One date of a per-date GeoTIFF stack.

    Attributes
    ----------
    date : acquisition date parsed from the file name.
    path : the GeoTIFF of the date (all bands).
    mask : its mask file (non-zero = masked), or None.
    """

    date: dt.date
    path: Path
    mask: Path | None = None


def _compile(pattern: str, key: str) -> re.Pattern:
    try:
        rx = re.compile(pattern)
    except re.error as exc:
        raise ConfigError(f"{key}: {pattern!r} is not a regular expression ({exc})") from None
    return rx


def parse_file_date(
    path: str | os.PathLike, pattern: str = DEFAULT_DATE_PATTERN, date_format: str = DEFAULT_DATE_FORMAT
) -> dt.date:
    """The date in a file name.

    Parameters
    ----------
    path : the file; only its name is searched.
    pattern : regular expression searched in the name; its group ``date`` (or else its first
        group, or else the whole match) holds the date.
    date_format : :func:`datetime.datetime.strptime` format of that text (``"%Y%m%d"``,
        ``"%Y-%m-%d"``, ``"%Y%j"`` for year and day of year ...).

    Returns
    -------
    datetime.date

    Raises
    ------
    InputError
        the name does not match ``pattern``, or the text does not parse with ``date_format``
        (the message names the file and the pattern).
    ConfigError
        ``pattern`` is not a valid regular expression.
    """
    path = Path(path)
    rx = _compile(pattern, "tiles.<tile>.date_pattern")
    m = rx.search(path.name)
    fix = (
        "rename the file, or set the tile's date_pattern (a regular expression with a group 'date') "
        "and date_format"
    )
    if not m:
        raise InputError(path, f"no date in the file name: it does not match date_pattern {pattern!r}", fix)
    if "date" in rx.groupindex:
        text = m.group("date")
    elif rx.groups:
        text = m.group(1)
    else:
        text = m.group(0)
    try:
        return dt.datetime.strptime(text, date_format).date()
    except ValueError:
        raise InputError(
            path, f"{text!r} in the file name is not a date in the format {date_format!r}", fix
        ) from None


def _by_date(
    paths: list[Path], what: str, folder: Path, date_pattern: str, date_format: str
) -> dict[dt.date, Path]:
    """Files by the date in their names; InputError on two files (``what``: image, mask) of one date."""
    out: dict[dt.date, Path] = {}
    for p in paths:
        d = parse_file_date(p, date_pattern, date_format)
        if d in out:
            raise InputError(
                p,
                f"same date {d} as the {what} {out[d]}",
                f"keep one {what} per date in {folder}, or narrow the glob",
            )
        out[d] = p
    return out


def find_stack_files(
    folder: str | os.PathLike,
    *,
    files: str = DEFAULT_FILES,
    masks: str | None = None,
    date_pattern: str = DEFAULT_DATE_PATTERN,
    date_format: str = DEFAULT_DATE_FORMAT,
) -> list[StackDate]:
    """The per-date GeoTIFFs of a folder, with their dates and mask files.

    Parameters
    ----------
    folder : folder holding the files.
    files : glob of the image files relative to ``folder`` (``"*.tif"``, ``"**/*_S2.tif"`` ...);
        files that also match ``masks`` are not images.
    masks : glob of the mask files (one per date, dated like the images), or None (clouds given
        by a nodata value, see :func:`ingest_stack`).
    date_pattern, date_format : how dates are read from file names (:func:`parse_file_date`).

    Returns
    -------
    list of StackDate sorted by date.

    Raises
    ------
    InputError
        the folder is missing; no image file; a file name without a parseable date; two images
        (or two masks) of the same date (both named); an image without a mask file when
        ``masks`` is given (the image is named).
    ConfigError
        ``date_pattern`` is not a regular expression.
    """
    folder = require_utf8_path(folder, "stack folder")
    _compile(date_pattern, "tiles.<tile>.date_pattern")
    if not folder.is_dir():
        raise InputError(
            folder,
            "stack folder not found",
            "check the tile's products path (relative to the working directory)",
        )
    mask_paths = sorted(p for p in folder.glob(masks) if p.is_file()) if masks else []
    mask_set = set(mask_paths)
    images = sorted(p for p in folder.glob(files) if p.is_file() and p not in mask_set)
    for p in (*images, *mask_paths):
        require_utf8_path(p, "stack file")
    if not images:
        raise InputError(
            folder,
            f"no image file matching {files!r}",
            "put one GeoTIFF per date there, or fix the tile's 'files' glob",
        )

    img = _by_date(images, "image", folder, date_pattern, date_format)
    msk = _by_date(mask_paths, "mask", folder, date_pattern, date_format) if masks else {}
    if masks:
        for d, p in img.items():
            if d not in msk:
                raise InputError(
                    p,
                    f"no mask file for its date {d} (masks matching {masks!r} in {folder})",
                    "add the mask of this date (non-zero = masked), or remove the image",
                )
        extra = sorted(set(msk) - set(img))
        if extra:
            log.warning(
                "%d mask file(s) without an image ignored: %s",
                len(extra),
                ", ".join(str(msk[d]) for d in extra),
            )
    return [StackDate(date=d, path=img[d], mask=msk.get(d)) for d in sorted(img)]


@dataclass(frozen=True)
class _Entry:
    """One date to ingest: where its bands and its mask are."""

    date: dt.date
    path: Path
    band_indexes: tuple[int, ...]  # 1-based band indexes in path, in output band order
    mask: Path | None
    mask_index: int  # 1-based band of the mask file


def _open(path: Path, what: str):
    if not path.exists():
        raise InputError(path, f"{what} not found", "check the path in the configuration")
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioError as exc:
        raise InputError(
            path, f"{what} cannot be read by GDAL ({exc})", "replace it with a valid GeoTIFF"
        ) from None


def _check_grid(path: Path, src, ref_path: Path, ref) -> None:
    if src.crs != ref.crs:
        raise InputError(
            path,
            f"CRS {src.crs} differs from {ref.crs} of {ref_path}",
            "reproject every file of the tile to one CRS and grid (e.g. gdalwarp -t_srs -tr -te)",
        )
    if (src.width, src.height) != (ref.width, ref.height) or not src.transform.almost_equals(ref.transform):
        raise InputError(
            path,
            f"grid {src.width}x{src.height} {tuple(src.transform)[:6]} differs from "
            f"{ref.width}x{ref.height} {tuple(ref.transform)[:6]} of {ref_path}",
            "resample every file of the tile to one grid (same extent and pixel size)",
        )


def _select_bands(bands: Sequence[str], file_bands: Sequence[str] | None) -> tuple[list[str], list[int]]:
    bands = [str(b) for b in bands]
    if not bands:
        raise ConfigError("ingest.bands: at least one band is needed")
    if len(set(bands)) != len(bands):
        raise ConfigError(f"ingest.bands: duplicate band in {bands}")
    file_bands = list(bands) if file_bands is None else [str(b) for b in file_bands]
    if len(set(file_bands)) != len(file_bands):
        raise ConfigError(f"tiles.<tile>.bands: duplicate band in {file_bands}")
    missing = [b for b in bands if b not in file_bands]
    if missing:
        raise ConfigError(
            f"ingest.bands: {missing} not among the stack's bands {file_bands} (tiles.<tile>.bands)"
        )
    return bands, [file_bands.index(b) + 1 for b in bands]


#: band names read as surface reflectance (Sentinel-2 / Landsat style: B02, B8A, B11, ...).
_REFLECTANCE = re.compile(r"(?i)(B\d{1,2}A?|blue|green|red|nir|swir\d?|red_?edge\d?)")
#: band names read as a normalised index (-1..1).
_INDEX = re.compile(r"(?i).*(NDVI|NDWI|NDMI|NDRE|NBR|NDSI|EVI|SAVI).*")
#: the largest |stored| clear value of a band, over the whole stack, below which its kind cannot
#: be stored at this scale: reflectance 0.05 (500) or index 0.01 (100) x10000.
_MIN_TOP_STACK = {"reflectance": 500.0, "index": 100.0}
#: per date (fail fast): every clear value of a band rounding within +-10 (reflectance 0.001)
#: with at least this many clear values.
_MIN_TOP_DATE = 10.0
_MIN_COUNT = 100
#: more than this share of clear values beyond the int16 range: the scale is wrong the other way.
_MAX_CLIPPED = 0.01


def band_kind(name: str) -> str:
    """``"reflectance"``, ``"index"`` (normalised, -1..1) or ``"other"``, from a band name."""
    if _REFLECTANCE.fullmatch(name):
        return "reflectance"
    if _INDEX.fullmatch(name):
        return "index"
    return "other"


def _to_raw(
    values: np.ndarray, nodata: float | None, scale: float, offset: float, value_range: _Range
) -> tuple[np.ndarray, np.ndarray]:
    """File values [B, h, w] -> int16 ``round((value + offset) * scale)`` clipped to [-32767,
    32767], :data:`RAW_NODATA` where missing (nodata, NaN), and the missing mask; the clear
    values are added to ``value_range``. Integer files of at most 16 bits at scale 1 and
    offset 0 (reflectance x10000 already) take an integer path with the same result."""
    missing = np.zeros(values.shape, bool)
    if np.issubdtype(values.dtype, np.floating):
        missing |= ~np.isfinite(values)
    if nodata is not None and not np.isnan(nodata):
        missing |= values == nodata
    if np.issubdtype(values.dtype, np.integer) and values.dtype.itemsize <= 2 and scale == 1 and offset == 0:
        value_range.add_integers(values, missing)
        out = np.clip(values, RAW_NODATA + 1, _INT16_MAX).astype(np.int16, copy=False)
        out[missing] = RAW_NODATA
        return out, missing
    v = values.astype(np.float64)
    v[missing] = 0.0
    v += offset
    v *= scale
    value_range.add(values, v, missing)
    np.rint(v, out=v)
    np.clip(v, RAW_NODATA + 1, _INT16_MAX, out=v)
    out = v.astype(np.int16)
    out[missing] = RAW_NODATA
    return out, missing


class _Range:
    """Running statistics of the clear values of bands: raw min/max, largest |stored|, counts."""

    def __init__(self, n_bands: int) -> None:
        self.lo = np.full(n_bands, np.inf)
        self.hi = np.full(n_bands, -np.inf)
        self.top = np.zeros(n_bands)
        self.n = np.zeros(n_bands, dtype=np.int64)
        self.clipped = np.zeros(n_bands, dtype=np.int64)
        self.fraction = np.zeros(n_bands, dtype=bool)

    def add(self, values: np.ndarray, stored: np.ndarray, missing: np.ndarray) -> None:
        """values: [B, h, w] file values; stored: (values + offset) * scale before rounding;
        missing: [B, h, w]."""
        b = values.shape[0]
        v = values.reshape(b, -1).astype(np.float64)
        okf = ~missing.reshape(b, -1)
        a = np.where(okf, np.abs(stored.reshape(b, -1)), 0.0)
        self.n += okf.sum(axis=1)
        self.lo = np.minimum(self.lo, np.where(okf, v, np.inf).min(axis=1, initial=np.inf))
        self.hi = np.maximum(self.hi, np.where(okf, v, -np.inf).max(axis=1, initial=-np.inf))
        self.top = np.maximum(self.top, a.max(axis=1, initial=0.0))
        self.clipped += (a > _INT16_MAX + 0.5).sum(axis=1)
        self.fraction |= (okf & (a != np.rint(a))).any(axis=1)

    def add_integers(self, values: np.ndarray, missing: np.ndarray) -> None:
        """:meth:`add` for integer values stored as they are (scale 1, offset 0), in integers."""
        b = values.shape[0]
        if not missing.any():  # the common case: two passes over the file's integers
            v = values.reshape(b, -1)
            if v.shape[1] == 0:
                return
            lo, hi = v.min(axis=1).astype(np.float64), v.max(axis=1).astype(np.float64)
            self.n += v.shape[1]
            self.lo = np.minimum(self.lo, lo)
            self.hi = np.maximum(self.hi, hi)
            self.top = np.maximum(self.top, np.maximum(np.abs(lo), np.abs(hi)))
            if lo.min() < -_INT16_MAX or hi.max() > _INT16_MAX:
                self.clipped += ((v < -_INT16_MAX) | (v > _INT16_MAX)).sum(axis=1)
            return
        v = values.reshape(b, -1).astype(np.int32)
        okf = ~missing.reshape(b, -1)
        big = np.iinfo(np.int32).max
        count = okf.sum(axis=1)
        self.n += count
        lo = np.where(okf, v, big).min(axis=1, initial=big).astype(np.float64)
        hi = np.where(okf, v, -big).max(axis=1, initial=-big).astype(np.float64)
        lo[count == 0], hi[count == 0] = np.inf, -np.inf  # as add(): no clear value, no bound
        self.lo = np.minimum(self.lo, lo)
        self.hi = np.maximum(self.hi, hi)
        a = np.where(okf, np.abs(v), 0)
        self.top = np.maximum(self.top, a.max(axis=1, initial=0).astype(np.float64))
        self.clipped += (a > _INT16_MAX).sum(axis=1)

    def merge(self, other: _Range) -> None:
        self.lo = np.minimum(self.lo, other.lo)
        self.hi = np.maximum(self.hi, other.hi)
        self.top = np.maximum(self.top, other.top)
        self.n += other.n
        self.clipped += other.clipped
        self.fraction |= other.fraction


def _check_range(
    path: Path,
    bands: Sequence[str],
    rng: _Range,
    scale: float,
    offset: float,
    tile: str | None,
    *,
    whole: bool,
) -> None:
    """Stop when the stored values of a band cannot hold its kind (float 0-1 at scale 1, x10000
    at scale 10000).

    ``whole``: ``rng`` covers every date of the stack (the reflectance / index floors of
    ``_MIN_TOP_STACK`` apply), else one date (only the clear-cut cases, so that a cloudy date
    clear over water alone never stops the chain). Raises :class:`InputError` naming ``path``,
    the band, its observed range and the ``scale`` to set.
    """
    key = f"tiles.{tile}.scale" if tile else "the tile's scale"
    kinds = [band_kind(b) for b in bands]
    for b, band in enumerate(bands):
        kind = kinds[b]
        if whole:
            # reflectance: the brightest clear value of any reflectance band (water is dark in all).
            same = [i for i, k in enumerate(kinds) if k == kind]
            low = kind in _MIN_TOP_STACK and rng.n[b] > 0 and rng.top[same].max() < _MIN_TOP_STACK[kind]
            high = fractional = False
        else:
            enough = rng.n[b] >= _MIN_COUNT
            high = enough and rng.clipped[b] > _MAX_CLIPPED * rng.n[b]
            low = enough and kind != "other" and rng.top[b] < _MIN_TOP_DATE
            fractional = enough and kind == "other" and rng.fraction[b] and rng.top[b] < _MIN_TOP_DATE
        if not (low or high or fractional):
            continue
        peak = max(abs(rng.lo[b] + offset), abs(rng.hi[b] + offset))
        want = {"reflectance": "reflectance x10000 (0-10000)", "index": "index x10000 (-10000..10000)"}.get(
            kind, "int16 values without losing their precision"
        )
        suggest = 10.0 ** round(np.log10(10000 / peak)) if peak > 0 else None
        got = (
            f"{rng.clipped[b]} of {rng.n[b]} beyond the int16 range"
            if high
            else f"at most {rng.top[b]:.4g} in absolute value"
        )
        fix = f"set {key} to {suggest:g}" if suggest else f"check {key} and the band names"
        if suggest == 10000:
            fix += " (float reflectance 0-1 / index -1..1)"
        elif suggest == 1:
            fix += " (values already x10000)"
        raise InputError(
            path,
            f"band {band} ({kind}) holds clear values {rng.lo[b]:.6g} to {rng.hi[b]:.6g}"
            f"{' over all dates' if whole else ''}: with scale {scale:g} and offset {offset:g} they are "
            f"stored {got}, where raw.tif needs {want}",
            fix,
        )


def _write_raw(
    entries: list[_Entry],
    out_raw: Path,
    out_mask: Path,
    out_dates: Path,
    bands: list[str],
    nodata: float | None,
    scale: float,
    offset: float,
    block: int,
    tile: str | None,
) -> None:
    """Check every file against the first one's grid, then stream dates x windows into the outputs."""
    ref_path = entries[0].path
    n_dates, n_bands = len(entries), len(bands)
    base = _check_files(entries, nodata)
    log.info(
        "ingest %d dates (%s .. %s) of %s, bands %s, grid %dx%d, value x %g + %g",
        n_dates,
        entries[0].date,
        entries[-1].date,
        tile or ref_path.parent,
        ",".join(bands),
        base["width"],
        base["height"],
        scale,
        offset,
    )
    windows = list(block_windows(base["height"], base["width"], block))
    datestrs = [f"{e.date:%Y%m%d}" for e in entries]
    stack_range = _Range(n_bands)

    def write_date(raw, msk, d: int) -> int:
        value_range = _Range(n_bands)
        masked_count = _write_stack_date(raw, msk, d, entries[d], windows, nodata, scale, offset, value_range)
        _check_range(entries[d].path, bands, value_range, scale, offset, tile, whole=False)
        stack_range.merge(value_range)
        return masked_count

    def check_whole() -> None:
        where = ref_path if len({e.path for e in entries}) == 1 else ref_path.parent
        _check_range(where, bands, stack_range, scale, offset, tile, whole=True)

    tags = {
        "DATES": ",".join(datestrs),
        "BANDS": ",".join(bands),
        "SCALE": f"{scale:g}",
        "OFFSET": f"{offset:g}",
        "SOURCE": "stack",
    }
    if tile:
        tags["TILE"] = tile
    write_raw_series(
        (out_raw, out_mask, out_dates),
        base,
        datestrs,
        bands,
        write_date,
        tile=tile or "",
        labels=datestrs,
        tags=(tags, {"DATES": ",".join(datestrs), "CONVENTION": "1=masked,0=clear"}),
        logger=log,
        finish=check_whole,
    )


def _check_files(entries: list[_Entry], nodata: float | None) -> dict:
    """Check every image and mask file against the first image's grid and band count; warn when
    nothing can mark a pixel masked. Returns the first image's profile."""
    ref_path = entries[0].path
    with _open(ref_path, "image") as ref:
        base = ref.profile
        file_nodata = ref.nodata
        floating = np.issubdtype(np.dtype(ref.dtypes[0]), np.floating)
        counts: dict[Path, int] = {}  # band count of every file, each checked once against the grid
        for e in entries:
            for f, what, needed in (
                (e.path, "image", max(e.band_indexes)),
                (e.mask, "mask file", e.mask_index),
            ):
                if f is None:
                    continue
                if f not in counts:
                    with _open(f, what) as src:
                        _check_grid(f, src, ref_path, ref)
                        counts[f] = src.count
                if needed > counts[f]:
                    raise InputError(
                        f,
                        f"{counts[f]} band(s), but band {needed} is needed for {e.date}",
                        "give every date the bands named in the tile's 'bands' (and one mask band per date)",
                    )
    no_mask = all(e.mask is None for e in entries)
    if no_mask and nodata is None and file_nodata is None and not floating:
        log.warning(
            "no mask files, no nodata value and %s has no nodata tag: every pixel of every date is "
            "taken as clear (set the tile's 'masks' or 'nodata' if the files hold clouds)",
            ref_path,
        )
    return base


def _write_stack_date(
    raw,
    msk,
    d: int,
    e: _Entry,
    windows: list,
    nodata: float | None,
    scale: float,
    offset: float,
    value_range: _Range,
) -> int:
    """Write date ``d`` (entry ``e``) window by window: the bands converted by :func:`_to_raw`
    (their clear values added to ``value_range``) and the mask (mask file non-zero, or a band
    missing). Returns the masked count."""
    n_bands = len(e.band_indexes)
    indexes = list(range(d * n_bands + 1, (d + 1) * n_bands + 1))
    with _open(e.path, "image") as src:
        nd = nodata if nodata is not None else src.nodata
        msrc = _open(e.mask, "mask file") if e.mask is not None else None

        def write_window(win):
            try:
                values = src.read(list(e.band_indexes), window=win)
                m = msrc.read(e.mask_index, window=win) != 0 if msrc is not None else None
            except rasterio.errors.RasterioError as exc:
                bad = e.path if msrc is None else f"{e.path} or {e.mask}"
                raise InputError(bad, f"cannot be read by GDAL ({exc})", "replace the damaged file") from None
            out, missing = _to_raw(values, nd, scale, offset, value_range)
            mask = missing.any(axis=0)
            if m is not None:
                mask |= m
            raw.write(out, indexes=indexes, window=win)
            return mask

        try:
            return write_windows(msk, d, windows, write_window)
        finally:
            if msrc is not None:
                msrc.close()


def ingest_stack(
    dates: Sequence[StackDate],
    out_raw: str | os.PathLike,
    out_mask: str | os.PathLike,
    out_dates: str | os.PathLike,
    *,
    bands: Sequence[str],
    file_bands: Sequence[str] | None = None,
    nodata: float | None = None,
    scale: float = 1.0,
    offset: float = 0.0,
    block: int = 512,
    tile: str | None = None,
) -> None:
    """Stack per-date GeoTIFFs into ``raw.tif``, ``raw_mask.tif``, ``raw_dates.txt``.

    Parameters
    ----------
    dates : the dates and their files, from :func:`find_stack_files`.
    out_raw : ``raw.tif``: int16 [n_dates * len(bands), H, W], date-major, described
        ``YYYYMMDD_<band>``; value ``round((v + offset) * scale)`` clipped to [-32767, 32767]
        (e.g. ``scale=10000`` for float reflectance 0-1 or NDVI -1..1; ``scale=1`` for files
        already in reflectance x10000), -32768 where a band is nodata.
    out_mask : ``raw_mask.tif``: uint8 [n_dates, H, W], 1 = masked: the date's mask file is
        non-zero there, or any selected band is nodata (``nodata``, else the file's nodata tag;
        NaN and infinities of float files always), 0 = clear.
    out_dates : ``raw_dates.txt``, one ``YYYYMMDD`` per line.
    bands : band names written, in output order (the configuration's ``ingest.bands``).
    file_bands : names of the bands of each file in file order; default ``bands`` (the files
        hold exactly ``bands`` in that order).
    nodata : value marking clouds / nodata in the images; default the files' nodata tag.
    scale, offset : conversion of the file values to the int16 of ``raw.tif`` (see ``out_raw``).
    block : window size in pixels (memory bound).
    tile : tile name, written in the tags and logs.

    Raises
    ------
    InputError
        no date; an image or mask on another grid or CRS than the first image (both named); an
        image with fewer bands than named; an unreadable file; the clear values of a band that
        ``scale`` / ``offset`` cannot fit its kind (see :func:`band_kind`): on a date with at
        least 100 clear values, a reflectance / index band all stored within +-10, a band with
        more than 1% of its values beyond int16 (e.g. reflectance x10000 with ``scale`` 10000),
        or fractional values of another band all rounded within +-10; over all dates, the
        reflectance bands all stored below 500 (reflectance 0.05) or an index band below 100
        (e.g. float 0-1 with ``scale`` 1). The file (the folder for the whole stack), band,
        observed range and ``scale`` to set are named. Nothing is written then.
    ConfigError
        a band of ``bands`` absent from ``file_bands``, duplicate band names.
    """
    if not dates:
        raise InputError(
            out_raw, "no dated image given for this tile", "check the tile's products folder and 'files' glob"
        )
    bands, idx = _select_bands(bands, file_bands)
    entries = [
        _Entry(s.date, Path(s.path), tuple(idx), Path(s.mask) if s.mask else None, 1)
        for s in sorted(dates, key=lambda s: s.date)
    ]
    for a, b in zip(entries, entries[1:]):
        if a.date == b.date:
            raise InputError(b.path, f"same date {a.date} as {a.path}", "keep one image per date")
    with _open(entries[0].path, "image") as src:
        n_file = src.count
    n_named = len(file_bands) if file_bands is not None else len(bands)
    for e in entries:
        with _open(e.path, "image") as src:
            if src.count != n_named:
                raise InputError(
                    e.path,
                    f"{src.count} band(s), but {n_named} are named "
                    f"({', '.join(file_bands or bands)}; the first image has {n_file})",
                    "name every band of the files, in order, in the tile's 'bands'",
                )
    outs = (Path(out_raw), Path(out_mask), Path(out_dates))
    _write_raw(entries, *outs, bands, nodata, scale, offset, block, tile)


def ingest_stack_file(
    path: str | os.PathLike,
    dates_file: str | os.PathLike,
    out_raw: str | os.PathLike,
    out_mask: str | os.PathLike,
    out_dates: str | os.PathLike,
    *,
    bands: Sequence[str],
    file_bands: Sequence[str] | None = None,
    mask_file: str | os.PathLike | None = None,
    nodata: float | None = None,
    scale: float = 1.0,
    offset: float = 0.0,
    block: int = 512,
    tile: str | None = None,
) -> None:
    """Ingest one multi-band GeoTIFF time series in OTB's layout (date1b1 .. date1bN, date2b1 ..).

    Parameters
    ----------
    path : the multi-band GeoTIFF, ``n_dates * len(file_bands)`` bands.
    dates_file : one ``YYYYMMDD`` per line, strictly increasing, in band order (OTB's ``-id``).
    out_raw, out_mask, out_dates : as for :func:`ingest_stack`.
    bands, file_bands, nodata, scale, offset, block, tile : as for :func:`ingest_stack`.
    mask_file : optional GeoTIFF with one band per date (non-zero = masked, OTB's ``-mask``).

    Raises
    ------
    InputError
        a file missing or unreadable; a date that cannot be parsed or dates not increasing; a
        band count that is not ``n_dates * len(file_bands)``; a mask file with another band
        count than the number of dates, or on another grid or CRS; values that ``scale`` cannot
        fit (as for :func:`ingest_stack`).
    ConfigError
        as for :func:`ingest_stack`.
    """
    path, dates_file = Path(path), Path(dates_file)
    dates = read_date_list(dates_file)
    bands, idx = _select_bands(bands, file_bands)
    n_file = len(file_bands) if file_bands is not None else len(bands)
    with _open(path, "time series") as src:
        if src.count != len(dates) * n_file:
            raise InputError(
                path,
                f"{src.count} bands, expected {len(dates)} dates ({dates_file}) x {n_file} bands "
                f"({', '.join(file_bands or bands)}) = {len(dates) * n_file}",
                "give the dates file of this stack and name every band of one date in the tile's 'bands'",
            )
    mask = Path(mask_file) if mask_file is not None else None
    if mask is not None:
        with _open(mask, "mask file") as m:
            if m.count != len(dates):
                raise InputError(
                    mask,
                    f"{m.count} mask band(s) for {len(dates)} dates in {dates_file}",
                    "give one mask band per date (non-zero = masked)",
                )
    entries = [_Entry(d, path, tuple(t * n_file + i for i in idx), mask, t + 1) for t, d in enumerate(dates)]
    outs = (Path(out_raw), Path(out_mask), Path(out_dates))
    _write_raw(entries, *outs, bands, nodata, scale, offset, block, tile)
