"""Ingest of Sentinel-2 L2A SAFE products (cropchain.sources.sentinel2) on the real T31TEJ products."""

from __future__ import annotations

import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from cropchain.demo import generate_demo_products
from cropchain.errors import InputError
from cropchain.io.raster import read_dates
from cropchain.sources.sentinel2 import (
    DEFAULT_SCL_MASKED,
    RAW_NODATA,
    SENTINEL2_BANDS,
    find_safe_products,
    ingest_safe,
    read_safe_product,
)

REAL_DATES = [
    "20180123",
    "20180128",
    "20180212",
    "20180418",
    "20180627",
    "20180707",
    "20180806",
    "20180826",
    "20180920",
    "20181005",
]
NB = len(SENTINEL2_BANDS)


def _outputs(d: Path) -> tuple[Path, Path, Path]:
    return d / "raw.tif", d / "raw_mask.tif", d / "raw_dates.txt"


def _assert_nothing_written(d: Path) -> None:
    assert not d.exists() or list(d.iterdir()) == [], f"outputs left after a failure: {list(d.iterdir())}"


def _band(safe: Path, band: str) -> Path:
    return next(safe.glob(f"GRANULE/*/IMG_DATA/R*m/*_{band}_*m.jp2"))


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read(1)


def _up(a: np.ndarray, h: int, w: int) -> np.ndarray:
    return np.repeat(np.repeat(a, 2, axis=0), 2, axis=1)[:h, :w]


@pytest.fixture(scope="module")
def real(t31tej_safe_products, tmp_path_factory):
    out = tmp_path_factory.mktemp("ingest")
    raw, mask, dates = _outputs(out)
    ingest_safe(t31tej_safe_products, raw, mask, dates)
    with rasterio.open(raw) as src:
        cube, profile, desc = src.read(), src.profile, src.descriptions
    with rasterio.open(mask) as src:
        m = src.read()
    return {
        "cube": cube,
        "profile": profile,
        "desc": desc,
        "mask": m,
        "dates": read_dates(dates),
        "products": t31tej_safe_products,
        "out": out,
    }


def test_find_safe_products(t31tej, t31tej_safe_products, tmp_path):
    found = find_safe_products(t31tej)
    assert [p.name for p in found] == [p.name for p in t31tej_safe_products]
    assert [p.name.split("_")[2][:8] for p in found] == REAL_DATES
    assert find_safe_products([t31tej_safe_products[3]]) == [t31tej_safe_products[3].resolve()]
    with pytest.raises(InputError, match="no Sentinel-2 .SAFE"):
        find_safe_products(tmp_path)
    with pytest.raises(InputError, match="not found"):
        find_safe_products(tmp_path / "nowhere")


def test_read_safe_product_metadata(t31tej_safe_products):
    p = read_safe_product(t31tej_safe_products[0])
    assert p.tile == "T31TEJ" and p.spacecraft == "Sentinel-2B" and p.baseline == "02.06"
    assert p.date.isoformat() == "2018-01-23" and p.quantification == 10000
    assert p.offsets == {b: 0 for b in SENTINEL2_BANDS}  # no BOA_ADD_OFFSET before baseline 04.00
    assert p.band_files["B02"].parent.name == "R10m" and p.band_files["B11"].parent.name == "R20m"
    assert p.band_files["B8A"].name.endswith("_B8A_20m.jp2") and p.scl_file.name.endswith("_SCL_20m.jp2")


def test_real_ingest_shape_bands_dates(real):
    prof = real["profile"]
    assert (prof["count"], prof["height"], prof["width"]) == (100, 353, 232)
    assert prof["dtype"] == "int16" and prof["nodata"] == RAW_NODATA
    assert real["dates"] == REAL_DATES
    assert real["desc"][0] == "20180123_B02" and real["desc"][9] == "20180123_B12"
    assert real["desc"][10] == "20180128_B02" and real["desc"][-1] == "20181005_B12"
    assert real["mask"].shape == (10, 353, 232) and real["mask"].dtype == np.uint8
    with rasterio.open(_band(real["products"][0], "B02")) as src:
        assert src.crs == prof["crs"] and src.transform == prof["transform"]
    assert sorted(p.name for p in real["out"].iterdir()) == ["raw.tif", "raw_dates.txt", "raw_mask.tif"]


def test_real_empty_date_fully_masked(real):
    d = REAL_DATES.index("20180212")
    assert real["mask"][d].all()
    assert (real["cube"][d * NB : (d + 1) * NB] == RAW_NODATA).all()


def test_real_cloud_mask_follows_scl(real):
    m = real["mask"]
    for d, safe in enumerate(real["products"]):
        if REAL_DATES[d] == "20180212":
            continue
        scl = _up(_read(_band(safe, "SCL")), 353, 232)
        from_scl = np.isin(scl, DEFAULT_SCL_MASKED)
        zero10 = np.zeros_like(from_scl)
        for b in ("B02", "B03", "B04", "B08"):
            zero10 |= _read(_band(safe, b)) == 0
        expected = from_scl | zero10
        assert not (expected & (m[d] == 0)).any(), REAL_DATES[d]  # every SCL cloud / nodata pixel masked
        assert (m[d].astype(bool) & ~expected).mean() < 0.01  # and little else (20 m nodata borders)
        assert 0 < m[d].mean() < 0.5
    frac = m.mean(axis=(1, 2))
    assert frac[REAL_DATES.index("20180128")] > 0.15  # the cloudy winter date
    assert frac[REAL_DATES.index("20180627")] < 0.05  # a clear summer date


def test_real_20m_band_resampled_onto_10m_grid(real):
    cube, m = real["cube"], real["mask"]
    d = REAL_DATES.index("20180707")
    b11 = cube[d * NB + SENTINEL2_BANDS.index("B11")].astype(float)
    native = _read(_band(real["products"][d], "B11")).astype(float)  # 177 x 116 at 20 m
    assert native.shape == (177, 116) and b11.shape == (353, 232)
    # 2x2 means of the bilinear 10 m band give back the 20 m values (clear pixels inside the tile).
    blocks = b11[:352].reshape(176, 2, 116, 2).mean(axis=(1, 3))
    clear = (m[d][:352].reshape(176, 2, 116, 2).max(axis=(1, 3)) == 0) & (native[:176] > 0)
    clear[[0, -1], :] = clear[:, [0, -1]] = False
    ref = native[:176][clear]
    assert np.corrcoef(blocks[clear], ref)[0, 1] > 0.97
    assert np.median(np.abs(blocks[clear] - ref) / ref) < 0.03


def test_nearest_resampling_repeats_20m_pixels(t31tej_safe_products, tmp_path):
    prods = t31tej_safe_products[3:5]
    raw, mask, dates = _outputs(tmp_path)
    ingest_safe(prods, raw, mask, dates, bands=["B04", "B11"], resampling="nearest")
    with rasterio.open(raw) as src:
        assert src.count == 4 and src.descriptions == (
            "20180418_B04",
            "20180418_B11",
            "20180627_B04",
            "20180627_B11",
        )
        b11 = src.read(2)
    native = _up(_read(_band(prods[0], "B11")), 353, 232).astype(np.int16)
    valid = native > 0
    assert valid.mean() > 0.9 and (b11[valid] == native[valid]).all()
    assert (b11[~valid] == RAW_NODATA).all()


def test_real_reflectance_plausible(real):
    cube, m = real["cube"], real["mask"]
    for d, date in enumerate(REAL_DATES):
        if date == "20180212":
            continue
        clear = m[d] == 0
        bands = cube[d * NB : (d + 1) * NB][:, clear].astype(float)
        assert bands.min() >= 0 and np.percentile(bands, 99) < 8000
        red, nir = bands[SENTINEL2_BANDS.index("B04")], bands[SENTINEL2_BANDS.index("B08")]
        assert 200 < np.median(red) < 2500 and 1000 < np.median(nir) < 5000
        if date[4:6] in ("04", "06", "07"):
            assert np.median((nir - red) / (nir + red)) > 0.2


def test_offsets_applied_on_baseline_05(tmp_path):
    prods = generate_demo_products(
        tmp_path / "demo", "T31TEJ", seed=3, width=40, height=36, dates=["2021-05-01", "2021-07-01"]
    )
    p = read_safe_product(prods[0])
    assert p.baseline == "05.00" and set(p.offsets.values()) == {-1000}
    raw, mask, dates = _outputs(tmp_path / "out")
    ingest_safe(prods, raw, mask, dates)
    with rasterio.open(raw) as src:
        b04 = src.read(1 + NB + SENTINEL2_BANDS.index("B04"))
    dn = _read(_band(prods[1], "B04")).astype(np.int32)
    ok = dn > 0
    assert (b04[ok] == dn[ok] - 1000).all()


# --- bad inputs: an InputError naming the file, and no output left ---------------------------


def _copy(safe: Path, dst: Path, name: str | None = None) -> Path:
    out = dst / (name or safe.name)
    shutil.copytree(safe, out)
    out.chmod(0o755)
    for p in out.rglob("*"):
        p.chmod(0o755 if p.is_dir() else 0o644)
    return out


def test_missing_band_file(t31tej_safe_products, tmp_path):
    safe = _copy(t31tej_safe_products[4], tmp_path / "in")
    _band(safe, "B11").unlink()
    out = tmp_path / "out"
    with pytest.raises(InputError) as err:
        ingest_safe([t31tej_safe_products[3], safe], *_outputs(out))
    msg = str(err.value)
    assert "B11" in msg and str(safe) in msg and "R20m" in msg
    _assert_nothing_written(out)


def test_safe_without_metadata(t31tej_safe_products, tmp_path):
    safe = _copy(t31tej_safe_products[4], tmp_path / "in")
    (safe / "MTD_MSIL2A.xml").unlink()
    out = tmp_path / "out"
    with pytest.raises(InputError) as err:
        ingest_safe([safe], *_outputs(out))
    assert str(safe) in str(err.value) and "MTD_MSIL2A.xml" in str(err.value)
    _assert_nothing_written(out)


def test_unparsable_metadata(t31tej_safe_products, tmp_path):
    safe = _copy(t31tej_safe_products[4], tmp_path / "in")
    (safe / "MTD_MSIL2A.xml").write_text("<Level-2A_User_Product><General_Info>")
    with pytest.raises(InputError, match="cannot be parsed") as err:
        read_safe_product(safe)
    assert str(safe / "MTD_MSIL2A.xml") in str(err.value)


def test_products_of_two_tiles(t31tej_safe_products, tmp_path):
    name = t31tej_safe_products[5].name.replace("T31TEJ", "T31TEK")
    other = _copy(t31tej_safe_products[5], tmp_path / "in", name)
    mtd = other / "MTD_MSIL2A.xml"
    mtd.write_text(mtd.read_text().replace("T31TEJ", "T31TEK"))
    out = tmp_path / "out"
    with pytest.raises(InputError) as err:
        ingest_safe([*t31tej_safe_products[3:5], other], *_outputs(out))
    assert str(other) in str(err.value) and "T31TEK" in str(err.value)
    _assert_nothing_written(out)
    with pytest.raises(InputError, match="expected T31TXA"):
        ingest_safe(t31tej_safe_products[3:5], *_outputs(out), tile="T31TXA")
    _assert_nothing_written(out)


def test_two_products_of_one_date(t31tej_safe_products, tmp_path):
    src = t31tej_safe_products[4]
    twin = _copy(src, tmp_path / "in", src.name.replace(src.name.split("_")[-1], "20180701T000000.SAFE"))
    out = tmp_path / "out"
    with pytest.raises(InputError, match="same sensing date") as err:
        ingest_safe([src, twin], *_outputs(out))
    assert src.name in str(err.value) and twin.name in str(err.value)
    _assert_nothing_written(out)


def _rewrite_jp2(path: Path, array: np.ndarray) -> None:
    from cropchain.demo import _jp2

    with rasterio.open(path) as src:
        transform, crs = src.transform, src.crs.to_string()
    path.unlink()
    _jp2(path, array, transform, crs)


def test_two_products_of_one_date_merged_per_pixel(tmp_path, caplog):
    """ingest.same_date: merge: per pixel, the clear observation of the most recent baseline, DNs
    converted to its offset; its clouds filled from the older product."""
    import logging

    a = generate_demo_products(tmp_path / "in", "T31TEJ", seed=5, width=40, height=36, dates=["2021-06-01"])[
        0
    ]
    other = generate_demo_products(
        tmp_path / "in2", "T31TEJ", seed=5, width=40, height=36, dates=["2021-08-01"]
    )[0]
    scl_a = next(a.rglob("*_SCL_20m.jp2"))
    _rewrite_jp2(scl_a, np.full_like(_read(scl_a), 4))  # A: clear everywhere
    # B: a reprocessing of A (baseline 05.10, BOA_ADD_OFFSET -2000), cloudy on its left half.
    b = _copy(
        a, tmp_path / "in", a.name.replace("_N0500_", "_N0510_").replace("T120000.SAFE", "T180000.SAFE")
    )
    mtd = b / "MTD_MSIL2A.xml"
    mtd.write_text(mtd.read_text().replace(">05.00<", ">05.10<").replace(">-1000<", ">-2000<"))
    for f in b.rglob("*_B*_*m.jp2"):
        dn = _read(f).astype(np.int32)
        _rewrite_jp2(f, np.where(dn > 0, dn + 1000 + 100, 0).astype(np.uint16))  # reflectance of A + 100
    scl_b = next(b.rglob("*_SCL_20m.jp2"))
    cloud = np.full_like(_read(scl_a), 4)
    cloud[:, : cloud.shape[1] // 2] = 9
    _rewrite_jp2(scl_b, cloud)

    out = tmp_path / "out"
    with pytest.raises(InputError, match="ingest.same_date: merge"):
        ingest_safe([a, b, other], *_outputs(out))
    _assert_nothing_written(out)
    with caplog.at_level(logging.WARNING, logger="cropchain.sources.sentinel2"):
        ingest_safe([a, b, other], *_outputs(out), same_date="merge", bands=["B04", "B08", "B11"])
    assert "2 products of the same date merged per pixel" in caplog.text and b.name in caplog.text
    assert read_dates(out / "raw_dates.txt") == ["20210601", "20210801"]
    ingest_safe([a, other], *_outputs(tmp_path / "a_only"), bands=["B04", "B08", "B11"])
    with rasterio.open(out / "raw.tif") as src, rasterio.open(tmp_path / "a_only/raw.tif") as ref:
        merged, only_a = src.read([1, 2, 3]).astype(np.int32), ref.read([1, 2, 3]).astype(np.int32)
    with rasterio.open(out / "raw_mask.tif") as src:
        mask = src.read(1)
    left = np.zeros(mask.shape, bool)
    left[:, : mask.shape[1] // 2] = True
    valid = only_a != -32768
    # Right half: B (newest baseline, clear) = A + 100; left half: B cloudy -> A.
    b08_right = valid[1] & ~left
    assert b08_right.sum() > 100
    np.testing.assert_array_equal(merged[1][b08_right], only_a[1][b08_right] + 100)
    np.testing.assert_array_equal(merged[0][valid[0] & left], only_a[0][valid[0] & left])
    assert not mask[valid.all(axis=0)].any()  # every pixel clear in one of them is clear
    assert not list(out.glob(".same-date-*"))  # merged band files removed


def test_product_on_another_grid(t31tej_safe_products, tmp_path):
    other = generate_demo_products(
        tmp_path / "in", "T31TEJ", seed=0, width=32, height=32, dates=["2018-05-01"]
    )
    out = tmp_path / "out"
    with pytest.raises(InputError, match="grid") as err:
        ingest_safe([t31tej_safe_products[3], *other], *_outputs(out))
    assert str(other[0]) in str(err.value)
    _assert_nothing_written(out)


def test_damaged_band_file_leaves_no_output(t31tej_safe_products, tmp_path):
    safe = _copy(t31tej_safe_products[6], tmp_path / "in")
    jp2 = _band(safe, "B12")
    data = jp2.read_bytes()
    jp2.write_bytes(data[: len(data) // 2])
    out = tmp_path / "out"
    with pytest.raises(InputError) as err:
        ingest_safe([t31tej_safe_products[5], safe], *_outputs(out))
    assert str(jp2) in str(err.value)
    assert list(out.iterdir()) == []  # the temporary files are gone too


def test_baseline_04_without_offsets(tmp_path):
    prods = generate_demo_products(tmp_path, "T31TXA", seed=1, width=32, height=32, dates=["2021-06-01"])
    mtd = prods[0] / "MTD_MSIL2A.xml"
    lines = [ln for ln in mtd.read_text().splitlines() if "BOA_ADD_OFFSET" not in ln]
    mtd.write_text("\n".join(lines))
    with pytest.raises(InputError, match="BOA_ADD_OFFSET") as err:
        read_safe_product(prods[0])
    assert str(mtd) in str(err.value)
