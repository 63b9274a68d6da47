"""Embedded demo: synthetic, seeded Sentinel-2 L2A SAFE products and reference data.

The default configuration runs the whole chain on these products, so that cropchain works
(and is tested end to end) without downloading real data. Everything is deterministic for a
given ``seed`` and tile name.

Landscape (:func:`demo_layout`)
    Voronoi cells of a jittered rectilinear grid (cells of 8-20 pixels of 10 m, i.e. crop
    parcels of about 0.5-4 ha) with demo classes 1 wheat (winter cereal), 2 maize (summer
    crop), 3 grassland, 4 vineyard; a compact forest (5) and an urban patch (6) made of
    neighbouring cells; a meandering river and a pond (7, water) cut through the parcels.

Reflectance (:func:`generate_demo_products`)
    Per-class NDVI phenology as a sum of logistic steps over the day of year (the
    double-logistic model of Beck et al. 2006, Remote Sens. Environ. 100:321-334, with extra
    steps for mowing and winter-crop re-emergence): winter wheat peaks in April-May and is
    harvested in June, maize peaks in August, grassland stays green with a mowing dip and a
    summer dry-down, vineyards green up in summer, forest stays high, urban and water low.
    Each pixel is a linear mixture of a class vegetation endmember and a background endmember
    (soil, forest litter, urban materials), the vegetation fraction being the one whose NDVI
    equals the curve. Per-parcel noise (sowing date, vigour, soil brightness), per-pixel
    noise (in-field heterogeneity, sensor noise) and a per-date atmospheric residual keep the
    classes learnable but not trivially separable.

Clouds (scene classification, SCL)
    Smooth random blobs (Gaussian-filtered white noise, thresholded) at 20 m: SCL 9 (high
    probability) in their core and 8 (medium) at their edges, bright and flat in reflectance;
    their shadows (SCL 3, darker) displaced north-west; thin cirrus (SCL 10) on some dates;
    with 4 dates or more, one date fully cloudy and one date with a nodata corner (DN 0, SCL 0, as at
    a swath edge), neither the first nor the last.
    Elsewhere SCL 4 (vegetation, NDVI >= 0.4), 5 (not vegetated) and 6 (water).

Products are written as real L2A SAFE folders (processing baseline 05.00, BOA_ADD_OFFSET
-1000, BOA_QUANTIFICATION_VALUE 10000, lossless JPEG 2000) that
:func:`cropchain.sources.sentinel2.ingest_safe` reads like any other;
:func:`generate_demo_theia_products` writes the same scene as Theia (MAJA) L2A products
(FRE bands, CLM / EDG / SAT masks) for :func:`cropchain.sources.theia.ingest_theia`.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import shutil
import xml.etree.ElementTree as ET
import zlib
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from affine import Affine
from rasterio.features import shapes
from scipy.ndimage import gaussian_filter
from scipy.spatial import cKDTree
from shapely.geometry import Polygon, shape

from cropchain.io.atomic import atomic_output, write_text_atomic
from cropchain.sources.sentinel2 import ESA_BAND_IDS, NATIVE_RESOLUTION, SENTINEL2_BANDS

log = logging.getLogger(__name__)

#: Demo classes: (code, name, color).
DEMO_NOMENCLATURE: tuple[tuple[int, str, str], ...] = (
    (1, "wheat", "#e8c547"),
    (2, "maize", "#f28e2b"),
    (3, "grassland", "#8cd17d"),
    (4, "vineyard", "#9d4edd"),
    (5, "forest", "#1b7837"),
    (6, "urban", "#d62728"),
    (7, "water", "#1f77b4"),
)
WHEAT, MAIZE, GRASSLAND, VINEYARD, FOREST, URBAN, WATER = range(1, 8)

#: Upper-left corner (x, y) in EPSG:32631 of the first demo tile (near Béziers, Hérault);
#: tile ``i`` of width ``w`` pixels starts at ``x + i * w * 10`` (see :func:`demo_origin`).
DEMO_ORIGIN: tuple[float, float] = (500000.0, 4800000.0)
DEMO_CRS = "EPSG:32631"
PIXEL_SIZE = 10.0

#: Reference nomenclatures of the two demo sources.
RPG_CODES = {WHEAT: "BTH", MAIZE: "MIS", GRASSLAND: "PPH", VINEYARD: "VRC"}
CORINE_CODES = {FOREST: 311, URBAN: 112, WATER: 512}
CORINE_ARABLE = 211
REFERENCE_CRS = "EPSG:2154"

_MONTH_DAYS = (
    (1, 15),
    (2, 4),
    (3, 1),
    (3, 21),
    (4, 10),
    (4, 30),
    (5, 20),
    (6, 9),
    (6, 29),
    (7, 19),
    (8, 8),
    (8, 28),
    (9, 17),
    (10, 12),
    (11, 6),
    (12, 16),
)

# Endmember reflectances (0-1) in the order of SENTINEL2_BANDS: B02 B03 B04 B08 B05 B06 B07 B8A B11 B12.
assert SENTINEL2_BANDS == ("B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12")
_EM = {
    "crop": (0.030, 0.065, 0.030, 0.450, 0.090, 0.300, 0.400, 0.460, 0.200, 0.090),
    "grass": (0.035, 0.070, 0.040, 0.380, 0.095, 0.260, 0.340, 0.390, 0.220, 0.110),
    "vine": (0.035, 0.072, 0.042, 0.360, 0.100, 0.250, 0.320, 0.370, 0.210, 0.100),
    "forest": (0.020, 0.040, 0.020, 0.320, 0.060, 0.200, 0.280, 0.330, 0.140, 0.060),
    "soil": (0.080, 0.110, 0.140, 0.200, 0.170, 0.190, 0.200, 0.210, 0.320, 0.260),
    "limestone": (0.100, 0.140, 0.170, 0.240, 0.200, 0.220, 0.230, 0.250, 0.360, 0.300),
    "litter": (0.050, 0.070, 0.090, 0.170, 0.110, 0.140, 0.160, 0.180, 0.240, 0.170),
    "urban": (0.100, 0.110, 0.120, 0.160, 0.130, 0.150, 0.155, 0.165, 0.200, 0.180),
    "water": (0.060, 0.050, 0.030, 0.015, 0.025, 0.015, 0.012, 0.012, 0.005, 0.003),
    "turbid": (0.030, 0.040, 0.035, 0.012, 0.030, 0.012, 0.010, 0.010, 0.002, 0.001),
    "cloud": (0.450, 0.440, 0.430, 0.460, 0.440, 0.450, 0.460, 0.460, 0.300, 0.200),
    "cirrus": (0.050, 0.045, 0.040, 0.035, 0.040, 0.035, 0.035, 0.035, 0.020, 0.010),
}
_EM = {k: np.array(v, dtype=np.float64) for k, v in _EM.items()}
_RED, _NIR = SENTINEL2_BANDS.index("B04"), SENTINEL2_BANDS.index("B08")

# Vegetation and background endmember of each class (water and urban are handled apart).
_CLASS_EM = {
    WHEAT: ("crop", "soil"),
    MAIZE: ("crop", "soil"),
    GRASSLAND: ("grass", "soil"),
    VINEYARD: ("vine", "limestone"),
    FOREST: ("forest", "litter"),
    URBAN: ("grass", "urban"),
    WATER: ("grass", "water"),
}

# NDVI phenology: v0 + sum_k a_k / (1 + exp(-(doy - t_k) / r_k)); "mow" is replaced per parcel.
_PHENOLOGY: dict[int, tuple[float, tuple[tuple[float, float | str, float], ...]]] = {
    WHEAT: (0.30, ((0.55, 75, 9), (-0.65, 168, 7), (0.15, 310, 10))),
    MAIZE: (0.15, ((0.70, 175, 8), (-0.62, 265, 8))),
    GRASSLAND: (
        0.50,
        ((0.25, 75, 12), (-0.28, "mow", 3), (0.23, "mow+", 8), (-0.15, 205, 10), (0.15, 275, 12)),
    ),
    VINEYARD: (0.22, ((0.33, 120, 10), (-0.30, 290, 10))),
    FOREST: (0.72, ((0.12, 105, 10), (-0.12, 300, 12))),
    URBAN: (0.14, ()),
    WATER: (-0.3, ()),
}


def demo_origin(index: int, width: int = 200) -> tuple[float, float]:
    """Upper-left corner (x, y) in EPSG:32631 of demo tile number ``index`` (side by side along x)."""
    return (DEMO_ORIGIN[0] + index * width * PIXEL_SIZE, DEMO_ORIGIN[1])


def demo_dates(year: int = 2021) -> list[dt.date]:
    """The 16 default acquisition dates of a demo year, from mid-January to mid-December."""
    return [dt.date(year, m, d) for m, d in _MONTH_DAYS]


def write_demo_nomenclature(path: str | os.PathLike) -> Path:
    """Write the demo nomenclature CSV (``code,name,color``, see :data:`DEMO_NOMENCLATURE`)."""
    lines = ["code,name,color"] + [f"{c},{n},{col}" for c, n, col in DEMO_NOMENCLATURE]
    write_text_atomic(path, "\n".join(lines) + "\n")
    return Path(path)


def _grid_transform(origin: tuple[float, float], size: float) -> Affine:
    """North-up grid of square ``size`` m pixels with upper-left corner ``origin``."""
    return Affine(size, 0.0, float(origin[0]), 0.0, -size, float(origin[1]))


def _rng(seed: int, tile: str, *stream: int) -> np.random.Generator:
    return np.random.default_rng(np.random.SeedSequence([int(seed), zlib.crc32(tile.encode()), *stream]))


def _tile_name(tile: str) -> str:
    t = str(tile).strip().upper()
    return t if t.startswith("T") else "T" + t


def _cuts(rng: np.random.Generator, n: int, lo: int = 8, hi: int = 22) -> np.ndarray:
    """Cell boundaries along one axis: sizes drawn in [lo, hi] pixels, the last cell clipped."""
    sizes = []
    while sum(sizes) < n:
        sizes.append(int(rng.integers(lo, hi + 1)))
    return np.concatenate([[0], np.cumsum(sizes)])


def _layout(tile: str, seed: int, width: int, height: int):
    """Pixel layout: class raster, parcel (Voronoi cell) raster, unit raster, per-parcel class."""
    if width < 16 or height < 16:
        raise ValueError(f"demo tiles need at least 16x16 pixels, got {width}x{height}")
    rng = _rng(seed, tile, 0)
    H, W = height, width
    rows, cols = _cuts(rng, H), _cuts(rng, W)
    centers = []
    for r0, r1 in zip(rows[:-1], rows[1:]):
        for c0, c1 in zip(cols[:-1], cols[1:]):
            cy = (r0 + r1) / 2 + rng.uniform(-0.25, 0.25) * (r1 - r0)
            cx = (c0 + c1) / 2 + rng.uniform(-0.25, 0.25) * (c1 - c0)
            centers.append((cy, cx))
    centers = np.array(centers)
    yy, xx = np.mgrid[0:H, 0:W]
    pix = np.column_stack([yy.ravel() + 0.5, xx.ravel() + 0.5])
    _, nearest = cKDTree(centers).query(pix)
    # Renumber cells that cover pixels 0..n-1 in row-major order of first appearance.
    uniq, first = np.unique(nearest, return_index=True)
    order = uniq[np.argsort(first)]
    remap = np.full(len(centers), -1, dtype=np.int64)
    remap[order] = np.arange(len(order))
    pid = remap[nearest].reshape(H, W)
    n = len(order)
    area = np.bincount(pid.ravel(), minlength=n)
    cy = np.bincount(pid.ravel(), weights=yy.ravel(), minlength=n) / area
    cx = np.bincount(pid.ravel(), weights=xx.ravel(), minlength=n) / area

    pcls = rng.choice([WHEAT, MAIZE, GRASSLAND, VINEYARD], size=n, p=[0.28, 0.24, 0.26, 0.22]).astype(
        np.uint8
    )
    # Forest: the cells under the highest values of a smooth random field, about 12% of the tile.
    field = gaussian_filter(rng.standard_normal((H, W)), sigma=max(H, W) / 8.0, mode="reflect")
    pfield = np.bincount(pid.ravel(), weights=field.ravel(), minlength=n) / area
    taken = np.zeros(n, bool)
    for i in np.argsort(-pfield):
        if area[taken].sum() >= 0.12 * H * W:
            break
        taken[i] = True
        pcls[i] = FOREST
    # Urban: the cells nearest to the free cell lowest in that field, about 6% of the tile.
    free = np.flatnonzero(~taken)
    c0 = free[np.argmin(pfield[free])]
    dist = np.hypot(cy - cy[c0], cx - cx[c0])
    urban_area = 0
    for i in np.argsort(dist):
        if urban_area >= 0.06 * H * W:
            break
        if not taken[i]:
            taken[i] = True
            pcls[i] = URBAN
            urban_area += area[i]
    cls = pcls[pid]
    # Water: a meandering river, 3-5 pixels wide, across the tile, and a pond in a crop parcel.
    vertical = bool(rng.integers(2))
    L, Wd = (H, W) if vertical else (W, H)
    t = np.arange(L) + 0.5
    center = rng.uniform(0.3, 0.7) * Wd + rng.uniform(0.04, 0.1) * Wd * np.sin(
        2 * np.pi * t / (rng.uniform(0.6, 1.2) * L) + rng.uniform(0, 2 * np.pi)
    )
    half = rng.uniform(1.5, 2.5)
    across = (xx if vertical else yy) + 0.5
    along_idx = yy if vertical else xx
    water = np.abs(across - center[along_idx]) <= half
    crops = np.flatnonzero(np.isin(pcls, [WHEAT, MAIZE, GRASSLAND, VINEYARD]))
    pond = crops[rng.integers(len(crops))]
    radius = rng.uniform(3.0, 5.0)
    water |= np.hypot(yy + 0.5 - cy[pond], xx + 0.5 - cx[pond]) <= radius
    cls = np.where(water, WATER, cls).astype(np.uint8)
    # Units to vectorize: each crop cell; forest, urban and water cut into 400 m x 400 m
    # blocks, as land-cover databases cut large areas, so that each run can keep some
    # of them for validation.
    block = (yy // 40) * ((W + 39) // 40) + xx // 40
    unit = np.where(np.isin(cls, [FOREST, URBAN, WATER]), n + cls.astype(np.int64) * (H * W) + block, pid + 1)
    return cls, pid, pcls, unit


def demo_layout(
    tile: str,
    *,
    seed: int,
    width: int,
    height: int,
    origin: tuple[float, float] = DEMO_ORIGIN,
    crs: str = DEMO_CRS,
) -> tuple[np.ndarray, gpd.GeoDataFrame]:
    """The demo landscape of one tile: class raster and polygons.

    Parameters
    ----------
    tile : tile name (``"T31TXA"``); with ``seed`` it seeds the landscape.
    seed : random seed.
    width, height : tile size in 10 m pixels (at least 16).
    origin : upper-left corner (x, y) in metres in ``crs``; tiles side by side differ by
        ``width * 10`` m in x (:func:`demo_origin`).
    crs : CRS of the grid and of the polygons.

    Returns
    -------
    class_raster : uint8 [height, width], demo codes 1-7 (:data:`DEMO_NOMENCLATURE`), no 0.
    parcels : GeoDataFrame in ``crs``, one pixel-aligned polygon per connected unit, columns
        ``parcel_id`` (int, 1..), ``code`` (1-7), ``name``, ``area_ha``, ``geometry``.
        Crop parcels (codes 1-4) are single fields of about 0.5-4 ha (pieces cut by the
        river are separate rows); forest, urban and water are merged areas. Rasterizing the
        polygons gives back ``class_raster``.
    """
    tile = _tile_name(tile)
    cls, _, _, unit = _layout(tile, seed, width, height)
    transform = _grid_transform(origin, PIXEL_SIZE)
    geoms, codes = [], []
    for geom, _value in shapes(unit.astype(np.int32), connectivity=4, transform=transform):
        poly = shape(geom)
        r, c = rasterio.transform.rowcol(transform, *poly.representative_point().coords[0])
        geoms.append(poly)
        codes.append(int(cls[r, c]))
    names = {c: n for c, n, _ in DEMO_NOMENCLATURE}
    gdf = gpd.GeoDataFrame(
        {
            "parcel_id": np.arange(1, len(geoms) + 1),
            "code": np.array(codes, dtype=np.uint8),
            "name": [names[c] for c in codes],
            "area_ha": np.round([g.area / 1e4 for g in geoms], 4),
        },
        geometry=geoms,
        crs=crs,
    )
    return cls, gdf


def _phenology_ndvi(doy: float, pcls: np.ndarray, params: dict[str, np.ndarray]) -> np.ndarray:
    """NDVI of each parcel on day of year ``doy`` (float64 [n_parcels])."""
    out = np.empty(len(pcls))
    for c, (v0, steps) in _PHENOLOGY.items():
        sel = pcls == c
        if not sel.any():
            continue
        v = v0 + params["v0"][sel]
        for a, t, r in steps:
            if t == "mow":
                t = params["mow"][sel]
            elif t == "mow+":
                t = params["mow"][sel] + params["regrow"][sel]
            else:
                t = t + params["shift"][sel] + params["jitter"][sel]
            v = v + a * params["amp"][sel] / (1.0 + np.exp(-(doy - t) / r))
        out[sel] = v
    return out


def _cover_for_ndvi(ndvi: np.ndarray, veg: np.ndarray, bg: np.ndarray) -> np.ndarray:
    """Vegetation fraction f such that NDVI(f * veg + (1 - f) * bg) == ndvi (exact for 2 endmembers)."""
    sv, dv = veg[..., _NIR] + veg[..., _RED], veg[..., _NIR] - veg[..., _RED]
    sb, db = bg[..., _NIR] + bg[..., _RED], bg[..., _NIR] - bg[..., _RED]
    f = (ndvi * sb - db) / ((dv - db) - ndvi * (sv - sb))
    return np.clip(f, 0.0, 1.0)


def _block_mean(a: np.ndarray) -> np.ndarray:
    """[..., H, W] -> [..., ceil(H/2), ceil(W/2)]: 2x2 means (edge pixels repeated for odd sizes)."""
    H, W = a.shape[-2:]
    pad = [(0, 0)] * (a.ndim - 2) + [(0, H % 2), (0, W % 2)]
    a = np.pad(a, pad, mode="edge")
    s = a.shape
    return a.reshape(*s[:-2], s[-2] // 2, 2, s[-1] // 2, 2).mean(axis=(-3, -1))


def _up(a: np.ndarray, H: int, W: int) -> np.ndarray:
    """20 m [h, w] -> 10 m [H, W] by pixel repetition (nearest neighbour on the aligned grid)."""
    return np.repeat(np.repeat(a, 2, axis=0), 2, axis=1)[:H, :W]


def _blobs(rng: np.random.Generator, h: int, w: int, cover: float, sigma: float, margin: int):
    """Smooth random field on a canvas of (h + 2 margin, w + 2 margin), its threshold for ``cover``."""
    field = gaussian_filter(rng.standard_normal((h + 2 * margin, w + 2 * margin)), sigma=sigma, mode="wrap")
    field /= field.std()
    thr = np.quantile(field, 1.0 - cover) if cover < 1 else field.min() - 1e-9
    return field, thr


class _Scene:
    """Per-tile state of the generator: layout, per-parcel and per-pixel random parameters."""

    def __init__(self, tile: str, seed: int, width: int, height: int):
        self.tile, self.seed, self.H, self.W = tile, seed, height, width
        self.cls, self.pid, self.pcls, _ = _layout(tile, seed, width, height)
        n = len(self.pcls)
        rng = _rng(seed, tile, 1)
        self.params = {
            "shift": rng.normal(0.0, 14.0, n),  # days, sowing / green-up date of the parcel
            "jitter": rng.normal(0.0, 5.0, n),
            "amp": rng.normal(1.0, 0.12, n),  # vigour
            "v0": rng.normal(0.0, 0.05, n),
            "mow": rng.uniform(135.0, 180.0, n),  # grassland mowing day
            "regrow": rng.uniform(15.0, 30.0, n),
        }
        self.soil = rng.uniform(0.75, 1.25, n)  # background brightness
        self.vigour = rng.normal(1.0, 0.08, n)  # vegetation endmember brightness
        # Grassed inter-rows in some vineyards (greener in winter), and about 5% of crop parcels
        # whose declared crop does not match what grows (as in real parcel registers).
        vine = self.pcls == VINEYARD
        self.params["v0"][vine & (rng.random(n) < 0.3)] += 0.15
        self.pheno = self.pcls.copy()
        crop = np.isin(self.pcls, [WHEAT, MAIZE, GRASSLAND, VINEYARD])
        odd = crop & (rng.random(n) < 0.08)
        for i in np.flatnonzero(odd):
            self.pheno[i] = rng.choice([c for c in (WHEAT, MAIZE, GRASSLAND, VINEYARD) if c != self.pcls[i]])
        H, W = height, width
        het = gaussian_filter(rng.standard_normal((H, W)), sigma=2.0)
        self.ndvi_jitter = 0.08 * het / het.std() + rng.normal(0.0, 0.04, (H, W))
        self.urban_texture = np.clip(rng.normal(1.0, 0.18, (H, W)), 0.5, 1.8)
        veg = np.stack([_EM[_CLASS_EM[c][0]] for c in range(1, 8)])
        bg = np.stack([_EM[_CLASS_EM[c][1]] for c in range(1, 8)])
        self.veg_p = veg[self.pheno - 1] * self.vigour[:, None]  # [n, 10]
        self.bg_p = bg[self.pheno - 1] * self.soil[:, None]  # [n, 10]

    def surface(self, date: dt.date, rng: np.random.Generator) -> np.ndarray:
        """Cloud-free surface reflectance (0-1), float64 [10, H, W]."""
        doy = date.timetuple().tm_yday
        ndvi_p = _phenology_ndvi(doy, self.pheno, self.params)
        ndvi = np.clip(ndvi_p[self.pid] + self.ndvi_jitter, -0.2, 0.95)
        veg, bg = self.veg_p[self.pid], self.bg_p[self.pid]  # [H, W, 10]
        f = _cover_for_ndvi(ndvi, veg, bg)[..., None]
        refl = f * veg + (1.0 - f) * bg
        urban = self.cls == URBAN
        refl[urban] *= self.urban_texture[urban][:, None]
        water = self.cls == WATER
        turb = rng.uniform(0.0, 0.6)
        refl[water] = _EM["water"] + turb * _EM["turbid"] + rng.normal(0.0, 0.002, (int(water.sum()), 10))
        refl = np.moveaxis(refl, -1, 0)
        refl *= rng.normal(1.0, 0.015, 10)[:, None, None]  # atmospheric residual
        refl *= rng.normal(1.0, 0.04, refl.shape)  # sensor + sub-pixel noise
        return np.clip(refl, 0.0, 1.2)


def _jp2(path: Path, array: np.ndarray, transform, crs: str) -> None:
    profile = {
        "driver": "JP2OpenJPEG",
        "width": array.shape[1],
        "height": array.shape[0],
        "count": 1,
        "dtype": array.dtype.name,
        "crs": crs,
        "transform": transform,
        "QUALITY": 100,
        "REVERSIBLE": "YES",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)


def _sub(parent: ET.Element, tag: str, text: str | None = None, **attrib: str) -> ET.Element:
    el = ET.SubElement(parent, tag, attrib)
    if text is not None:
        el.text = text
    return el


#: ESA's names of the SCL classes 0-11 (``Scene_Classification_List`` of MTD_MSIL2A.xml).
_SCL_NAMES = (
    "SC_NODATA",
    "SC_SATURATED_DEFECTIVE",
    "SC_DARK_FEATURE_SHADOW",
    "SC_CLOUD_SHADOW",
    "SC_VEGETATION",
    "SC_NOT_VEGETATED",
    "SC_WATER",
    "SC_UNCLASSIFIED",
    "SC_CLOUD_MEDIUM_PROBA",
    "SC_CLOUD_HIGH_PROBA",
    "SC_THIN_CIRRUS",
    "SC_SNOW_ICE",
)


def _write_image_characteristics(gi: ET.Element) -> None:
    """``Product_Image_Characteristics`` of MTD_MSIL2A.xml: special values, quantification,
    BOA_ADD_OFFSET (-1000, baseline >= 04.00), spectral information and the SCL classes."""
    ic = _sub(gi, "Product_Image_Characteristics")
    for text, idx in (("NODATA", "0"), ("SATURATED", "65535")):
        sv = _sub(ic, "Special_Values")
        _sub(sv, "SPECIAL_VALUE_TEXT", text)
        _sub(sv, "SPECIAL_VALUE_INDEX", idx)
    q = _sub(ic, "QUANTIFICATION_VALUES_LIST")
    _sub(q, "BOA_QUANTIFICATION_VALUE", "10000", unit="none")
    _sub(q, "AOT_QUANTIFICATION_VALUE", "1000.0", unit="none")
    _sub(q, "WVP_QUANTIFICATION_VALUE", "1000.0", unit="cm")
    off = _sub(ic, "BOA_ADD_OFFSET_VALUES_LIST")
    for i in range(len(ESA_BAND_IDS)):
        _sub(off, "BOA_ADD_OFFSET", "-1000", band_id=str(i))
    si = _sub(ic, "Spectral_Information_List")
    for i, b in enumerate(ESA_BAND_IDS):
        phys = "B8A" if b == "B8A" else f"B{int(b[1:])}"
        s = _sub(si, "Spectral_Information", bandId=str(i), physicalBand=phys)
        _sub(s, "RESOLUTION", str(NATIVE_RESOLUTION.get(b, 60)))
    scl = _sub(ic, "Scene_Classification_List")
    for idx, text in enumerate(_SCL_NAMES):
        e = _sub(scl, "Scene_Classification_ID")
        _sub(e, "SCENE_CLASSIFICATION_TEXT", text)
        _sub(e, "SCENE_CLASSIFICATION_INDEX", str(idx))


def _write_mtd(
    path: Path,
    *,
    name: str,
    sensing: dt.datetime,
    generation: dt.datetime,
    spacecraft: str,
    baseline: str,
    image_files: Sequence[str],
    granule_id: str,
) -> None:
    """MTD_MSIL2A.xml with the fields of ESA's L2A product specification that readers use."""
    root = ET.Element(
        "n1:Level-2A_User_Product",
        {
            "xmlns:n1": "https://psd-14.sentinel2.eo.esa.int/PSD/User_Product_Level-2A.xsd",
            "xmlns:xsi": "http://www.w3.org/2001/XMLSchema-instance",
        },
    )
    gi = _sub(root, "n1:General_Info")
    pi = _sub(gi, "Product_Info")
    t = sensing.strftime("%Y-%m-%dT%H:%M:%S.024Z")
    _sub(pi, "PRODUCT_START_TIME", t)
    _sub(pi, "PRODUCT_STOP_TIME", t)
    _sub(pi, "PRODUCT_URI", name)
    _sub(pi, "PROCESSING_LEVEL", "Level-2A")
    _sub(pi, "PRODUCT_TYPE", "S2MSI2A")
    _sub(pi, "PROCESSING_BASELINE", baseline)
    _sub(pi, "PRODUCT_DOI", "cropchain synthetic demo product (not Copernicus data)")
    _sub(pi, "GENERATION_TIME", generation.strftime("%Y-%m-%dT%H:%M:%S.000000Z"))
    dtk = _sub(
        pi, "Datatake", datatakeIdentifier=f"G{spacecraft[-2:].replace('-', 'S')}_{sensing:%Y%m%dT%H%M%S}"
    )
    _sub(dtk, "SPACECRAFT_NAME", spacecraft)
    _sub(dtk, "DATATAKE_TYPE", "INS-NOBS")
    _sub(dtk, "SENSING_ORBIT_NUMBER", "8")
    _sub(dtk, "SENSING_ORBIT_DIRECTION", "DESCENDING")
    org = _sub(pi, "Product_Organisation")
    gl = _sub(org, "Granule_List")
    gr = _sub(gl, "Granule", granuleIdentifier=granule_id, imageFormat="JPEG2000")
    for f in image_files:
        _sub(gr, "IMAGE_FILE", f)
    _write_image_characteristics(gi)
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)


def _check_dates(dates: Sequence[dt.date | str] | None, year: int) -> list[dt.date]:
    """The demo dates, sorted: ``dates`` (dates or ``"YYYY-MM-DD"``) or :func:`demo_dates` of ``year``."""
    if dates is None:
        dates = demo_dates(year)
    dates = sorted(d if isinstance(d, dt.date) else dt.date.fromisoformat(str(d)) for d in dates)
    if not dates or len(set(dates)) != len(dates):
        raise ValueError(f"demo dates must be distinct and at least one, got {dates}")
    return dates


class _Observation(NamedTuple):
    """One synthetic acquisition: what every product writer of the demo encodes."""

    index: int  # position of the date in the sorted dates
    date: dt.date
    refl: np.ndarray  # float64 [10, H, W] top-of-canopy reflectance 0-1 with clouds, SENTINEL2_BANDS order
    scl: np.ndarray  # uint8 [ceil(H/2), ceil(W/2)] scene classification at 20 m
    cloud: np.ndarray  # bool, same shape: cloud (SCL 8 or 9 before the nodata corner)
    nodata20: np.ndarray  # bool, same shape: outside the swath (DN 0, SCL 0)


def _observations(
    tile: str, seed: int, width: int, height: int, dates: Sequence[dt.date]
) -> Iterator[_Observation]:
    """The demo's acquisitions of one tile, date by date (reflectance model, clouds, shadows,
    cirrus, swath edge).

    Shared by the SAFE and Theia writers, so that both formats carry the same scene.
    """
    H, W = height, width
    h2, w2 = (H + 1) // 2, (W + 1) // 2
    scene = _Scene(tile, seed, width, height)
    plan = _rng(seed, tile, 2)
    n = len(dates)
    covers = np.where(plan.random(n) < 0.35, 0.0, np.minimum(plan.beta(0.8, 4.0, n) * 0.4, 0.3))
    cloudy = nodata_date = None
    if n >= 4:  # one fully cloudy date and one swath-edge date, never the first or last
        cloudy, nodata_date = (int(i) for i in plan.choice(np.arange(1, n - 1), size=2, replace=False))
        covers[cloudy] = 1.0
    others = [i for i in range(n) if i != cloudy]
    cirrus_dates = set(plan.choice(others, size=min(2, len(others)), replace=False).tolist())
    rr, cc = np.mgrid[0:h2, 0:w2]
    margin = 8
    for i, date in enumerate(dates):
        rng = _rng(seed, tile, 3, date.toordinal())
        refl = scene.surface(date, rng)  # [10, H, W]
        ndvi20 = _block_mean(refl[_NIR]) - _block_mean(refl[_RED])
        ndvi20 /= np.maximum(_block_mean(refl[_NIR]) + _block_mean(refl[_RED]), 1e-6)
        scl = np.where(ndvi20 >= 0.4, 4, 5).astype(np.uint8)
        scl[scene.cls[::2, ::2] == WATER] = 6
        # Clouds and their shadows (20 m), thin cirrus.
        if covers[i] > 0:
            field, thr = _blobs(rng, h2, w2, covers[i], sigma=rng.uniform(3.0, 7.0), margin=margin)
            core = field[margin : margin + h2, margin : margin + w2]
            cloud = core > thr
            alpha = np.where(cloud, 0.35 + 0.65 * np.clip((core - thr) / 0.8, 0, 1), 0.0)
            dy, dx = int(rng.integers(3, margin + 1)), int(rng.integers(2, margin - 1))
            shadow = (field[margin + dy : margin + dy + h2, margin + dx : margin + dx + w2] > thr) & ~cloud
            scl[shadow] = 3
            scl[cloud] = np.where(alpha[cloud] > 0.6, 9, 8)
            a10 = _up(alpha, H, W)[None]
            refl = (1 - a10) * refl + a10 * _EM["cloud"][:, None, None] * rng.normal(1.0, 0.03, (1, H, W))
            refl *= np.where(_up(shadow, H, W), rng.uniform(0.35, 0.5), 1.0)[None]
        else:
            cloud = np.zeros((h2, w2), bool)
        if i in cirrus_dates:
            field, thr = _blobs(rng, h2, w2, 0.15, sigma=10.0, margin=0)
            cirrus = (field > thr) & (scl != 3) & ~cloud
            scl[cirrus] = 10
            refl = refl + _up(np.where(cirrus, 1.0, 0.0), H, W)[None] * _EM["cirrus"][:, None, None]
        nodata20 = np.zeros((h2, w2), bool)
        if i == nodata_date:
            nodata20 = (rr + 0.5) / h2 + (cc + 0.5) / w2 > 1.6  # swath edge
            scl[nodata20] = 0
        yield _Observation(i, date, refl, scl, cloud, nodata20)


def generate_demo_products(
    out_dir: str | os.PathLike,
    tile: str,
    *,
    seed: int,
    width: int = 200,
    height: int = 200,
    dates: Sequence[dt.date | str] | None = None,
    origin: tuple[float, float] = DEMO_ORIGIN,
    year: int = 2021,
    crs: str = DEMO_CRS,
) -> list[Path]:
    """Write synthetic Sentinel-2 L2A SAFE products of one demo tile, one per date.

    Parameters
    ----------
    out_dir : folder receiving the ``.SAFE`` folders (created; a product already there with
        the same name is replaced).
    tile : tile name, e.g. ``"T31TXA"``; with ``seed`` it seeds landscape and time series.
    seed : random seed; the same seed, tile, size and dates give byte-identical band files.
    width, height : tile size in 10 m pixels (20 m bands and SCL: ``ceil(width / 2)`` x
        ``ceil(height / 2)``).
    dates : acquisition dates (``datetime.date`` or ``"YYYY-MM-DD"``); default
        :func:`demo_dates` of ``year`` (16 dates, mid-January to mid-December).
    origin : upper-left corner (x, y) in metres, in ``crs`` (:func:`demo_origin`).
    year : year of the default dates (ignored when ``dates`` is given).
    crs : CRS of the products (a UTM zone).

    Returns
    -------
    list of Path
        The ``.SAFE`` folders, sorted by date, named like ESA's
        (``S2A_MSIL2A_20210115T104021_N0500_R008_T31TXA_20210115T120000.SAFE``), each with
        ``MTD_MSIL2A.xml`` (baseline 05.00, quantification 10000, BOA_ADD_OFFSET -1000) and
        ``GRANULE/L2A_*/IMG_DATA/R10m/*_B0x_10m.jp2``, ``R20m/*_Bxx_20m.jp2`` and
        ``R20m/*_SCL_20m.jp2``: uint16 DN = reflectance x 10000 + 1000 (0 = nodata), SCL uint8;
        lossless JPEG 2000.
    """
    tile, out_dir, dates, t10, t20 = _prepare(out_dir, tile, dates, year, origin)
    written = []
    for obs in _observations(tile, seed, width, height, dates):
        nodata10 = _up(obs.nodata20, height, width)
        dn10 = np.clip(np.rint(obs.refl * 10000) + 1000, 1, 65535).astype(np.uint16)
        dn10[:, nodata10] = 0
        dn20 = np.clip(np.rint(_block_mean(obs.refl) * 10000) + 1000, 1, 65535).astype(np.uint16)
        dn20[:, obs.nodata20] = 0
        written.append(_write_safe_product(out_dir, tile, obs, dn10, dn20, (t10, t20), crs))
        log.info("%s %s: %.0f%% cloud", tile, obs.date, 100 * obs.cloud.mean())
    return written


def _prepare(
    out_dir: str | os.PathLike,
    tile: str,
    dates: Sequence[dt.date | str] | None,
    year: int,
    origin: tuple[float, float],
) -> tuple[str, Path, list[dt.date], Affine, Affine]:
    """What both product writers start from: the tile name (``T31TXA``), the output folder
    (created), the sorted dates, and the 10 m and 20 m grid transforms at ``origin``."""
    tile = _tile_name(tile)
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    dates = _check_dates(dates, year)
    return tile, out_dir, dates, _grid_transform(origin, PIXEL_SIZE), _grid_transform(origin, 2 * PIXEL_SIZE)


@contextlib.contextmanager
def _new_product(final: Path) -> Iterator[Path]:
    """Write the product folder ``final`` atomically (a temporary folder renamed at the end),
    replacing one already there."""
    if final.exists():
        shutil.rmtree(final)
    with atomic_output(final) as tmp:
        yield tmp


def _write_safe_product(
    out_dir: Path,
    tile: str,
    obs: _Observation,
    dn10: np.ndarray,
    dn20: np.ndarray,
    transforms: tuple[Affine, Affine],
    crs: str,
) -> Path:
    """One ``.SAFE`` folder of :func:`generate_demo_products`: the DN of the 10 m bands ``dn10``
    uint16 [10, H, W] and of the 20 m bands ``dn20`` (both in SENTINEL2_BANDS order), the SCL and
    ``MTD_MSIL2A.xml``. Returns the folder."""
    date = obs.date
    t10, t20 = transforms
    bands10 = [b for b in SENTINEL2_BANDS if NATIVE_RESOLUTION[b] == 10]
    bands20 = [b for b in SENTINEL2_BANDS if NATIVE_RESOLUTION[b] == 20]
    spacecraft = "Sentinel-2A" if obs.index % 2 == 0 else "Sentinel-2B"
    sensing = dt.datetime.combine(date, dt.time(10, 40, 21))
    stamp = f"{sensing:%Y%m%dT%H%M%S}"
    name = f"S2{spacecraft[-1]}_MSIL2A_{stamp}_N0500_R008_{tile}_{date:%Y%m%d}T120000.SAFE"
    abs_orbit = 1000 + (date - dt.date(2015, 6, 23)).days * 14
    granule = f"L2A_{tile}_A{abs_orbit:06d}_{stamp}"
    files = {}
    for b in bands10:
        files[b] = f"GRANULE/{granule}/IMG_DATA/R10m/{tile}_{stamp}_{b}_10m"
    for b in [*bands20, "SCL"]:
        files[b] = f"GRANULE/{granule}/IMG_DATA/R20m/{tile}_{stamp}_{b}_20m"
    final = out_dir / name
    with _new_product(final) as tmp:
        for sub in ("R10m", "R20m"):
            (tmp / "GRANULE" / granule / "IMG_DATA" / sub).mkdir(parents=True)
        for b in bands10:
            _jp2(tmp / (files[b] + ".jp2"), dn10[SENTINEL2_BANDS.index(b)], t10, crs)
        for b in bands20:
            _jp2(tmp / (files[b] + ".jp2"), dn20[SENTINEL2_BANDS.index(b)], t20, crs)
        _jp2(tmp / (files["SCL"] + ".jp2"), obs.scl, t20, crs)
        _write_mtd(
            tmp / "MTD_MSIL2A.xml",
            name=name,
            sensing=sensing,
            generation=dt.datetime.combine(date, dt.time(12, 0, 0)),
            spacecraft=spacecraft,
            baseline="05.00",
            image_files=list(files.values()),
            granule_id=f"S2{spacecraft[-1]}_OPER_MSI_L2A_TL_2BPS_{date:%Y%m%d}T120000_A{abs_orbit:06d}_{tile}_N05.00",
        )
    return final


#: CLM bits the Theia writer sets for each SCL class of the scene (Theia L2A format, see
#: :data:`cropchain.sources.theia.CLM_BITS`): clouds -> bits 0, 1, 2; shadows -> bits 0, 5;
#: cirrus -> bits 4 (thinnest clouds), 7 (high clouds).
_THEIA_CLM_OF_SCL = {8: 0b00000111, 9: 0b00000111, 3: 0b00100001, 10: 0b10010000}


def _theia_tif(path: Path, array: np.ndarray, transform, crs: str, nodata: int | None) -> None:
    profile = {
        "driver": "GTiff",
        "width": array.shape[1],
        "height": array.shape[0],
        "count": 1,
        "dtype": array.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "compress": "deflate",
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array, 1)


def _write_theia_mtd(path: Path, *, name: str, sensing: dt.datetime, platform: str, tile: str) -> None:
    """``<name>_MTD_ALL.xml``: the fields of Theia's Muscate metadata that readers use."""
    root = ET.Element("Muscate_Metadata_Document")
    di = _sub(root, "Dataset_Identification")
    _sub(di, "IDENTIFIER", name)
    _sub(di, "AUTHORITY", "cropchain synthetic demo product (not Theia data)")
    _sub(di, "PRODUCER", "cropchain.demo")
    pc = _sub(root, "Product_Characteristics")
    _sub(pc, "PRODUCT_ID", name)
    _sub(pc, "ACQUISITION_DATE", sensing.strftime("%Y-%m-%dT%H:%M:%S.000Z"))
    _sub(pc, "PRODUCT_LEVEL", "L2A")
    _sub(pc, "PLATFORM", platform)
    _sub(pc, "PRODUCT_VERSION", "2.2")
    gz = _sub(root, "Geoposition_Informations")
    _sub(gz, "GEOGRAPHICAL_ZONE", tile, type="Tile")
    ri = _sub(root, "Radiometric_Informations")
    _sub(ri, "REFLECTANCE_QUANTIFICATION_VALUE", "10000")
    sv = _sub(ri, "Special_Values_List")
    _sub(sv, "SPECIAL_VALUE", "-10000", name="nodata")
    ET.indent(root)
    ET.ElementTree(root).write(path, encoding="UTF-8", xml_declaration=True)


def generate_demo_theia_products(
    out_dir: str | os.PathLike,
    tile: str,
    *,
    seed: int,
    width: int = 200,
    height: int = 200,
    dates: Sequence[dt.date | str] | None = None,
    origin: tuple[float, float] = DEMO_ORIGIN,
    year: int = 2021,
    crs: str = DEMO_CRS,
) -> list[Path]:
    """Write the demo scene of one tile as Theia (MAJA / MUSCATE) L2A products, one per date.

    The scene (landscape, reflectance model, clouds, shadows, cirrus, swath edge) is exactly the
    one :func:`generate_demo_products` writes as SAFE products for the same arguments, so the two
    formats can be compared pixel for pixel.

    Parameters
    ----------
    out_dir, tile, seed, width, height, dates, origin, year, crs :
        as for :func:`generate_demo_products`.

    Returns
    -------
    list of Path
        The product folders, sorted by date, named like Theia's
        (``SENTINEL2A_20210115-104021-000_L2A_T31TXA_C_V2-2``), each with
        ``<name>_FRE_B2.tif`` ... (int16 reflectance x10000, nodata -10000; B2 B3 B4 B8 at 10 m,
        B5 B6 B7 B8A B11 B12 at 20 m), ``MASKS/<name>_CLM_R1.tif`` / ``_R2`` (clouds: bits 0-2,
        shadows: bits 0 and 5, cirrus: bits 4 and 7), ``_EDG_R1`` / ``_R2`` (1 outside the
        swath), ``_SAT_R1`` / ``_R2`` (0: nothing saturated) and ``<name>_MTD_ALL.xml``. No
        ``_SRE_`` files.
    """
    tile, out_dir, dates, t10, t20 = _prepare(out_dir, tile, dates, year, origin)
    written = []
    for obs in _observations(tile, seed, width, height, dates):
        written.append(_write_theia_product(out_dir, tile, obs, (t10, t20), crs))
        log.info("%s %s (Theia): %.0f%% cloud", tile, obs.date, 100 * obs.cloud.mean())
    return written


def _write_theia_product(
    out_dir: Path, tile: str, obs: _Observation, transforms: tuple[Affine, Affine], crs: str
) -> Path:
    """One product folder of :func:`generate_demo_theia_products` (FRE bands, CLM / EDG / SAT
    masks at R1 and R2, ``_MTD_ALL.xml``). Returns the folder."""
    from cropchain.sources.theia import THEIA_BAND_NAMES, THEIA_NODATA

    H, W = obs.refl.shape[1:]
    t10, t20 = transforms
    nodata20 = obs.nodata20
    nodata10 = _up(nodata20, H, W)
    fre10 = np.clip(np.rint(obs.refl * 10000), THEIA_NODATA + 1, 32767).astype(np.int16)
    fre10[:, nodata10] = THEIA_NODATA
    fre20 = np.clip(np.rint(_block_mean(obs.refl) * 10000), THEIA_NODATA + 1, 32767).astype(np.int16)
    fre20[:, nodata20] = THEIA_NODATA
    clm20 = np.zeros(obs.scl.shape, np.uint8)
    for scl_class, bits in _THEIA_CLM_OF_SCL.items():
        clm20[obs.scl == scl_class] = bits
    platform = "SENTINEL2A" if obs.index % 2 == 0 else "SENTINEL2B"
    sensing = dt.datetime.combine(obs.date, dt.time(10, 40, 21))
    name = f"{platform}_{sensing:%Y%m%d-%H%M%S}-000_L2A_{tile}_C_V2-2"
    final = out_dir / name
    with _new_product(final) as tmp:
        (tmp / "MASKS").mkdir(parents=True)
        for b, theia_b in THEIA_BAND_NAMES.items():
            k = SENTINEL2_BANDS.index(b)
            if NATIVE_RESOLUTION[b] == 10:
                _theia_tif(tmp / f"{name}_FRE_{theia_b}.tif", fre10[k], t10, crs, THEIA_NODATA)
            else:
                _theia_tif(tmp / f"{name}_FRE_{theia_b}.tif", fre20[k], t20, crs, THEIA_NODATA)
        for res, transform, clm, edg in (
            ("R1", t10, _up(clm20, H, W), nodata10),
            ("R2", t20, clm20, nodata20),
        ):
            _theia_tif(tmp / "MASKS" / f"{name}_CLM_{res}.tif", clm, transform, crs, None)
            _theia_tif(tmp / "MASKS" / f"{name}_EDG_{res}.tif", edg.astype(np.uint8), transform, crs, None)
            _theia_tif(tmp / "MASKS" / f"{name}_SAT_{res}.tif", np.zeros_like(clm), transform, crs, None)
        _write_theia_mtd(
            tmp / f"{name}_MTD_ALL.xml", name=name, sensing=sensing, platform=platform, tile=tile
        )
    return final


def _self_intersecting(poly: Polygon) -> Polygon | None:
    """The polygon with two consecutive ring vertices swapped so that two edges cross (a bow-tie)."""
    ring = list(poly.exterior.coords)[:-1]
    n = len(ring)
    for i in range(1, n - 2):
        swapped = ring[:i] + [ring[i + 1], ring[i]] + ring[i + 2 :]
        cand = Polygon(swapped + [swapped[0]])
        if not cand.is_valid and "Self-intersection" in shapely.is_valid_reason(cand):
            return cand
    return None


def _rpg_parcels(gdf: gpd.GeoDataFrame, tile: str, rng: np.random.Generator) -> gpd.GeoDataFrame:
    """The crop parcels of a demo layout with the RPG fields (``ID_PARCEL``, ``CODE_CULTU``,
    ``SURF_PARC``), three of at least 1 ha given a self-intersecting (bow-tie) ring."""
    crops = gdf[gdf["code"].isin(list(RPG_CODES))].copy()
    crops["ID_PARCEL"] = [f"{tile}-{i:05d}" for i in crops["parcel_id"]]
    crops["CODE_CULTU"] = crops["code"].map(RPG_CODES)
    crops["SURF_PARC"] = np.round(crops.geometry.area / 1e4, 2)
    big = crops.index[crops.geometry.area >= 1e4].to_numpy()
    broken = 0
    for idx in rng.permutation(big):
        bad = _self_intersecting(crops.at[idx, "geometry"])
        if bad is not None:
            crops.at[idx, "geometry"] = bad
            broken += 1
        if broken == 3:
            break
    return crops


def _corine_cover(
    gdf: gpd.GeoDataFrame, crops: gpd.GeoDataFrame, rng: np.random.Generator, *, broken: bool
) -> pd.DataFrame:
    """The Corine-like polygons of a demo layout (``code_18``): forest, urban and water, and one
    coarse arable polygon around a cluster of ``crops`` (self-intersecting when ``broken``)."""
    # one polygon per 400 m block of forest, urban and water (see _landscape), so that
    # each run can keep some of each class for validation
    cover = gdf[gdf["code"].isin(list(CORINE_CODES))].explode(index_parts=False).reset_index(drop=True)
    cover["geometry"] = cover.geometry.simplify(5.0, preserve_topology=True)
    cover["code_18"] = cover["code"].map(CORINE_CODES).astype(np.int32)
    # A coarse 'arable land' polygon around a cluster of crop parcels.
    cent = np.column_stack([crops.geometry.centroid.x, crops.geometry.centroid.y])
    seed_i = rng.integers(len(crops))
    near = np.argsort(np.hypot(*(cent - cent[seed_i]).T))[:15]
    arable = shapely.union_all(crops.geometry.iloc[near].buffer(0).to_numpy()).buffer(25.0).simplify(40.0)
    if arable.geom_type != "Polygon":
        arable = arable.convex_hull
    if broken:
        arable = _self_intersecting(arable) or arable
    return pd.concat(
        [
            cover[["code_18", "geometry"]],
            gpd.GeoDataFrame({"code_18": [CORINE_ARABLE]}, geometry=[arable], crs=DEMO_CRS),
        ],
        ignore_index=True,
    )


def generate_demo_references(
    out_dir: str | os.PathLike,
    tiles: Mapping[str, Mapping],
    *,
    seed: int,
) -> dict[str, Path]:
    """Write the demo's two reference sources, with different nomenclatures, in Lambert-93.

    Parameters
    ----------
    out_dir : folder receiving ``parcels.gpkg`` and ``landcover.gpkg``.
    tiles : tile name -> ``{"origin": (x, y), "width": int, "height": int}`` (EPSG:32631
        grid of :func:`demo_layout`), as for :func:`generate_demo_products`.
    seed : the seed given to :func:`generate_demo_products`.

    Returns
    -------
    dict
        ``{"parcels": Path, "landcover": Path}``:

        * ``parcels.gpkg`` (layer ``parcels``, EPSG:2154): RPG-like crop parcels, fields
          ``ID_PARCEL``, ``CODE_CULTU`` (BTH wheat, MIS maize, PPH grassland, VRC vineyard),
          ``SURF_PARC`` (ha); three parcels per tile have a self-intersecting (bow-tie) ring.
        * ``landcover.gpkg`` (layer ``landcover``, EPSG:2154): Corine-like polygons, field
          ``code_18`` (int): 311 forest, 112 urban, 512 water, and one coarse 211 (arable)
          polygon per tile overlapping crop parcels of every crop class (self-intersecting in
          the first tile).
    """
    out_dir = Path(out_dir)
    rpg, clc = [], []
    for k, (tile, spec) in enumerate(tiles.items()):
        tile_n = _tile_name(tile)
        _, gdf = demo_layout(
            tile_n,
            seed=seed,
            width=int(spec["width"]),
            height=int(spec["height"]),
            origin=tuple(spec["origin"]),
            crs=DEMO_CRS,
        )
        rng = _rng(seed, tile_n, 4)
        crops = _rpg_parcels(gdf, tile_n, rng)
        rpg.append(crops[["ID_PARCEL", "CODE_CULTU", "SURF_PARC", "geometry"]])
        clc.append(_corine_cover(gdf, crops, rng, broken=k == 0))
    parcels = gpd.GeoDataFrame(pd.concat(rpg, ignore_index=True), crs=DEMO_CRS).to_crs(REFERENCE_CRS)
    landcover = gpd.GeoDataFrame(pd.concat(clc, ignore_index=True), crs=DEMO_CRS).to_crs(REFERENCE_CRS)
    landcover["code_18"] = landcover["code_18"].astype(np.int32)
    paths = {"parcels": out_dir / "parcels.gpkg", "landcover": out_dir / "landcover.gpkg"}
    for key, gdf in (("parcels", parcels), ("landcover", landcover)):
        with atomic_output(paths[key]) as tmp:
            gdf.to_file(tmp, driver="GPKG", layer=key, engine="pyogrio")
    log.info("demo references: %d parcels, %d land-cover polygons", len(parcels), len(landcover))
    return paths
