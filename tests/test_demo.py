"""The synthetic demo (cropchain.demo): landscape, SAFE products re-ingested, references."""

from __future__ import annotations

import datetime as dt
from pathlib import Path

import geopandas as gpd
import numpy as np
import pytest
import rasterio
import shapely
from rasterio.features import rasterize
from sklearn.ensemble import RandomForestClassifier
from sklearn.metrics import accuracy_score

from cropchain.demo import (
    CORINE_CODES,
    DEMO_NOMENCLATURE,
    RPG_CODES,
    demo_dates,
    demo_layout,
    demo_origin,
    generate_demo_products,
    generate_demo_references,
    write_demo_nomenclature,
)
from cropchain.io.raster import read_dates
from cropchain.nomenclature import read_nomenclature
from cropchain.sources.sentinel2 import (
    DEFAULT_SCL_MASKED,
    SENTINEL2_BANDS,
    find_safe_products,
    ingest_safe,
    read_safe_product,
)

ROOT = Path(__file__).resolve().parents[1]
SIZE = 200
NB = len(SENTINEL2_BANDS)
TILE = "T31TXA"


def _transform(origin: tuple[float, float]) -> rasterio.Affine:
    return rasterio.Affine(10.0, 0.0, origin[0], 0.0, -10.0, origin[1])


def _layer(safe: Path, band: str) -> np.ndarray:
    with rasterio.open(next(safe.glob(f"GRANULE/*/IMG_DATA/R*m/*_{band}_*m.jp2"))) as src:
        return src.read(1)


@pytest.fixture(scope="module")
def demo(tmp_path_factory):
    root = tmp_path_factory.mktemp("demo")
    products = generate_demo_products(
        root / TILE, TILE, seed=42, width=SIZE, height=SIZE, origin=demo_origin(0)
    )
    out = root / "ingest"
    ingest_safe(find_safe_products(root / TILE), out / "raw.tif", out / "raw_mask.tif", out / "raw_dates.txt")
    with rasterio.open(out / "raw.tif") as src:
        cube, profile = src.read(), src.profile
    with rasterio.open(out / "raw_mask.tif") as src:
        mask = src.read()
    cls, parcels = demo_layout(TILE, seed=42, width=SIZE, height=SIZE, origin=demo_origin(0))
    return {
        "products": products,
        "cube": cube,
        "profile": profile,
        "mask": mask,
        "dates": read_dates(out / "raw_dates.txt"),
        "cls": cls,
        "parcels": parcels,
    }


def test_layout_landscape():
    cls, parcels = demo_layout(TILE, seed=7, width=SIZE, height=SIZE, origin=demo_origin(0))
    assert cls.shape == (SIZE, SIZE) and cls.dtype == np.uint8
    frac = np.bincount(cls.ravel(), minlength=8) / cls.size
    assert frac[0] == 0 and (frac[1:] > 0.005).all()  # every class, no hole
    assert 0.08 < frac[5] < 0.2 and 0.03 < frac[6] < 0.1 and frac[7] < 0.08
    crops = parcels[parcels["code"] <= 4]
    assert len(crops) > 100
    assert 0.5 <= crops["area_ha"].median() <= 4
    assert ((crops["area_ha"] >= 0.4) & (crops["area_ha"] <= 5)).mean() > 0.85
    assert parcels["parcel_id"].is_unique and parcels.crs.to_epsg() == 32631
    with rasterio.Env():
        burnt = rasterize(
            zip(parcels.geometry, parcels["code"]),
            out_shape=cls.shape,
            transform=_transform(demo_origin(0)),
            dtype="uint8",
        )
    assert (burnt == cls).all()
    # Same seed and tile: same landscape; another tile: another landscape, next to the first.
    again, _ = demo_layout(TILE, seed=7, width=SIZE, height=SIZE, origin=demo_origin(0))
    assert (again == cls).all()
    cls_b, parcels_b = demo_layout("T31TXB", seed=7, width=SIZE, height=SIZE, origin=demo_origin(1, SIZE))
    assert (cls_b != cls).mean() > 0.3
    assert parcels_b.total_bounds[0] == pytest.approx(parcels.total_bounds[2])


def test_products_named_and_described_like_l2a(demo):
    names = [p.name for p in demo["products"]]
    assert names[0] == "S2A_MSIL2A_20210115T104021_N0500_R008_T31TXA_20210115T120000.SAFE"
    assert len(names) == 16
    p = read_safe_product(demo["products"][5])
    assert p.tile == TILE and p.baseline == "05.00" and p.quantification == 10000
    assert p.offsets == {b: -1000 for b in SENTINEL2_BANDS}
    for b in SENTINEL2_BANDS:
        with rasterio.open(p.band_files[b]) as src:
            res = 10 if b in ("B02", "B03", "B04", "B08") else 20
            assert src.driver == "JP2OpenJPEG" and src.res == (res, res) and src.dtypes[0] == "uint16"
            assert src.crs.to_epsg() == 32631
    assert _layer(demo["products"][5], "SCL").shape == (SIZE // 2, SIZE // 2)


def test_reingested_dates_and_masks_match_scl(demo):
    assert demo["dates"] == [d.strftime("%Y%m%d") for d in demo_dates(2021)]
    assert demo["profile"]["count"] == 16 * NB and (demo["profile"]["height"], demo["profile"]["width"]) == (
        SIZE,
        SIZE,
    )
    mask = demo["mask"]
    for d, safe in enumerate(demo["products"]):
        scl = np.repeat(np.repeat(_layer(safe, "SCL"), 2, axis=0), 2, axis=1)
        assert (mask[d] == np.isin(scl, DEFAULT_SCL_MASKED)).all(), demo["dates"][d]
    frac = mask.mean(axis=(1, 2))
    assert (frac == 1).sum() == 1  # one fully cloudy date
    assert (frac == 0).sum() >= 2 and 0.05 < frac.mean() < 0.4  # clear dates, and clouds
    scl_values = set()
    for safe in demo["products"]:
        scl_values |= set(np.unique(_layer(safe, "SCL")).tolist())
    assert {0, 3, 4, 5, 6, 8, 9, 10} <= scl_values


def test_clouds_bright_and_shadows_dark(demo):
    cube, dates = demo["cube"], demo["dates"]
    b02 = SENTINEL2_BANDS.index("B02")
    checked = {9: 0, 3: 0}
    for d, safe in enumerate(demo["products"]):
        scl = np.repeat(np.repeat(_layer(safe, "SCL"), 2, axis=0), 2, axis=1)
        blue = cube[d * NB + b02].astype(float)
        clear = np.isin(scl, [4, 5])
        if (scl == 9).sum() > 100 and clear.sum() > 100:
            assert np.median(blue[scl == 9]) > 3 * np.median(blue[clear]), dates[d]
            checked[9] += 1
        if (scl == 3).sum() > 100 and clear.sum() > 100:
            assert np.median(blue[scl == 3]) < np.median(blue[clear]), dates[d]
            checked[3] += 1
    assert checked[9] >= 4 and checked[3] >= 4


def _clear_ndvi(demo, code: int) -> np.ndarray:
    cube, mask, cls = demo["cube"].astype(float), demo["mask"], demo["cls"]
    red, nir = SENTINEL2_BANDS.index("B04"), SENTINEL2_BANDS.index("B08")
    out = []
    for d in range(len(demo["dates"])):
        ok = (cls == code) & (mask[d] == 0)
        r, n = cube[d * NB + red][ok], cube[d * NB + nir][ok]
        out.append(np.median((n - r) / (n + r)) if ok.sum() > 50 else np.nan)
    return np.array(out)


def test_phenology_per_class(demo):
    months = np.array([int(d[4:6]) for d in demo["dates"]])
    wheat, maize = _clear_ndvi(demo, 1), _clear_ndvi(demo, 2)
    assert months[np.nanargmax(wheat)] in (4, 5)
    assert months[np.nanargmax(maize)] in (7, 8)
    assert np.nanmax(wheat) > 0.7 and np.nanmin(wheat[months >= 7]) < 0.35  # harvested in summer
    assert np.nanmax(maize) > 0.7 and np.nanmax(maize[months <= 5]) < 0.3  # bare soil in spring
    assert np.nanmin(_clear_ndvi(demo, 5)) > 0.6  # forest
    assert np.nanmax(_clear_ndvi(demo, 6)) < 0.3  # urban
    assert np.nanmax(_clear_ndvi(demo, 7)) < 0  # water
    vine = _clear_ndvi(demo, 4)
    assert np.nanmax(vine[(months >= 6) & (months <= 8)]) > np.nanmax(vine[months <= 2]) + 0.15


def test_learnable_but_not_trivial(demo):
    """A random forest, validated on other parcels than it learnt from, is good but not perfect."""
    cube, mask, cls, parcels = demo["cube"], demo["mask"], demo["cls"], demo["parcels"]
    x = cube.reshape(len(demo["dates"]), NB, -1).astype(np.float32)
    x[np.broadcast_to(mask.reshape(len(demo["dates"]), 1, -1).astype(bool), x.shape)] = np.nan
    x = x.reshape(-1, cls.size).T
    y = cls.ravel()
    unit = rasterize(
        zip(parcels.geometry, parcels["parcel_id"]),
        out_shape=cls.shape,
        transform=demo["profile"]["transform"],
        dtype="int32",
    ).ravel()
    rng = np.random.default_rng(0)
    learn_units = rng.random(unit.max() + 1) < 0.5
    learn = learn_units[unit]
    rows, cols = np.divmod(np.arange(cls.size), SIZE)
    merged = y >= 5  # forest, urban, water: split by 40-pixel blocks
    learn[merged] = ((rows[merged] // 40 + cols[merged] // 40) % 2) == 0
    tr = rng.choice(np.flatnonzero(learn), 6000, replace=False)
    te = np.flatnonzero(~learn)
    rf = RandomForestClassifier(n_estimators=60, random_state=0, n_jobs=1).fit(x[tr], y[tr])
    oa = accuracy_score(y[te], rf.predict(x[te]))
    assert 0.8 < oa < 0.99, oa


def test_same_seed_same_bytes(tmp_path):
    kw = dict(seed=11, width=48, height=40, dates=["2021-03-01", "2021-06-01", "2021-08-01"])
    a = generate_demo_products(tmp_path / "a", "T31TXB", **kw)
    generate_demo_products(tmp_path / "b", "T31TXB", **kw)
    c = generate_demo_products(tmp_path / "c", "T31TXB", **{**kw, "seed": 12})
    files_a = sorted(p.relative_to(tmp_path / "a") for p in (tmp_path / "a").rglob("*.jp2"))
    files_b = sorted(p.relative_to(tmp_path / "b") for p in (tmp_path / "b").rglob("*.jp2"))
    assert files_a == files_b and len(files_a) == 3 * 11
    for f in files_a:
        assert (tmp_path / "a" / f).read_bytes() == (tmp_path / "b" / f).read_bytes(), f
    assert [p.name for p in a] == [p.name for p in c]
    assert not np.array_equal(_layer(a[1], "B04"), _layer(c[1], "B04"))
    with rasterio.open(next(a[0].glob("GRANULE/*/IMG_DATA/R20m/*_B11_20m.jp2"))) as src:
        assert (src.width, src.height) == (24, 20)


def test_references(tmp_path):
    specs = {
        t: {"origin": demo_origin(i, 120), "width": 120, "height": 100}
        for i, t in enumerate(["T31TXA", "T31TXB"])
    }
    paths = generate_demo_references(tmp_path, specs, seed=5)
    assert set(paths) == {"parcels", "landcover"}
    rpg, clc = gpd.read_file(paths["parcels"]), gpd.read_file(paths["landcover"])
    assert rpg.crs.to_epsg() == 2154 and clc.crs.to_epsg() == 2154
    assert set(rpg["CODE_CULTU"]) == set(RPG_CODES.values())
    assert set(clc["code_18"]) == {*CORINE_CODES.values(), 211} and clc["code_18"].dtype.kind == "i"
    assert 1 <= (~rpg.is_valid).sum() <= 10 and (~clc.is_valid).sum() >= 1
    assert all("Self-intersection" in r for r in shapely.is_valid_reason(rpg.geometry[~rpg.is_valid]))
    # Back in the tiles' CRS, each reference covers its classes of the layout.
    rpg_utm = rpg.to_crs(32631)
    rpg_utm["geometry"] = shapely.make_valid(rpg_utm.geometry.values)
    clc_utm = clc.to_crs(32631)
    clc_utm["geometry"] = shapely.make_valid(clc_utm.geometry.values)
    to_code = {v: k for k, v in RPG_CODES.items()}
    for i, tile in enumerate(specs):
        cls, _ = demo_layout(tile, seed=5, width=120, height=100, origin=demo_origin(i, 120))
        transform = _transform(demo_origin(i, 120))
        burnt = rasterize(
            zip(rpg_utm.geometry, rpg_utm["CODE_CULTU"].map(to_code)),
            out_shape=cls.shape,
            transform=transform,
            dtype="uint8",
        )
        crop = cls <= 4
        assert (burnt[crop] == cls[crop]).mean() > 0.97 and (burnt[~crop] == 0).mean() > 0.97
        forest = rasterize(
            clc_utm.geometry[clc_utm["code_18"] == 311], out_shape=cls.shape, transform=transform
        )
        assert (forest[cls == 5] == 1).mean() > 0.9
    # The coarse 'arable' polygons overlap crop parcels of several classes: priorities matter.
    arable = clc_utm[clc_utm["code_18"] == 211].union_all()
    inside = rpg_utm[rpg_utm.intersects(arable)]
    assert len(inside) >= 10 and inside["CODE_CULTU"].nunique() >= 2


def test_demo_nomenclature(tmp_path):
    nom = read_nomenclature(write_demo_nomenclature(tmp_path / "nomenclature.csv"))
    assert nom.codes == tuple(range(1, 8)) and nom.names[0] == "wheat" and nom.names[6] == "water"
    assert nom.codes == tuple(c for c, _, _ in DEMO_NOMENCLATURE)
    shipped = ROOT / "config" / "nomenclature_demo.csv"
    if shipped.exists():
        assert read_nomenclature(shipped) == nom


def test_dates_parameter(tmp_path):
    prods = generate_demo_products(
        tmp_path, "31TXA", seed=1, width=32, height=32, dates=[dt.date(2022, 8, 1), "2022-03-01"]
    )
    assert [read_safe_product(p).date for p in prods] == [dt.date(2022, 3, 1), dt.date(2022, 8, 1)]
    assert all("_T31TXA_" in p.name for p in prods)
