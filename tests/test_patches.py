"""Patches for the networks: sparse labels, hold-out, standardization, class-balanced draws, augmentation."""

from __future__ import annotations

from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import rasterio.features
from rasterio.crs import CRS
from rasterio.transform import from_origin
from rasterio.windows import Window
from shapely.geometry import box

from cropchain.errors import InputError
from cropchain.io.raster import geotiff_profile
from cropchain.learning.patches import (
    IGNORE_INDEX,
    FeatureBlocks,
    PatchSampler,
    TileSource,
    read_learning_polygons,
    select_holdout,
    standardization,
)
from cropchain.models.networks import channel_groups
from cropchain.series.features import FeatureSpec, open_features

CRS_UTM = CRS.from_epsg(32631)
ORIGIN = (600000.0, 4800000.0)
DATES = ["20180301", "20180501", "20180701", "20180901"]
CHANNELS = ["B04", "B08", "B11", "NDVI"]
NAMES = [f"{d}_{c}" for d in DATES for c in CHANNELS[:3]] + [f"{d}_NDVI" for d in DATES]
# per class: NDVI-like profile over the 4 dates
PROFILES = {2: [0.2, 0.8, 0.3, 0.2], 5: [0.3, 0.3, 0.8, 0.6], 9: [0.7, 0.7, 0.7, 0.7]}


def parcel_layout(size: int = 96, cell: int = 12, seed: int = 0, rare: int = 9) -> gpd.GeoDataFrame:
    """Grid of ``cell`` px parcels of classes 2 and 5, and one small parcel of the rare class.

    Columns polygon_id, code, split (alternating learn / validation, 2 learn for 1 validation),
    geometry (EPSG:32631, 10 m pixels).
    """
    rng = np.random.default_rng(seed)
    rows = []
    n = size // cell
    pid = 0
    for i in range(n):
        for j in range(n):
            pid += 1
            x0, y0 = ORIGIN[0] + j * cell * 10, ORIGIN[1] - (i + 1) * cell * 10
            # parcels 1 px inside their cell: roads between them stay unlabelled
            geom = box(x0 + 10, y0 + 10, x0 + (cell - 1) * 10, y0 + (cell - 1) * 10)
            rows.append({"polygon_id": pid, "code": int(rng.choice([2, 5])), "geometry": geom})
    # the rare class: one 4 x 4 px parcel inside cell (2, 3)
    x0, y0 = ORIGIN[0] + 3 * cell * 10 + 30, ORIGIN[1] - 3 * cell * 10 + 30
    rows.append({"polygon_id": pid + 1, "code": rare, "geometry": box(x0, y0, x0 + 40, y0 + 40)})
    gdf = gpd.GeoDataFrame(rows, crs=CRS_UTM)
    gdf["split"] = np.where(np.arange(len(gdf)) % 3 == 2, "validation", "learn")
    gdf.loc[gdf["code"] == rare, "split"] = "learn"
    # the rare parcel overlaps a grid parcel: that parcel is cut out where they overlap
    rare_geom = gdf.geometry.iloc[-1]
    gdf.loc[gdf.index[:-1], "geometry"] = gdf.geometry.iloc[:-1].difference(rare_geom)
    return gdf


def write_tile(
    folder: Path,
    polygons: gpd.GeoDataFrame,
    *,
    size: int = 96,
    seed: int = 0,
    noise: float = 0.08,
    cloud: bool = True,
) -> tuple[Path, Path, Path]:
    """features.tif (16 bands: 3 bands x 4 dates then NDVI x 4 dates), validity.tif and
    split.gpkg of a synthetic tile whose parcels follow their class's temporal profile."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    transform = from_origin(ORIGIN[0], ORIGIN[1], 10, 10)
    codes = rasterio.features.rasterize(
        zip(polygons.geometry, polygons["code"]),
        out_shape=(size, size),
        transform=transform,
        fill=0,
        dtype="int32",
    )
    ndvi = np.full((len(DATES), size, size), 0.1, dtype=np.float32)
    for code, prof in PROFILES.items():
        ndvi[:, codes == code] = np.asarray(prof, dtype=np.float32)[:, None]
    ndvi += rng.normal(0, noise, ndvi.shape).astype(np.float32)
    feats = []
    for t in range(len(DATES)):
        b04 = 0.15 - 0.1 * ndvi[t] + rng.normal(0, 0.01, (size, size))
        b08 = 0.2 + 0.3 * ndvi[t] + rng.normal(0, 0.01, (size, size))
        b11 = 0.25 + rng.normal(0, 0.02, (size, size))
        feats += [b04, b08, b11]
    feats += list(ndvi)
    feats = np.stack(feats).astype(np.float32)
    validity = np.full((size, size), len(DATES), dtype=np.uint8)
    if cloud:
        validity[40:44, :] = 0  # a strip without any clear date
        feats[:, validity == 0] = -9999.0
    base = {"crs": CRS_UTM, "transform": transform, "width": size, "height": size}
    fpath, vpath, spath = folder / "features.tif", folder / "validity.tif", folder / "split.gpkg"
    with rasterio.open(
        fpath, "w", **geotiff_profile(base, count=len(NAMES), dtype="float32", nodata=-9999)
    ) as dst:
        dst.write(feats)
        dst.descriptions = tuple(NAMES)
    with rasterio.open(vpath, "w", **geotiff_profile(base, count=1, dtype="uint8", nodata=None)) as dst:
        dst.write(validity, 1)
    polygons.to_file(spath, layer="split", driver="GPKG")
    return fpath, vpath, spath


@pytest.fixture(scope="module")
def tile(tmp_path_factory):
    polygons = parcel_layout()
    paths = write_tile(tmp_path_factory.mktemp("tile"), polygons)
    return polygons, paths


def build_source(tile, tmp_path, holdout=None, pad=32):
    polygons, (fpath, vpath, spath) = tile
    learn = read_learning_polygons(spath, CRS_UTM)
    held = np.zeros(len(learn), dtype=bool) if holdout is None else holdout
    return learn, TileSource.build("T", fpath, vpath, learn, held, pad=pad)


def test_only_learning_polygons_carry_labels(tile, tmp_path):
    polygons, (fpath, vpath, spath) = tile
    learn, src = build_source(tile, tmp_path)
    assert set(learn["polygon_id"]) == set(polygons.loc[polygons["split"] == "learn", "polygon_id"])
    with rasterio.open(vpath) as v:
        validity = v.read(1)
    transform = from_origin(ORIGIN[0], ORIGIN[1], 10, 10)

    def burn(gdf):
        return rasterio.features.rasterize(
            zip(gdf.geometry, gdf["code"]), out_shape=validity.shape, transform=transform, fill=0
        )

    val = burn(polygons[polygons["split"] == "validation"])
    assert src.window.row_off == 0 and src.features.shape == (96, 96, len(NAMES))
    assert (src.train[val > 0] == 0).all()  # validation pixels are unlabelled
    assert (src.train[validity == 0] == 0).all()  # no clear date: no label
    expected = burn(polygons[polygons["split"] == "learn"])
    expected[validity == 0] = 0
    np.testing.assert_array_equal(src.train, expected)
    assert (src.holdout == 0).all()
    # relabelling and reshaping the validation polygons changes nothing the training sees
    moved = polygons.copy()
    is_val = moved["split"] == "validation"
    moved.loc[is_val, "code"] = 9
    moved.loc[is_val, "geometry"] = moved.loc[is_val].geometry.buffer(20)
    moved.to_file(tmp_path / "moved.gpkg", layer="split", driver="GPKG")
    learn2 = read_learning_polygons(tmp_path / "moved.gpkg", CRS_UTM)
    src2 = TileSource.build("T", fpath, vpath, learn2, np.zeros(len(learn2), bool), pad=32)
    np.testing.assert_array_equal(src2.train, src.train)


def test_holdout_selection(tile):
    polygons, _ = tile
    learn = polygons[polygons["split"] == "learn"].reset_index(drop=True)
    held = select_holdout([learn], 0.15, seed=4)[0]
    again = select_holdout([learn], 0.15, seed=4)[0]
    other = select_holdout([learn], 0.15, seed=5)[0]
    np.testing.assert_array_equal(held, again)
    assert (held != other).any()
    for code in (2, 5):
        n = int((learn["code"] == code).sum())
        assert int(held[learn["code"].to_numpy() == code].sum()) == int(np.floor(0.15 * n + 0.5))
    assert not held[learn["code"].to_numpy() == 9].any()  # a class with one polygon keeps it for training


def test_holdout_pixels_leave_the_training_labels(tile, tmp_path):
    polygons, _ = tile
    learn = read_learning_polygons(tile[1][2], CRS_UTM)
    held = select_holdout([learn], 0.3, seed=1)[0]
    _, src = build_source(tile, tmp_path, holdout=held)
    assert (src.holdout > 0).sum() > 100
    assert not ((src.holdout > 0) & (src.train > 0)).any()
    sampler = PatchSampler([src], [2, 5, 9], 32, np.random.default_rng(0))
    windows = sampler.holdout_windows()
    seen = np.zeros(src.train.shape, int)
    for w in windows:
        hit = w.labels != IGNORE_INDEX
        seen[w.top : w.top + 32, w.left : w.left + 32] += hit
        assert (
            sampler.class_index(src.holdout[w.top : w.top + 32, w.left : w.left + 32])[hit] == w.labels[hit]
        ).all()
    np.testing.assert_array_equal(seen, (src.holdout > 0).astype(int))  # every held-out pixel scored once
    x, y = sampler.window_batch(windows[:3])
    assert x.shape == (3, len(NAMES), 32, 32) and y.shape == (3, 32, 32)
    # drawn training patches never label a held-out pixel
    for _ in range(5):
        xb, yb = sampler.draw(8)
        assert (yb != IGNORE_INDEX).any()


def test_standardization_pooled_over_dates(tile, tmp_path):
    _, src = build_source(tile, tmp_path)
    groups = channel_groups(NAMES)
    assert len(set(groups)) == 4  # B04, B08, B11, NDVI
    mean, std = standardization([src], groups)
    labelled = src.train > 0
    ndvi = np.asarray(src.features)[labelled][:, [NAMES.index(f"{d}_NDVI") for d in DATES]]
    np.testing.assert_allclose(mean[NAMES.index("20180501_NDVI")], ndvi.mean(), rtol=1e-5)
    np.testing.assert_allclose(std[NAMES.index("20180901_NDVI")], ndvi.std(), rtol=1e-4)
    raw = np.asarray(src.features).copy()
    src.standardize(mean, std)
    out = np.asarray(src.features)
    assert (out[raw[..., 0] == -9999.0] == 0).all()  # nodata -> 0, the learning mean
    np.testing.assert_allclose(
        out[labelled].mean(axis=0)[groups == groups[NAMES.index("20180301_NDVI")]].mean(), 0.0, atol=1e-5
    )


def test_patches_draw_rare_classes_and_stay_aligned(tile, tmp_path):
    polygons, _ = tile
    _, src = build_source(tile, tmp_path)
    n_rare = int((src.train == 9).sum())
    assert 0 < n_rare < 0.01 * (src.train > 0).sum()  # 16 of ~3500 labelled pixels
    mean, std = standardization([src], channel_groups(NAMES))
    src.standardize(mean, std)
    sampler = PatchSampler([src], [2, 5, 9], 32, np.random.default_rng(3), augment=True)
    x, y = sampler.draw(300)
    assert x.shape == (300, len(NAMES), 32, 32) and x.dtype == np.float32 and y.dtype == np.int64
    with_rare = (y == 2).any(axis=(1, 2)).mean()
    assert with_rare > 0.25  # about one patch in three is drawn for the rare class
    freq = sampler.class_frequencies(200)
    assert (
        freq[2] > 3 * n_rare / (src.train > 0).sum()
    )  # what the loss sees: 4x the rare class's share of the pixels
    # flips and rotations move features and labels together: the NDVI of date 2 separates
    # class 2 (0.8) from class 5 (0.3) on every labelled pixel of every patch
    k = NAMES.index("20180501_NDVI")
    ndvi = x[:, k] * std[k] + mean[k]
    assert (ndvi[y == 0] > 0.55).mean() > 0.98 and (ndvi[y == 1] < 0.55).mean() > 0.98


def test_augmentation_flips_and_rotates_features_with_labels():
    p = 6
    rows, cols = np.mgrid[0:p, 0:p]
    feats = np.stack([rows, cols], axis=-1).astype(np.float32)  # [h, w, 2]: each pixel knows where it was
    codes = (1 + (rows * p + cols) % 3).astype(np.int16)
    src = TileSource("T", Window(0, 0, p, p), feats, codes, np.zeros_like(codes), ["r", "c"])
    sampler = PatchSampler([src], [1, 2, 3], p, np.random.default_rng(0), augment=True)
    x, y = sampler.draw(64)
    seen = set()
    for xi, yi in zip(x, y):
        r, c = xi[0].astype(int), xi[1].astype(int)
        np.testing.assert_array_equal(yi, codes[r, c] - 1)  # the label followed its pixel
        seen.add((r[0, 0], c[0, 0], r[0, 1], c[0, 1]))
    assert len(seen) == 8  # the 8 flips and rotations of the square all occur
    x0, _ = PatchSampler([src], [1, 2, 3], p, np.random.default_rng(0), augment=False).draw(5)
    assert (x0[:, 0] == rows).all()


def test_bad_inputs(tile, tmp_path):
    polygons, (fpath, vpath, spath) = tile
    with pytest.raises(InputError, match="split polygons not found"):
        read_learning_polygons(tmp_path / "none.gpkg")
    bad = polygons.copy()
    bad["split"] = "train"
    bad.to_file(tmp_path / "bad.gpkg", layer="split", driver="GPKG")
    with pytest.raises(InputError, match="unknown split value"):
        read_learning_polygons(tmp_path / "bad.gpkg")
    learn = read_learning_polygons(spath, CRS_UTM)
    with pytest.raises(InputError, match="validity raster"):
        TileSource.build("T", fpath, tmp_path / "none.tif", learn, np.zeros(len(learn), bool), pad=8)


def write_series(folder: Path, polygons: gpd.GeoDataFrame, size: int) -> tuple[FeatureSpec, Path]:
    """gapfilled.tif (int16, 3 dates x B04 B08 B11, a nodata strip), dates.txt and validity.tif."""
    folder.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(1)
    transform = from_origin(ORIGIN[0], ORIGIN[1], 10, 10)
    codes = rasterio.features.rasterize(
        zip(polygons.geometry, polygons["code"]), out_shape=(size, size), transform=transform, fill=0
    )
    series = 500 + 90 * codes[None] * np.arange(1, 10)[:, None, None] % 4000
    series = (series + rng.integers(0, 300, series.shape)).astype(np.int16)
    series[:, 40:44] = -32768
    validity = np.where((series == -32768).all(axis=0), 0, 3).astype(np.uint8)
    base = {"crs": CRS_UTM, "transform": transform, "width": size, "height": size}
    with rasterio.open(
        folder / "gapfilled.tif", "w", **geotiff_profile(base, count=9, dtype="int16", nodata=-32768)
    ) as dst:
        dst.write(series)
        dst.descriptions = tuple(f"{d}_{b}" for d in DATES[:3] for b in CHANNELS[:3])
    with rasterio.open(
        folder / "validity.tif", "w", **geotiff_profile(base, count=1, dtype="uint8", nodata=None)
    ) as dst:
        dst.write(validity, 1)
    (folder / "dates.txt").write_text("\n".join(DATES[:3]) + "\n")
    return FeatureSpec(
        folder / "gapfilled.tif", folder / "dates.txt", tuple(CHANNELS[:3])
    ), folder / "validity.tif"


def row_chunk_standardization(features: np.ndarray, labelled: np.ndarray, groups: np.ndarray):
    """The statistics as computed before windowed reads: sums over chunks of rows of the whole area."""
    step = max(1, (1 << 22) // (features.shape[1] * features.shape[2]))
    total, squares, count = (np.zeros(features.shape[2]) for _ in range(3))
    for r0 in range(0, features.shape[0], step):
        mask = labelled[r0 : r0 + step]
        x = features[r0 : r0 + step][mask].astype(np.float64)
        ok = (x != -9999.0) & ~np.isnan(x)
        x = np.where(ok, x, 0.0)
        total, squares, count = total + x.sum(axis=0), squares + (x * x).sum(axis=0), count + ok.sum(axis=0)
    n = int(groups.max()) + 1
    g_count = np.maximum(np.bincount(groups, count, n), 1)
    g_mean = np.bincount(groups, total, n) / g_count
    g_std = np.sqrt(np.maximum(np.bincount(groups, squares, n) / g_count - g_mean**2, 0.0))
    g_std = np.where(g_std > 1e-9, g_std, 1.0)
    return g_mean[groups].astype(np.float32), g_std[groups].astype(np.float32)


@pytest.mark.parametrize("kind", ["series", "geotiff"])
def test_windowed_reads_give_the_patches_of_a_whole_area_read(tmp_path, kind):
    """Patches, hold-out windows and statistics read through the block cache (several 256 px blocks,
    a cache of one block) equal those of the whole labelled area read at once into memory."""
    size = 300
    polygons = parcel_layout(size=size, cell=12, seed=2)
    if kind == "series":
        features, vpath = write_series(tmp_path, polygons, size)
        polygons.to_file(tmp_path / "split.gpkg", layer="split", driver="GPKG")
        spath = tmp_path / "split.gpkg"
    else:
        features, vpath, spath = write_tile(tmp_path, polygons, size=size)
    learn = read_learning_polygons(spath, CRS_UTM)
    held = select_holdout([learn], 0.2, seed=0)[0]
    with TileSource.build("T", features, vpath, learn, held, pad=16, cache_mb=1e-3) as src:
        assert isinstance(src.features, FeatureBlocks) and src.window.width > 256
        with open_features(features) as fsrc:
            whole = fsrc.read(window=src.window).transpose(1, 2, 0).copy()  # [h, w, F]
        assert (whole == -9999.0).any()
        np.testing.assert_array_equal(np.asarray(src.features), whole)
        ref = TileSource("T", src.window, whole, src.train, src.holdout, src.feature_names)
        groups = channel_groups(src.feature_names)
        mean, std = standardization([src], groups)
        old_mean, old_std = row_chunk_standardization(whole, (src.train > 0) | (src.holdout > 0), groups)
        np.testing.assert_array_equal(mean, old_mean)
        np.testing.assert_array_equal(std, old_std)
        src.standardize(mean, std)
        ref.standardize(mean, std)
        new = PatchSampler([src], [2, 5, 9], 32, np.random.default_rng(5))
        old = PatchSampler([ref], [2, 5, 9], 32, np.random.default_rng(5))
        for n in (1, 7, 16):
            for a, b in zip(new.draw(n), old.draw(n)):
                np.testing.assert_array_equal(a, b)
        windows = new.holdout_windows()
        assert len(windows) > 3
        for a, b in zip(new.window_batch(windows), old.window_batch(windows)):
            np.testing.assert_array_equal(a, b)
        assert src.features.blocks_read > 4  # blocks were evicted and read again
        assert len(src.features._cache) == 1  # memory: one block at most with this budget
        x = src.features[250:270, 0:300]  # a read across blocks
        np.testing.assert_array_equal(x, ref.features[250:270, 0:300])
