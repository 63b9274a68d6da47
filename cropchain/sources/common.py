"""What the tile readers share: the checks of a tile's products and the writer of the ingest contract.

Every reader (SAFE :mod:`~cropchain.sources.sentinel2`, Theia :mod:`~cropchain.sources.theia`,
GeoTIFF stacks :mod:`~cropchain.sources.stack`) writes the three files of DESIGN.md section 1,
following Orfeo ToolBox's conventions for image time series (as iota2 does):

* ``raw.tif``: int16, one band per (date, band), date-major (date1b1 .. date1bN, date2b1 ...),
  described ``YYYYMMDD_<band>``, :data:`RAW_NODATA` where a band has no value;
* ``raw_mask.tif``: uint8, one band per date, described ``YYYYMMDD``, 1 = masked, 0 = clear;
* ``raw_dates.txt``: one ``YYYYMMDD`` per line.

:func:`write_raw_series` writes them one date and one window at a time, atomically (nothing is
written when a reader raises); the reader gives what a date's windows hold (:func:`write_windows`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Callable, Sequence
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling
from rasterio.windows import Window
from tqdm import tqdm

from cropchain.errors import ConfigError, InputError
from cropchain.io.atomic import atomic_output
from cropchain.io.raster import geotiff_profile

log = logging.getLogger(__name__)

#: Value written in ``raw.tif`` where a band has no value (L2A DN 0, Theia -10000, a stack's
#: nodata); also the GeoTIFF nodata tag.
RAW_NODATA = -32768

#: ``raw.tif`` stores reflectance x this scale.
REFLECTANCE_SCALE = 10000


def unreadable(path: Path | str, exc: Exception) -> InputError:
    """The error of a product file GDAL cannot open or read (damaged or truncated download)."""
    return InputError(
        path, f"cannot be read by GDAL ({exc})", "download the product again; the file is damaged"
    )


def parse_resampling(name: str, valid: Sequence[str]) -> Resampling:
    """``ingest.resampling`` as a :class:`rasterio.enums.Resampling`.

    Raises
    ------
    ConfigError
        not a rasterio resampling name (the message lists ``valid``).
    """
    try:
        return Resampling[str(name)]
    except KeyError:
        raise ConfigError(
            f"ingest.resampling: unknown resampling {name!r} (valid: {', '.join(valid)})"
        ) from None


def check_one_tile(products: Sequence, tile: str | None) -> str:
    """The tile of a tile's products: ``tile`` when given (normalised, ``T31TEJ``), else that of
    the first product.

    Parameters
    ----------
    products : products sorted by sensing time, each with ``.tile`` and ``.path``.
    tile : the tile named in the configuration, or None.

    Raises
    ------
    InputError
        a product of another tile (the product and the expected tile are named).
    """
    expected = normalize_tile(tile) if tile else products[0].tile
    for p in products:
        if p.tile != expected:
            first = (
                f" (the tile named in the configuration, tiles.{tile})"
                if tile
                else f" (the tile of {products[0].path.name})"
            )
            raise InputError(
                p.path,
                f"product of tile {p.tile}, expected {expected}{first}",
                "give the products of one tile per ingest (one folder per tile), named after that tile",
            )
    return expected


def check_one_per_date(products: Sequence, what: str, fix: str) -> None:
    """Stop on two products of one date (sorted by sensing time, each with ``.date`` and
    ``.path``): :class:`InputError` naming both, ``"same <what> date ..."``, with ``fix``."""
    for a, b in zip(products, products[1:]):
        if a.date == b.date:
            raise InputError(b.path, f"same {what} date {a.date} as {a.path}", fix)


def normalize_tile(tile: str) -> str:
    """``"31TEJ"`` or ``"t31tej"`` -> ``"T31TEJ"``."""
    t = str(tile).strip().upper()
    return t if t.startswith("T") else "T" + t


def write_windows(
    msk, d: int, windows: Sequence[Window], write_window: Callable[[Window], np.ndarray]
) -> int:
    """Write one date window by window: ``write_window(win)`` writes the date's bands of ``raw.tif``
    over ``win`` and returns the bool mask [h, w] (True = masked), written here as band ``d + 1``
    of ``msk``. Returns the number of masked pixels of the date."""
    n_masked = 0
    for win in windows:
        mask = write_window(win)
        msk.write(mask.astype(np.uint8), d + 1, window=win)
        n_masked += int(mask.sum())
    return n_masked


def product_tags(
    tile: str, datestrs: Sequence[str], bands: Sequence[str], mask_tag: tuple[str, str], source: str | None
) -> tuple[dict[str, str], dict[str, str]]:
    """Tags of an L2A product series: ``raw.tif`` TILE, DATES, BANDS, SCALE (and SOURCE when
    given); ``raw_mask.tif`` TILE, DATES, ``mask_tag`` (what masks a pixel) and CONVENTION."""
    dates = ",".join(datestrs)
    raw_tags = {"TILE": tile, "DATES": dates, "BANDS": ",".join(bands), "SCALE": str(REFLECTANCE_SCALE)}
    if source:
        raw_tags["SOURCE"] = source
    mask_tags = {"TILE": tile, "DATES": dates, mask_tag[0]: mask_tag[1], "CONVENTION": "1=masked,0=clear"}
    return raw_tags, mask_tags


def write_raw_series(
    outs: tuple[str | os.PathLike, str | os.PathLike, str | os.PathLike],
    base: dict,
    datestrs: Sequence[str],
    bands: Sequence[str],
    write_date: Callable[[object, object, int], int],
    *,
    tile: str,
    labels: Sequence[str],
    tags: tuple[dict[str, str], dict[str, str]],
    logger: logging.Logger,
    finish: Callable[[], None] | None = None,
) -> None:
    """Write ``raw.tif``, ``raw_mask.tif`` and ``raw_dates.txt`` on the grid of ``base``, date by date.

    Parameters
    ----------
    outs : paths of ``raw.tif`` (int16 [len(datestrs) * len(bands), H, W], nodata
        :data:`RAW_NODATA`), ``raw_mask.tif`` (uint8 [len(datestrs), H, W]) and ``raw_dates.txt``.
    base : rasterio profile of the grid (crs, transform, width, height).
    datestrs : ``YYYYMMDD`` of each date, in output order.
    bands : band names, described ``YYYYMMDD_<band>``.
    write_date : ``write_date(raw, msk, d)`` writes the bands and mask of date ``d`` into the open
        datasets (usually through :func:`write_windows`) and returns its masked pixel count.
    tile : shown in the progress bar (``ingest <tile>``).
    labels : per date, the text logged before its masked share (``"20180123 Sentinel-2A"``).
    tags : GeoTIFF tags of the two rasters (:func:`product_tags` for L2A products).
    logger : the reader's logger (messages keep their origin).
    finish : called after the last date, before the tags (a check over all dates that may raise).

    The three files move into place together; an exception leaves none of them.
    """
    out_raw, out_mask, out_dates = outs
    n_dates, n_bands = len(datestrs), len(bands)
    raw_profile = geotiff_profile(base, count=n_dates * n_bands, dtype="int16", nodata=RAW_NODATA)
    mask_profile = geotiff_profile(base, count=n_dates, dtype="uint8", nodata=None)
    with (
        atomic_output(out_raw) as tmp_raw,
        atomic_output(out_mask) as tmp_mask,
        atomic_output(out_dates) as tmp_dates,
    ):
        with (
            rasterio.open(tmp_raw, "w", **raw_profile) as raw,
            rasterio.open(tmp_mask, "w", **mask_profile) as msk,
        ):
            for d, label in enumerate(tqdm(labels, desc=f"ingest {tile}".strip(), unit="date", disable=None)):
                n_masked = write_date(raw, msk, d)
                for b, band in enumerate(bands):
                    raw.set_band_description(d * n_bands + b + 1, f"{datestrs[d]}_{band}")
                msk.set_band_description(d + 1, datestrs[d])
                logger.info("%s: %.1f%% masked", label, 100.0 * n_masked / (base["width"] * base["height"]))
            if finish is not None:
                finish()
            raw.update_tags(**tags[0])
            msk.update_tags(**tags[1])
        tmp_dates.write_text("".join(s + "\n" for s in datestrs), encoding="utf-8")
    logger.info("wrote %s, %s, %s", out_raw, out_mask, out_dates)
