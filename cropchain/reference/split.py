"""Learning/validation split of reference polygons, per class, seeded per run.

As in iota2 (``ratio`` and ``runs`` parameters), polygons -- not pixels -- are split, so
that pixels of one parcel never sit on both sides and the validation is not inflated by
spatial autocorrelation. Each run redraws the split with its own random stream, and the
accuracy of a chain is reported as the mean and spread over runs.
"""

from __future__ import annotations

import logging
import math
import os
import zlib
from pathlib import Path

import geopandas as gpd
import numpy as np
import pyogrio

from cropchain.errors import ConfigError, InputError
from cropchain.io.atomic import atomic_output
from cropchain.reference.fusion import read_reference

log = logging.getLogger(__name__)

LAYER = "split"
LEARN = "learn"
VALIDATION = "validation"
COLUMNS = ["polygon_id", "code", "name", "source", "area_m2", "split", "geometry"]
_REQUIRED = ["polygon_id", "code", "name", "source", "area_m2"]


def split_rng(seed: int, run: int, tile: str, code: int) -> np.random.Generator:
    """Random stream of one class of one tile in one run.

    Seeded from ``(seed, run, crc32(tile), code)`` through :class:`numpy.random.SeedSequence`,
    so the draw is reproducible across machines and Python sessions, differs between
    runs and tiles, and one class's draw does not depend on the other classes.
    """
    return np.random.default_rng([int(seed), int(run), zlib.crc32(tile.encode("utf-8")), int(code)])


def n_learning(n: int, ratio: float) -> int:
    """Number of learning polygons among ``n``: ``round(ratio * n)`` (halves up), kept
    within ``[1, n - 1]`` when ``n >= 2`` so both sets get at least one polygon; 1 when
    ``n == 1``."""
    if n <= 1:
        return n
    return min(max(int(math.floor(ratio * n + 0.5)), 1), n - 1)


def split_polygons(
    reference_gpkg: str | os.PathLike,
    out_gpkg: str | os.PathLike,
    *,
    ratio: float = 0.66,
    seed: int,
    run: int,
    tile: str,
) -> gpd.GeoDataFrame:
    """Split the reference polygons of a tile into learning and validation sets.

    Per class, polygons (sorted by ``polygon_id``) are shuffled with :func:`split_rng`
    and the first :func:`n_learning` go to learning, the rest to validation (iota2's
    per-class random split by polygon). A class with a single polygon goes to learning
    and is reported with a WARNING: it cannot be validated on this tile.

    Parameters
    ----------
    reference_gpkg : output of :func:`cropchain.reference.fusion.fuse_reference` (layer ``reference``).
    out_gpkg : output GeoPackage, written atomically, layer ``split``.
    ratio : fraction of each class's polygons used for learning, in (0, 1).
    seed : base seed of the chain (>= 0).
    run : run number (iota2's "seed" index, >= 0); each run draws its own split.
    tile : tile name (e.g. ``T31TEJ``), mixed into the seed.

    Returns
    -------
    geopandas.GeoDataFrame
        the reference columns (``polygon_id``, ``code``, ``name``, ``source``,
        ``area_m2``, geometry) plus ``split`` in {``"learn"``, ``"validation"``}, sorted
        by ``polygon_id``.

    Raises
    ------
    ConfigError
        ``ratio`` outside (0, 1), negative ``seed`` or ``run``.
    InputError
        missing/unreadable reference file, missing columns, no polygon, duplicate ids.
    """
    if not isinstance(ratio, (int, float)) or not 0.0 < float(ratio) < 1.0:
        raise ConfigError(f"split.ratio: must be a fraction in (0, 1), got {ratio!r}")
    if int(seed) < 0 or int(run) < 0:
        raise ConfigError(f"split.seed / run: must be >= 0, got seed={seed}, run={run}")
    ref = _read_reference(Path(reference_gpkg))
    ref["split"] = _draw_split(ref, float(ratio), seed, run, tile)
    out = gpd.GeoDataFrame(ref[COLUMNS], geometry="geometry", crs=ref.crs)

    with atomic_output(out_gpkg) as tmp:
        pyogrio.write_dataframe(out, tmp, layer=LAYER, driver="GPKG", promote_to_multi=True)
    log.info("%s run %d: split of %d polygon(s) written to %s", tile, run, len(out), out_gpkg)
    return out


def _read_reference(reference_gpkg: Path) -> gpd.GeoDataFrame:
    """The fused reference polygons (layer ``reference``), checked, sorted by ``polygon_id``."""
    ref = read_reference(reference_gpkg, _REQUIRED)
    if ref.empty:
        raise InputError(reference_gpkg, "no reference polygon", "check the reference sources of this tile")
    return ref


def _draw_split(ref: gpd.GeoDataFrame, ratio: float, seed: int, run: int, tile: str) -> np.ndarray:
    """``"learn"`` / ``"validation"`` of each polygon of ``ref`` (str [N]), drawn per class."""
    split = np.empty(len(ref), dtype=object)
    codes = ref["code"].to_numpy()
    for code in np.unique(codes):
        idx = np.flatnonzero(codes == code)  # sorted by polygon_id
        n = len(idx)
        k = n_learning(n, ratio)
        order = split_rng(seed, run, tile, int(code)).permutation(n)
        split[idx[order[:k]]] = LEARN
        split[idx[order[k:]]] = VALIDATION
        name = ref["name"].iloc[idx[0]]
        if n == 1:
            log.warning(
                "%s run %d: class %d %s has a single polygon (id %d): it goes to learning and "
                "cannot be validated on this tile",
                tile,
                run,
                code,
                name,
                int(ref["polygon_id"].iloc[idx[0]]),
            )
        log.info(
            "%s run %d: class %d %s: %d learning, %d validation polygon(s)", tile, run, code, name, k, n - k
        )
    return split.astype(str)


def read_split(split_gpkg: str | os.PathLike, which: str | None = None) -> gpd.GeoDataFrame:
    """The run's split of a tile (written by :func:`split_polygons`): ``polygon_id``, ``code``,
    ``name``, ``split`` (``learn`` / ``validation``), geometry, in the file's order; only the
    polygons of ``which`` when given. The one reader of split files (samples, patches, parcels,
    delineation, assessment).

    Raises
    ------
    InputError
        missing/unreadable file, missing columns, a split value other than learn / validation.
    """
    split_gpkg = Path(split_gpkg)
    if not split_gpkg.is_file():
        raise InputError(split_gpkg, "split polygons not found", "run the split step of this run first")
    try:
        gdf = pyogrio.read_dataframe(split_gpkg)
    except Exception as exc:  # pyogrio's DataSourceError / DataLayerError
        raise InputError(
            split_gpkg, f"cannot be read as a vector file ({exc})", "rerun the split step"
        ) from None
    missing = sorted({"polygon_id", "code", "split"} - set(gdf.columns))
    if missing:
        raise InputError(
            split_gpkg, f"missing column(s) {missing}", "rerun the split step (cropchain.reference.split)"
        )
    bad = sorted(set(gdf["split"].astype(str)) - {LEARN, VALIDATION})
    if bad:
        raise InputError(split_gpkg, f"unknown split value(s) {bad}", f"use {[LEARN, VALIDATION]}")
    if which is not None:
        gdf = gdf[gdf["split"] == which]
    return gdf.reset_index(drop=True)
