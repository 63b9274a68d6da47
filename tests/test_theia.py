"""Theia / MAJA L2A ingest (cropchain.sources.theia) on products the demo generator writes in Theia's
layout."""

from __future__ import annotations

import datetime as dt
import shutil
from pathlib import Path

import numpy as np
import pytest
import rasterio

from cropchain.demo import generate_demo_products, generate_demo_theia_products
from cropchain.errors import ConfigError, InputError
from cropchain.io.raster import read_dates
from cropchain.sources.sentinel2 import (
    RAW_NODATA,
    SENTINEL2_BANDS,
    find_safe_products,
    ingest_safe,
)
from cropchain.sources.theia import (
    THEIA_NODATA,
    find_theia_products,
    ingest_theia,
    read_theia_product,
)

TILE = "T31TXA"
W, H = 48, 38  # odd 20 m sizes on purpose: 24 x 19
DATES = [dt.date(2021, m, d) for m, d in ((1, 15), (3, 1), (4, 10), (5, 20), (6, 29), (8, 8))]


def _outputs(d: Path) -> tuple[Path, Path, Path]:
    return d / "raw.tif", d / "raw_mask.tif", d / "raw_dates.txt"


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


@pytest.fixture(scope="module")
def scene(tmp_path_factory):
    """The same demo scene as SAFE and as Theia products, and the SAFE ingest of it."""
    root = tmp_path_factory.mktemp("theia")
    safe = generate_demo_products(root / "safe", TILE, seed=11, width=W, height=H, dates=DATES)
    theia = generate_demo_theia_products(root / "theia", TILE, seed=11, width=W, height=H, dates=DATES)
    ingest_safe(find_safe_products(root / "safe"), *_outputs(root / "ingest_safe"))
    return {"root": root, "safe": safe, "theia": theia, "safe_out": root / "ingest_safe"}


def test_layout_and_dates_from_names(scene):
    products = find_theia_products(scene["root"] / "theia")
    assert [p.name for p in products] == [p.name for p in scene["theia"]]
    first = read_theia_product(products[0])
    assert first.date == DATES[0] and first.tile == TILE and first.platform == "SENTINEL2A"
    assert first.sensing_time == dt.datetime(2021, 1, 15, 10, 40, 21)
    assert first.band_files["B02"].name.endswith("_FRE_B2.tif") and first.band_files["B8A"].name.endswith(
        "_FRE_B8A.tif"
    )
    assert first.mask_files[("CLM", "R2")].parent.name == "MASKS"
    with rasterio.open(first.band_files["B02"]) as b2, rasterio.open(first.band_files["B11"]) as b11:
        assert b2.dtypes[0] == "int16" and b2.nodata == THEIA_NODATA
        assert (b2.width, b2.height) == (W, H) and (b11.width, b11.height) == (W // 2, (H + 1) // 2)


def test_theia_ingest_equals_safe_ingest_of_the_same_scene(scene, tmp_path):
    """Same reflectance, same clouds: FRE at 10 m and 20 m and CLM/EDG give SAFE's raw.tif and
    raw_mask.tif."""
    ingest_theia(find_theia_products(scene["root"] / "theia"), *_outputs(tmp_path))
    raw_s, mask_s, dates_s = _outputs(scene["safe_out"])
    raw_t, mask_t, dates_t = _outputs(tmp_path)
    assert read_dates(dates_t) == read_dates(dates_s) == [f"{d:%Y%m%d}" for d in DATES]
    with rasterio.open(raw_t) as t, rasterio.open(raw_s) as s:
        assert t.descriptions == s.descriptions
        assert t.descriptions[:2] == ("20210115_B02", "20210115_B03") and t.descriptions[9] == "20210115_B12"
        assert t.crs == s.crs and t.transform == s.transform and t.nodata == RAW_NODATA
        cube_t, cube_s = t.read(), s.read()
    np.testing.assert_array_equal(cube_t, cube_s)
    m_t, m_s = _read(mask_t), _read(mask_s)
    np.testing.assert_array_equal(m_t, m_s)
    # The scene has clear and masked pixels, a fully cloudy date and a swath-edge date with nodata.
    assert 0.05 < m_t.mean() < 0.6 and m_t.all(axis=(1, 2)).sum() == 1
    edge = (cube_t == RAW_NODATA).reshape(len(DATES), len(SENTINEL2_BANDS), H, W)
    assert edge.any() and (m_t[edge.any(axis=1)] == 1).all()


@pytest.mark.parametrize(
    "bits, scl_masked", [([1], [0, 8, 9]), ([5], [0, 3]), ([7], [0, 10]), ([0], [0, 3, 8, 9])]
)
def test_clm_bits_select_what_is_masked(scene, tmp_path, bits, scl_masked):
    """The demo sets CLM bits 0-2 on clouds, 0 and 5 on shadows, 4 and 7 on cirrus: a bit selection
    masks what the matching SCL classes mask (0: the swath edge, from EDG)."""
    ingest_theia(scene["theia"], *_outputs(tmp_path / "t"), bands=["B04", "B08"], clm_bits=bits)
    ingest_safe(scene["safe"], *_outputs(tmp_path / "s"), bands=["B04", "B08"], scl_masked_classes=scl_masked)
    np.testing.assert_array_equal(_read(tmp_path / "t/raw_mask.tif"), _read(tmp_path / "s/raw_mask.tif"))


def test_sat_bits_and_edges_of_the_bands_ingested(scene, tmp_path):
    """SAT masks a pixel only through the bit of an ingested band; EDG_R2 only when a 20 m band is
    ingested."""
    root = tmp_path / "products"
    shutil.copytree(scene["root"] / "theia", root)
    prod = find_theia_products(root)[0]
    p = read_theia_product(prod)
    with rasterio.open(p.mask_files[("SAT", "R2")], "r+") as sat:
        a = sat.read(1)
        a[2:4, 3:5] = 1 << 4  # B11 saturated on 20 m pixels rows 2-3, cols 3-4
        sat.write(a, 1)
    with rasterio.open(p.mask_files[("SAT", "R1")], "r+") as sat:
        a = sat.read(1)
        a[20:22, 30:33] = 1 << 2  # B4 saturated on 10 m pixels
        sat.write(a, 1)
    with rasterio.open(p.mask_files[("EDG", "R2")], "r+") as edg:
        a = edg.read(1)
        a[-1, :] = 1  # last 20 m row outside the swath
        edg.write(a, 1)
    clear_bits = [6]  # a CLM bit the demo never sets: CLM does not interfere
    ingest_theia([prod], *_outputs(tmp_path / "b11"), bands=["B02", "B11"], clm_bits=clear_bits)
    ingest_theia([prod], *_outputs(tmp_path / "b4"), bands=["B04", "B08"], clm_bits=clear_bits)
    ingest_theia([prod], *_outputs(tmp_path / "b2"), bands=["B02", "B03"], clm_bits=clear_bits)
    m11, m4, m2 = (_read(tmp_path / k / "raw_mask.tif")[0] for k in ("b11", "b4", "b2"))
    assert m11[4:8, 6:10].all() and m11[-2:, :].all() and not m11[20:22, 30:33].any()
    assert m11.sum() == 16 + 2 * W  # 20 m row 18 covers the 10 m rows 36 and 37
    assert m4[20:22, 30:33].all() and m4.sum() == 6  # no 20 m band: neither SAT_R2 nor EDG_R2 read
    assert m2.sum() == 0


def test_errors_name_the_file(scene, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(scene["root"] / "theia", root)
    products = find_theia_products(root)
    out = tmp_path / "out"
    # A product name whose date cannot be parsed.
    bad_date = products[1].with_name(products[1].name.replace("20210301", "20211301"))
    products[1].rename(bad_date)
    with pytest.raises(InputError, match="20211301") as err:
        find_theia_products(root)
    assert bad_date.name in str(err.value) and "not a real date" in str(err.value)
    bad_date.rename(products[1])
    # A missing CLM mask.
    clm = read_theia_product(products[2]).mask_files[("CLM", "R1")]
    clm.unlink()
    with pytest.raises(InputError, match=r"CLM mask at R1 not found") as err:
        ingest_theia(products, *_outputs(out))
    assert str(clm.parent) in str(err.value)
    assert not out.exists() or not list(out.iterdir())
    # Two products of one date.
    twin = root / products[0].name.replace("-000_", "-999_")
    shutil.copytree(products[0], twin)
    with pytest.raises(InputError, match="same acquisition date 2021-01-15") as err:
        ingest_theia([products[0], twin], *_outputs(out))
    assert twin.name in str(err.value)
    # A product on another grid (another extent of the tile).
    moved = tmp_path / "moved"
    other = generate_demo_theia_products(
        moved,
        TILE,
        seed=11,
        width=W,
        height=H,
        dates=[dt.date(2021, 9, 1)],
        origin=(500000.0 + 100.0, 4800000.0),
    )
    with pytest.raises(InputError, match="differs from") as err:
        ingest_theia([products[0], other[0]], *_outputs(out))
    assert other[0].name in str(err.value)
    # A damaged zipped product (read in place when whole), and a band that Theia does not have.
    zipdir = tmp_path / "zipped"
    zipdir.mkdir()
    (zipdir / (products[0].name + ".zip")).write_bytes(b"PK")
    with pytest.raises(InputError, match="zipped product cannot be read") as err:
        ingest_theia(find_theia_products(zipdir), *_outputs(out))
    assert products[0].name + ".zip" in str(err.value)
    with pytest.raises(ConfigError, match="B01"):
        ingest_theia(products[:1], *_outputs(out), bands=["B01"])
    assert not out.exists() or not list(out.iterdir())
