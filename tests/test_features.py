"""Spectral features: iota2's layout, values by hand, nodata, skipped and unknown indices."""

from __future__ import annotations

import logging
import math
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from cropchain.errors import CropchainError, InputError
from cropchain.series.features import FEATURES_NODATA, compute_features, feature_names

DATES = ["20180123", "20180202", "20180212"]
BANDS = ["B02", "B04", "B08", "B11"]
H, W = 45, 40


def write_gapfilled(
    folder: Path, bands: list[str], seed: int = 0, describe: bool = True
) -> tuple[Path, Path, np.ndarray]:
    """A gapfilled.tif (int16 reflectance x10000, nodata -32768) and its dates.txt."""
    rng = np.random.default_rng(seed)
    data = rng.integers(0, 10000, size=(len(DATES), len(bands), H, W)).astype(np.int16)
    data[:, :, 0, 0] = 0  # 0/0 ratios
    data[:, :, 5:8, 3:6] = -32768  # pixels without any clear date
    path, dates = folder / "gapfilled.tif", folder / "dates.txt"
    with rasterio.open(
        path,
        "w",
        driver="GTiff",
        width=W,
        height=H,
        count=len(DATES) * len(bands),
        dtype="int16",
        nodata=-32768,
        crs="EPSG:32631",
        transform=Affine(10, 0, 500000, 0, -10, 4800000),
    ) as dst:
        dst.write(data.reshape(-1, H, W))
        if describe:
            for i in range(len(DATES) * len(bands)):
                dst.set_band_description(i + 1, f"{DATES[i // len(bands)]}_{bands[i % len(bands)]}")
    dates.write_text("\n".join(DATES) + "\n")
    return path, dates, data


def test_feature_names_follow_iota2_layout():
    names = feature_names(["20180123", "20180202"], ["B02", "B04", "B08", "B11"])
    assert names == [
        "20180123_B02",
        "20180123_B04",
        "20180123_B08",
        "20180123_B11",
        "20180202_B02",
        "20180202_B04",
        "20180202_B08",
        "20180202_B11",
        "20180123_NDVI",
        "20180202_NDVI",
        "20180123_NDWI",
        "20180202_NDWI",
        "20180123_brightness",
        "20180202_brightness",
    ]
    assert feature_names(["20180123"], ["B02"], indices=()) == ["20180123_B02"]


def test_unknown_index_lists_the_known_ones():
    with pytest.raises(ValueError, match="NDVI, NDWI, brightness") as err:
        feature_names(DATES, BANDS, indices=("NDVI", "EVI"))
    assert isinstance(err.value, CropchainError) and "EVI" in str(err.value)


def test_feature_values_by_hand(tmp_path):
    path, dates, data = write_gapfilled(tmp_path, BANDS)
    out = tmp_path / "features.tif"
    names = compute_features(path, dates, out, bands=BANDS, block=16)
    assert names == feature_names(DATES, BANDS)
    with rasterio.open(out) as src:
        assert src.dtypes[0] == "float32" and src.nodata == FEATURES_NODATA
        assert list(src.descriptions) == names and src.count == 3 * 4 + 3 * 3
        feats = src.read()
    col = {n: i for i, n in enumerate(names)}
    for r, c in [(1, 2), (17, 33), (44, 39), (30, 0)]:
        for t, d in enumerate(DATES):
            b02, b04, b08, b11 = (int(v) / 10000 for v in data[t, :, r, c])
            assert feats[col[f"{d}_B08"], r, c] == pytest.approx(b08, rel=1e-6)
            assert feats[col[f"{d}_NDVI"], r, c] == pytest.approx((b08 - b04) / (b08 + b04), rel=1e-5)
            assert feats[col[f"{d}_NDWI"], r, c] == pytest.approx((b08 - b11) / (b08 + b11), rel=1e-5)
            bright = math.sqrt(b02**2 + b04**2 + b08**2 + b11**2)
            assert feats[col[f"{d}_brightness"], r, c] == pytest.approx(bright, rel=1e-6)
    zero = feats[:, 0, 0]  # all reflectances 0: ratios 0, not NaN
    assert (zero == 0).all()
    assert (feats[:, 5:8, 3:6] == FEATURES_NODATA).all()
    valid = np.ones((H, W), dtype=bool)
    valid[5:8, 3:6] = False
    assert np.isfinite(feats[:, valid]).all() and (feats[:, valid] != FEATURES_NODATA).all()
    assert -1 <= feats[col["20180202_NDVI"], valid].min() and feats[col["20180202_NDVI"], valid].max() <= 1


def test_ndwi_skipped_without_b11(tmp_path, caplog):
    bands = ["B02", "B03", "B04", "B08"]
    path, dates, data = write_gapfilled(tmp_path, bands, seed=1)
    with caplog.at_level(logging.WARNING, logger="cropchain.series.features"):
        names = compute_features(path, dates, tmp_path / "f.tif", bands=bands, block=32)
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1 and "NDWI" in warnings[0].getMessage() and "B11" in warnings[0].getMessage()
    assert not any("NDWI" in n for n in names)
    assert names[-6:] == [f"{d}_NDVI" for d in DATES] + [f"{d}_brightness" for d in DATES]
    with rasterio.open(tmp_path / "f.tif") as src:
        assert src.count == len(names) == 3 * 4 + 2 * 3
        ndvi = src.read(names.index("20180212_NDVI") + 1)
    b04, b08 = data[2, 2, 20, 11] / 10000, data[2, 3, 20, 11] / 10000
    assert ndvi[20, 11] == pytest.approx((b08 - b04) / (b08 + b04), rel=1e-5)


def test_bands_inconsistent_with_the_file(tmp_path):
    path, dates, _ = write_gapfilled(tmp_path, BANDS)
    with pytest.raises(InputError, match="gapfilled.tif: 12 bands, expected 3 dates x 3 bands"):
        compute_features(path, dates, tmp_path / "f.tif", bands=["B02", "B04", "B08"])
    with pytest.raises(InputError, match="band 2 is described '20180123_B04', expected '20180123_B08'"):
        compute_features(path, dates, tmp_path / "f.tif", bands=["B02", "B08", "B04", "B11"])
    assert not (tmp_path / "f.tif").exists()


def test_features_computed_per_window_equal_the_stored_stack(tmp_path):
    """Every way the chain reads features (a whole window, a subset of bands, some pixels)
    gives the numbers of the exported stack, to the bit: one definition everywhere."""
    from rasterio.windows import Window

    from cropchain.series.features import (
        FeatureSpec,
        open_features,
        read_feature_pixels,
    )

    path, dates, _ = write_gapfilled(tmp_path, BANDS, seed=3)
    compute_features(path, dates, tmp_path / "features.tif", bands=BANDS, block=7)
    spec = FeatureSpec(path, dates, tuple(BANDS))
    rng = np.random.default_rng(0)
    with open_features(spec) as fr, rasterio.open(tmp_path / "features.tif") as stored:
        assert fr.descriptions == stored.descriptions and (fr.height, fr.width) == (H, W)
        for win in (Window(0, 0, W, H), Window(3, 4, 17, 9)):
            np.testing.assert_array_equal(fr.read(window=win), stored.read(window=win))
            subset = sorted(rng.choice(fr.count, 7, replace=False) + 1)
            np.testing.assert_array_equal(fr.read(subset, window=win), stored.read(subset, window=win))
            rows, cols = rng.integers(0, win.height, 20), rng.integers(0, win.width, 20)
            np.testing.assert_array_equal(
                read_feature_pixels(fr, win, rows, cols), read_feature_pixels(stored, win, rows, cols)
            )
        assert (fr.read(window=Window(3, 5, 3, 3)) == FEATURES_NODATA).all()  # no clear date: nodata


def test_features_read_into_a_reused_buffer(tmp_path):
    """``read(out=...)`` window after window (large, then smaller: the series buffer is reused)
    gives the numbers of fresh reads; a wrong ``out`` is refused."""
    from rasterio.windows import Window

    from cropchain.series.features import FeatureSpec, open_features

    path, dates, _ = write_gapfilled(tmp_path, BANDS, seed=4)
    with open_features(FeatureSpec(path, dates, tuple(BANDS))) as fr:
        flat = np.full(fr.count * H * W, np.nan, dtype=np.float32)
        for win in (Window(0, 0, W, H), Window(5, 2, 11, 13), Window(30, 40, 10, 5)):
            shape = (fr.count, int(win.height), int(win.width))
            out = flat[: np.prod(shape)].reshape(shape)
            assert fr.read(window=win, out=out) is out
            with open_features(FeatureSpec(path, dates, tuple(BANDS))) as fresh:
                np.testing.assert_array_equal(out, fresh.read(window=win))
        with pytest.raises(ValueError, match="C-contiguous float32"):
            fr.read(window=Window(0, 0, 4, 4), out=np.empty((fr.count, 4, 5), np.float32))
