"""Vectorization: majority filter, minimum mapping unit, polygons covering the classified area."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.crs import CRS
from rasterio.transform import from_origin
from scipy import ndimage

from cropchain.errors import InputError
from cropchain.io.raster import geotiff_profile
from cropchain.mapping.vectorize import majority_filter, vectorize_map
from cropchain.nomenclature import Nomenclature

CODES = (1, 4, 9)
NOM = Nomenclature(
    codes=CODES, names=("wheat", "rapeseed", "vineyard"), colors=((1, 1, 1), (2, 2, 2), (3, 3, 3))
)
PIXEL_M = 10.0


def noisy_map(seed: int = 1, h: int = 120, w: int = 140) -> np.ndarray:
    """Parcels (8x8 px blocks) with 10 % salt-and-pepper noise and nodata holes."""
    rng = np.random.default_rng(seed)
    parcels = np.kron(rng.integers(0, 3, (h // 8 + 1, w // 8 + 1)), np.ones((8, 8), int))[:h, :w]
    noise = rng.random((h, w)) < 0.10
    parcels[noise] = rng.integers(0, 3, noise.sum())
    labels = np.asarray(CODES, dtype=np.uint8)[parcels]
    labels[rng.random((h, w)) < 0.01] = 0  # isolated nodata pixels
    labels[50:60, 0:30] = 0  # a nodata strip on the edge
    labels[90:100, 90:100] = 0  # a nodata square with a 2-px island inside
    labels[94, 94:96] = 9
    return labels


def write_map(path: Path, labels: np.ndarray, crs: int = 32631) -> Path:
    base = {
        "crs": CRS.from_epsg(crs),
        "transform": from_origin(700000, 4800000, PIXEL_M, PIXEL_M),
        "width": labels.shape[1],
        "height": labels.shape[0],
    }
    with rasterio.open(path, "w", **geotiff_profile(base, count=1, dtype="uint8", nodata=0)) as dst:
        dst.write(labels, 1)
    return path


def has_classified_neighbour(labels: np.ndarray, geom, transform) -> bool:
    """Does the region under ``geom`` touch a classified pixel of another region?"""
    from rasterio.features import geometry_mask

    inside = geometry_mask([geom], labels.shape, transform, invert=True)
    ring = ndimage.binary_dilation(inside, structure=np.ones((3, 3))) & ~inside
    return bool((labels[ring] != 0).any())


def test_majority_filter_votes_and_keeps_nodata():
    a = np.full((7, 7), 1, np.uint8)
    a[3, 3] = 4  # lonely pixel: outvoted
    a[0, 0] = 0  # nodata: stays, and does not vote
    a[0:3, 5:7] = 9  # 6-px block in a corner
    out = majority_filter(a, 1)
    assert out[3, 3] == 1
    assert out[0, 0] == 0
    assert np.all(out[a != 0] != 0)
    # (0, 6): disk r=1 -> itself, (1, 6), (0, 5) are 9: keeps 9
    assert out[0, 6] == 9
    # tie rule: centre keeps its class when it is among the most frequent
    t = np.array([[1, 4, 4], [1, 4, 1], [0, 0, 0]], np.uint8)
    assert (
        majority_filter(t, 1)[1, 1] == 4
    )  # disk: 4 (centre), up 4, left 1, right 1, down nodata -> 2 vs 2: keep 4
    np.testing.assert_array_equal(majority_filter(a, 0), a)


@pytest.mark.parametrize("radius", [1, 2, 3])
def test_majority_filter_by_strips_equals_the_whole_map(radius):
    """The filter runs on strips of rows with a radius of context: memory bounded by the strip,
    the result that of one pass over the whole map, whatever the strip height."""
    rng = np.random.default_rng(radius)
    labels = rng.integers(0, 6, size=(300, 170)).astype(np.uint8)
    labels[100:140, 20:90] = 4  # a field crossing strip borders
    whole = majority_filter(labels, radius, block_rows=10_000)
    assert (whole != labels).any()  # the filter changes something
    for rows in (1, 7, 64):
        np.testing.assert_array_equal(majority_filter(labels, radius, block_rows=rows), whole)


def test_mmu_area_and_codes(tmp_path):
    labels = noisy_map()
    path = write_map(tmp_path / "map.tif", labels)
    out = tmp_path / "vec.gpkg"
    gdf = vectorize_map(path, NOM, out, mmu_ha=0.1)
    mmu_ha = 0.1  # 10 px of 100 m2
    assert set(gdf.columns) == {"code", "name", "area_ha", "geometry"}
    assert set(gdf["code"]) <= set(CODES)
    # 8-connected regions touching by a corner are valid (split at the pinch point), one row per region
    assert gdf.geometry.is_valid.all() and set(gdf.geom_type) == {"MultiPolygon"}
    assert all(gdf["name"] == [NOM.name_of(c) for c in gdf["code"]])
    # total area = classified area (no simplification)
    assert gdf["area_ha"].sum() == pytest.approx((labels != 0).sum() * PIXEL_M**2 / 1e4)
    np.testing.assert_allclose(gdf["area_ha"], gdf.geometry.area / 1e4)
    small = gdf[gdf["area_ha"] < mmu_ha - 1e-9]
    with rasterio.open(path) as src:
        transform = src.transform
    # the only polygons below the MMU are regions with no classified neighbour (the island)
    assert len(small) >= 1
    assert not any(has_classified_neighbour(labels, g, transform) for g in small.geometry)
    # the input was noisy: the sieve really removed many small regions
    raw = vectorize_map(path, NOM, tmp_path / "raw.gpkg", mmu_ha=0)
    assert (raw["area_ha"] < mmu_ha).sum() > 50 * len(small)
    # file: layer "classification", same content, no temporary file left
    back = gpd.read_file(out, layer="classification")
    assert len(back) == len(gdf) and back.crs.to_epsg() == 32631
    assert not list(tmp_path.glob(".*tmp*"))


def test_majority_radius_and_four_connectivity(tmp_path):
    labels = noisy_map(seed=2)
    path = write_map(tmp_path / "map.tif", labels)
    plain = vectorize_map(path, NOM, tmp_path / "a.gpkg", mmu_ha=0.1)
    raw = vectorize_map(path, NOM, tmp_path / "r.gpkg", mmu_ha=0)
    smooth = vectorize_map(path, NOM, tmp_path / "b.gpkg", mmu_ha=0, majority_radius=2)
    assert len(smooth) < len(raw) / 3  # the majority filter alone removes most of the salt-and-pepper
    assert smooth["area_ha"].sum() == pytest.approx(plain["area_ha"].sum())  # nodata preserved
    four = vectorize_map(path, NOM, tmp_path / "c.gpkg", mmu_ha=0.1, connectivity=4)
    assert four["area_ha"].sum() == pytest.approx(plain["area_ha"].sum())
    assert all(four.geometry.is_valid)


def test_simplification_keeps_a_coverage(tmp_path):
    labels = noisy_map(seed=3)
    path = write_map(tmp_path / "map.tif", labels)
    exact = vectorize_map(path, NOM, tmp_path / "a.gpkg", mmu_ha=0.2, majority_radius=1)
    simple = vectorize_map(path, NOM, tmp_path / "b.gpkg", mmu_ha=0.2, majority_radius=1, simplify_m=15)
    assert len(simple) == len(exact)
    assert simple.geometry.is_valid.all() and not simple.geometry.is_empty.any()
    assert (
        shapely.get_num_coordinates(simple.geometry.values).sum()
        < shapely.get_num_coordinates(exact.geometry.values).sum()
    )
    # no overlap between neighbours: the union has the area of the sum
    union = shapely.union_all(simple.geometry.values)
    assert union.area == pytest.approx(simple.geometry.area.sum(), rel=1e-6)
    assert simple["area_ha"].sum() == pytest.approx(exact["area_ha"].sum(), rel=0.05)


def test_unknown_code_and_geographic_crs(tmp_path):
    labels = noisy_map()
    labels[0, 0] = 77
    with pytest.raises(InputError, match=r"map\.tif.*\[77\]"):
        vectorize_map(write_map(tmp_path / "map.tif", labels), NOM, tmp_path / "v.gpkg")
    with pytest.raises(InputError, match="not projected"):
        vectorize_map(write_map(tmp_path / "geo.tif", noisy_map(), crs=4326), NOM, tmp_path / "v.gpkg")
    assert not (tmp_path / "v.gpkg").exists()


@pytest.mark.parametrize("nodata", [0, 255])
def test_streamed_vectorization_equals_the_whole_map_pipeline(tmp_path, monkeypatch, nodata):
    """Strips of a few rows (streamed regularisation, sieve and polygons through files) give the
    polygons of the in-memory pipeline: majority filter of the whole map, sieve and polygonize
    of arrays; also for a map whose nodata is not 0."""
    import rasterio.features
    import shapely

    from cropchain.mapping import vectorize as vec

    labels = noisy_map(seed=5, h=97, w=83)
    if nodata:
        labels[labels == 0] = nodata
    path = tmp_path / "map.tif"
    base = {
        "crs": CRS.from_epsg(32631),
        "transform": from_origin(700000, 4800000, 10, 10),
        "width": 83,
        "height": 97,
    }
    with rasterio.open(path, "w", **geotiff_profile(base, count=1, dtype="uint8", nodata=nodata)) as dst:
        dst.write(labels, 1)
    monkeypatch.setattr(vec, "STRIP_PIXELS", 83 * 7)  # strips of 7 rows, the last one partial
    got = vectorize_map(path, NOM, tmp_path / "s.gpkg", mmu_ha=0.1, majority_radius=2)

    regular = majority_filter(labels, 2, nodata, block_rows=10_000)
    valid = regular != nodata
    sieved = rasterio.features.sieve(regular, 10, mask=valid, connectivity=8)
    shapes = list(rasterio.features.shapes(sieved, mask=valid, connectivity=8, transform=base["transform"]))
    assert len(got) == len(shapes) > 10
    assert got["code"].tolist() == [int(v) for _, v in shapes]
    expected = vec._valid_multipolygons(
        np.array([shapely.geometry.shape(g) for g, _ in shapes], dtype=object)
    )
    assert all(shapely.equals_exact(np.asarray(got.geometry), expected, 0))
