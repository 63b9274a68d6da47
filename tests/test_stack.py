"""GeoTIFF stacks as a tile source (cropchain.sources.stack): per-date files and OTB's single multi-band
file."""

from __future__ import annotations

import datetime as dt
import logging
from pathlib import Path

import numpy as np
import pytest
import rasterio
from affine import Affine

from cropchain.errors import ConfigError, InputError
from cropchain.io.raster import read_dates
from cropchain.series.features import compute_features
from cropchain.series.gapfill import gapfill_tile
from cropchain.sources.sentinel2 import RAW_NODATA, ingest_safe
from cropchain.sources.stack import (
    StackDate,
    find_stack_files,
    ingest_stack,
    ingest_stack_file,
    parse_file_date,
)

CRS = "EPSG:32631"
TRANSFORM = Affine(10.0, 0.0, 600000.0, 0.0, -10.0, 4800000.0)
H, W = 45, 70
DATES = [
    dt.date(2021, 3, 4),
    dt.date(2021, 4, 13),
    dt.date(2021, 5, 23),
    dt.date(2021, 6, 2),
    dt.date(2021, 7, 12),
]
BANDS = ["B02", "B03", "B04", "B08"]


def _outputs(d: Path) -> tuple[Path, Path, Path]:
    return d / "raw.tif", d / "raw_mask.tif", d / "raw_dates.txt"


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def _write(path: Path, array: np.ndarray, *, nodata=None, crs=CRS, transform=TRANSFORM) -> Path:
    array = array if array.ndim == 3 else array[None]
    profile = {
        "driver": "GTiff",
        "count": array.shape[0],
        "height": array.shape[1],
        "width": array.shape[2],
        "dtype": array.dtype.name,
        "crs": crs,
        "transform": transform,
        "nodata": nodata,
        "compress": "deflate",
    }
    path.parent.mkdir(parents=True, exist_ok=True)
    with rasterio.open(path, "w", **profile) as dst:
        dst.write(array)
    return path


def write_stack(
    folder: Path,
    cube: np.ndarray,
    mask: np.ndarray | None,
    dates: list[str],
    *,
    nodata=None,
    name: str = "S2_{date}.tif",
    mask_name: str = "S2_{date}_mask.tif",
    crs=CRS,
    transform=TRANSFORM,
) -> list[Path]:
    """Write ``cube`` [T, B, H, W] as one GeoTIFF per date (and ``mask`` [T, H, W] as mask files)."""
    paths = []
    for t, d in enumerate(dates):
        paths.append(
            _write(folder / name.format(date=d), cube[t], nodata=nodata, crs=crs, transform=transform)
        )
        if mask is not None:
            _write(folder / mask_name.format(date=d), mask[t].astype(np.uint8), crs=crs, transform=transform)
    return paths


@pytest.fixture(scope="module")
def series():
    rng = np.random.default_rng(4)
    cube = rng.integers(-200, 9000, (len(DATES), len(BANDS), H, W)).astype(np.int16)
    mask = (rng.random((len(DATES), H, W)) < 0.3).astype(np.uint8)
    return cube, mask


def test_per_date_files_with_masks(series, tmp_path):
    cube, mask = series
    folder = tmp_path / "stack"
    write_stack(folder, cube, mask, [f"{d:%Y-%m-%d}" for d in DATES])
    found = find_stack_files(
        folder, masks="*_mask.tif", date_pattern=r"S2_(?P<date>\d{4}-\d{2}-\d{2})", date_format="%Y-%m-%d"
    )
    assert [s.date for s in found] == DATES
    assert all(s.mask is not None and s.mask.name == s.path.name.replace(".tif", "_mask.tif") for s in found)
    ingest_stack(found, *_outputs(tmp_path / "out"), bands=BANDS, block=32, tile="T31TXA")  # several windows
    raw, msk, dates = _outputs(tmp_path / "out")
    np.testing.assert_array_equal(_read(raw), cube.reshape(-1, H, W))
    np.testing.assert_array_equal(_read(msk), mask)
    assert read_dates(dates) == [f"{d:%Y%m%d}" for d in DATES]
    with rasterio.open(raw) as src:
        assert src.descriptions[:5] == (
            "20210304_B02",
            "20210304_B03",
            "20210304_B04",
            "20210304_B08",
            "20210413_B02",
        )
        assert src.crs == CRS and src.transform == TRANSFORM and src.nodata == RAW_NODATA


def test_nodata_value_band_selection_and_scaling(series, tmp_path):
    """Clouds given by a nodata value; the files hold 4 bands of which 2 are taken; float 0-1 scaled
    x10000."""
    cube, mask = series
    mask = mask.copy()
    mask[0, 0, 0] = 0
    refl = cube.astype(np.float64) / 10000
    refl[np.broadcast_to(mask[:, None].astype(bool), refl.shape)] = -1.0
    refl[0, 2, 0, 0] = -1.0  # one band nodata alone also masks the date's pixel
    write_stack(tmp_path / "s", refl, None, [f"{d:%Y%m%d}" for d in DATES])
    ingest_stack(
        find_stack_files(tmp_path / "s"),
        *_outputs(tmp_path / "out"),
        bands=["B08", "B04"],
        file_bands=BANDS,
        nodata=-1.0,
        scale=10000,
    )
    raw = _read(tmp_path / "out/raw.tif").reshape(len(DATES), 2, H, W)
    m = _read(tmp_path / "out/raw_mask.tif")
    expected_mask = mask.copy()
    expected_mask[0, 0, 0] = 1
    np.testing.assert_array_equal(m, expected_mask)
    clear = ~expected_mask.astype(bool)
    np.testing.assert_array_equal(raw[:, 0][clear], cube[:, 3][clear])  # B08 first, as asked
    np.testing.assert_array_equal(raw[:, 1][clear], cube[:, 2][clear])
    assert (raw[:, 0][mask.astype(bool)] == RAW_NODATA).all()
    assert raw[0, 1, 0, 0] == RAW_NODATA and raw[0, 0, 0, 0] == cube[0, 3, 0, 0]
    with rasterio.open(tmp_path / "out/raw.tif") as src:
        assert src.descriptions[:2] == ("20210304_B08", "20210304_B04")


def test_single_ndvi_band_through_gapfill_and_features(tmp_path, caplog):
    """A float NDVI band with NaN for clouds: ingested x10000, gap-filled, and the features that need
    B04 / B08 / B11 skipped with one log line each instead of failing."""
    rng = np.random.default_rng(1)
    ndvi = rng.uniform(-0.2, 0.9, (len(DATES), 1, H, W)).astype(np.float32)
    cloudy = rng.random((len(DATES), H, W)) < 0.25
    ndvi[:, 0][cloudy] = np.nan
    write_stack(tmp_path / "ndvi", ndvi, None, [f"{d:%Y%m%d}" for d in DATES], name="T31TXA_NDVI_{date}.tif")
    ingest_stack(
        find_stack_files(tmp_path / "ndvi"), *_outputs(tmp_path / "raw"), bands=["NDVI"], scale=10000
    )
    raw = _read(tmp_path / "raw/raw.tif")
    np.testing.assert_array_equal(_read(tmp_path / "raw/raw_mask.tif"), cloudy.astype(np.uint8))
    np.testing.assert_array_equal(
        raw[~cloudy], np.rint(ndvi[:, 0][~cloudy].astype(np.float64) * 10000).astype(np.int16)
    )
    out = tmp_path / "gf"
    gapfill_tile(
        *_outputs(tmp_path / "raw"),
        out / "gapfilled.tif",
        out / "dates.txt",
        out / "validity.tif",
        start="2021-03-04",
        end="2021-07-12",
        step_days=10,
    )
    with caplog.at_level(logging.WARNING, logger="cropchain.series.features"):
        names = compute_features(
            out / "gapfilled.tif",
            out / "dates.txt",
            out / "features.tif",
            bands=["NDVI"],
            indices=("NDVI", "NDWI", "brightness"),
        )
    skipped = [r.getMessage() for r in caplog.records if "skipping index" in r.getMessage()]
    assert len(skipped) == 3 and "B08, B04" in skipped[0] and "B08, B11" in skipped[1]
    assert "brightness" in skipped[2]  # an NDVI band is no reflectance: no brightness
    assert names == [f"{d}_NDVI" for d in read_dates(out / "dates.txt")]
    names_off = compute_features(
        out / "gapfilled.tif", out / "dates.txt", out / "features_off.tif", bands=["NDVI"], indices=()
    )
    assert names_off == names


def test_single_file_in_otb_order_equals_per_date_files(series, tmp_path):
    cube, mask = series
    _write(tmp_path / "series.tif", cube.reshape(-1, H, W))
    _write(tmp_path / "series_mask.tif", mask)
    (tmp_path / "dates.txt").write_text("".join(f"{d:%Y%m%d}\n" for d in DATES))
    ingest_stack_file(
        tmp_path / "series.tif",
        tmp_path / "dates.txt",
        *_outputs(tmp_path / "one"),
        bands=["B04", "B08"],
        file_bands=BANDS,
        mask_file=tmp_path / "series_mask.tif",
        block=32,
    )
    write_stack(tmp_path / "per_date", cube, mask, [f"{d:%Y%m%d}" for d in DATES])
    ingest_stack(
        find_stack_files(tmp_path / "per_date", masks="*_mask.tif"),
        *_outputs(tmp_path / "many"),
        bands=["B04", "B08"],
        file_bands=BANDS,
    )
    for f in ("raw.tif", "raw_mask.tif", "raw_dates.txt"):
        if f.endswith(".tif"):
            np.testing.assert_array_equal(_read(tmp_path / "one" / f), _read(tmp_path / "many" / f))
        else:
            assert (tmp_path / "one" / f).read_text() == (tmp_path / "many" / f).read_text()
    np.testing.assert_array_equal(_read(tmp_path / "one/raw.tif").reshape(len(DATES), 2, H, W), cube[:, 2:4])


def test_date_parsing():
    assert parse_file_date("S2B_T31TEJ_20180123_NDVI.tif") == dt.date(2018, 1, 23)
    assert parse_file_date("x_2018023.tif", r"_(\d{7})\.", "%Y%j") == dt.date(2018, 1, 23)
    assert parse_file_date("ndvi-2018-01-23.tif", r"\d{4}-\d{2}-\d{2}", "%Y-%m-%d") == dt.date(2018, 1, 23)
    with pytest.raises(InputError, match="no date in the file name") as err:
        parse_file_date("/data/S2_T31TEJ_jan.tif")
    assert "S2_T31TEJ_jan.tif" in str(err.value)
    with pytest.raises(InputError, match="'20181323' in the file name is not a date"):
        parse_file_date("S2_20181323.tif")
    with pytest.raises(ConfigError, match="date_pattern"):
        parse_file_date("S2_20180123.tif", "(?P<date>")


def _nothing_written(d: Path) -> bool:
    return not d.exists() or not list(d.iterdir())


def test_bad_inputs_stop_with_the_file_named(series, tmp_path):
    cube, mask = series
    dates = [f"{d:%Y%m%d}" for d in DATES]
    out = tmp_path / "out"
    # A file whose date cannot be parsed.
    folder = tmp_path / "undated"
    write_stack(folder, cube[:2], None, dates[:2])
    _write(folder / "S2_last.tif", cube[2])
    with pytest.raises(InputError, match="no date in the file name") as err:
        find_stack_files(folder)
    assert "S2_last.tif" in str(err.value)
    # A mask file missing for one date.
    folder = tmp_path / "masks"
    write_stack(folder, cube, mask, dates)
    (folder / f"S2_{dates[3]}_mask.tif").unlink()
    with pytest.raises(InputError, match=f"no mask file for its date {DATES[3]}") as err:
        find_stack_files(folder, masks="*_mask.tif")
    assert f"S2_{dates[3]}.tif" in str(err.value)
    # Another grid, then another CRS.
    folder = tmp_path / "grids"
    write_stack(folder, cube[:3], None, dates[:3])
    _write(
        folder / f"S2_{dates[3]}.tif", cube[3], transform=Affine(10.0, 0.0, 600001.0, 0.0, -10.0, 4800000.0)
    )
    with pytest.raises(InputError, match="grid .* differs from") as err:
        ingest_stack(find_stack_files(folder), *_outputs(out), bands=BANDS)
    assert f"S2_{dates[3]}.tif" in str(err.value) and f"S2_{dates[0]}.tif" in str(err.value)
    _write(folder / f"S2_{dates[3]}.tif", cube[3], crs="EPSG:32632")
    with pytest.raises(InputError, match="CRS EPSG:32632 differs") as err:
        ingest_stack(find_stack_files(folder), *_outputs(out), bands=BANDS)
    assert f"S2_{dates[3]}.tif" in str(err.value)
    # A mask on another grid; a file with another band count; bands not in the files.
    write_stack(tmp_path / "m", cube[:2], mask[:2], dates[:2])
    _write(tmp_path / "m" / f"S2_{dates[1]}_mask.tif", mask[1][:-1])
    with pytest.raises(InputError, match="differs") as err:
        ingest_stack(find_stack_files(tmp_path / "m", masks="*_mask.tif"), *_outputs(out), bands=BANDS)
    assert f"S2_{dates[1]}_mask.tif" in str(err.value)
    _write(tmp_path / "m" / f"S2_{dates[1]}.tif", cube[1][:3])
    with pytest.raises(InputError, match="3 band") as err:
        ingest_stack(
            [
                StackDate(DATES[0], tmp_path / "m" / f"S2_{dates[0]}.tif"),
                StackDate(DATES[1], tmp_path / "m" / f"S2_{dates[1]}.tif"),
            ],
            *_outputs(out),
            bands=BANDS,
        )
    assert f"S2_{dates[1]}.tif" in str(err.value)
    with pytest.raises(ConfigError, match=r"\['B11'\] not among"):
        ingest_stack(find_stack_files(tmp_path / "grids"), *_outputs(out), bands=["B11"], file_bands=BANDS)
    assert _nothing_written(out)


def test_values_that_the_scale_cannot_hold_stop(series, tmp_path):
    """Float reflectance 0-1 without `scale` (every value would round to 0 or 1), reflectance x10000
    with scale 10000 (every value clipped), float NDVI without scale: stop naming file, range and scale."""
    cube, mask = series
    refl = np.abs(cube).astype(np.float32) / 10000
    write_stack(tmp_path / "f", refl, None, [f"{d:%Y%m%d}" for d in DATES])
    out = tmp_path / "out"
    with pytest.raises(
        InputError,
        match=r"S2_20210304.tif: band B02 \(reflectance\) holds clear values 0.0001 to 0.8998: "
        r"with scale 1 .* -> set tiles.T31TXA.scale to 10000",
    ):
        ingest_stack(find_stack_files(tmp_path / "f"), *_outputs(out), bands=BANDS, tile="T31TXA")
    assert _nothing_written(out)
    with pytest.raises(
        InputError,
        match=r"S2_20210304.tif: band B02 .*beyond the int16 range.* -> set tiles.T31TXA.scale to 10000",
    ):
        ingest_stack(find_stack_files(tmp_path / "f"), *_outputs(out), bands=BANDS, tile="T31TXA", scale=1e8)
    assert _nothing_written(out)
    write_stack(tmp_path / "i", cube, None, [f"{d:%Y%m%d}" for d in DATES])  # int16 x10000
    with pytest.raises(
        InputError, match=r"band B02 .*beyond the int16 range.* -> set tiles.T31TXA.scale to 1 "
    ):
        ingest_stack(
            find_stack_files(tmp_path / "i"), *_outputs(out), bands=BANDS, tile="T31TXA", scale=10000
        )
    assert _nothing_written(out)
    # Percent reflectance (0-100) at scale 1: no date is absurd alone, the whole stack is.
    write_stack(tmp_path / "p", refl * 100, None, [f"{d:%Y%m%d}" for d in DATES])
    with pytest.raises(
        InputError,
        match=r"/p: band B02 \(reflectance\) holds clear values .* over all dates.* "
        r"set tiles.T31TXA.scale to 100$",
    ):
        ingest_stack(find_stack_files(tmp_path / "p"), *_outputs(out), bands=BANDS, tile="T31TXA")
    assert _nothing_written(out)
    # NDVI -1..1 in one OTB-order file without scale.
    ndvi = np.random.default_rng(2).uniform(-0.2, 0.9, (len(DATES), H, W)).astype(np.float32)
    path = _write(tmp_path / "ndvi.tif", ndvi)
    (tmp_path / "ndvi_dates.txt").write_text("".join(f"{d:%Y%m%d}\n" for d in DATES))
    with pytest.raises(
        InputError, match=r"ndvi.tif: band NDVI \(index\) .* -> set tiles.T31TXA.scale to 10000"
    ):
        ingest_stack_file(path, tmp_path / "ndvi_dates.txt", *_outputs(out), bands=["NDVI"], tile="T31TXA")
    assert _nothing_written(out)
    # Dark but right: a date clear over water only (reflectance 0.01-0.03) is not stopped.
    dark = cube.copy()
    dark[0] = np.clip(dark[0], 100, 300)
    write_stack(tmp_path / "d", dark, None, [f"{d:%Y%m%d}" for d in DATES])
    ingest_stack(find_stack_files(tmp_path / "d"), *_outputs(out), bands=BANDS, tile="T31TXA")


def test_bad_single_file_inputs(series, tmp_path):
    cube, mask = series
    out = tmp_path / "out"
    stack = _write(tmp_path / "series.tif", cube.reshape(-1, H, W))
    dates = tmp_path / "dates.txt"
    dates.write_text("".join(f"{d:%Y%m%d}\n" for d in DATES[:-1]))
    with pytest.raises(InputError, match=r"20 bands, expected 4 dates") as err:
        ingest_stack_file(stack, dates, *_outputs(out), bands=BANDS)
    assert str(stack) in str(err.value)
    dates.write_text("20210304\n2021-04-13\n")
    with pytest.raises(InputError, match="not a date YYYYMMDD") as err:
        ingest_stack_file(stack, dates, *_outputs(out), bands=BANDS)
    assert str(dates) in str(err.value)
    dates.write_text("".join(f"{d:%Y%m%d}\n" for d in reversed(DATES)))
    with pytest.raises(InputError, match="not strictly increasing"):
        ingest_stack_file(stack, dates, *_outputs(out), bands=BANDS)
    dates.write_text("".join(f"{d:%Y%m%d}\n" for d in DATES))
    bad_mask = _write(tmp_path / "mask.tif", mask[:3])
    with pytest.raises(InputError, match="3 mask band") as err:
        ingest_stack_file(stack, dates, *_outputs(out), bands=BANDS, mask_file=bad_mask)
    assert str(bad_mask) in str(err.value)
    assert _nothing_written(out)


@pytest.mark.realdata
def test_real_safe_products_as_a_stack_with_nodata(t31tej_safe_products, tmp_path):
    """T31TEJ ingested from SAFE, exported per date with clouds as nodata, ingested back: same mask,
    same reflectance where clear."""
    ingest_safe(t31tej_safe_products, *_outputs(tmp_path / "safe"))
    raw = _read(tmp_path / "safe/raw.tif")
    m = _read(tmp_path / "safe/raw_mask.tif").astype(bool)
    dates = read_dates(tmp_path / "safe/raw_dates.txt")
    with rasterio.open(tmp_path / "safe/raw.tif") as src:
        crs, transform = src.crs, src.transform
    cube = raw.reshape(len(dates), -1, *raw.shape[1:]).copy()
    cube[np.broadcast_to(m[:, None], cube.shape)] = -10000
    write_stack(
        tmp_path / "stack",
        cube,
        None,
        dates,
        name="SENTINEL2_T31TEJ_{date}_10bands.tif",
        crs=crs,
        transform=transform,
    )
    ingest_stack(
        find_stack_files(tmp_path / "stack"),
        *_outputs(tmp_path / "back"),
        bands=["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"],
        nodata=-10000,
    )
    np.testing.assert_array_equal(_read(tmp_path / "back/raw_mask.tif").astype(bool), m)
    back = _read(tmp_path / "back/raw.tif").reshape(cube.shape)
    clear = np.broadcast_to(~m[:, None], cube.shape)
    np.testing.assert_array_equal(back[clear], cube[clear])
    assert m[dates.index("20180212")].all() and 0.02 < m.mean() < 0.9
