"""Presto embeddings of a tile as features, computed per window: never stored.

The Presto architectures (``presto_rf``, ``presto_xgboost``: a forest or gradient boosting
head on the 128-d embeddings, the WorldCereal recipe) read their features through
:class:`PrestoFeatures`, a source with the interface of
:class:`cropchain.series.features.FeatureRaster` (``descriptions``, grid attributes, ``read(window)``,
``read_pixels``): :mod:`cropchain.learning.samples` extracts the learning pixels' embeddings and
:func:`cropchain.mapping.classify.classify_tile` maps the tile (margin 0) unchanged. Embeddings are
not written for a tile (128 float32 per pixel: 61 GB for a 10980 x 10980 tile).

For a window the features are computed from the tile's *raw* series (``raw.tif``,
``raw_mask.tif``, ``raw_dates.txt``), whatever ``gapfill.temporal`` the tile uses for the
other architectures:

1. monthly median composites of the clear observations
   (:func:`cropchain.series.composite.composite_series`, the ``monthly_median`` step's function) over
   ``months`` months (12 by default, as in Presto's pre-training) starting with the month of
   ``start``;
2. months without a clear observation at a pixel are masked
   (:func:`cropchain.series.composite.clear_months`): Presto does not see the filled values;
3. latitude / longitude of each pixel centre from the tile's geotransform;
4. :func:`cropchain.models.presto.embed_series` -> float32 ``[128]`` per pixel, named
   ``presto_000`` ... ``presto_127``; :data:`cropchain.series.features.FEATURES_NODATA` (-9999) where
   the pixel has no clear observation in the months.
"""

from __future__ import annotations

import datetime as dt
import logging
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import rasterio
from rasterio.windows import Window

from cropchain.errors import ConfigError, InputError
from cropchain.io.raster import geotiff_profile, open_raster
from cropchain.series.composite import clear_months, composite_series, month_grid
from cropchain.series.dates import parse_date
from cropchain.series.features import FEATURES_NODATA
from cropchain.series.tile import GAPFILLED_NODATA, check_inputs, to_int16

log = logging.getLogger(__name__)

#: names of the embedding features (the columns of the pixel table, the model's feature_names)
EMBEDDING_NAMES = tuple(f"presto_{i:03d}" for i in range(128))


@dataclass(frozen=True)
class PrestoSpec:
    """What defines the Presto features of a tile (the counterpart of
    :class:`cropchain.series.features.FeatureSpec`); :meth:`open` gives a :class:`PrestoFeatures`.

    Parameters
    ----------
    raw, mask, raw_dates : the tile's ingest outputs (``raw.tif`` int16 reflectance x10000,
        ``T * B`` bands date-major; ``raw_mask.tif`` uint8 ``T`` bands, 0 = clear;
        ``raw_dates.txt``).
    weights : Presto's ``default_model.pt``; sha256 : its expected sha256 (checked on open).
    start : first composite month (any date in it, ``YYYY-MM-DD`` or a date).
    months : number of monthly composites (1-24; 12 in Presto's pre-training).
    batch_size : pixels per forward pass of the encoder.
    device : ``auto`` (a CUDA GPU when present, else the CPU), ``cpu`` or ``cuda[:N]``.
    inputs : the encoder's inputs instead of its embeddings (for
        ``presto_finetune``, whose model runs the encoder itself;
        :func:`cropchain.models.presto.input_names`); the encoder is not loaded.
    """

    raw: str | os.PathLike
    mask: str | os.PathLike
    raw_dates: str | os.PathLike
    weights: str | os.PathLike
    sha256: str | None
    start: str | dt.date
    months: int = 12
    batch_size: int = 256
    device: str = "auto"
    inputs: bool = False

    @property
    def path(self) -> Path:
        """The file that names these features in messages (``raw.tif``)."""
        return Path(self.raw)

    def open(self) -> PrestoFeatures:
        return PrestoFeatures(self)


def presto_spec(
    raw: str | os.PathLike,
    mask: str | os.PathLike,
    raw_dates: str | os.PathLike,
    weights: str | os.PathLike,
    presto: dict,
    start: str | dt.date,
    *,
    inputs: bool = False,
) -> PrestoSpec:
    """The :class:`PrestoSpec` of a tile from its ingest outputs, the weights file and the
    configuration's ``presto`` section (``sha256``, ``months``, ``batch_size``, ``device``);
    ``inputs``: the encoder's inputs instead of its embeddings."""
    return PrestoSpec(
        str(raw),
        str(mask),
        str(raw_dates),
        str(weights),
        presto.get("sha256"),
        start,
        int(presto.get("months", 12)),
        int(presto.get("batch_size", 256)),
        str(presto.get("device", "auto")),
        bool(inputs),
    )


class PrestoFeatures:
    """The 128 Presto embeddings of a tile, computed window by window from its raw series
    (or, with ``spec.inputs``, the encoder's inputs: :func:`cropchain.models.presto.input_names`).

    A read-only, rasterio-like view with the interface of
    :class:`cropchain.series.features.FeatureRaster` (``descriptions`` = :data:`EMBEDDING_NAMES`,
    ``count``, ``height``, ``width``, ``transform``, ``crs``, ``profile``, :meth:`read`,
    :meth:`read_pixels`, context manager). The encoder is loaded once (weights checked against
    their sha256) on the device of ``spec.device``.

    Raises
    ------
    InputError
        raw series, mask or dates inconsistent (:func:`cropchain.series.tile.check_inputs`), a band
        Presto reads missing from the series, no raw date in the months, weights missing or
        with another sha256 (:func:`cropchain.models.presto.load_presto`).
    ConfigError
        ``months`` outside 1-24, a bad ``start`` or ``device``.
    """

    def __init__(self, spec: PrestoSpec) -> None:
        from cropchain.models.presto import (
            MAX_TIMESTEPS,
            S2_BANDS,
            input_names,
            load_presto,
            resolve_device,
        )

        self.spec = spec
        self.path = Path(spec.raw)
        self.name = str(self.path)
        if not 1 <= int(spec.months) <= MAX_TIMESTEPS:
            raise ConfigError(
                f"presto.months: {spec.months}, Presto takes 1 to {MAX_TIMESTEPS} monthly composites"
            )
        self.dates, self.bands, profile = check_inputs(self.path, Path(spec.mask), Path(spec.raw_dates))
        missing = [b for b in S2_BANDS if b not in self.bands]
        if missing:
            raise InputError(
                self.path,
                f"Presto reads the bands {', '.join(S2_BANDS)}; the series has {', '.join(self.bands)}",
                f"ingest the missing band(s) {', '.join(missing)} (ingest.bands)",
            )
        first = parse_date(spec.start, "presto start")
        end = dt.date(
            first.year + (first.month - 1 + int(spec.months) - 1) // 12,
            (first.month - 1 + int(spec.months) - 1) % 12 + 1,
            1,
        )
        self.months = month_grid(first, end, 15)
        months_of = {(m.year, m.month) for m in self.months}
        self._used = np.array(
            [i for i, d in enumerate(self.dates) if (d.year, d.month) in months_of], dtype=np.intp
        )
        if self._used.size == 0:
            raise InputError(
                spec.raw_dates,
                f"no acquisition date in the Presto months {self.months[0]:%Y-%m} .. {self.months[-1]:%Y-%m}",
                "set dates.start to the first month of the images",
            )
        n_bands = len(self.bands)
        self._band_rows = [int(t) * n_bands + b + 1 for t in self._used for b in range(n_bands)]
        self._mask_rows = [int(t) + 1 for t in self._used]
        self._sub_dates = [self.dates[i] for i in self._used]
        self._order = [self.bands.index(b) for b in S2_BANDS]
        self.device = resolve_device(spec.device)
        self.encoder = None if spec.inputs else load_presto(spec.weights, spec.sha256).to(self.device)
        self._src = open_raster(self.path, "raw time series")
        self._msk = open_raster(spec.mask, "raw mask")
        self._src_nodata = profile.get("nodata")
        self.descriptions = input_names(self.months) if spec.inputs else EMBEDDING_NAMES
        self.count = len(self.descriptions)
        self.height, self.width = self._src.height, self._src.width
        self.transform, self.crs = self._src.transform, self._src.crs
        self.profile = geotiff_profile(profile, count=self.count, dtype="float32", nodata=FEATURES_NODATA)
        self.nodatavals = (FEATURES_NODATA,) * self.count
        log.info(
            "Presto %s of %s: %d dates in %d months (%s .. %s)%s",
            "encoder inputs" if spec.inputs else "features",
            self.path,
            self._used.size,
            len(self.months),
            f"{self.months[0]:%Y-%m}",
            f"{self.months[-1]:%Y-%m}",
            "" if spec.inputs else f", encoder on {self.device}",
        )

    def _composites(
        self, window: Window | None, rows: np.ndarray | None = None, cols: np.ndarray | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """int16 ``[N, M, 10]`` composites (bands of S2_BANDS) and bool ``[N, M]`` clear months
        of the window's pixels (row-major), or of ``rows``, ``cols`` within it."""
        t = self._used.size
        values = self._src.read(self._band_rows, window=window)
        valid = self._msk.read(self._mask_rows, window=window) == 0
        if rows is not None:
            values, valid = values[:, rows, cols], valid[:, rows, cols]
        n = valid[0].size
        values = values.reshape(t, len(self.bands), n)
        valid = valid.reshape(t, n)
        if self._src_nodata is not None:
            valid &= ~(values == self._src_nodata).any(axis=1)
        comp = to_int16(
            composite_series(values[:, self._order], valid, self._sub_dates, self.months)
        )  # [M, 10, N]
        clear = clear_months(valid, self._sub_dates, self.months)  # [M, N]
        return comp.transpose(2, 0, 1), clear.T

    def _embed(self, comp: np.ndarray, clear: np.ndarray, latlon: np.ndarray) -> np.ndarray:
        """float32 ``[128, N]`` embeddings (``[M * 11 + 2, N]`` encoder inputs with
        ``spec.inputs``), FEATURES_NODATA where no month is clear."""
        from cropchain.models.presto import clear_timesteps, embed_series

        if self.spec.inputs:
            ok = clear_timesteps(comp, clear, GAPFILLED_NODATA)  # [N, M], what the encoder sees
            cube = np.concatenate([comp.astype(np.float32), ok[:, :, None].astype(np.float32)], axis=2)
            out = np.concatenate([cube.reshape(len(cube), -1), np.asarray(latlon, np.float32)], axis=1)
            out[~ok.any(axis=1)] = FEATURES_NODATA
            return np.ascontiguousarray(out.T)

        emb = embed_series(
            comp,
            clear,
            latlon,
            self.months,
            self.encoder,
            batch_size=self.spec.batch_size,
            nodata=GAPFILLED_NODATA,
        )
        emb[np.isnan(emb)] = FEATURES_NODATA
        return np.ascontiguousarray(emb.T)

    def _latlon(self, window: Window | None) -> np.ndarray:
        from cropchain.models.presto import pixel_latlon

        if window is None:
            window = Window(0, 0, self.width, self.height)
        transform = rasterio.windows.transform(window, self.transform)
        return pixel_latlon(transform, self.crs, int(window.height), int(window.width))  # [2, h, w]

    def read(
        self,
        indexes: Sequence[int] | int | None = None,
        window: Window | None = None,
        out_dtype: str | np.dtype = "float32",
    ) -> np.ndarray:
        """Embeddings of ``window`` (the whole grid by default).

        Parameters
        ----------
        indexes : 1-based feature indexes (all by default); window : a window of the grid;
        out_dtype : accepted for rasterio compatibility (float32).

        Returns
        -------
        float32 ``[len(indexes), h, w]`` (``[h, w]`` for a single int index), -9999 where the
        pixel has no clear month (``[M * 11 + 2, h, w]`` encoder inputs with ``spec.inputs``).
        Memory: the window's raw series plus its composites.
        """
        h, w = (self.height, self.width) if window is None else (int(window.height), int(window.width))
        comp, clear = self._composites(window)
        out = self._embed(comp, clear, self._latlon(window).reshape(2, -1).T).reshape(self.count, h, w)
        if indexes is None:
            return out
        if isinstance(indexes, (int, np.integer)):
            return out[int(indexes) - 1]
        return out[[int(i) - 1 for i in indexes]]

    def read_pixels(self, window: Window, rows: np.ndarray, cols: np.ndarray) -> np.ndarray:
        """Embeddings (or inputs) of some pixels of ``window``: float32 ``[F, N]`` (``rows``, ``cols``:
        int ``[N]`` window-relative positions); only those pixels go through the encoder."""
        comp, clear = self._composites(window, rows, cols)
        latlon = self._latlon(window)[:, rows, cols].T
        return self._embed(comp, clear, latlon)

    def close(self) -> None:
        self._src.close()
        self._msk.close()

    def __enter__(self) -> PrestoFeatures:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
