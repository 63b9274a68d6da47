"""Training patches for the convolutional networks, drawn on the fly from the feature rasters.

As in the seed method of Stoian et al. (Remote Sensing 2019) and its CNES patch
generator: the labels are *sparse* -- only the pixels of learning polygons carry a class,
every other pixel (validation polygons, unlabelled land, clouds without any clear date)
is ignored by the loss -- and the class of each patch is drawn at random first, then a
pixel of that class, then the patch around it, so that rare classes are seen as often as
common ones.

Per tile, :class:`TileSource` holds the label rasters of the labelled area (the bounding
box of its learning polygons, grown by a patch) and reads its features through windows
(:class:`FeatureBlocks`): 256 px blocks of features computed on the fly from the int16
gap-filled series, kept in a small LRU cache, so that memory is bounded by the cache
(:data:`PATCH_CACHE_MB`), not by the tile. :class:`PatchSampler` draws batches of
standardized patches with their label patches, flipped and rotated by multiples of 90
degrees. A part of the learning polygons is held out (:func:`select_holdout`) for early
stopping; :meth:`PatchSampler.holdout_windows` covers their pixels once each.
"""

from __future__ import annotations

import logging
import os
import zlib
from collections import OrderedDict
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
from affine import Affine
from rasterio.features import rasterize
from rasterio.windows import Window, from_bounds

from cropchain.errors import InputError
from cropchain.io.raster import block_windows, open_raster
from cropchain.reference.split import LEARN, read_split
from cropchain.series.features import FeatureSpec, features_path, open_features

log = logging.getLogger(__name__)

#: label of pixels the loss ignores (PyTorch's default ``ignore_index``)
IGNORE_INDEX = -100
#: nodata of the features (:data:`cropchain.series.features.FEATURES_NODATA`)
FEATURES_NODATA = -9999.0
#: side (px) of the feature blocks read and cached, on the grid of the labelled area
_READ_BLOCK = 256
#: default memory budget (MB) of a tile's feature block cache (:class:`FeatureBlocks`)
PATCH_CACHE_MB = 512


def read_learning_polygons(
    split_path: str | os.PathLike, crs: rasterio.crs.CRS | None = None
) -> gpd.GeoDataFrame:
    """The learning polygons (``split == "learn"``) of a run's ``split.gpkg``.

    Parameters
    ----------
    split_path : GeoPackage with layer ``split`` and columns ``polygon_id``, ``code``, ``split``.
    crs : reproject to this CRS (the feature raster's) when given.

    Returns
    -------
    geopandas.GeoDataFrame
        ``polygon_id`` (int64), ``code`` (int64), ``geometry``; sorted by ``polygon_id``;
        validation polygons never appear.

    Raises
    ------
    InputError
        missing or unreadable file, missing columns, unknown split values, no CRS.
    """
    split_path = Path(split_path)
    gdf = read_split(split_path)
    if gdf.crs is None:
        raise InputError(split_path, "split layer has no CRS", "rerun the reference fusion and split steps")
    gdf = gdf.loc[(gdf["split"].astype(str) == LEARN) & ~(gdf.geometry.is_empty | gdf.geometry.isna())]
    if crs is not None and not gdf.crs.equals(crs):
        gdf = gdf.to_crs(crs)
    gdf = gdf[["polygon_id", "code", "geometry"]].astype({"polygon_id": "int64", "code": "int64"})
    return gdf.sort_values("polygon_id").reset_index(drop=True)


def select_holdout(polygons: Sequence[gpd.GeoDataFrame], fraction: float, seed: int) -> list[np.ndarray]:
    """Hold out a part of each class's learning polygons for early stopping.

    Per class, the polygons of all tiles (ordered by tile then ``polygon_id``) are
    shuffled with the random stream ``(seed, "holdout", class)`` and the first
    ``round(fraction * n)`` are held out, at most ``n - 1`` so that every class keeps a
    training polygon (a class with 1 to 3 polygons at the default 0.15 keeps them all).

    Returns
    -------
    list of bool ``[n_polygons]`` per tile: True = held out.
    """
    out = [np.zeros(len(g), dtype=bool) for g in polygons]
    keys = [(t, i) for t, g in enumerate(polygons) for i in range(len(g))]
    codes = np.array([int(polygons[t]["code"].iat[i]) for t, i in keys], dtype=np.int64)
    for code in np.unique(codes):
        members = [keys[j] for j in np.flatnonzero(codes == code)]
        n = len(members)
        n_hold = min(int(np.floor(fraction * n + 0.5)), n - 1)
        if n_hold <= 0:
            continue
        rng = np.random.default_rng([int(seed), zlib.crc32(b"holdout"), int(code)])
        for j in rng.permutation(n)[:n_hold]:
            t, i = members[j]
            out[t][i] = True
    return out


def _crop_window(
    gdf: gpd.GeoDataFrame, transform: Affine, height: int, width: int, pad: int
) -> Window | None:
    """Pixel window of the polygons' bounds grown by ``pad`` px, clipped to the tile; None if empty."""
    if gdf.empty:
        return None
    win = from_bounds(*gdf.total_bounds, transform=transform)
    r0 = max(0, int(np.floor(win.row_off)) - pad)
    c0 = max(0, int(np.floor(win.col_off)) - pad)
    r1 = min(height, int(np.ceil(win.row_off + win.height)) + pad)
    c1 = min(width, int(np.ceil(win.col_off + win.width)) + pad)
    if r1 <= r0 or c1 <= c0:
        return None
    return Window(c0, r0, c1 - c0, r1 - r0)


class FeatureBlocks:
    """The features of a tile's labelled area, pixel-major, read by windows through an LRU block cache.

    The area is cut in the blocks of ``block_windows(h, w, 256)`` (on the area's own grid);
    a block is read whole (all features, one ``read`` of the feature source, computed on
    the fly from the gap-filled series for a :class:`~cropchain.series.features.FeatureSpec`),
    transposed to ``[hb, wb, F]``, standardized when :meth:`standardize` was called, and
    kept in a least-recently-used cache. Every value is thus computed from the same read
    windows as the whole-area read it replaces, and is the same float32 number.

    Memory: at most ``cache_mb`` MB of blocks (one block of ``256 x 256 x F x 4`` bytes,
    78 MB at 299 features, is always kept), plus the output of the current read.

    Parameters
    ----------
    source : open feature source (:func:`~cropchain.series.features.open_features`); it is
        closed by :meth:`close`.
    window : the labelled area in the source's pixel grid.
    n_features : ``F``, the number of features (bands) of the source.
    cache_mb : memory budget of the cache (MB).

    Indexing with two slices (``blocks[r0:r1, c0:c1]``, area-relative, step 1) returns
    float32 ``[r1 - r0, c1 - c0, F]``; ``np.asarray(blocks)`` reads the whole area (for
    small areas and tests only).
    """

    def __init__(self, source, window: Window, n_features: int, cache_mb: float = PATCH_CACHE_MB) -> None:
        self._source = source
        self.window = window
        self.shape = (int(window.height), int(window.width), int(n_features))
        self.cache_bytes = int(cache_mb * 2**20)
        self._cache: OrderedDict[tuple[int, int], np.ndarray] = OrderedDict()
        self._cached_bytes = 0
        self._scale: tuple[np.ndarray, np.ndarray] | None = None
        self.blocks_read = 0

    def standardize(self, mean: np.ndarray, inv: np.ndarray) -> None:
        """From now on, blocks are ``(x - mean) * inv`` (float32 ``[F]``), nodata and NaN 0."""
        self._scale = (mean, inv)
        self._cache.clear()
        self._cached_bytes = 0

    def _block(self, bi: int, bj: int) -> np.ndarray:
        """Block ``(bi, bj)`` of the area: float32 ``[hb, wb, F]``, from the cache or read."""
        key = (bi, bj)
        if key in self._cache:
            self._cache.move_to_end(key)
            return self._cache[key]
        h, w, _ = self.shape
        r0, c0 = bi * _READ_BLOCK, bj * _READ_BLOCK
        hb, wb = min(_READ_BLOCK, h - r0), min(_READ_BLOCK, w - c0)
        read = Window(self.window.col_off + c0, self.window.row_off + r0, wb, hb)
        block = np.ascontiguousarray(
            self._source.read(window=read, out_dtype=np.float32).transpose(1, 2, 0), dtype=np.float32
        )
        self.blocks_read += 1
        if self._scale is not None:
            mean, inv = self._scale
            bad = (block == FEATURES_NODATA) | np.isnan(block)
            block = (block - mean) * inv
            block[bad] = 0.0
        self._cache[key] = block
        self._cached_bytes += block.nbytes
        while self._cached_bytes > self.cache_bytes and len(self._cache) > 1:
            self._cached_bytes -= self._cache.popitem(last=False)[1].nbytes
        return block

    def __getitem__(self, key: tuple[slice, slice]) -> np.ndarray:
        rows, cols = key
        h, w, n_features = self.shape
        r0, r1, rstep = rows.indices(h)
        c0, c1, cstep = cols.indices(w)
        if rstep != 1 or cstep != 1:
            raise IndexError("FeatureBlocks takes slices of step 1")
        out = np.empty((max(0, r1 - r0), max(0, c1 - c0), n_features), dtype=np.float32)
        for bi in range(r0 // _READ_BLOCK, (r1 - 1) // _READ_BLOCK + 1 if r1 > r0 else 0):
            for bj in range(c0 // _READ_BLOCK, (c1 - 1) // _READ_BLOCK + 1 if c1 > c0 else 0):
                block = self._block(bi, bj)
                br, bc = bi * _READ_BLOCK, bj * _READ_BLOCK
                i0, i1 = max(r0, br), min(r1, br + block.shape[0])
                j0, j1 = max(c0, bc), min(c1, bc + block.shape[1])
                out[i0 - r0 : i1 - r0, j0 - c0 : j1 - c0] = block[i0 - br : i1 - br, j0 - bc : j1 - bc]
        return out

    def __array__(self, dtype=None, copy=None) -> np.ndarray:
        whole = self[:, :]
        return whole if dtype is None else whole.astype(dtype)

    def close(self) -> None:
        """Close the feature source and drop the cache."""
        log.debug("%s: %d feature blocks read", self._source.name, self.blocks_read)
        self._cache.clear()
        self._cached_bytes = 0
        self._source.close()


def _check_grids(
    tile: str, fsrc, vsrc, features: Path, validity: Path, pad: int, polygons: gpd.GeoDataFrame
) -> Window | None:
    """The labelled area (:func:`_crop_window`) once the feature names and grids are checked.

    Raises
    ------
    InputError
        bands without description, validity raster not on the features' grid.
    """
    if any(not n for n in fsrc.descriptions):
        raise InputError(
            features,
            "some bands have no description (feature name)",
            "rerun the features step, which names every band",
        )
    if (vsrc.width, vsrc.height, vsrc.crs) != (
        fsrc.width,
        fsrc.height,
        fsrc.crs,
    ) or not vsrc.transform.almost_equals(fsrc.transform):
        raise InputError(
            validity,
            f"validity raster of tile {tile} is not on the grid of {features}",
            "rerun gap filling and features for this tile",
        )
    return _crop_window(polygons, fsrc.transform, fsrc.height, fsrc.width, pad)


def _labels(
    polygons: gpd.GeoDataFrame,
    holdout: np.ndarray,
    transform: Affine,
    window: Window,
    clear: np.ndarray,
) -> tuple[np.ndarray, np.ndarray] | None:
    """int16 ``[h, w]`` training and held-out class codes of ``window`` (0 elsewhere).

    Polygons are burnt like the pixel samples (pixel centre inside); pixels that are not
    ``clear`` (bool ``[h, w]``) carry no label. None when no polygon covers a clear pixel.
    """
    index = rasterize(
        zip(polygons.geometry, range(1, len(polygons) + 1)),
        out_shape=clear.shape,
        transform=transform @ Affine.translation(window.col_off, window.row_off),
        fill=0,
        all_touched=False,
        dtype="int32",
    )
    index[~clear] = 0
    if not index.any():
        return None
    codes = np.concatenate([[0], polygons["code"].to_numpy(dtype=np.int16)])
    held = np.concatenate([[False], np.asarray(holdout, dtype=bool)])
    train = np.where(held[index], 0, codes[index]).astype(np.int16)
    hold = np.where(held[index], codes[index], 0).astype(np.int16)
    return train, hold


@dataclass
class TileSource:
    """The labelled area of one tile: its features, read by windows, and its label rasters.

    Attributes
    ----------
    tile : tile name.
    window : the area read, in the tile's pixel grid.
    features : float32 ``[h, w, F]``, pixel-major: :class:`FeatureBlocks` (windowed reads
        through a block cache, as built by :meth:`build`) or an array; raw features, then
        standardized by :meth:`standardize` (nodata -9999 becomes 0).
    train : int16 ``[h, w]`` class code of the training (not held-out) learning pixels, 0 elsewhere.
    holdout : int16 ``[h, w]`` class code of the held-out learning pixels, 0 elsewhere.
    """

    tile: str
    window: Window
    features: FeatureBlocks | np.ndarray
    train: np.ndarray
    holdout: np.ndarray
    feature_names: list[str] = field(default_factory=list)

    @classmethod
    def build(
        cls,
        tile: str,
        features: FeatureSpec | str | os.PathLike,
        validity: str | os.PathLike,
        polygons: gpd.GeoDataFrame,
        holdout: np.ndarray,
        *,
        pad: int,
        cache_mb: float = PATCH_CACHE_MB,
    ) -> TileSource | None:
        """Rasterize the learning polygons on the feature grid; features are read later, by windows.

        Polygons are burnt like the pixel samples (pixel centre inside,
        :mod:`cropchain.learning.samples`); pixels without any clear date (``validity == 0``) carry
        no label.

        Parameters
        ----------
        features, validity : the tile's features (a :class:`~cropchain.series.features.FeatureSpec`
            computed from the gap-filled series, or a float32 ``[F, H, W]`` GeoTIFF with band
            descriptions = feature names) and ``validity.tif`` of the tile, same grid.
        polygons : learning polygons of the tile (:func:`read_learning_polygons`, in the
            raster CRS).
        holdout : bool ``[len(polygons)]``, polygons held out for early stopping.
        pad : px added around the polygons' bounds (a patch side).
        cache_mb : memory budget of the feature block cache (:class:`FeatureBlocks`), MB.

        Returns
        -------
        TileSource, or None when no polygon covers a pixel of the tile. It keeps the
        feature source open: close it (:meth:`close`, or use it as a context manager).
        Memory: the int16 label rasters of the area, plus the block cache.

        Raises
        ------
        InputError
            unreadable rasters, grids that differ, bands without description.
        """
        validity = Path(validity)
        fsrc = open_features(features, f"feature raster of tile {tile}")
        try:
            with open_raster(validity, f"validity raster of tile {tile}") as vsrc:
                window = _check_grids(tile, fsrc, vsrc, features_path(features), validity, pad, polygons)
                if window is None:
                    fsrc.close()
                    return None
                clear = vsrc.read(1, window=window) > 0
            labels = _labels(polygons, holdout, fsrc.transform, window, clear)
            if labels is None:
                fsrc.close()
                return None
        except BaseException:
            fsrc.close()
            raise
        train, hold = labels
        h, w = train.shape
        names = list(fsrc.descriptions)
        blocks = FeatureBlocks(fsrc, window, len(names), cache_mb)
        log.info(
            "%s: labelled area %d x %d px at (%d, %d): %d training and %d held-out pixels",
            tile,
            w,
            h,
            int(window.col_off),
            int(window.row_off),
            int((train > 0).sum()),
            int((hold > 0).sum()),
        )
        return cls(tile, window, blocks, train, hold, names)

    def labelled_blocks(self) -> Iterator[tuple[slice, slice, np.ndarray]]:
        """(row slice, column slice, bool ``[hb, wb]`` mask of learning pixels) per 256 px block."""
        labelled = (self.train > 0) | (self.holdout > 0)
        for win in block_windows(*labelled.shape, _READ_BLOCK):
            rows = slice(int(win.row_off), int(win.row_off + win.height))
            cols = slice(int(win.col_off), int(win.col_off + win.width))
            yield rows, cols, labelled[rows, cols]

    def standardize(self, mean: np.ndarray, std: np.ndarray) -> None:
        """``(x - mean) / std`` per feature (as ``(x - mean) * (1 / std)`` in float32); nodata
        (-9999) and NaN become 0. Blocks read from now on are standardized; an array is
        standardized in place."""
        mean = mean.astype(np.float32)
        inv = (1.0 / std).astype(np.float32)
        if isinstance(self.features, FeatureBlocks):
            self.features.standardize(mean, inv)
            return
        step = max(1, (1 << 22) // max(1, self.features.shape[1] * self.features.shape[2]))
        for r0 in range(0, self.features.shape[0], step):
            block = np.asarray(self.features[r0 : r0 + step])
            bad = (block == FEATURES_NODATA) | np.isnan(block)
            block = (block - mean) * inv
            block[bad] = 0.0
            self.features[r0 : r0 + step] = block

    def close(self) -> None:
        """Close the feature source (nothing to do for array features)."""
        if isinstance(self.features, FeatureBlocks):
            self.features.close()

    def __enter__(self) -> TileSource:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def standardization(sources: Sequence[TileSource], groups: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Mean and standard deviation of every feature over the learning pixels of all tiles.

    Statistics are pooled over the features of a group (a band or index over its dates,
    :func:`cropchain.models.networks.channel_groups`), so that standardization keeps the
    shape of the time series. Nodata values are left out. The learning pixels are read
    block by block (:meth:`TileSource.labelled_blocks`), each block once.

    Returns
    -------
    mean, std : float32 ``[F]`` (std 1 where a group is constant).
    """
    n_features = len(groups)
    total = np.zeros(n_features)
    squares = np.zeros(n_features)
    count = np.zeros(n_features)
    for src in sources:
        for rows, cols, mask in src.labelled_blocks():
            if not mask.any():
                continue
            x = np.asarray(src.features[rows, cols])[mask].astype(np.float64)  # [n, F]
            ok = (x != FEATURES_NODATA) & ~np.isnan(x)
            x = np.where(ok, x, 0.0)
            total += x.sum(axis=0)
            squares += (x * x).sum(axis=0)
            count += ok.sum(axis=0)
    n_groups = int(groups.max()) + 1 if n_features else 0
    g_total = np.bincount(groups, total, n_groups)
    g_squares = np.bincount(groups, squares, n_groups)
    g_count = np.maximum(np.bincount(groups, count, n_groups), 1)
    g_mean = g_total / g_count
    g_std = np.sqrt(np.maximum(g_squares / g_count - g_mean**2, 0.0))
    g_std = np.where(g_std > 1e-9, g_std, 1.0)
    return g_mean[groups].astype(np.float32), g_std[groups].astype(np.float32)


@dataclass
class EvalWindow:
    """A fixed evaluation window: source index, top-left corner and the label patch to score."""

    source: int
    top: int
    left: int
    labels: np.ndarray  # int64 [P, P] class index or IGNORE_INDEX


class PatchSampler:
    """Batches of standardized patches with sparse class-index labels.

    Parameters
    ----------
    sources : tiles with standardized features (:meth:`TileSource.standardize`).
    classes : int class codes ``[K]``; label ``k`` of a patch is ``classes[k]``.
    patch_size : side ``P`` of the patches (px).
    rng : random generator (class, pixel, position and augmentation draws).
    augment : random flips and 90-degree rotations.

    Each patch: a class drawn uniformly among ``classes``, a training pixel of it drawn
    uniformly, the patch placed uniformly so that it holds that pixel (inside the
    labelled area; zero-padded where the area is smaller than a patch).
    """

    def __init__(
        self,
        sources: Sequence[TileSource],
        classes: Sequence[int],
        patch_size: int,
        rng: np.random.Generator,
        *,
        augment: bool = True,
    ) -> None:
        self.sources = list(sources)
        self.classes = np.asarray(classes, dtype=np.int64)
        self.patch_size = int(patch_size)
        self.rng = rng
        self.augment = augment
        self._lut = np.full(1 << 15, IGNORE_INDEX, dtype=np.int64)  # int16 code -> class index
        self._lut[self.classes] = np.arange(len(self.classes))
        self._lut[0] = IGNORE_INDEX
        self.pixels: list[np.ndarray] = []  # per class: int64 [n, 3] (source, row, col)
        for code in self.classes:
            found = [
                np.column_stack([np.full(len(r), s), r, c])
                for s, src in enumerate(self.sources)
                for r, c in [np.nonzero(src.train == code)]
            ]
            self.pixels.append(
                np.concatenate(found).astype(np.int64) if found else np.empty((0, 3), np.int64)
            )
        empty = [int(c) for c, p in zip(self.classes, self.pixels) if len(p) == 0]
        if empty:
            raise ValueError(f"classes {empty} have no training pixel")
        self.n_features = self.sources[0].features.shape[2]

    def class_index(self, codes: np.ndarray) -> np.ndarray:
        """int64 class indices of code rasters (0 and unknown codes -> :data:`IGNORE_INDEX`)."""
        codes = np.asarray(codes)
        out = np.full(codes.shape, IGNORE_INDEX, dtype=np.int64)
        ok = (codes > 0) & (codes < len(self._lut))
        out[ok] = self._lut[codes[ok]]
        return out

    def _corner(self, extent: int, position: int) -> int:
        p = self.patch_size
        if extent <= p:
            return 0
        return int(np.clip(position - self.rng.integers(p), 0, extent - p))

    def _extract(self, s: int, top: int, left: int, labels: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """[P, P, F] features (0-padded) and [P, P] int64 labels of the patch at (top, left)."""
        src, p = self.sources[s], self.patch_size
        h, w = src.train.shape
        hh, ww = min(p, h - top), min(p, w - left)
        x = np.zeros((p, p, self.n_features), dtype=np.float32)
        y = np.full((p, p), IGNORE_INDEX, dtype=np.int64)
        x[:hh, :ww] = src.features[top : top + hh, left : left + ww]
        y[:hh, :ww] = self.class_index(labels[top : top + hh, left : left + ww])
        return x, y

    def draw(self, n: int) -> tuple[np.ndarray, np.ndarray]:
        """``n`` training patches.

        Returns
        -------
        x : float32 ``[n, F, P, P]`` standardized features.
        y : int64 ``[n, P, P]`` class index of training pixels, :data:`IGNORE_INDEX` elsewhere
            (held-out, validation and unlabelled pixels).
        """
        p = self.patch_size
        xs = np.empty((n, p, p, self.n_features), dtype=np.float32)
        ys = np.empty((n, p, p), dtype=np.int64)
        for i in range(n):
            k = self.rng.integers(len(self.classes))
            s, r, c = self.pixels[k][self.rng.integers(len(self.pixels[k]))]
            src = self.sources[s]
            top, left = self._corner(src.train.shape[0], r), self._corner(src.train.shape[1], c)
            x, y = self._extract(int(s), top, left, src.train)
            if self.augment:
                turns, flip = int(self.rng.integers(4)), bool(self.rng.integers(2))
                x, y = np.rot90(x, turns, axes=(0, 1)), np.rot90(y, turns, axes=(0, 1))
                if flip:
                    x, y = x[:, ::-1], y[:, ::-1]
            xs[i], ys[i] = x, y
        return np.ascontiguousarray(xs.transpose(0, 3, 1, 2)), ys

    def class_frequencies(self, n_patches: int) -> np.ndarray:
        """Frequency ``[K]`` of each class among the labelled pixels of ``n_patches`` drawn
        patches (what the loss sees, as in the seed method's class statistics)."""
        counts = np.zeros(len(self.classes))
        for start in range(0, n_patches, 64):
            _, y = self.draw(min(64, n_patches - start))
            y = y[y != IGNORE_INDEX]
            counts += np.bincount(y, minlength=len(self.classes))
        return counts / max(counts.sum(), 1)

    def holdout_windows(self) -> list[EvalWindow]:
        """Patch windows covering every held-out pixel exactly once (fixed, not augmented).

        Held-out pixels are visited in row-major order; each one not yet covered gets the
        patch centred on it (shifted inside the labelled area), which scores the held-out
        pixels it covers that no earlier window scored.
        """
        p = self.patch_size
        out: list[EvalWindow] = []
        for s, src in enumerate(self.sources):
            labels = self.class_index(src.holdout)
            remaining = labels != IGNORE_INDEX
            h, w = labels.shape
            for r, c in zip(*np.nonzero(remaining)):
                if not remaining[r, c]:
                    continue
                top = 0 if h <= p else int(np.clip(r - p // 2, 0, h - p))
                left = 0 if w <= p else int(np.clip(c - p // 2, 0, w - p))
                patch = np.full((p, p), IGNORE_INDEX, dtype=np.int64)
                hh, ww = min(p, h - top), min(p, w - left)
                take = remaining[top : top + hh, left : left + ww]
                patch[:hh, :ww] = np.where(take, labels[top : top + hh, left : left + ww], IGNORE_INDEX)
                remaining[top : top + hh, left : left + ww] = False
                out.append(EvalWindow(s, top, left, patch))
        return out

    def window_batch(self, windows: Sequence[EvalWindow]) -> tuple[np.ndarray, np.ndarray]:
        """Features ``[n, F, P, P]`` and labels ``[n, P, P]`` of fixed windows."""
        xs = np.empty((len(windows), self.patch_size, self.patch_size, self.n_features), dtype=np.float32)
        for i, win in enumerate(windows):
            xs[i], _ = self._extract(win.source, win.top, win.left, self.sources[win.source].holdout)
        return np.ascontiguousarray(xs.transpose(0, 3, 1, 2)), np.stack([win.labels for win in windows])
