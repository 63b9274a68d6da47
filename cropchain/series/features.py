"""Spectral features of a gap-filled time series, in iota2's layout, computed per window.

The chain stores no feature stack: :class:`FeatureRaster` computes the features of any
window of ``gapfilled.tif`` (int16) when samples, tiled inference or patch sampling read
them, with one definition for training and inference. The features are, as float32
reflectance 0-1 (iota2's default feature set):

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
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window
from tqdm import tqdm

from cropchain.errors import ConfigError, InputError
from cropchain.io.atomic import atomic_output
from cropchain.io.raster import block_windows, geotiff_profile, open_raster, read_dates
from cropchain.series.tile import GAPFILLED_NODATA

log = logging.getLogger(__name__)

#: nodata of ``features.tif``.
FEATURES_NODATA = -9999.0
#: reflectance scale of ``gapfilled.tif`` (int16 x10000).
REFLECTANCE_SCALE = 10000.0

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
        raise UnknownIndexError(
            f"unknown spectral index {', '.join(map(repr, unknown))}: "
            f"known indices are {', '.join(INDEX_BANDS)}"
        )
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
                log.warning(
                    "skipping index %s: band %s absent from the gap-filled bands %s",
                    name,
                    ", ".join(missing) if missing else "(any)",
                    ", ".join(bands),
                )
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


def _date_features(raw: np.ndarray, nodata: float | None, bands: list[str], usable: list[str]) -> np.ndarray:
    """Features of one date: raw int16 [B, ...] -> float32 [B + len(usable), ...]."""
    out = np.empty((len(bands) + len(usable),) + raw.shape[1:], dtype=np.float32)
    _date_features_into(raw, nodata, bands, usable, out[: len(bands)], list(out[len(bands) :]))
    return out


def _date_features_into(
    raw: np.ndarray,
    nodata: float | None,
    bands: list[str],
    usable: list[str],
    band_out: np.ndarray,
    index_out: list[np.ndarray],
) -> None:
    """Write the features of one date into given arrays (views of a window's feature block).

    raw : int16 ``[B, ...]`` reflectance x10000 of the date's bands; band_out : float32
    ``[B, ...]`` receives the reflectances (0-1); index_out : one float32 ``[...]`` array per
    index of ``usable``. Where a band is nodata its reflectance, and every index using it,
    is :data:`FEATURES_NODATA`. One pass per output and no copy of the block: the
    features of a window are written where they are read.
    """
    np.divide(raw, REFLECTANCE_SCALE, out=band_out, dtype=np.float32)
    missing = np.isnan(band_out) if nodata is None or np.isnan(nodata) else raw == nodata
    any_missing = bool(missing.any())
    pos = {b: i for i, b in enumerate(bands)}
    for out, name in zip(index_out, usable):
        needed = INDEX_BANDS[name]
        if needed is None:
            sel = [pos[b] for b in bands if b in REFLECTANCE_BANDS]
            refl = band_out if sel == list(range(len(bands))) else band_out[sel]
            np.einsum("b...,b...->...", refl, refl, out=out)
            np.sqrt(out, out=out)
            date_missing = missing[sel].any(axis=0) if any_missing else None
        else:
            a, b = band_out[pos[needed[0]]], band_out[pos[needed[1]]]
            den = a + b
            np.subtract(a, b, out=out)
            np.divide(out, den, out=out, where=den != 0)
            zero = den == 0
            if zero.any():
                out[zero] = 0.0
            date_missing = (missing[pos[needed[0]]] | missing[pos[needed[1]]]) if any_missing else None
        if date_missing is not None:
            out[date_missing] = FEATURES_NODATA
    if any_missing:
        band_out[missing] = FEATURES_NODATA


class FeatureRaster:
    """The features of a gap-filled series, computed window by window: never stored.

    A read-only, rasterio-like view (``descriptions``, ``count``, ``height``, ``width``,
    ``transform``, ``crs``, ``profile``, :meth:`read`) of the features that
    :func:`feature_names` lists, computed on the fly from windows of the int16 gap-filled
    series by :func:`_date_features`: samples, tiled inference and patch sampling all read
    features through it, so training and inference can never disagree (the scheme of
    iota2's streamed OTB feature pipelines, which write no feature stack).

    Parameters
    ----------
    gapfilled : ``gapfilled.tif``, int16 reflectance x10000, ``T * B`` bands date-major,
        nodata -32768.
    dates_file : ``dates.txt`` of the gap filling (``T`` lines ``YYYYMMDD``).
    bands : band names of one date in the order of ``gapfilled.tif`` (checked against its
        band descriptions where it has them).
    indices : spectral indices among ``NDVI``, ``NDWI``, ``brightness``; one whose bands are
        absent is skipped with a warning.

    Raises
    ------
    InputError
        raster or dates file missing / unreadable, band count not ``T * B``, descriptions
        not matching ``dates`` x ``bands``.
    ConfigError
        empty or repeated band names; :class:`UnknownIndexError` for an unknown index.
    """

    def __init__(
        self,
        gapfilled: str | os.PathLike,
        dates_file: str | os.PathLike,
        bands: Sequence[str],
        indices: Sequence[str] = DEFAULT_INDICES,
    ) -> None:
        self.path = Path(gapfilled)
        self.bands = list(bands)
        if not self.bands or len(set(self.bands)) != len(self.bands):
            raise ConfigError(f"feature bands {self.bands} must be a non-empty list of distinct band names")
        self.usable = _resolve_indices(self.bands, indices)
        self.dates = read_dates(dates_file)
        if not self.dates:
            raise InputError(dates_file, "dates file is empty", "rerun the gap filling")
        n_dates, n_bands = len(self.dates), len(self.bands)
        self._src = open_raster(self.path, "gap-filled time series")
        try:
            src = self._src
            if src.count != n_dates * n_bands:
                raise InputError(
                    self.path,
                    f"{src.count} bands, expected {n_dates} dates x {n_bands} bands "
                    f"({', '.join(self.bands)}) = {n_dates * n_bands}",
                    f"give the bands of one date in order and the dates file {dates_file} of this stack",
                )
            expected = [f"{d}_{b}" for d in self.dates for b in self.bands]
            if any(src.descriptions):
                for i, (got, want) in enumerate(zip(src.descriptions, expected), start=1):
                    if got != want:
                        raise InputError(
                            self.path,
                            f"band {i} is described {got!r}, expected {want!r}",
                            f"list the bands of one date in their order in the file, with {dates_file}",
                        )
        except BaseException:
            self._src.close()
            raise
        self.nodata = src.nodata if src.nodata is not None else GAPFILLED_NODATA
        self.descriptions = tuple(expected + [f"{d}_{i}" for i in self.usable for d in self.dates])
        self.count = len(self.descriptions)
        self.height, self.width = src.height, src.width
        self.transform, self.crs = src.transform, src.crs
        self.profile = geotiff_profile(src.profile, count=self.count, dtype="float32", nodata=FEATURES_NODATA)
        self.nodatavals = (FEATURES_NODATA,) * self.count
        self.name = str(self.path)
        self._series_buffer = np.empty(0, dtype=src.dtypes[0])  # grown by read()

    # feature index (0-based) -> (date index, position among the date's features)
    def _locate(self, i: int) -> tuple[int, int]:
        n_dates, n_bands = len(self.dates), len(self.bands)
        if i < n_dates * n_bands:
            return divmod(i, n_bands)
        k, t = divmod(i - n_dates * n_bands, n_dates)
        return t, n_bands + k

    def _plan(
        self, indexes: Sequence[int] | int | None
    ) -> tuple[list[int], dict[int, list[tuple[int, int]]]]:
        """1-based band indexes -> {date: [(output position, position among the date's features)]}."""
        if indexes is None:
            wanted = list(range(1, self.count + 1))
        elif isinstance(indexes, (int, np.integer)):
            wanted = [int(indexes)]
        else:
            wanted = [int(i) for i in indexes]
        bad = [i for i in wanted if not 1 <= i <= self.count]
        if bad:
            raise IndexError(f"band index {bad[0]} out of range 1..{self.count} ({self.path})")
        plan: dict[int, list[tuple[int, int]]] = {}
        for pos, i in enumerate(wanted):
            t, j = self._locate(i - 1)
            plan.setdefault(t, []).append((pos, j))
        return wanted, plan

    def _date_raw(self, t: int, window: Window | None) -> np.ndarray:
        n_bands = len(self.bands)
        return self._src.read(list(range(t * n_bands + 1, (t + 1) * n_bands + 1)), window=window)

    def read(
        self,
        indexes: Sequence[int] | int | None = None,
        window: Window | None = None,
        out_dtype: str | np.dtype = "float32",
        out: np.ndarray | None = None,
    ) -> np.ndarray:
        """Features of ``window`` (the whole grid by default), computed from the series.

        Parameters
        ----------
        indexes : 1-based feature band indexes (rasterio's convention; all by default).
        window : :class:`rasterio.windows.Window` of the grid.
        out_dtype : accepted for rasterio compatibility; features are float32.
        out : optional C-contiguous float32 ``[len(indexes), h, w]`` array to write into (as
            rasterio's ``out``): a caller reading window after window reuses one buffer
            instead of paying the page faults of a fresh one each time (about 0.4 s per
            512 px window of 468 features).

        Returns
        -------
        float32 ``[len(indexes), h, w]`` (``[h, w]`` for a single int index): reflectance
        0-1 and indices, :data:`FEATURES_NODATA` where the series is nodata. Memory: the
        output plus the int16 series of the window (one date of it for a subset of features).
        """
        wanted, plan = self._plan(indexes)
        if window is None:
            h, w = self.height, self.width
        else:
            h, w = int(window.height), int(window.width)
        if out is None:
            out = np.empty((len(wanted), h, w), dtype=np.float32)
        elif out.shape != (len(wanted), h, w) or out.dtype != np.float32 or not out.flags.c_contiguous:
            raise ValueError(
                f"out: expected a C-contiguous float32 {(len(wanted), h, w)} array, got {out.shape}"
            )
        n_dates, n_bands = len(self.dates), len(self.bands)
        if indexes is None:  # every feature, written in place date by date (the inference path)
            # one read of the window's series (int16), into a buffer kept from window to window
            size = self._src.count * h * w
            if self._series_buffer.size < size:
                self._series_buffer = np.empty(size, dtype=self._src.dtypes[0])
            series = self._series_buffer[:size].reshape(self._src.count, h, w)
            self._src.read(window=window, out=series)
            for t in range(n_dates):
                _date_features_into(
                    series[t * n_bands : (t + 1) * n_bands],
                    self.nodata,
                    self.bands,
                    self.usable,
                    out[t * n_bands : (t + 1) * n_bands],
                    [out[n_dates * n_bands + k * n_dates + t] for k in range(len(self.usable))],
                )
            return out
        for t, picks in plan.items():
            feats = _date_features(self._date_raw(t, window), self.nodata, self.bands, self.usable)
            for pos, j in picks:
                out[pos] = feats[j]
        if isinstance(indexes, (int, np.integer)):
            return out[0]
        return out

    def read_pixels(self, window: Window, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """All features of some pixels of ``window``: float32 ``[F, N]``.

        ``rows``, ``cols``: int ``[N]`` window-relative positions. Memory: one date of the
        series over the window, plus the ``[F, N]`` output.
        """
        out = np.empty((self.count, len(rows)), dtype=np.float32)
        _, plan = self._plan(None)
        for t, picks in plan.items():
            feats = _date_features(
                self._date_raw(t, window)[:, rows, cols], self.nodata, self.bands, self.usable
            )
            for pos, j in picks:
                out[pos] = feats[j]
        return out

    def close(self) -> None:
        self._src.close()

    def __enter__(self) -> FeatureRaster:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


@dataclass(frozen=True)
class FeatureSpec:
    """What defines the features of a tile: its gap-filled series, dates, bands and indices.

    The chain passes this (not a feature file) to samples, inference and patch sampling;
    :func:`open_features` turns it into a :class:`FeatureRaster`.
    """

    gapfilled: str | os.PathLike
    dates: str | os.PathLike
    bands: tuple[str, ...]
    indices: tuple[str, ...] = DEFAULT_INDICES

    def open(self) -> FeatureRaster:
        return FeatureRaster(self.gapfilled, self.dates, self.bands, self.indices)


def open_features(features: FeatureSpec | str | os.PathLike, what: str = "features"):
    """Open features for windowed reading.

    Parameters
    ----------
    features : a :class:`FeatureSpec` (computed on the fly from the gap-filled series, the
        chain's way) or the path of a feature GeoTIFF (float32, band descriptions = feature
        names, e.g. written by :func:`compute_features`).
    what : what the file is, for error messages.

    Returns
    -------
    :class:`FeatureRaster` or an open :class:`rasterio.DatasetReader`; both have
    ``descriptions``, ``read(indexes, window=...)``, grid attributes and are context managers.

    Raises
    ------
    InputError
        missing or unreadable inputs (see :class:`FeatureRaster`).
    """
    if isinstance(features, FeatureSpec) or not isinstance(features, (str, os.PathLike)):
        return (
            features.open()
        )  # a spec of features computed on the fly (also cropchain.learning.presto_features.PrestoSpec)
    return open_raster(features, what)


def features_path(features: FeatureSpec | str | os.PathLike) -> Path:
    """The file that names features in messages: the gap-filled series of a spec, else the path."""
    if isinstance(features, FeatureSpec):
        return Path(features.gapfilled)
    return Path(features) if isinstance(features, (str, os.PathLike)) else Path(features.path)


def read_feature_pixels(
    ds, window: Window, rows: np.ndarray, cols: np.ndarray, chunk_values: int = 1 << 24
) -> np.ndarray:
    """All features at some pixels of ``window``: float32 ``[F, N]``, from either kind of
    :func:`open_features` source (a stored raster is read by chunks of bands of at most
    ``chunk_values`` values)."""
    if isinstance(ds, FeatureRaster) or hasattr(ds, "read_pixels"):  # features computed on the fly
        return ds.read_pixels(window, rows, cols)
    values = np.empty((ds.count, len(rows)), dtype=np.float32)
    step = max(1, chunk_values // max(1, int(window.width) * int(window.height)))
    for b0 in range(0, ds.count, step):
        idx = list(range(b0 + 1, min(ds.count, b0 + step) + 1))
        values[b0 : b0 + len(idx)] = ds.read(idx, window=window, out_dtype="float32")[:, rows, cols]
    return values


def compute_features(
    gapfilled: str | os.PathLike,
    dates_file: str | os.PathLike,
    out_features: str | os.PathLike,
    *,
    bands: list[str],
    indices: Sequence[str] = DEFAULT_INDICES,
    block: int = 512,
) -> list[str]:
    """Export the features of a series as a float32 GeoTIFF (for inspection in QGIS or OTB).

    The chain itself stores no feature stack (:class:`FeatureRaster` computes features per
    window); this writes what it would read, streaming by windows.

    Parameters
    ----------
    gapfilled, dates_file, bands, indices : as :class:`FeatureRaster`.
    out_features : GeoTIFF written atomically: float32 ``[F, H, W]``, reflectance 0-1 and
        indices, bands named by :func:`feature_names`, nodata -9999.0 where the input is nodata.
    block : window size in pixels; memory is bounded by one window.

    Returns
    -------
    The feature names, in band order.

    Raises
    ------
    InputError, ConfigError, UnknownIndexError : as :class:`FeatureRaster`.
    """
    with FeatureRaster(gapfilled, dates_file, bands, indices) as fr:
        names = list(fr.descriptions)
        windows = list(block_windows(fr.height, fr.width, block))
        log.info(
            "features of %s: %d dates x %d bands + %s -> %d bands",
            gapfilled,
            len(fr.dates),
            len(fr.bands),
            ", ".join(fr.usable) or "no index",
            len(names),
        )
        with atomic_output(out_features) as tmp, rasterio.open(tmp, "w", **fr.profile) as dst:
            for i, name in enumerate(names, start=1):
                dst.set_band_description(i, name)
            for win in tqdm(windows, desc="features", unit="window", disable=None):
                dst.write(fr.read(window=win), window=win)
    log.info("wrote %s (%d bands)", out_features, len(names))
    return names
