"""Vectorization of a classification map (iota2's chain: regularisation, minimum mapping unit, polygons).

1. Optional majority filter (Orfeo ToolBox ``ClassificationMapRegularization``): each
   classified pixel takes the most frequent class in a disk of radius ``r`` px around it;
   nodata pixels neither vote nor change; on a tie the pixel keeps its class if it is
   among the most frequent ones (OTB's default, ``ip.suvbool`` off), otherwise it takes
   the smallest tied code.
2. Minimum mapping unit: :func:`rasterio.features.sieve` (GDAL ``GDALSieveFilter``)
   merges every connected region smaller than the MMU into its largest classified
   neighbour. Nodata pixels are masked out: they never grow and never absorb a region.
3. :func:`rasterio.features.shapes` (GDAL ``GDALPolygonize``) turns the regions into
   polygons (nodata excluded), with the same connectivity as the sieve.
4. Optional topology-preserving simplification (:func:`shapely.coverage_simplify`,
   GEOS coverage simplification: shared edges are simplified once, so neighbours keep
   no gap and no overlap).

What is guaranteed: every output polygon covers at least the MMU (rounded up to whole
pixels), except a region with no classified neighbour at all (an island of classes
surrounded only by nodata and/or the tile edge), which the sieve cannot merge anywhere
and which is kept. Without simplification the polygons cover exactly the classified
pixels. The map is streamed: the majority filter runs on strips of rows into a scratch
GeoTIFF, GDAL sieves that file's band into one array (one byte per pixel: the sieve merges
regions across the whole tile) kept in a second scratch file, and polygonizes line by line.
The polygons themselves are held until written.
"""

from __future__ import annotations

import logging
import math
import os
from collections.abc import Iterator
from contextlib import nullcontext
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import rasterio
import rasterio.features
import shapely
from rasterio.windows import Window
from scipy import ndimage

from cropchain.errors import ConfigError, InputError
from cropchain.io.atomic import atomic_output, scratch_path
from cropchain.io.raster import geotiff_profile, open_raster
from cropchain.nomenclature import (
    NODATA_CLASS,
    Nomenclature,
    as_nomenclature,
    require_codes,
)

log = logging.getLogger(__name__)

LAYER = "classification"


def disk_footprint(radius: int) -> np.ndarray:
    """Boolean ``[2r+1, 2r+1]`` disk: offsets ``(dy, dx)`` with ``dy^2 + dx^2 <= r^2``."""
    y, x = np.mgrid[-radius : radius + 1, -radius : radius + 1]
    return (x * x + y * y) <= radius * radius


#: pixels voted at once by :func:`majority_filter` (a strip of about 1 Mpx, whatever the map's width)
STRIP_PIXELS = 1 << 20


def majority_filter(
    labels: np.ndarray, radius: int, nodata: int = NODATA_CLASS, *, block_rows: int | None = None
) -> np.ndarray:
    """Majority vote of the class codes in a disk of ``radius`` px (OTB ClassificationMapRegularization).

    Parameters
    ----------
    labels : integer ``[H, W]`` class codes, ``nodata`` for unclassified pixels.
    radius : disk radius in px (0 returns a copy).
    nodata : nodata code: these pixels do not vote and stay nodata; no classified pixel
        becomes nodata.
    block_rows : rows voted at once (default: :data:`STRIP_PIXELS` divided by the width):
        the filter runs on strips of ``block_rows`` rows read with ``radius`` rows of context
        on each side, so that its working memory (about seven int32 arrays of a strip: 28 MB
        by default) is bounded by the strip, not the map; the result does not depend on it.

    Returns
    -------
    np.ndarray
        ``[H, W]``, same dtype. Ties keep the centre class when it is among the most
        frequent, otherwise the smallest tied code. Pixels beyond the image edge do not vote.
    """
    out = labels.copy()
    if radius <= 0:
        return out
    footprint = disk_footprint(radius).astype(np.int32)
    codes = [int(c) for c in np.unique(labels) if c != nodata]
    for r0, r1, a0, a1 in _strips(*labels.shape, radius, block_rows):
        out[r0:r1] = _majority_strip(labels[a0:a1], footprint, codes, nodata)[r0 - a0 : r1 - a0]
    return out


def _strips(
    height: int, width: int, radius: int, rows: int | None = None
) -> Iterator[tuple[int, int, int, int]]:
    """Strips ``(r0, r1, a0, a1)`` of a ``[height, width]`` map: rows ``r0:r1`` (``rows`` of
    them, default :data:`STRIP_PIXELS` // ``width``) and ``a0:a1``, the same with ``radius``
    rows of context on each side (clipped at the edges)."""
    rows = max(1, int(rows) if rows is not None else STRIP_PIXELS // max(1, width))
    for r0 in range(0, height, rows):
        r1 = min(height, r0 + rows)
        yield r0, r1, max(0, r0 - radius), min(height, r1 + radius)


def _majority_strip(labels: np.ndarray, footprint: np.ndarray, codes: list[int], nodata: int) -> np.ndarray:
    """:func:`majority_filter` of a strip (exact on rows at least a radius from a cut edge)."""
    out = labels.copy()
    best_count = np.zeros(labels.shape, dtype=np.int32)
    best_code = np.full(labels.shape, nodata, dtype=labels.dtype)
    centre_count = np.zeros(labels.shape, dtype=np.int32)
    for code in codes:  # one integer convolution per class: exact counts, vectorized
        is_code = labels == code
        count = ndimage.correlate(is_code.astype(np.int32), footprint, mode="constant", cval=0)
        better = count > best_count
        best_count[better] = count[better]
        best_code[better] = code
        centre_count[is_code] = count[is_code]
    classified = labels != nodata
    change = classified & (centre_count < best_count)
    out[change] = best_code[change]
    return out


def _valid_multipolygons(geoms: np.ndarray) -> np.ndarray:
    """OGC-valid MultiPolygons.

    With 8-connectivity GDAL's polygonize joins pixels touching by a corner into one ring
    that touches itself (invalid "ring self-intersection"); :func:`shapely.make_valid`
    splits it at the pinch point into a valid MultiPolygon of the same area. Every geometry
    is returned as a MultiPolygon so that the layer has a single geometry type.
    """
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        geoms = geoms.copy()
        fixed = shapely.make_valid(geoms[invalid], method="structure", keep_collapsed=False)
        geoms[invalid] = fixed
    out = np.empty(len(geoms), dtype=object)
    for i, g in enumerate(geoms):
        if isinstance(g, shapely.Polygon):
            out[i] = shapely.MultiPolygon([g])
        elif isinstance(g, shapely.MultiPolygon):
            out[i] = g
        else:  # a collection: keep its polygonal parts
            out[i] = shapely.MultiPolygon([p for p in shapely.get_parts(g) if isinstance(p, shapely.Polygon)])
    return out


def vectorize_map(
    classification: str | os.PathLike,
    nomenclature: Nomenclature | str | os.PathLike,
    out_gpkg: str | os.PathLike,
    *,
    mmu_ha: float = 0.1,
    majority_radius: int = 0,
    connectivity: int = 8,
    simplify_m: float = 0.0,
) -> gpd.GeoDataFrame:
    """Regularise, sieve to the minimum mapping unit and polygonize a classification map.

    Parameters
    ----------
    classification : uint8 class map (class codes, nodata 0) in a projected CRS (metres).
    nomenclature : :class:`~cropchain.nomenclature.Nomenclature` or path of its CSV.
    out_gpkg : GeoPackage written atomically, layer ``"classification"``.
    mmu_ha : minimum mapping unit in hectares; the sieve threshold is
        ``ceil(mmu_ha * 10000 / pixel area)`` px (0 disables the sieve).
    majority_radius : radius in px of the majority filter (0 = none).
    connectivity : 4 or 8, pixel connectivity of regions (sieve and polygons).
    simplify_m : tolerance in metres of the coverage simplification (0 = none).

    Returns
    -------
    geopandas.GeoDataFrame
        columns ``code`` (int), ``name`` (str), ``area_ha`` (float, hectares), ``geometry``
        (valid MultiPolygon: one per connected region), in the map's CRS.

    Raises
    ------
    InputError
        missing/unreadable map, geographic CRS, codes not in the nomenclature.
    ConfigError
        negative ``mmu_ha``/``majority_radius``/``simplify_m``, connectivity not 4 or 8.
    """
    if connectivity not in (4, 8):
        raise ConfigError(f"vectorize.connectivity: {connectivity} must be 4 or 8")
    if mmu_ha < 0 or majority_radius < 0 or simplify_m < 0:
        raise ConfigError(
            f"vectorize: mmu_ha ({mmu_ha}), majority_radius ({majority_radius}) and simplify_m "
            f"({simplify_m}) must be >= 0"
        )
    nomenclature = as_nomenclature(nomenclature)
    classification = Path(classification)
    with (
        _open_class_map(classification) as src,
        scratch_path(Path(out_gpkg).with_suffix(".regularised.tif")) as regularised,
        scratch_path(Path(out_gpkg).with_suffix(".sieved.tif")) as sieved,
    ):
        nodata = NODATA_CLASS if src.nodata is None else int(src.nodata)
        transform, crs = src.transform, src.crs
        pixel_area = abs(transform.a * transform.e - transform.b * transform.d)
        _regularise(src, classification, regularised, nomenclature, majority_radius, nodata)
        mmu_px = math.ceil(mmu_ha * 10_000 / pixel_area - 1e-9) if mmu_ha > 0 else 0
        log.info(
            "%s: majority radius %d px, MMU %.3f ha = %d px of %.1f m2",
            classification,
            majority_radius,
            mmu_ha,
            mmu_px,
            pixel_area,
        )
        with rasterio.open(regularised) as reg:
            valid = rasterio.band(reg, 2)
            if mmu_px > 1:  # GDAL sieves the file's band into an array (1 byte per pixel), kept in a file
                labels = rasterio.features.sieve(
                    rasterio.band(reg, 1), mmu_px, mask=valid, connectivity=connectivity
                )
                profile = geotiff_profile(reg.profile, count=1, dtype=reg.dtypes[0], nodata=None)
                with rasterio.open(sieved, "w", **profile) as dst:
                    dst.write(labels, 1)
                del labels
            with rasterio.open(sieved) if mmu_px > 1 else nullcontext(reg) as final:
                # GDAL polygonizes the bands line by line
                geometry, codes = _polygonize(
                    rasterio.band(final, 1), valid, connectivity, transform, simplify_m
                )
    names = dict(zip(nomenclature.codes, nomenclature.names))
    gdf = gpd.GeoDataFrame(
        {
            "code": np.asarray(codes, dtype=np.int32),
            "name": [names[c] for c in codes],
            "area_ha": shapely.area(geometry) / 10_000 if len(geometry) else np.zeros(0),
        },
        geometry=gpd.GeoSeries(geometry, crs=crs),
    )
    with atomic_output(out_gpkg) as tmp:
        gdf.to_file(tmp, layer=LAYER, driver="GPKG", engine="pyogrio", geometry_type="MultiPolygon")
    log.info(
        "%s: %d polygons, %.1f ha classified -> %s", classification, len(gdf), gdf["area_ha"].sum(), out_gpkg
    )
    return gdf


def _open_class_map(classification: Path) -> Any:
    """The open class map, checked to be in a projected CRS (metres).

    Raises
    ------
    InputError
        missing/unreadable map, geographic CRS.
    """
    src = open_raster(classification, "classification map")
    if src.crs is None or not src.crs.is_projected:
        src.close()
        raise InputError(
            classification,
            f"CRS {src.crs} is not projected: areas in hectares need metres",
            "classify features in the tile's UTM projection",
        )
    return src


def _regularise(
    src: Any, classification: Path, out: Path, nomenclature: Nomenclature, radius: int, nodata: int
) -> None:
    """Write ``out`` (a GeoTIFF of the map's grid and dtype): band 1 the class codes after the
    majority filter of ``radius`` px, band 2 the classified pixels (1, nodata 0); strip by strip
    of about :data:`STRIP_PIXELS` px read with ``radius`` rows of context (memory: a strip,
    not the map). The same numbers as :func:`majority_filter` of the whole map.

    Raises
    ------
    InputError
        class codes that are not in the nomenclature.
    """
    width = src.width
    footprint = disk_footprint(radius).astype(np.int32) if radius > 0 else None
    profile = geotiff_profile(src.profile, count=2, dtype=src.dtypes[0], nodata=None)
    with rasterio.open(out, "w", **profile) as dst:
        for r0, r1, a0, a1 in _strips(src.height, width, radius):
            labels = src.read(1, window=Window(0, a0, width, a1 - a0))  # the strip and its context
            present = {int(c) for c in np.unique(labels)} - {nodata}
            require_codes(
                nomenclature,
                present,
                classification,
                "vectorize with the nomenclature the map was classified with",
            )
            if footprint is not None:  # a code absent from a strip has no vote in it: same result
                labels = _majority_strip(labels, footprint, sorted(present), nodata)
            labels = labels[r0 - a0 : r1 - a0]
            window = Window(0, r0, width, r1 - r0)
            dst.write(labels, 1, window=window)
            dst.write((labels != nodata).astype(labels.dtype), 2, window=window)


def _polygonize(
    labels: Any, valid: Any, connectivity: int, transform: Any, simplify_m: float
) -> tuple[np.ndarray, list[int]]:
    """One valid MultiPolygon per connected region of ``labels`` where ``valid`` is non-zero
    (object array) and its class code; the polygons simplified as a coverage when
    ``simplify_m`` > 0 (metres). ``labels``, ``valid``: rasterio bands or arrays."""
    geoms, codes = [], []
    for geom, value in rasterio.features.shapes(
        labels, mask=valid, connectivity=connectivity, transform=transform
    ):
        geoms.append(shapely.geometry.shape(geom))
        codes.append(int(value))
    geometry = _valid_multipolygons(np.array(geoms, dtype=object))
    if simplify_m > 0 and len(geometry):
        geometry = _valid_multipolygons(
            shapely.coverage_simplify(geometry, simplify_m, simplify_boundary=True)
        )
    return geometry, codes
