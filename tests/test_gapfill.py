"""Gap filling (OTB ImageTimeSeriesGapFilling semantics) against independent per-pixel computations."""

from __future__ import annotations

import datetime as dt
import importlib.util
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine
from scipy.interpolate import Akima1DInterpolator, CubicSpline

from cropchain.errors import ConfigError, CropchainError, InputError
from cropchain.series.dates import output_date_grid
from cropchain.series.gapfill import gapfill_series, gapfill_tile
from cropchain.series.tile import GAPFILLED_NODATA

# ----------------------------------------------------------------------------- references
IN_DAYS = np.array([0, 5, 12, 20, 25, 33, 41, 50, 55, 63, 70, 81], dtype=float)
# before the first / after the last input date, between dates, and on input dates
OUT_DAYS = np.union1d(np.arange(-14, 96, 7.0), IN_DAYS[::3])


def reference_pixel(
    values: np.ndarray, valid: np.ndarray, in_days: np.ndarray, out_days: np.ndarray, mode: str
) -> np.ndarray:
    """One pixel, written independently: np.interp / scipy splines, constant ends."""
    x, y = in_days[valid], values[valid].astype(np.float64)
    if x.size == 0:
        return np.full(out_days.size, np.nan)
    res = np.interp(out_days, x, y)  # np.interp copies the end values outside [x0, xn]
    if mode == "spline" and x.size >= 3:
        fn = CubicSpline(x, y, bc_type="natural") if x.size <= 4 else Akima1DInterpolator(x, y)
        inside = (out_days >= x[0]) & (out_days <= x[-1])
        res[inside] = fn(out_days[inside])
    return res


def random_series(n: int, seed: int, t: int = IN_DAYS.size) -> tuple[np.ndarray, np.ndarray]:
    """int16 reflectances and validity with every count of valid dates 0..t represented."""
    rng = np.random.default_rng(seed)
    values = rng.integers(0, 10000, size=(t, n)).astype(np.int16)
    k = np.resize(np.arange(t + 1), n)  # pixels with 0, 1, 2, ..., t valid dates
    rng.shuffle(k)
    valid = np.zeros((t, n), dtype=bool)
    for j in range(n):
        valid[rng.choice(t, size=k[j], replace=False), j] = True
    values[~valid] = rng.integers(-32768, 32767, size=(~valid).sum())  # garbage under the mask
    return values, valid


@pytest.mark.parametrize("mode", ["linear", "spline"])
def test_series_matches_per_pixel_reference(mode):
    values, valid = random_series(600, seed=1)
    got = gapfill_series(values, valid, IN_DAYS, OUT_DAYS, mode=mode)
    assert got.dtype == np.float32 and got.shape == (OUT_DAYS.size, 600)
    counts = valid.sum(axis=0)
    assert set(counts) == set(range(IN_DAYS.size + 1))
    for j in range(values.shape[1]):
        want = reference_pixel(values[:, j], valid[:, j], IN_DAYS, OUT_DAYS, mode)
        np.testing.assert_allclose(
            got[:, j], want, rtol=1e-5, atol=2e-3, err_msg=f"pixel {j}, {counts[j]} valid"
        )
    assert np.isnan(got[:, counts == 0]).all()
    assert not np.isnan(got[:, counts > 0]).any()


def test_series_exact_at_valid_dates_and_constant_ends():
    values, valid = random_series(300, seed=2)
    got = gapfill_series(values, valid, IN_DAYS, IN_DAYS, mode="spline")
    np.testing.assert_array_equal(got[valid], values[valid].astype(np.float32))
    before = gapfill_series(values, valid, IN_DAYS, np.array([-30.0, -1.0]), mode="spline")
    after = gapfill_series(values, valid, IN_DAYS, np.array([82.0, 400.0]), mode="linear")
    for j in np.flatnonzero(valid.any(axis=0)):
        first, last = np.flatnonzero(valid[:, j])[[0, -1]]
        assert (before[:, j] == values[first, j]).all()
        assert (after[:, j] == values[last, j]).all()


def test_spline_thresholds_linear_cubic_akima():
    """Below 3 valid dates spline mode is linear; 3-4: natural cubic; 5+: Akima (not cubic)."""
    days = np.arange(8, dtype=float) * 10
    out = np.array([5.0, 15.0, 25.0, 35.0, 45.0, 55.0, 65.0])
    y = np.array([0, 900, 200, 1500, 100, 1200, 400, 800], dtype=np.int16)
    patterns = {2: [0, 7], 3: [0, 3, 7], 4: [0, 2, 5, 7], 5: [0, 1, 3, 5, 7], 8: list(range(8))}
    valid = np.zeros((8, len(patterns)), dtype=bool)
    for j, idx in enumerate(patterns.values()):
        valid[idx, j] = True
    values = np.repeat(y[:, None], len(patterns), axis=1)
    got = gapfill_series(values, valid, days, out, mode="spline")
    lin = gapfill_series(values, valid, days, out, mode="linear")
    for j, idx in enumerate(patterns.values()):
        x, yy = days[idx], y[idx].astype(float)
        if len(idx) < 3:
            want = np.interp(out, x, yy)
        elif len(idx) <= 4:
            want = CubicSpline(x, yy, bc_type="natural")(out)
        else:
            want = Akima1DInterpolator(x, yy)(out)
            assert not np.allclose(want, CubicSpline(x, yy, bc_type="natural")(out), atol=1)
        np.testing.assert_allclose(got[:, j], want, atol=2e-3)
    np.testing.assert_array_equal(got[:, 0], lin[:, 0])
    assert not np.allclose(got[:, 1:], lin[:, 1:], atol=1)


@pytest.mark.parametrize(
    ("mask", "pixel", "days", "out_days", "expected"),
    [  # worked examples of OTBTemporalGapFilling's own linear tests (mask 1 = invalid)
        (
            [0, 0, 0, 1, 0, 0, 0],
            [1, 1, 1, 0, 4, 1, 1],
            [0, 1, 2, 2.5, 4, 5, 6],
            None,
            [1, 1, 1, 7 / 4, 4, 1, 1],
        ),
        (
            [0, 0, 0, 1, 0, 0, 0],
            [1, 1, 1, 0, 4, 1, 1],
            [0, 1, 2, 3.7, 4, 5, 6],
            None,
            [1, 1, 1, 1.5 * 3.7 - 2, 4, 1, 1],
        ),
        (
            [0, 0, 0, 1, 0, 0, 0],
            [1, 1, 1, 0, 4, 1, 1],
            [0, 1, 2.5, 3.7, 4, 5, 6],
            None,
            [1, 1, 1, 2 * 3.7 - 4, 4, 1, 1],
        ),
        ([1, 1, 1, 0, 0, 0, 0], [0, 0, 1, 1, 1, 1, 1], [0, 1, 2, 3, 4, 5, 6], None, [1, 1, 1, 1, 1, 1, 1]),
        ([0, 0, 0, 0, 0, 1, 1], [1, 1, 1, 1, 1, 20, 0], [0, 1, 2, 3, 4, 5, 6], None, [1, 1, 1, 1, 1, 1, 1]),
        (
            [0, 0, 0, 1, 0, 0, 0],
            [1, 1, 1, 0, 4, 1, 1],
            [0, 1, 2, 2.5, 4, 5, 6],
            [0, 1, 2, 4, 5, 6],
            [1, 1, 1, 4, 1, 1],
        ),
        (
            [0, 0, 0, 0, 0, 0],
            [0, 1, 2, 4, 5, 6],
            [0, 1, 2, 4, 5, 6],
            [0, 1, 2, 3, 4, 5, 6],
            [0, 1, 2, 3, 4, 5, 6],
        ),
    ],
)
def test_linear_matches_otb_worked_examples(mask, pixel, days, out_days, expected):
    valid = np.array(mask)[:, None] == 0
    got = gapfill_series(
        np.array(pixel, dtype=float)[:, None], valid, days, days if out_days is None else out_days
    )
    np.testing.assert_allclose(got[:, 0], expected, rtol=1e-6)


def test_bands_share_the_date_mask():
    rng = np.random.default_rng(3)
    values, valid = random_series(200, seed=4)
    cube = np.stack([values, rng.integers(0, 5000, size=values.shape).astype(np.int16)], axis=1)  # [T, 2, N]
    for mode in ("linear", "spline"):
        got = gapfill_series(cube, valid, IN_DAYS, OUT_DAYS, mode=mode)
        assert got.shape == (OUT_DAYS.size, 2, 200)
        for b in range(2):
            np.testing.assert_array_equal(
                got[:, b], gapfill_series(cube[:, b], valid, IN_DAYS, OUT_DAYS, mode=mode)
            )


def test_series_rejects_bad_arguments():
    values, valid = random_series(5, seed=5)
    with pytest.raises(ValueError, match="mode"):
        gapfill_series(values, valid, IN_DAYS, OUT_DAYS, mode="cubic")
    with pytest.raises(ValueError, match="increasing"):
        gapfill_series(values, valid, IN_DAYS[::-1], OUT_DAYS)
    with pytest.raises(ValueError, match="valid"):
        gapfill_series(values, valid[:, :3], IN_DAYS, OUT_DAYS)


def test_output_date_grid():
    grid = output_date_grid(dt.date(2018, 1, 23), dt.date(2018, 2, 22), 10)
    assert grid == [dt.date(2018, 1, 23), dt.date(2018, 2, 2), dt.date(2018, 2, 12), dt.date(2018, 2, 22)]
    assert output_date_grid(dt.date(2018, 1, 1), dt.date(2018, 1, 9), 5) == [
        dt.date(2018, 1, 1),
        dt.date(2018, 1, 6),
    ]
    with pytest.raises(ConfigError):
        output_date_grid(dt.date(2018, 2, 1), dt.date(2018, 1, 1), 10)
    with pytest.raises(ConfigError):
        output_date_grid(dt.date(2018, 1, 1), dt.date(2018, 2, 1), 0)


# ----------------------------------------------------------------------------- tiles
DATES = [
    dt.date(2018, 1, 23),
    dt.date(2018, 2, 2),
    dt.date(2018, 2, 12),
    dt.date(2018, 3, 4),
    dt.date(2018, 3, 29),
    dt.date(2018, 4, 8),
    dt.date(2018, 5, 3),
]
BANDS = ["B02", "B04", "B08"]
H, W = 70, 50


def write_inputs(folder: Path, seed: int = 0) -> tuple[Path, Path, Path, np.ndarray, np.ndarray]:
    """A 70x50 synthetic raw.tif / raw_mask.tif / raw_dates.txt in ingest's format."""
    rng = np.random.default_rng(seed)
    t, b = len(DATES), len(BANDS)
    raw = rng.integers(0, 10000, size=(t, b, H, W)).astype(np.int16)
    mask = (rng.random((t, H, W)) < 0.45).astype(np.uint8)
    mask[:, 10:14, 5:9] = 1  # fully masked pixels
    mask[:, 20:22, 30:33] = 1
    mask[3, 20:22, 30:33] = 0  # exactly one clear date
    mask[2] = 1  # one empty date (as 2018-02-12 on T31TEJ)
    raw[np.broadcast_to(mask[:, None] == 1, raw.shape)] = -32768
    profile = {
        "driver": "GTiff",
        "width": W,
        "height": H,
        "crs": "EPSG:32631",
        "transform": Affine(10, 0, 500000, 0, -10, 4800000),
    }
    paths = folder / "raw.tif", folder / "raw_mask.tif", folder / "raw_dates.txt"
    with rasterio.open(paths[0], "w", count=t * b, dtype="int16", nodata=-32768, **profile) as dst:
        dst.write(raw.reshape(t * b, H, W))
        for i in range(t * b):
            dst.set_band_description(i + 1, f"{DATES[i // b]:%Y%m%d}_{BANDS[i % b]}")
    with rasterio.open(paths[1], "w", count=t, dtype="uint8", **profile) as dst:
        dst.write(mask)
    paths[2].write_text("".join(f"{d:%Y%m%d}\n" for d in DATES))
    return (*paths, raw, mask)


@pytest.mark.parametrize("mode", ["linear", "spline"])
def test_tile_streams_windows_like_the_whole_array(tmp_path, mode):
    raw_p, mask_p, dates_p, raw, mask = write_inputs(tmp_path)
    out = tmp_path / "out"
    gapfill_tile(
        raw_p,
        mask_p,
        dates_p,
        out / "gapfilled.tif",
        out / "dates.txt",
        out / "validity.tif",
        start="2018-01-15",
        end=dt.date(2018, 5, 20),
        step_days=10,
        mode=mode,
        block=32,
    )
    grid = output_date_grid(dt.date(2018, 1, 15), dt.date(2018, 5, 20), 10)
    assert (out / "dates.txt").read_text().split() == [f"{d:%Y%m%d}" for d in grid]

    t, b = len(DATES), len(BANDS)
    valid = (mask == 0).reshape(t, H * W)
    in_days = [(d - DATES[0]).days for d in DATES]
    out_days = [(d - DATES[0]).days for d in grid]
    whole = gapfill_series(raw.reshape(t, b, H * W), valid, in_days, out_days, mode=mode)
    want = np.where(np.isnan(whole), GAPFILLED_NODATA, np.rint(np.nan_to_num(whole))).astype(np.int16)
    with rasterio.open(out / "gapfilled.tif") as src:
        assert src.count == len(grid) * b and src.dtypes[0] == "int16" and src.nodata == GAPFILLED_NODATA
        assert src.descriptions[:4] == ("20180115_B02", "20180115_B04", "20180115_B08", "20180125_B02")
        assert src.descriptions[-1] == "20180515_B08"
        got = src.read().reshape(len(grid), b, H * W)
        assert src.profile["tiled"] and src.crs.to_epsg() == 32631
    np.testing.assert_array_equal(got, want)
    empty = mask.all(axis=0).ravel()
    assert empty.reshape(H, W)[10:14, 5:9].all() and (got[:, :, empty] == GAPFILLED_NODATA).all()
    assert (got[:, :, ~empty] != GAPFILLED_NODATA).all()
    one = np.flatnonzero(valid.sum(axis=0) == 1)[0]  # a pixel with one clear date: constant
    assert (got[:, :, one] == got[:1, :, one]).all()
    with rasterio.open(out / "validity.tif") as src:
        assert src.dtypes[0] == "uint8" and src.count == 1
        np.testing.assert_array_equal(src.read(1), (mask == 0).sum(axis=0))
    assert not list(out.glob(".*"))  # no temporary left over


def test_tile_defaults_to_the_input_date_range(tmp_path):
    raw_p, mask_p, dates_p, raw, mask = write_inputs(tmp_path, seed=1)
    gapfill_tile(
        raw_p,
        mask_p,
        dates_p,
        tmp_path / "g.tif",
        tmp_path / "d.txt",
        tmp_path / "v.tif",
        start=None,
        end=None,
        step_days=25,
    )
    assert (tmp_path / "d.txt").read_text().split() == [
        "20180123",
        "20180217",
        "20180314",
        "20180408",
        "20180503",
    ]
    with rasterio.open(tmp_path / "g.tif") as src:
        first = src.read(list(range(1, len(BANDS) + 1)))
    clear = mask[0] == 0  # the first output date is the first input date: clear values kept
    np.testing.assert_array_equal(first[:, clear], raw[0][:, clear])


def test_tile_input_errors(tmp_path):
    raw_p, mask_p, dates_p, raw, mask = write_inputs(tmp_path)
    outs = (tmp_path / "o" / "g.tif", tmp_path / "o" / "d.txt", tmp_path / "o" / "v.tif")
    kw = dict(start=None, end=None)
    bad_dates = tmp_path / "bad_dates.txt"
    bad_dates.write_text("".join(f"{d:%Y%m%d}\n" for d in DATES[:-1]))
    with pytest.raises(InputError, match="raw_mask.tif: 7 mask bands for 6 dates|not a multiple"):
        gapfill_tile(raw_p, mask_p, bad_dates, *outs, **kw)
    bad_dates.write_text("20180123\n2018-02-02\n")
    with pytest.raises(InputError, match="bad_dates.txt.*YYYYMMDD"):
        gapfill_tile(raw_p, mask_p, bad_dates, *outs, **kw)
    with pytest.raises(InputError, match="not found"):
        gapfill_tile(raw_p, mask_p, tmp_path / "missing.txt", *outs, **kw)
    with rasterio.open(mask_p) as src:
        profile = src.profile
    short = tmp_path / "short_mask.tif"
    with rasterio.open(short, "w", **{**profile, "count": 6}) as dst:
        dst.write(mask[:6])
    with pytest.raises(InputError, match="short_mask.tif: 6 mask bands for 7 dates"):
        gapfill_tile(raw_p, short, dates_p, *outs, **kw)
    shifted = tmp_path / "shifted_mask.tif"
    with rasterio.open(
        shifted, "w", **{**profile, "transform": Affine(10, 0, 500010, 0, -10, 4800000)}
    ) as dst:
        dst.write(mask)
    with pytest.raises(InputError, match="shifted_mask.tif: grid"):
        gapfill_tile(raw_p, shifted, dates_p, *outs, **kw)
    with pytest.raises(ConfigError, match="start"):
        gapfill_tile(raw_p, mask_p, dates_p, *outs, start="23/01/2018", end=None)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_grid_outside_the_acquisitions_stops(tmp_path):
    # 2019 grid, 2018 products: today every grid date would copy the last date, a map "of 2019".
    raw_p, mask_p, dates_p, raw, mask = write_inputs(tmp_path)
    out = tmp_path / "o"
    outs = (out / "g.tif", out / "d.txt", out / "v.tif")
    with pytest.raises(
        ConfigError,
        match=r"^dates.start / dates.end: .* acquisitions of tile .* \(2018-01-23 to 2018-05-\d\d",
    ):
        gapfill_tile(raw_p, mask_p, dates_p, *outs, start="2019-01-01", end="2019-12-31", step_days=10)
    # Mostly outside (the grid runs a year past the last acquisition) also stops; the threshold is a key.
    with pytest.raises(ConfigError, match="dates.start / dates.end"):
        gapfill_tile(raw_p, mask_p, dates_p, *outs, start="2018-01-23", end="2019-06-30", step_days=10)
    assert not out.exists() or not any(out.iterdir())
    from cropchain.series.composite import monthly_composite_tile

    with pytest.raises((ConfigError, InputError), match="dates.start / dates.end"):
        monthly_composite_tile(raw_p, mask_p, dates_p, *outs, start="2019-01-01", end="2019-12-31")
    assert not out.exists() or not any(out.iterdir())


def test_grid_dates_far_from_clear_acquisitions_warn(tmp_path, caplog):
    raw_p, mask_p, dates_p, raw, mask = write_inputs(tmp_path)
    outs = (tmp_path / "g.tif", tmp_path / "d.txt", tmp_path / "v.tif")
    # Two months past the last acquisition (2018-05-xx): extrapolated, warned about; the grid is kept.
    with caplog.at_level("WARNING", logger="cropchain.series.gapfill"):
        gapfill_tile(raw_p, mask_p, dates_p, *outs, start="2018-01-23", end="2018-09-30", step_days=10)
    assert "more than 60 days from any clear acquisition" in caplog.text
    assert (
        "2018-07-12 (100%)" in caplog.text and "2018-02-02" not in caplog.text.split("clear acquisition")[1]
    )
    assert len((tmp_path / "d.txt").read_text().split()) == 26
    caplog.clear()
    with caplog.at_level("WARNING", logger="cropchain.series.gapfill"):
        gapfill_tile(raw_p, mask_p, dates_p, *outs, start="2018-01-23", end="2018-05-20", step_days=10)
    assert "clear acquisition" not in caplog.text


def test_single_clear_date_warns_and_no_clear_date_stops(tmp_path, caplog):
    raw_p, mask_p, dates_p, raw, mask = write_inputs(tmp_path)
    with rasterio.open(mask_p) as src:
        profile = src.profile
    one = mask.copy()
    one[:] = 1
    one[4] = 0  # a single date with clear pixels
    single = tmp_path / "tiles" / "T31XYZ" / "raw_mask.tif"
    single.parent.mkdir(parents=True)
    with rasterio.open(single, "w", **profile) as dst:
        dst.write(one)
    raw_t = single.with_name("raw.tif")
    shutil.copy(raw_p, raw_t)
    outs = (tmp_path / "o" / "g.tif", tmp_path / "o" / "d.txt", tmp_path / "o" / "v.tif")
    with caplog.at_level("WARNING", logger="cropchain.series.gapfill"):
        gapfill_tile(raw_t, single, dates_p, *outs, start=None, end=None, max_gap_days=400)
    assert f"tile T31XYZ: a single date with clear pixels ({DATES[4]})" in caplog.text

    none = np.ones_like(mask)
    none[:, :5, :5] = 0  # a few clear pixels only
    with rasterio.open(single, "w", **profile) as dst:
        dst.write(none)
    shutil.rmtree(tmp_path / "o")
    with pytest.raises(
        InputError,
        match=r"raw_mask.tif: tile T31XYZ: 99% of the observed pixels have no clear observation .*2018-01-23",
    ):
        gapfill_tile(raw_t, single, dates_p, *outs, start=None, end=None)
    assert not (tmp_path / "o").exists() or not any((tmp_path / "o").iterdir())


def test_tile_at_the_edge_of_the_swath_is_not_stopped(tmp_path):
    """70% of the tile never observed (nodata on every date, as a tile at the swath edge): the
    observed part is mostly clear, so gap filling goes on; those pixels are nodata in the output."""
    raw_p, mask_p, dates_p, raw, mask = write_inputs(tmp_path)
    with rasterio.open(raw_p) as src:
        rprofile = src.profile
    with rasterio.open(mask_p) as src:
        mprofile = src.profile
    edge = np.zeros((H, W), bool)
    edge[:, : int(W * 0.7)] = True
    raw[:, :, edge] = GAPFILLED_NODATA
    mask[:, edge] = 1
    with rasterio.open(raw_p, "w", **rprofile) as dst:
        dst.write(raw.reshape(-1, H, W))
    with rasterio.open(mask_p, "w", **mprofile) as dst:
        dst.write(mask)
    out = tmp_path / "o"
    gapfill_tile(raw_p, mask_p, dates_p, out / "g.tif", out / "d.txt", out / "v.tif", start=None, end=None)
    with rasterio.open(out / "g.tif") as src:
        first = src.read(1)
    assert (first[edge] == GAPFILLED_NODATA).all() and (first[~edge] != GAPFILLED_NODATA).mean() > 0.9


def test_tile_band_count_not_a_multiple_of_dates(tmp_path):
    raw_p, mask_p, _, raw, mask = write_inputs(tmp_path)
    dates5 = tmp_path / "dates5.txt"
    dates5.write_text("".join(f"{d:%Y%m%d}\n" for d in DATES[:5]))
    with pytest.raises(InputError, match=r"raw.tif: 21 bands is not a multiple of the 5 dates"):
        gapfill_tile(
            raw_p,
            mask_p,
            dates5,
            tmp_path / "g.tif",
            tmp_path / "d.txt",
            tmp_path / "v.tif",
            start=None,
            end=None,
        )


@pytest.mark.skipif(
    importlib.util.find_spec("otbApplication") is not None
    or shutil.which("otbcli_ImageTimeSeriesGapFilling") is not None,
    reason="OTB's gap filling is installed here",
)
def test_otb_backend_missing_is_a_clear_error(tmp_path):
    raw_p, mask_p, dates_p, _, _ = write_inputs(tmp_path)
    out = tmp_path / "out"
    with pytest.raises(CropchainError) as err:
        gapfill_tile(
            raw_p,
            mask_p,
            dates_p,
            out / "g.tif",
            out / "d.txt",
            out / "v.tif",
            start=None,
            end=None,
            backend="otb",
        )
    msg = str(err.value)
    for part in (
        "otbApplication",
        "otbcli_ImageTimeSeriesGapFilling",
        "OTBTemporalGapFilling",
        "gapfill.backend: numpy",
    ):
        assert part in msg
    assert not out.exists() or not any(out.iterdir())


# ----------------------------------------------------------------------------- real data
@pytest.mark.realdata
def test_real_t31tej_gapfill_and_features(t31tej_safe_products, tmp_path):
    sentinel2 = pytest.importorskip("cropchain.sources.sentinel2")
    from cropchain.series.features import compute_features

    bands = ["B04", "B08", "B11"]
    raw_p, mask_p, dates_p = tmp_path / "raw.tif", tmp_path / "raw_mask.tif", tmp_path / "raw_dates.txt"
    sentinel2.ingest_safe(t31tej_safe_products, raw_p, mask_p, dates_p, bands=bands)
    out = tmp_path / "tile"
    gapfill_tile(
        raw_p,
        mask_p,
        dates_p,
        out / "gapfilled.tif",
        out / "dates.txt",
        out / "validity.tif",
        start=None,
        end=None,
        step_days=10,
        block=128,
    )
    grid = (out / "dates.txt").read_text().split()
    assert grid == [f"{d:%Y%m%d}" for d in output_date_grid(dt.date(2018, 1, 23), dt.date(2018, 10, 5), 10)]
    assert len(grid) == 26 and grid[-1] == "20180930"
    with rasterio.open(raw_p) as src:
        raw = src.read().reshape(10, 3, -1)
    with rasterio.open(mask_p) as src:
        valid = src.read().reshape(10, -1) == 0
    with rasterio.open(out / "gapfilled.tif") as src:
        gf = src.read().reshape(len(grid), 3, -1)
        assert src.descriptions[-1] == "20180930_B11"
    with rasterio.open(out / "validity.tif") as src:
        np.testing.assert_array_equal(src.read(1).ravel(), valid.sum(axis=0))
    assert not valid[2].any()  # 2018-02-12 is empty: masked everywhere
    # grid dates that are acquisition dates keep the clear reflectances as they are
    for g, t in ((grid.index("20180123"), 0), (grid.index("20180920"), 8)):
        np.testing.assert_array_equal(gf[g][:, valid[t]], raw[t][:, valid[t]])
    # linear interpolation never leaves the range of a pixel's clear reflectances
    clear = valid.any(axis=0)
    lo = np.where(valid[:, None], raw, np.iinfo(np.int16).max).min(axis=0)
    hi = np.where(valid[:, None], raw, np.iinfo(np.int16).min).max(axis=0)
    assert ((gf[:, :, clear] >= lo[:, clear]) & (gf[:, :, clear] <= hi[:, clear])).all()
    assert (gf[:, :, ~clear] == GAPFILLED_NODATA).all()

    names = compute_features(out / "gapfilled.tif", out / "dates.txt", out / "features.tif", bands=bands)
    assert names[-1] == "20180930_brightness" and len(names) == 26 * 6
    with rasterio.open(out / "features.tif") as src:
        ndvi = src.read(names.index("20180622_NDVI") + 1)
    ok = ndvi != -9999.0
    assert ok.mean() > 0.9 and (np.abs(ndvi[ok]) <= 1).all()
    assert 0.1 < np.median(ndvi[ok]) < 0.9  # summer vegetation in the Herault vineyards
