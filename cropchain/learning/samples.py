"""Pixel samples: the learning pixels of the split polygons with their feature time series.

iota2's sample extraction (``PolygonClassStatistics`` / ``SampleSelection`` /
``SampleExtraction`` in OTB): polygons are rasterized on the tile grid (pixel centre
inside the polygon, i.e. ``all_touched=False``), and the feature vector of every
learning pixel that has at least one clear date (after the per-class cap) is written to a
table. Features are computed from the gap-filled series at those pixels only
(:class:`cropchain.series.features.FeatureRaster`); validation pixels are not stored, since the
maps are evaluated against the validation polygons themselves (:mod:`cropchain.assessment.evaluate`).
Work is streamed by windows: memory is bounded by the window size, not the tile.

Output: a Parquet table (pyarrow) with columns ``tile``, ``polygon_id``, ``code``,
``split``, ``row``, ``col``, ``validity`` and one float32 column per feature (named by
the feature names, :func:`cropchain.series.features.feature_names`).
"""

from __future__ import annotations

import logging
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
from affine import Affine
from rasterio.features import rasterize
from rasterio.windows import Window
from shapely import box
from tqdm import tqdm

from cropchain.errors import ConfigError, InputError
from cropchain.io.atomic import atomic_output
from cropchain.io.raster import block_windows, open_raster
from cropchain.reference.split import LEARN, VALIDATION, read_split
from cropchain.series.features import (
    FeatureSpec,
    features_path,
    open_features,
    read_feature_pixels,
)

log = logging.getLogger(__name__)

META_COLUMNS = ["tile", "polygon_id", "code", "split", "row", "col", "validity"]
_SPLITS = (LEARN, VALIDATION)
_FLUSH_ROWS = 1 << 16  # rows buffered before a Parquet row group is written (x F float32)
_CHUNK_VALUES = 1 << 24  # float32 values read at once per window (64 MiB)
_SPLIT_DICTIONARY = pa.array(list(_SPLITS), type=pa.string())  # values of the split column


@dataclass
class _Tile:
    tile: str
    features: FeatureSpec | Path
    validity: Path
    split_path: Path
    polygons: gpd.GeoDataFrame  # polygon_id, code, split, geometry in the feature CRS
    ids: np.ndarray  # sorted polygon ids
    codes: np.ndarray  # code of ids[i]
    is_learn: np.ndarray  # bool, split of ids[i]


def _feature_names(path: Path, ds: rasterio.DatasetReader) -> list[str]:
    names = list(ds.descriptions)
    if any(not n for n in names):
        raise InputError(
            path,
            "some bands have no description (feature name)",
            "rerun the features step, which names every band",
        )
    if len(set(names)) != len(names):
        dup = sorted({n for n in names if names.count(n) > 1})
        raise InputError(path, f"duplicate band descriptions {dup}", "give every feature band a unique name")
    clash = set(names) & set(META_COLUMNS)
    if clash:
        raise InputError(
            path,
            f"band description(s) {sorted(clash)} clash with table columns",
            "rename these feature bands",
        )
    return names


def _open_tile(spec: dict) -> tuple[_Tile, list[str]]:
    """Check one tile's inputs and read its split polygons (in the feature CRS)."""
    missing = [k for k in ("tile", "features", "validity", "split") if k not in spec]
    if missing:
        raise ConfigError(f"samples tiles: entry {spec!r} lacks key(s) {missing}")
    tile = str(spec["tile"])
    features = (
        Path(spec["features"]) if isinstance(spec["features"], (str, os.PathLike)) else spec["features"]
    )
    validity, split_path = Path(spec["validity"]), Path(spec["split"])
    with (
        open_features(features, f"feature raster of tile {tile}") as fds,
        open_raster(validity, f"validity raster of tile {tile}") as vds,
    ):
        names = _feature_names(features_path(features), fds)
        if (vds.width, vds.height, vds.transform, vds.crs) != (fds.width, fds.height, fds.transform, fds.crs):
            raise InputError(
                validity,
                f"validity raster of tile {tile} is not on the grid of {features_path(features)}",
                "rerun the gap filling of this tile",
            )
        crs = fds.crs
    gdf = read_split(split_path)[["polygon_id", "code", "split", "geometry"]]
    if gdf["polygon_id"].duplicated().any() or (gdf["polygon_id"] <= 0).any():
        raise InputError(
            split_path, "polygon_id must be unique and > 0", "rerun the reference fusion and split steps"
        )
    if gdf.crs is None:
        raise InputError(split_path, "split layer has no CRS", "rerun the reference fusion and split steps")
    if not gdf.crs.equals(crs):
        log.info("%s: split polygons reprojected from %s to the feature grid CRS", tile, gdf.crs.to_string())
        gdf = gdf.to_crs(crs)
    gdf = (
        gdf.loc[~(gdf.geometry.is_empty | gdf.geometry.isna())]
        .sort_values("polygon_id")
        .reset_index(drop=True)
    )
    t = _Tile(
        tile=tile,
        features=features,
        validity=validity,
        split_path=split_path,
        polygons=gdf,
        ids=gdf["polygon_id"].to_numpy(dtype=np.int64),
        codes=gdf["code"].to_numpy(dtype=np.int64),
        is_learn=(gdf["split"].astype(str) == LEARN).to_numpy(),
    )
    return t, names


def _labelled(
    t: _Tile, block: int
) -> Iterator[tuple[Window, np.ndarray, np.ndarray, np.ndarray, np.ndarray]]:
    """Yield, per window with labelled clear pixels: window, rows, cols (window-relative,
    int64), index into ``t.ids`` (int64), validity (int16), pixels in row-major order."""
    sindex = t.polygons.sindex
    geoms = t.polygons.geometry.to_numpy()
    with rasterio.open(t.validity) as vds:  # on the feature grid (checked by _open_tile)
        windows = list(block_windows(vds.height, vds.width, block))
        for win in tqdm(windows, desc=f"samples {t.tile}", unit="window", disable=None, leave=False):
            # Window geometry with affine's `@` (rasterio.windows' helpers still use the
            # deprecated `*` and flood the logs with warnings).
            wtransform = vds.transform @ Affine.translation(win.col_off, win.row_off)
            (xa, ya), (xb, yb) = wtransform @ (0, 0), wtransform @ (win.width, win.height)
            hits = np.sort(
                sindex.query(box(min(xa, xb), min(ya, yb), max(xa, xb), max(ya, yb)), predicate="intersects")
            )
            if hits.size == 0:
                continue
            burned = rasterize(
                zip(geoms[hits], t.ids[hits].tolist()),
                out_shape=(int(win.height), int(win.width)),
                transform=wtransform,
                fill=0,
                all_touched=False,
                dtype="int32",
            )
            rows, cols = np.nonzero(burned)
            if rows.size == 0:
                continue
            validity = vds.read(1, window=win)[rows, cols]
            clear = validity > 0
            if not clear.any():
                continue
            rows, cols = rows[clear], cols[clear]
            index = np.searchsorted(t.ids, burned[rows, cols])
            yield (
                win,
                rows,
                cols,
                index,
                np.minimum(validity[clear].astype(np.int32), np.iinfo(np.int16).max).astype(np.int16),
            )


def _count(
    counts: dict, polygons: dict, tile: str, codes: np.ndarray, learn: np.ndarray, pids: np.ndarray
) -> None:
    """Add labelled pixels and their polygons to the per (class, split) tallies of the summary."""
    for code in np.unique(codes).tolist():
        for is_learn, label in ((True, LEARN), (False, VALIDATION)):
            m = (codes == code) & (learn == is_learn)
            if m.any():
                key = (code, label)
                counts[key] = counts.get(key, 0) + int(m.sum())
                polygons.setdefault(key, set()).update((tile, p) for p in np.unique(pids[m]).tolist())


def _cap_selection(tiles: list[_Tile], block: int, cap: int, seed: int) -> dict[int, np.ndarray]:
    """First pass for the learning cap: per class with more than ``cap`` learning pixels,
    a boolean array over its learning pixels (in traversal order) marking those kept."""
    counts: dict[int, int] = {}
    for t in tiles:
        for _win, _rows, _cols, index, _val in _labelled(t, block):
            learn = t.is_learn[index]
            codes, n = np.unique(t.codes[index][learn], return_counts=True)
            for c, k in zip(codes.tolist(), n.tolist()):
                counts[c] = counts.get(c, 0) + k
    rng = np.random.default_rng(seed)
    keep: dict[int, np.ndarray] = {}
    for code in sorted(counts):
        n = counts[code]
        if n > cap:
            flags = np.zeros(n, dtype=bool)
            flags[rng.choice(n, size=cap, replace=False)] = True
            keep[code] = flags
            log.info("class %d: %d learning pixels, %d kept (cap)", code, n, cap)
    return keep


def run_tiles(
    tiles: Sequence[str], features: Sequence[Any], validity: Sequence[Any], splits: Sequence[Any]
) -> list[dict]:
    """The ``tiles`` argument of :func:`extract_pixels` from per-tile lists in the same order:
    names, features (:class:`~cropchain.series.features.FeatureSpec` or path), validity and
    split paths (the rules ``samples`` and ``samples_presto``)."""
    return [
        dict(tile=t, features=f, validity=v, split=s) for t, f, v, s in zip(tiles, features, validity, splits)
    ]


def extract_pixels(
    tiles: list[dict],
    out_parquet: str | os.PathLike,
    *,
    max_learn_pixels_per_class: int | None = None,
    seed: int = 0,
    block: int = 1024,
) -> pd.DataFrame:
    """Extract the learning pixels of the split polygons with their features.

    Polygons are rasterized by window on each tile's grid (burn value ``polygon_id``,
    pixel centre rule ``all_touched=False``, later polygons win where polygons of one
    source overlap); pixels with validity 0 (no clear date) are dropped. The learning
    pixels (after the cap) are written with their features, computed at those pixels
    only; validation pixels are counted in the summary but not written (the maps are
    evaluated against the validation polygons, :mod:`cropchain.assessment.evaluate`).

    Parameters
    ----------
    tiles : one dict per tile with keys ``tile`` (name), ``features`` (a
        :class:`~cropchain.series.features.FeatureSpec`, the chain's way, or a float32 feature
        GeoTIFF with band descriptions = feature names; same names and order on every tile),
        ``validity`` (number of clear dates per pixel, same grid) and ``split``
        (GeoPackage layer ``split`` of :func:`cropchain.reference.split.split_polygons`).
    out_parquet : output Parquet file, written atomically.
    max_learn_pixels_per_class : keep at most this many learning pixels per class over
        all tiles, drawn at random (seeded); validation pixels are never capped.
        None: no cap.
    seed : seed of the cap draw.
    block : window size in pixels (memory bound: one window of labels plus one date of the
        series over the window, or 64 MiB of a stored feature raster).

    Returns
    -------
    pandas.DataFrame
        summary with columns ``code``, ``split``, ``n_pixels``, ``n_polygons``: the labelled
        pixels with a clear date per class and split (learning: after the cap, as written).

    Table written
    -------------
    ``tile`` (string), ``polygon_id`` (int32), ``code`` (int16), ``split`` (dictionary
    string, always ``learn``), ``row``, ``col`` (int32, pixel position in the tile),
    ``validity`` (int16, clear dates), then one float32 column per feature.

    Raises
    ------
    InputError
        missing/unreadable rasters or split, unnamed feature bands, validity not on the
        feature grid, feature names differing between tiles, no learning pixel extracted.
    ConfigError
        empty tile list, malformed tile entry, duplicate tile names, bad cap or block.
    """
    _check_extract_arguments(tiles, max_learn_pixels_per_class, block)
    opened, names = _open_tiles(tiles)
    cap = _LearningCap.draw(opened, block, max_learn_pixels_per_class, seed)
    schema = _table_schema(names)
    counts: dict[tuple[int, str], int] = {}
    polygons: dict[tuple[int, str], set] = {}
    n_total = 0

    with atomic_output(out_parquet) as tmp:
        with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
            buffer = _TableBuffer(writer)
            for t in opened:
                n_tile = _extract_tile(t, block, cap, buffer, schema, counts, polygons)
                if n_tile == 0:
                    log.warning(
                        "%s: no learning pixel with a clear date (polygons in %s)", t.tile, t.split_path
                    )
                else:
                    log.info("%s: %d learning pixel(s) extracted", t.tile, n_tile)
                n_total += n_tile
            buffer.flush()
            _check_extracted(n_total, opened)

    summary = _summary(counts, polygons)
    log.info("%d pixel(s) x %d feature(s) written to %s", n_total, len(names), out_parquet)
    return summary


def _check_extracted(n_total: int, opened: list[_Tile]) -> None:
    """At least one learning pixel was extracted (:class:`InputError` otherwise)."""
    if n_total == 0:
        raise InputError(
            ", ".join(str(t.split_path) for t in opened),
            "no learning pixel with a clear date on any tile",
            "check that the split polygons overlap the feature rasters and that validity is > 0 there",
        )


def _summary(counts: dict[tuple[int, str], int], polygons: dict[tuple[int, str], set]) -> pd.DataFrame:
    """The summary of :func:`extract_pixels` (pixels and polygons per class and split), logged."""
    summary = pd.DataFrame(
        [(code, split, n, len(polygons[(code, split)])) for (code, split), n in sorted(counts.items())],
        columns=["code", "split", "n_pixels", "n_polygons"],
    )
    for row in summary.itertuples(index=False):
        log.info(
            "class %d %s: %d pixel(s) from %d polygon(s)", row.code, row.split, row.n_pixels, row.n_polygons
        )
    return summary


def _check_extract_arguments(tiles: list[dict], max_learn_pixels_per_class: int | None, block: int) -> None:
    """A non-empty tile list, a cap >= 1 (or None) and a block >= 1 px."""
    if not tiles:
        raise ConfigError("samples: the list of tiles is empty")
    if max_learn_pixels_per_class is not None and int(max_learn_pixels_per_class) < 1:
        raise ConfigError(
            f"samples.max_learn_pixels_per_class: must be >= 1 or null, got {max_learn_pixels_per_class}"
        )
    if int(block) < 1:
        raise ConfigError(f"samples.block: must be >= 1 pixel, got {block}")


def _open_tiles(tiles: list[dict]) -> tuple[list[_Tile], list[str]]:
    """Open and check every tile (distinct names, the same feature names); their feature names."""
    opened: list[_Tile] = []
    names: list[str] | None = None
    for spec in tiles:
        t, t_names = _open_tile(spec)
        if any(o.tile == t.tile for o in opened):
            raise ConfigError(f"samples tiles: tile {t.tile!r} is listed twice")
        if names is None:
            names = t_names
        elif t_names != names:
            raise InputError(
                t.features,
                f"tile {t.tile} has features {t_names[:5]}... ({len(t_names)}) while tile {opened[0].tile} "
                f"has {names[:5]}... ({len(names)})",
                "compute the features of every tile with the same configuration (dates, bands, indices)",
            )
        opened.append(t)
    assert names is not None
    return opened, names


def _table_schema(names: list[str]) -> pa.Schema:
    """Arrow schema of the pixel table (see :func:`extract_pixels`)."""
    return pa.schema(
        [
            ("tile", pa.string()),
            ("polygon_id", pa.int32()),
            ("code", pa.int16()),
            ("split", pa.dictionary(pa.int8(), pa.string())),
            ("row", pa.int32()),
            ("col", pa.int32()),
            ("validity", pa.int16()),
            *[(n, pa.float32()) for n in names],
        ]
    )


class _LearningCap:
    """Second pass of the learning cap: applies :func:`_cap_selection`'s flags to the pixels
    of each window, in the same traversal order."""

    def __init__(self, keep: dict[int, np.ndarray]) -> None:
        self.keep = keep
        self.seen = {code: 0 for code in keep}

    @classmethod
    def draw(cls, tiles: list[_Tile], block: int, cap: int | None, seed: int) -> _LearningCap:
        """The pixels kept under ``cap`` learning pixels per class (None: no cap)."""
        return cls(_cap_selection(tiles, block, int(cap), seed) if cap else {})

    def select(self, codes: np.ndarray, learn: np.ndarray) -> np.ndarray | None:
        """Boolean ``[n]`` of the window's pixels kept (None: no cap, all kept)."""
        if not self.keep:
            return None
        keep = np.ones(codes.size, dtype=bool)
        for code in np.unique(codes[learn]).tolist():
            if code not in self.keep:
                continue
            sel = np.flatnonzero(learn & (codes == code))
            start = self.seen[code]
            keep[sel] = self.keep[code][start : start + sel.size]
            self.seen[code] = start + sel.size
        return keep


class _TableBuffer:
    """Window tables gathered and written by :data:`_FLUSH_ROWS` rows or more."""

    def __init__(self, writer: pq.ParquetWriter) -> None:
        self.writer = writer
        self.tables: list[pa.Table] = []
        self.rows = 0

    def add(self, table: pa.Table) -> None:
        self.tables.append(table)
        self.rows += table.num_rows
        if self.rows >= _FLUSH_ROWS:
            self.flush()

    def flush(self) -> None:
        if self.tables:
            self.writer.write_table(pa.concat_tables(self.tables))
        self.tables, self.rows = [], 0


def _extract_tile(
    t: _Tile,
    block: int,
    cap: _LearningCap,
    buffer: _TableBuffer,
    schema: pa.Schema,
    counts: dict,
    polygons: dict,
) -> int:
    """Count the labelled pixels of tile ``t`` and buffer its (capped) learning pixels with
    their features; returns the number of learning pixels buffered."""
    n_tile = 0
    with open_features(t.features) as fds:
        for win, rows, cols, index, validity in _labelled(t, block):
            codes = t.codes[index]
            learn = t.is_learn[index]
            keep = cap.select(codes, learn)
            if keep is not None:
                rows, cols, index, validity = rows[keep], cols[keep], index[keep], validity[keep]
                codes, learn = codes[keep], learn[keep]
                if rows.size == 0:
                    continue
            _count(counts, polygons, t.tile, codes, learn, t.ids[index])
            # only the (capped) learning pixels are stored: training reads nothing else
            rows, cols, index, validity, codes = (
                rows[learn],
                cols[learn],
                index[learn],
                validity[learn],
                codes[learn],
            )
            if rows.size == 0:
                continue
            values = read_feature_pixels(fds, win, rows, cols, _CHUNK_VALUES)
            split_idx = np.zeros(rows.size, dtype=np.int8)  # learn
            columns = [
                pa.array(np.full(rows.size, t.tile, dtype=object), type=pa.string()),
                pa.array(t.ids[index].astype(np.int32)),
                pa.array(codes.astype(np.int16)),
                pa.DictionaryArray.from_arrays(pa.array(split_idx), _SPLIT_DICTIONARY),
                pa.array((rows + int(win.row_off)).astype(np.int32)),
                pa.array((cols + int(win.col_off)).astype(np.int32)),
                pa.array(validity),
                *[pa.array(values[i]) for i in range(values.shape[0])],
            ]
            buffer.add(pa.Table.from_arrays(columns, schema=schema))
            n_tile += rows.size
    return n_tile
