"""Monthly median composites (cropchain.series.composite) against an independent per-pixel computation."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from cropchain.demo import generate_demo_products
from cropchain.errors import ConfigError, InputError
from cropchain.io.raster import read_dates
from cropchain.series.composite import (
    clear_months,
    composite_series,
    month_grid,
    monthly_composite_tile,
)
from cropchain.series.tile import GAPFILLED_NODATA
from cropchain.sources.sentinel2 import find_safe_products, ingest_safe, scl_masked_for_kept


def reference_composites(
    values: np.ndarray, valid: np.ndarray, dates: list[dt.date], months: list[dt.date]
) -> np.ndarray:
    """The rules of MoisePlacier/Crop_type_classification written pixel by pixel with np.median.

    values [T, B, N], valid [T, N] -> float64 [M, B, N], NaN for pixels without any clear observation.
    """
    t, b, n = values.shape
    out = np.full((len(months), b, n), np.nan)
    for p in range(n):
        med = {}
        for k, m in enumerate(months):
            sel = [i for i, d in enumerate(dates) if (d.year, d.month) == (m.year, m.month) and valid[i, p]]
            if sel:
                med[k] = np.median(values[sel, :, p].astype(np.float64), axis=0)
        for k in range(len(months)):
            before = [j for j in med if j < k]
            after = [j for j in med if j > k]
            if k in med:
                out[k, :, p] = med[k]
            elif before and after:
                out[k, :, p] = (med[max(before)] + med[min(after)]) / 2
            elif before or after:
                out[k, :, p] = med[max(before)] if before else med[min(after)]
    return out


def _random_series(rng: np.random.Generator, n_dates: int, n_bands: int, n_pixels: int, clear: float):
    days = np.sort(rng.choice(np.arange(0, 365), n_dates, replace=False))
    dates = [dt.date(2021, 1, 1) + dt.timedelta(days=int(d)) for d in days]
    values = rng.integers(-1000, 12000, (n_dates, n_bands, n_pixels)).astype(np.int16)
    valid = rng.random((n_dates, n_pixels)) < clear
    valid[:, 0] = False  # a pixel never clear
    return dates, values, valid


@pytest.mark.parametrize("seed, clear", [(0, 0.15), (1, 0.4), (2, 0.8)])
def test_series_against_independent_computation(seed, clear):
    rng = np.random.default_rng(seed)
    dates, values, valid = _random_series(rng, 40, 3, 300, clear)
    dates = [d for d in dates if d.month not in (6, 7)]  # two months without any acquisition
    values, valid = values[: len(dates)], valid[: len(dates)]
    months = month_grid("2021-01-20", "2021-12-02")
    got = composite_series(values, valid, dates, months)
    want = reference_composites(values, valid, dates, months)
    assert got.dtype == np.float32 and got.shape == (12, 3, 300)
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want))
    assert np.isnan(got[:, :, 0]).all() and not np.isnan(got[:, :, valid.any(axis=0)]).any()
    np.testing.assert_array_equal(got[~np.isnan(got)], want[~np.isnan(want)])
    # 2-D input, dates given in another order: the same result.
    order = rng.permutation(len(dates))
    got2d = composite_series(values[order, 1], valid[order], [dates[i] for i in order], months)
    np.testing.assert_array_equal(got2d, got[:, 1])


def test_fill_rules_on_a_hand_made_series():
    months = month_grid("2021-01-01", "2021-06-30")
    dates = [
        dt.date(2021, 2, 3),
        dt.date(2021, 2, 20),
        dt.date(2021, 2, 25),
        dt.date(2021, 5, 9),
        dt.date(2021, 5, 10),
    ]
    values = np.array([[10], [40], [1000], [70], [90]], dtype=np.int16)
    valid = np.array([[True], [True], [False], [True], [True]])
    got = composite_series(values, valid, dates, months)[:, 0]
    # Jan <- Feb (first month: nearest); Feb = median(10, 40); Mar, Apr = mean(Feb, May); Jun <- May (last).
    np.testing.assert_array_equal(got, [25, 25, 52.5, 52.5, 80, 80])


def test_month_grid_and_kept_classes():
    assert month_grid("2020-11-30", "2021-02-01") == [
        dt.date(2020, 11, 15),
        dt.date(2020, 12, 15),
        dt.date(2021, 1, 15),
        dt.date(2021, 2, 15),
    ]
    assert month_grid(dt.date(2021, 3, 31), dt.date(2021, 3, 31), day=1) == [dt.date(2021, 3, 1)]
    with pytest.raises(ConfigError, match="before the start"):
        month_grid("2021-05-01", "2021-04-01")
    with pytest.raises(ConfigError, match="composite_day"):
        month_grid("2021-05-01", "2021-06-01", day=10)
    assert scl_masked_for_kept([4, 5, 6, 7]) == [0, 1, 2, 3, 8, 9, 10, 11]
    with pytest.raises(ConfigError, match="scl_kept_classes"):
        scl_masked_for_kept([4, 12])


def _write(path: Path, array: np.ndarray, descriptions: list[str], nodata=None) -> None:
    profile = {
        "driver": "GTiff",
        "count": array.shape[0],
        "height": array.shape[1],
        "width": array.shape[2],
        "dtype": array.dtype.name,
        "crs": "EPSG:32631",
        "nodata": nodata,
        "transform": Affine(10.0, 0.0, 500000.0, 0.0, -10.0, 4800000.0),
    }
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
        for i, d in enumerate(descriptions, start=1):
            dst.set_band_description(i, d)


def test_tile_streams_by_windows_and_keeps_the_gapfill_contract(tmp_path):
    rng = np.random.default_rng(7)
    h, w, bands = 37, 53, ["B04", "B08"]
    dates, values, valid = _random_series(rng, 30, len(bands), h * w, 0.35)
    dates[-1] = dt.date(2022, 1, 3)  # outside the period: ignored
    values[:, :, 5] = -32768  # a nodata pixel in raw.tif, mask says clear
    valid[:, 5] = True
    ds = [f"{d:%Y%m%d}" for d in dates]
    _write(
        tmp_path / "raw.tif", values.reshape(-1, h, w), [f"{d}_{b}" for d in ds for b in bands], nodata=-32768
    )
    _write(tmp_path / "raw_mask.tif", (~valid).astype(np.uint8).reshape(-1, h, w), ds)
    (tmp_path / "raw_dates.txt").write_text("".join(d + "\n" for d in ds))
    out = tmp_path / "out"
    monthly_composite_tile(
        tmp_path / "raw.tif",
        tmp_path / "raw_mask.tif",
        tmp_path / "raw_dates.txt",
        out / "gapfilled.tif",
        out / "dates.txt",
        out / "validity.tif",
        start="2021-01-01",
        end="2021-12-31",
        block=16,
    )
    months = month_grid("2021-01-01", "2021-12-31")
    assert read_dates(out / "dates.txt") == [f"2021{m:02d}15" for m in range(1, 13)]
    valid[:, 5] = False
    want = reference_composites(values[:-1], valid[:-1], dates[:-1], months)
    expected = np.where(np.isnan(want), GAPFILLED_NODATA, np.rint(np.nan_to_num(want))).astype(np.int16)
    with rasterio.open(out / "gapfilled.tif") as src:
        assert src.descriptions[:3] == ("20210115_B04", "20210115_B08", "20210215_B04")
        assert src.nodata == GAPFILLED_NODATA and src.dtypes[0] == "int16" and src.count == 24
        got = src.read().reshape(12, len(bands), h * w)
    np.testing.assert_array_equal(got, expected)
    assert (got[:, :, [0, 5]] == GAPFILLED_NODATA).all()
    with rasterio.open(out / "validity.tif") as src:
        np.testing.assert_array_equal(src.read(1).ravel(), valid[:-1].sum(axis=0))


def test_no_date_in_the_period_names_the_dates_file(tmp_path):
    values = np.ones((2, 8, 8), np.int16)
    _write(tmp_path / "raw.tif", values, ["20200105_B04", "20200206_B04"], nodata=-32768)
    _write(tmp_path / "raw_mask.tif", np.zeros((2, 8, 8), np.uint8), ["20200105", "20200206"])
    (tmp_path / "raw_dates.txt").write_text("20200105\n20200206\n")
    with pytest.raises(InputError, match="no acquisition date within the months 2021-01 .. 2021-03") as err:
        monthly_composite_tile(
            tmp_path / "raw.tif",
            tmp_path / "raw_mask.tif",
            tmp_path / "raw_dates.txt",
            tmp_path / "o/gapfilled.tif",
            tmp_path / "o/dates.txt",
            tmp_path / "o/validity.tif",
            start="2021-01-01",
            end="2021-03-31",
        )
    assert "raw_dates.txt" in str(err.value) and not (tmp_path / "o").exists()


def test_safe_ingest_with_kept_classes(tmp_path):
    """For composites the SAFE ingest masks every SCL class but the kept ones (4-7 by default)."""
    dates = [dt.date(2021, 2, 4), dt.date(2021, 4, 10), dt.date(2021, 6, 9), dt.date(2021, 8, 8)]
    products = generate_demo_products(tmp_path / "safe", "T31TXA", seed=5, width=40, height=32, dates=dates)
    ingest_safe(
        find_safe_products(tmp_path / "safe"),
        tmp_path / "raw.tif",
        tmp_path / "raw_mask.tif",
        tmp_path / "raw_dates.txt",
        bands=["B04", "B08"],
        scl_masked_classes=scl_masked_for_kept([4, 5, 6, 7]),
    )
    with rasterio.open(tmp_path / "raw_mask.tif") as src:
        mask = src.read()
    for t, safe in enumerate(products):
        with rasterio.open(next(safe.glob("GRANULE/*/IMG_DATA/R20m/*_SCL_20m.jp2"))) as src:
            scl = np.repeat(np.repeat(src.read(1), 2, axis=0), 2, axis=1)[:32, :40]
        np.testing.assert_array_equal(mask[t], ~np.isin(scl, [4, 5, 6, 7]))
    assert 0 < mask.mean() < 1


def test_clear_months_are_the_months_taken_as_a_median():
    """clear_months says which months had a clear observation (the others are filled): a pixel's
    composite of a clear month is its median, whatever the values of the other months."""
    dates = [dt.date(2021, 1, 5), dt.date(2021, 1, 25), dt.date(2021, 3, 10), dt.date(2021, 4, 2)]
    months = month_grid("2021-01-01", "2021-04-30")
    valid = np.array([[True, False, False], [False, False, False], [True, True, False], [False, True, False]])
    clear = clear_months(valid, dates, months)
    np.testing.assert_array_equal(
        clear, [[True, False, False], [False, False, False], [True, True, False], [False, True, False]]
    )
    values = np.arange(12, dtype=np.int16).reshape(4, 3) * 100  # date i, pixel p: 300 i + 100 p
    comp = composite_series(values, valid, dates, months)
    assert (
        comp[0, 0] == 0 and comp[2, 0] == 600 and comp[2, 1] == 700 and comp[3, 1] == 1000
    )  # the clear months
    assert comp[1, 0] == 300  # February: no observation, filled as the mean of January and March
    assert np.isnan(comp[:, 2]).all() and not clear[:, 2].any()
    with pytest.raises(ValueError, match="T dates"):
        clear_months(valid[:3], dates, months)
