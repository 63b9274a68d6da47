"""Stage 1, ingest: readers of the tile sources (Sentinel-2 L2A SAFE, Theia/MAJA, per-date
GeoTIFF stacks) into a tile's raw reflectance series and clear-sky mask.

:func:`ingest_tile` picks the reader of a tile's ``source`` (what the rule ``ingest`` runs).
"""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence

from cropchain.sources.sentinel2 import find_safe_products, ingest_safe, tile_id_of_name
from cropchain.sources.stack import (
    DEFAULT_DATE_FORMAT,
    DEFAULT_DATE_PATTERN,
    DEFAULT_FILES,
    find_stack_files,
    ingest_stack,
    ingest_stack_file,
)
from cropchain.sources.theia import DEFAULT_CLM_BITS, find_theia_products, ingest_theia


def ingest_tile(
    spec: Mapping,
    ingest: Mapping,
    outs: tuple[str | os.PathLike, str | os.PathLike, str | os.PathLike],
    *,
    tile: str,
    products: Sequence[str | os.PathLike],
    scl_masked: Sequence[int],
) -> None:
    """Ingest one tile, whatever its source, into ``raw.tif``, ``raw_mask.tif``, ``raw_dates.txt``.

    Parameters
    ----------
    spec : the tile's configuration (``tiles.<tile>``): ``source`` is ``safe`` or ``demo``
        (:func:`~cropchain.sources.sentinel2.ingest_safe`), ``theia``
        (:func:`~cropchain.sources.theia.ingest_theia`, ``clm_bits``), ``stack``
        (:func:`~cropchain.sources.stack.ingest_stack`: ``products``, ``files``, ``masks``,
        ``date_pattern``, ``date_format``) or ``stack_file``
        (:func:`~cropchain.sources.stack.ingest_stack_file`: ``file``, ``dates_file``,
        ``mask_file``); stacks also read ``bands``, ``nodata``, ``scale``, ``offset``.
    ingest : the ``ingest`` section (``bands``, ``resampling``, ``same_date``).
    outs : paths of ``raw.tif``, ``raw_mask.tif``, ``raw_dates.txt``.
    tile : the tile's name. A name that is an MGRS id (``T31TEJ``) must be the tile of every
        SAFE / Theia product; other names (``herault``) are free.
    products : the product folders (or files) of a SAFE, demo or Theia tile.
    scl_masked : SCL classes masked in SAFE products (see
        :func:`~cropchain.sources.sentinel2.scl_masked_for_kept` for monthly composites).

    Raises
    ------
    InputError, ConfigError
        as the reader of the source raises them.
    """
    source = spec["source"]
    expected = tile if tile_id_of_name(tile) else None
    if source in ("safe", "demo"):
        ingest_safe(
            find_safe_products(list(products)),
            *outs,
            bands=ingest["bands"],
            scl_masked_classes=scl_masked,
            resampling=ingest["resampling"],
            tile=expected,
            same_date=ingest.get("same_date", "error"),
        )
    elif source == "theia":
        ingest_theia(
            find_theia_products(list(products)),
            *outs,
            bands=ingest["bands"],
            clm_bits=spec.get("clm_bits", DEFAULT_CLM_BITS),
            resampling=ingest["resampling"],
            tile=expected,
        )
    else:
        _ingest_stack_source(spec, ingest["bands"], outs, tile)


def _ingest_stack_source(spec: Mapping, bands: Sequence[str], outs: tuple, tile: str) -> None:
    """:func:`ingest_tile` of a ``stack`` (per-date GeoTIFFs) or ``stack_file`` tile."""
    values = {
        "file_bands": spec.get("bands"),
        "nodata": spec.get("nodata"),
        "scale": spec.get("scale", 1.0),
        "offset": spec.get("offset", 0.0),
        "tile": tile,
    }
    if spec["source"] == "stack":
        dates = find_stack_files(
            spec["products"],
            files=spec.get("files", DEFAULT_FILES),
            masks=spec.get("masks"),
            date_pattern=spec.get("date_pattern", DEFAULT_DATE_PATTERN),
            date_format=spec.get("date_format", DEFAULT_DATE_FORMAT),
        )
        ingest_stack(dates, *outs, bands=bands, **values)
    else:
        ingest_stack_file(
            spec["file"], spec["dates_file"], *outs, bands=bands, mask_file=spec.get("mask_file"), **values
        )
