"""Parcel dataset: one image-patch time series per reference parcel (Sainte Fare Garnot et al., IGARSS 2019).

For each reference polygon of a tile, the bounding box of its pixels in the gap-filled
series is cropped and resized to ``S x S`` px (32 in the paper); pixels outside the parcel
are set to zero. The dataset is built once per tile, independently of the runs; each run
labels it with its own learning/validation split and normalizes it with the statistics of
its own learning parcels (:func:`normalization_stats`, :func:`normalize`).

File layout (per tile, beside ``gapfilled.tif``)
------------------------------------------------
``parcels.parquet``
    the index, one row per patch, in patch order: ``polygon_id`` (int64), ``code`` (int32,
    reference class), ``name``, ``n_pixels`` (pixels of the parcel on the tile grid),
    ``n_valid_pixels`` (of them, with at least one clear date), ``row_off``, ``col_off``,
    ``height``, ``width`` (the cropped window on the tile grid, px). Its schema metadata
    ``cropchain`` (JSON) holds ``tile``, ``dates`` (``YYYYMMDD``, ``T``), ``bands``
    (``C``), ``patch_size`` (``S``), ``scale`` (10000) and ``format_version``. Written
    last: it marks a complete dataset.
``parcels.npy``
    int16 ``[N, T, C, S, S]``, reflectance x 10000 (``gapfilled.tif``'s scale), 0 outside
    the parcel; a plain ``.npy`` so that it is read by memory mapping, a batch at a time.
``parcels_mask.npy``
    uint8 ``[N, S, S]``, 1 inside the parcel.

Resizing: the pixels of the parcel (centre inside the polygon, or every pixel the polygon
touches for a parcel smaller than a pixel, as :func:`parcel_window_mask`) with at least
one clear date (validity > 0) are kept; the crop ``x * m`` and the mask ``m`` are both
resized with antialiased bilinear interpolation (:func:`torch.nn.functional.interpolate`)
and divided (normalized convolution), so values near the border are not darkened by the
zeros outside; the resized mask is ``m_resized >= 0.5``. A parcel without any clear pixel
is left out of the dataset (logged).
"""

from __future__ import annotations

import json
import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import rasterio
import rasterio.features
import rasterio.windows
import shapely
from rasterio.windows import Window
from tqdm import tqdm

from cropchain.errors import InputError
from cropchain.io.atomic import atomic_output
from cropchain.io.raster import open_raster
from cropchain.reference.fusion import read_reference

log = logging.getLogger(__name__)

PATCH_SIZE = 32
SCALE = 10000.0
FORMAT_VERSION = 1
INDEX_COLUMNS = [
    "polygon_id",
    "code",
    "name",
    "n_pixels",
    "n_valid_pixels",
    "row_off",
    "col_off",
    "height",
    "width",
]


def dataset_files(index: str | os.PathLike) -> tuple[Path, Path, Path]:
    """``(index, patches, masks)`` paths of a parcel dataset named by its index
    (``x/parcels.parquet`` -> ``x/parcels.npy``, ``x/parcels_mask.npy``)."""
    index = Path(index)
    return index, index.with_suffix(".npy"), index.with_name(f"{index.stem}_mask.npy")


def parcel_window_mask(
    geometry: Any, transform: rasterio.Affine, height: int, width: int
) -> tuple[Window, np.ndarray]:
    """Pixel window and mask of one parcel on a raster grid.

    Parameters
    ----------
    geometry : shapely polygon in the grid's CRS.
    transform, height, width : the grid (a tile).

    Returns
    -------
    window : the smallest window holding the parcel's pixels (clipped to the grid).
    mask : bool ``[window.height, window.width]``, True for the parcel's pixels: pixel
        centre inside the polygon (GDAL's rasterization rule, as the evaluation uses); a
        parcel without any pixel centre gets every pixel it touches.

    Raises
    ------
    ValueError
        the polygon has no pixel on the grid (outside the tile, or empty).
    """
    if geometry is None or geometry.is_empty:
        raise ValueError("empty geometry")
    f = rasterio.windows.from_bounds(*geometry.bounds, transform=transform)
    r0, c0 = max(0, math.floor(f.row_off)), max(0, math.floor(f.col_off))
    r1, c1 = min(height, math.ceil(f.row_off + f.height)), min(width, math.ceil(f.col_off + f.width))
    if r1 <= r0 or c1 <= c0:
        raise ValueError("outside the grid")
    win = Window(c0, r0, c1 - c0, r1 - r0)
    wt = rasterio.windows.transform(win, transform)
    shape = (int(win.height), int(win.width))
    mask = rasterio.features.geometry_mask([geometry], shape, wt, invert=True)
    if not mask.any():
        mask = rasterio.features.geometry_mask([geometry], shape, wt, invert=True, all_touched=True)
    if not mask.any():
        raise ValueError("outside the grid")
    rows, cols = np.flatnonzero(mask.any(axis=1)), np.flatnonzero(mask.any(axis=0))
    r0, r1, c0, c1 = rows[0], rows[-1] + 1, cols[0], cols[-1] + 1
    tight = Window(int(win.col_off) + int(c0), int(win.row_off) + int(r0), int(c1 - c0), int(r1 - r0))
    return tight, mask[r0:r1, c0:c1]


def resize_patch(
    block: np.ndarray, mask: np.ndarray, size: int = PATCH_SIZE
) -> tuple[np.ndarray, np.ndarray]:
    """Resize a parcel crop to ``size x size`` px, zero outside the parcel.

    Parameters
    ----------
    block : float32 ``[B, h, w]`` values (any unit; e.g. the dates x bands of a crop).
    mask : bool ``[h, w]``, True inside the parcel (at least one pixel).
    size : output side ``S`` in px.

    Returns
    -------
    patch : float32 ``[B, S, S]``: ``resize(block * m) / resize(m)`` inside the parcel
        (antialiased bilinear, PyTorch's ``interpolate``), 0 outside.
    inside : bool ``[S, S]``: ``resize(m) >= 0.5`` (never empty: the resized mask's
        maximum is kept when it falls below 0.5, e.g. for a thin parcel).
    """
    import torch
    import torch.nn.functional as F

    m = torch.from_numpy(mask.astype(np.float32))[None, None]
    x = torch.from_numpy(np.ascontiguousarray(block, dtype=np.float32))[None] * m
    with torch.no_grad():
        xr = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0]
        mr = F.interpolate(m, size=(size, size), mode="bilinear", align_corners=False, antialias=True)[0, 0]
    inside = mr >= 0.5
    if not bool(inside.any()):
        inside = mr >= mr.max()
    patch = torch.where(inside, xr / mr.clamp_min(1e-6), torch.zeros(()))
    return patch.numpy(), inside.numpy()


def _read_parcels(reference_gpkg: Path, crs: Any) -> Any:
    ref = read_reference(reference_gpkg, ("polygon_id", "code", "name"))
    if ref.empty:
        raise InputError(
            reference_gpkg,
            "no reference polygon: the parcel dataset would be empty",
            "check the reference sources of this tile",
        )
    if ref.crs is None:
        raise InputError(reference_gpkg, "no CRS", "write the reference polygons with their CRS")
    return ref.to_crs(crs)


def _dates_bands(descriptions: tuple[str | None, ...], path: Path) -> tuple[list[str], list[str]]:
    """Dates and bands of a date-major ``YYYYMMDD_Bxx`` raster (``gapfilled.tif``)."""
    pairs = [(d or "").split("_", 1) for d in descriptions]
    if any(len(p) != 2 or len(p[0]) != 8 or not p[0].isdigit() for p in pairs):
        raise InputError(
            path,
            "band descriptions are not YYYYMMDD_<band>",
            "use the gapfilled.tif written by the gap filling step",
        )
    dates = list(dict.fromkeys(p[0] for p in pairs))
    bands = list(dict.fromkeys(p[1] for p in pairs))
    expected = [f"{d}_{b}" for d in dates for b in bands]
    if [f"{a}_{b}" for a, b in pairs] != expected:
        raise InputError(
            path,
            "bands are not date-major (date1 band1..bandN, date2 ...)",
            "use the gapfilled.tif written by the gap filling step",
        )
    return dates, bands


def _parcel_windows(
    ref: Any, src: Any, vsrc: Any, gapfilled: Path, reference_gpkg: Path, tile: str
) -> tuple[list[dict[str, Any]], list[Window], list[np.ndarray]]:
    """Index rows, pixel windows and clear-pixel masks ``[h, w]`` bool of the reference parcels.

    ``src`` is the open gap-filled series ``gapfilled``, ``vsrc`` the validity raster on its grid. Parcels
    without a clear pixel are left out (with a warning).

    Raises
    ------
    InputError
        a parcel without a pixel on the grid.
    """
    rows: list[dict[str, Any]] = []
    windows, masks = [], []
    for i, (pid, geom) in enumerate(zip(ref["polygon_id"], ref.geometry)):
        try:
            win, inside = parcel_window_mask(
                shapely.make_valid(geom) if geom is not None else geom,
                src.transform,
                src.height,
                src.width,
            )
        except ValueError as exc:
            raise InputError(
                reference_gpkg,
                f"parcel {int(pid)} has no pixel on the grid of {gapfilled} ({exc})",
                "fuse the reference polygons on this tile's grid (rerun the reference step)",
            ) from None
        valid = inside & (vsrc.read(1, window=win) > 0)
        row = {
            "polygon_id": int(pid),
            "code": int(ref["code"].iat[i]),
            "name": str(ref["name"].iat[i]),
            "n_pixels": int(inside.sum()),
            "n_valid_pixels": int(valid.sum()),
            "row_off": int(win.row_off),
            "col_off": int(win.col_off),
            "height": int(win.height),
            "width": int(win.width),
        }
        if not valid.any():
            log.warning(
                "%s: parcel %d (%s) has no pixel with a clear date: left out of the parcel dataset",
                tile,
                row["polygon_id"],
                row["name"],
            )
            continue
        rows.append(row)
        windows.append(win)
        masks.append(valid)
    return rows, windows, masks


def _write_patches(
    src: Any,
    rows: list[dict[str, Any]],
    windows: list[Window],
    masks: list[np.ndarray],
    shape: tuple[int, int, int],
    tmp_npy: Path,
    tmp_mask: Path,
    tile: str,
    gapfilled: Path,
    validity: Path,
) -> None:
    """Resize each parcel's crop of ``src`` (the open ``gapfilled``) to its patch; write the ``.npy``
    patches and masks.

    ``shape`` is ``(T, C, S)``; the patches (int16 ``[N, T, C, S, S]``) and masks (uint8
    ``[N, S, S]``) are written as memory-mapped ``.npy`` files ``tmp_npy`` and ``tmp_mask``.

    Raises
    ------
    InputError
        nodata inside a parcel where the validity raster counts clear dates.
    """
    n_dates, n_bands, patch_size = shape
    n = len(rows)
    nodata = src.nodata
    x = np.lib.format.open_memmap(
        tmp_npy, mode="w+", dtype=np.int16, shape=(n, n_dates, n_bands, patch_size, patch_size)
    )
    m_out = np.lib.format.open_memmap(tmp_mask, mode="w+", dtype=np.uint8, shape=(n, patch_size, patch_size))
    for k in tqdm(range(n), desc=f"parcels {tile}", unit="parcel", disable=None):
        block = src.read(window=windows[k])  # int16 [T*C, h, w]
        valid = masks[k]
        if nodata is not None and (block[:, valid] == nodata).any():
            raise InputError(
                gapfilled,
                f"nodata inside parcel {rows[k]['polygon_id']} where {validity.name} counts clear dates",
                "rerun the gap filling: gapfilled.tif and validity.tif disagree",
            )
        patch, inside_r = resize_patch(block.astype(np.float32), valid, patch_size)
        x[k] = (
            np.clip(np.rint(patch), -32767, 32767)
            .astype(np.int16)
            .reshape(n_dates, n_bands, patch_size, patch_size)
        )
        m_out[k] = inside_r
    x.flush()
    m_out.flush()
    del x, m_out


# 93 lines, of which 38 are the signature and docstring (shapes, units, errors): 55 of code
def build_parcel_dataset(
    gapfilled: str | os.PathLike,
    validity: str | os.PathLike,
    reference_gpkg: str | os.PathLike,
    out_index: str | os.PathLike,
    *,
    tile: str,
    patch_size: int = PATCH_SIZE,
) -> pd.DataFrame:
    """Build the parcel dataset of a tile (layout in the module docstring).

    Parameters
    ----------
    gapfilled : ``gapfilled.tif``: int16 reflectance x 10000, bands ``YYYYMMDD_Bxx``
        date-major (``T x C`` bands), nodata -32768.
    validity : ``validity.tif`` (clear dates per pixel, same grid); pixels with 0 are
        left out of the parcels.
    reference_gpkg : the tile's ``reference.gpkg`` (``polygon_id``, ``code``, ``name``).
    out_index : ``parcels.parquet``; ``parcels.npy`` and ``parcels_mask.npy`` are written
        beside it (:func:`dataset_files`), each atomically, the index last.
    tile : tile name, recorded in the metadata.
    patch_size : side ``S`` of the patches in px.

    Returns
    -------
    pandas.DataFrame
        the index (columns :data:`INDEX_COLUMNS`).

    Memory holds one parcel's crop (``T x C x h x w`` float32) and one patch at a time,
    plus the parcels' pixel masks; the patches are written to memory-mapped ``.npy`` files.

    Raises
    ------
    InputError
        missing or unreadable inputs, grids that differ, band descriptions that are not
        ``YYYYMMDD_<band>`` date-major, no reference polygon, a parcel outside the tile
        (the reference was fused on another grid), or no parcel with a clear pixel.
    """
    gapfilled, validity, reference_gpkg = Path(gapfilled), Path(validity), Path(reference_gpkg)
    out_index, out_npy, out_mask = dataset_files(out_index)
    if patch_size < 1:
        raise ValueError(f"patch_size must be >= 1, got {patch_size}")
    with open_raster(gapfilled, "gap-filled series") as src, open_raster(validity, "validity raster") as vsrc:
        dates, bands = _dates_bands(src.descriptions, gapfilled)
        if (
            (vsrc.width, vsrc.height) != (src.width, src.height)
            or vsrc.crs != src.crs
            or not vsrc.transform.almost_equals(src.transform)
        ):
            raise InputError(
                validity,
                f"grid differs from {gapfilled.name}",
                "use the validity raster written with the same gap filling",
            )
        ref = _read_parcels(reference_gpkg, src.crs)
        rows, windows, masks = _parcel_windows(ref, src, vsrc, gapfilled, reference_gpkg, tile)
        if not rows:
            raise InputError(
                validity,
                f"no reference parcel of {reference_gpkg.name} has a pixel with a clear date",
                "check that the tile's images cover the reference parcels",
            )
        with atomic_output(out_npy) as tmp_npy, atomic_output(out_mask) as tmp_mask:
            shape = (len(dates), len(bands), patch_size)
            _write_patches(src, rows, windows, masks, shape, tmp_npy, tmp_mask, tile, gapfilled, validity)
    index = pd.DataFrame(rows, columns=INDEX_COLUMNS)
    meta = {
        "tile": str(tile),
        "dates": dates,
        "bands": bands,
        "patch_size": int(patch_size),
        "scale": SCALE,
        "format_version": FORMAT_VERSION,
        "reference": str(reference_gpkg),
        "gapfilled": str(gapfilled),
    }
    table = pa.Table.from_pandas(index, preserve_index=False)
    table = table.replace_schema_metadata(
        {**(table.schema.metadata or {}), b"cropchain": json.dumps(meta).encode()}
    )
    with atomic_output(out_index) as tmp:
        pq.write_table(table, tmp)
    log.info(
        "%s: parcel dataset of %d parcel(s) (%d dates x %d bands x %d x %d px) -> %s",
        tile,
        len(index),
        len(dates),
        len(bands),
        patch_size,
        patch_size,
        out_npy,
    )
    return index


@dataclass
class ParcelDataset:
    """A tile's parcel dataset, patches memory-mapped.

    Attributes
    ----------
    index : the index table (:data:`INDEX_COLUMNS`), one row per patch.
    patches : int16 ``[N, T, C, S, S]`` (memory-mapped), reflectance x 10000, 0 outside.
    masks : uint8 ``[N, S, S]``, 1 inside the parcel.
    tile, dates, bands, patch_size : from the metadata.
    path : the index file.
    """

    index: pd.DataFrame
    patches: np.ndarray
    masks: np.ndarray
    tile: str
    dates: list[str]
    bands: list[str]
    patch_size: int
    path: Path

    def __len__(self) -> int:
        return len(self.index)


def load_parcel_dataset(index: str | os.PathLike) -> ParcelDataset:
    """Open a parcel dataset written by :func:`build_parcel_dataset` (patches memory-mapped).

    Raises
    ------
    InputError
        missing files, metadata missing, or arrays whose shapes disagree with the index.
    """
    index, npy, mask = dataset_files(index)
    for p in (index, npy, mask):
        if not p.exists():
            raise InputError(p, "parcel dataset file not found", "run the parcel_dataset step of this tile")
    try:
        table = pq.read_table(index)
        meta = json.loads(table.schema.metadata[b"cropchain"])
    except Exception as exc:  # ArrowInvalid, KeyError, JSONDecodeError
        raise InputError(
            index, f"not a parcel dataset index ({exc})", "rerun the parcel_dataset step"
        ) from None
    df = table.to_pandas()
    patches = np.load(npy, mmap_mode="r")
    masks = np.load(mask, mmap_mode="r")
    s, t, c = int(meta["patch_size"]), len(meta["dates"]), len(meta["bands"])
    if patches.shape != (len(df), t, c, s, s) or masks.shape != (len(df), s, s):
        raise InputError(
            npy,
            f"shapes {patches.shape} / {masks.shape} disagree with the index ({len(df)} parcels, "
            f"{t} dates, {c} bands, {s} px)",
            "rerun the parcel_dataset step",
        )
    return ParcelDataset(
        df, patches, masks, str(meta["tile"]), list(meta["dates"]), list(meta["bands"]), s, index
    )


def normalization_stats(
    datasets: list[ParcelDataset], rows: list[np.ndarray], *, chunk: int = 256
) -> tuple[np.ndarray, np.ndarray]:
    """Channel-wise statistics per date of the parcels' pixels (the learning set's).

    Parameters
    ----------
    datasets : parcel datasets (one per tile).
    rows : for each dataset, int ``[n_i]`` the patches to use (e.g. the learning parcels).
    chunk : patches read at a time (memory bound).

    Returns
    -------
    mean, std : float32 ``[T, C]`` in reflectance (0-1), over the pixels inside the
        parcels (resized masks); ``std`` is floored at 1e-6.

    Raises
    ------
    InputError
        no patch at all, or datasets with different dates or bands.
    """
    check_compatible(datasets)
    t, c = len(datasets[0].dates), len(datasets[0].bands)
    s1 = np.zeros((t, c), np.float64)
    s2 = np.zeros((t, c), np.float64)
    count = 0.0
    for ds, idx in zip(datasets, rows):
        idx = np.sort(np.asarray(idx, dtype=np.int64))
        for start in range(0, idx.size, chunk):
            sel = idx[start : start + chunk]
            x = np.asarray(ds.patches[sel], dtype=np.float64) / SCALE  # [n, T, C, S, S]
            m = np.asarray(ds.masks[sel], dtype=np.float64)[:, None, None]
            s1 += (x * m).sum(axis=(0, 3, 4))
            s2 += (x * x * m).sum(axis=(0, 3, 4))
            count += float(m.sum())
    if count == 0:
        raise InputError(
            datasets[0].path if datasets else "parcel datasets",
            "no parcel pixel to compute the normalization from",
            "check that the run has learning parcels",
        )
    mean = s1 / count
    std = np.sqrt(np.maximum(s2 / count - mean * mean, 0.0))
    return mean.astype(np.float32), np.maximum(std, 1e-6).astype(np.float32)


def normalize(patches: np.ndarray, masks: np.ndarray, mean: np.ndarray, std: np.ndarray) -> np.ndarray:
    """Normalize patches channel-wise per date, zero outside the parcel.

    Parameters
    ----------
    patches : int16 ``[n, T, C, S, S]`` reflectance x 10000.
    masks : uint8/bool ``[n, S, S]``.
    mean, std : float32 ``[T, C]`` (reflectance 0-1), from :func:`normalization_stats`.

    Returns
    -------
    np.ndarray
        float32 ``[n, T, C, S, S]``: ``(x / 10000 - mean) / std`` inside the parcel, 0 outside.
    """
    x = np.asarray(patches, dtype=np.float32) / np.float32(SCALE)
    x -= mean[None, :, :, None, None]
    x /= std[None, :, :, None, None]
    x *= np.asarray(masks, dtype=np.float32)[:, None, None]
    return x


def check_compatible(datasets: list[ParcelDataset]) -> None:
    """Check that parcel datasets (e.g. of several tiles) share dates, bands and patch size.

    Raises
    ------
    InputError
        no dataset, or one that differs from the first (named).
    """
    if not datasets:
        raise InputError(
            "parcel datasets", "no parcel dataset given", "give the parcel dataset of at least one tile"
        )
    first = datasets[0]
    for ds in datasets[1:]:
        if ds.dates != first.dates or ds.bands != first.bands or ds.patch_size != first.patch_size:
            raise InputError(
                ds.path,
                f"dates/bands/patch size differ from {first.path} "
                f"({len(ds.dates)} vs {len(first.dates)} dates, "
                f"{ds.bands} vs {first.bands}, {ds.patch_size} vs {first.patch_size} px)",
                "build every tile's parcel dataset with the same configuration",
            )


def permute_dates(x: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """Shuffle the dates of each sample independently (the paper's ablation).

    Parameters
    ----------
    x : ``[B, T, ...]`` any array (e.g. ``[B, T, C, S, S]`` patches).
    rng : random generator (seeded by the caller: the draw is reproducible).

    Returns
    -------
    np.ndarray
        ``[B, T, ...]``: sample ``b`` holds ``x[b, perm_b]`` with ``perm_b`` a random
        permutation of the ``T`` dates; all bands and pixels of a date move together.
    """
    b, t = x.shape[:2]
    perm = np.argsort(rng.random((b, t)), axis=1)
    return x[np.arange(b)[:, None], perm]
