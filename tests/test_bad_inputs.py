"""Bad-input suite (issue 12): every bad input stops with one line naming the file or key, or
gives a correct result with a WARNING; never a traceback, never a partial file under a final name.

One parametrized test per input kind (reference vectors, nomenclature, configuration, GeoTIFF
stacks, gap filling, SAFE / Theia products, disk and process faults). Each case runs the
cropchain function through :func:`cropchain.workflow.run_step`, as a Snakemake job does, and
asserts the exit status, that the first ``cropchain error:`` line names the file or key, and
that the job's output folder holds no file.
"""

from __future__ import annotations

import datetime as dt
import errno
import logging
import os
import runpy
import shutil
import sys
import zipfile
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest
import rasterio
from shapely.geometry import LineString, Point

from cropchain.config import load_config
from cropchain.nomenclature import read_nomenclature
from cropchain.reference.fusion import ReferenceSource, fuse_reference
from cropchain.workflow import run_step

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).parent))
import test_gapfill as tg  # noqa: E402  (synthetic raw.tif / raw_mask.tif writers)
import test_reference as tr  # noqa: E402
import test_stack as ts  # noqa: E402


class _Named(list):
    """A Snakemake-like named list: items by position and by attribute, dict() of the names."""

    def __init__(self, **items):
        super().__init__(items.values())
        self._names = dict(items)
        self.__dict__.update(items)

    def keys(self):
        return self._names.keys()

    def __getitem__(self, key):
        return self._names[key] if isinstance(key, str) else super().__getitem__(key)


def fake_snakemake(tmp: Path, rule: str, *, input=None, output=None, params=None, wildcards=None) -> _Named:
    smk = _Named()
    smk.rule = rule
    smk.input = _Named(**(input or {}))
    smk.output = _Named(**(output or {}))
    smk.params = _Named(**(params or {}))
    smk.wildcards = _Named(**(wildcards or {}))
    smk.log = _Named(log=str(tmp / "logs" / f"{rule}.log"))
    return smk


@pytest.fixture()
def job(tmp_path, capfd):
    """Run ``step`` as a Snakemake job would (run_step): returns (exit status, first error line, stderr)."""
    root = logging.getLogger()
    saved = root.handlers[:], root.level

    def run(step: Callable[[], object] | Path, smk=None) -> tuple[int, str, str]:
        smk = fake_snakemake(tmp_path, "case") if smk is None else smk
        try:
            if isinstance(step, Path):  # a script of scripts/, as Snakemake's script: directive runs it
                runpy.run_path(str(step), init_globals={"snakemake": smk}, run_name="__main__")
            else:
                run_step(smk, lambda _smk: step())
            status = 0
        except SystemExit as exc:
            status = int(exc.code or 0)
        finally:
            root.handlers[:], _ = saved[0], root.setLevel(saved[1])
        err = capfd.readouterr().err
        first = next((line for line in err.splitlines() if line.startswith("cropchain error:")), "")
        return status, first, err

    return run


def no_file_under(folder: Path) -> bool:
    """Nothing (not even a hidden temporary) was left in a job's output folder."""
    return not folder.exists() or not any(p.is_file() for p in folder.rglob("*"))


@dataclass
class Case:
    """A bad input: ``make(tmp)`` writes it and returns the job (a callable) and the output folder;
    ``named`` must appear in the first error line (a file name or a config key) and ``says`` too."""

    make: Callable[[Path], tuple[Callable[[], object], Path]]
    named: str
    says: str


# --------------------------------------------------------------------------- reference vectors
MAPPING = {"W": 1, "M": 2, "V": 3, "Blé": 1}


def _fuse(tmp: Path, path: Path, **kw):
    grid = tr.write_grid(tmp / "grid.tif")
    nom = read_nomenclature(tr.write_nomenclature(tmp / "nomenclature.csv", ["wheat", "maize", "vineyard"]))
    out = tmp / "out"
    return (
        lambda: fuse_reference(
            [ReferenceSource("parcels", path, "crop", MAPPING, **kw)], nom, grid, out / "reference.gpkg"
        )
    ), out


def _lines(tmp):
    a, b = tr.X0 + 100, tr.Y0 - 500
    return _fuse(
        tmp,
        tr.write_source(
            tmp / "lines.gpkg",
            ["W", "M"],
            [LineString([(a, b), (a + 200, b)]), LineString([(a, b + 9), (a + 9, b + 300)])],
        ),
    )


def _points(tmp):
    return _fuse(tmp, tr.write_source(tmp / "points.shp", ["W"], [Point(tr.X0 + 50, tr.Y0 - 50)]))


def _shp(tmp, name="parcels.shp", labels=("W", "M"), encoding=None):
    gdf = gpd.GeoDataFrame(
        {"crop": list(labels)},
        geometry=[tr.rect(0, 0, 100, 100), tr.rect(200, 200, 300, 300)],
        crs="EPSG:32631",
    )
    path = tmp / name
    pyogrio.write_dataframe(gdf, path, **({"encoding": encoding} if encoding else {}))
    return path


def _no_dbf(tmp):
    path = _shp(tmp, "nodbf.shp")
    path.with_suffix(".dbf").unlink()
    return _fuse(tmp, path)


def _no_shx(tmp):
    path = _shp(tmp, "noshx.shp")
    path.with_suffix(".shx").unlink()
    return _fuse(tmp, path)


def _latin1_declared_utf8(tmp):
    path = _shp(tmp, "latin1.shp", ("Blé", "M"), encoding="latin1")
    path.with_suffix(".cpg").write_text("UTF-8")
    return _fuse(tmp, path)


def _utf8_declared_latin1(tmp):
    path = _shp(tmp, "utf8.shp", ("Blé", "M"))
    path.with_suffix(".cpg").write_text("LATIN1")
    return _fuse(tmp, path)


def _non_utf8_folder(tmp):
    folder = Path(os.fsdecode(os.fsencode(tmp) + b"/donn\xe9es"))
    folder.mkdir()
    shutil.copy(_shp(tmp, "ok.shp"), folder / "ok.shp")
    for ext in (".shx", ".dbf", ".prj", ".cpg"):
        if (tmp / f"ok{ext}").exists():
            shutil.copy(tmp / f"ok{ext}", folder / f"ok{ext}")
    return _fuse(tmp, folder / "ok.shp")


def _no_crs(tmp):
    return _fuse(tmp, tr.write_source(tmp / "nocrs.shp", ["W"], [tr.rect(0, 0, 100, 100)], crs=None))


def _unmapped_value(tmp):
    return _fuse(
        tmp,
        tr.write_source(
            tmp / "unmapped.gpkg", ["W", "rice"], [tr.rect(0, 0, 100, 100), tr.rect(200, 200, 300, 300)]
        ),
    )


def _missing_source(tmp):
    return _fuse(tmp, tmp / "nowhere.gpkg")


REFERENCE_CASES = {
    "lines instead of polygons": Case(_lines, "lines.gpkg", "LineString geometries, not polygons"),
    "points instead of polygons": Case(_points, "points.shp", "Point geometries, not polygons"),
    "shapefile without .dbf": Case(_no_dbf, "nodbf.shp", "has no nodbf.dbf"),
    "shapefile without .shx": Case(_no_shx, "noshx.shp", "has no noshx.shx"),
    "latin-1 attributes, .cpg says UTF-8": Case(
        _latin1_declared_utf8, "latin1.shp", "latin1.cpg says 'UTF-8'"
    ),
    "UTF-8 attributes, .cpg says LATIN1": Case(
        _utf8_declared_latin1, "utf8.shp", "look like UTF-8 text read in another encoding"
    ),
    "folder name not UTF-8": Case(_non_utf8_folder, "donn\\xe9es", "is not valid UTF-8"),
    "no CRS": Case(_no_crs, "nocrs.shp", "has no CRS"),
    "class value absent from the mapping": Case(_unmapped_value, "unmapped.gpkg", "'rice'"),
    "source file missing": Case(_missing_source, "nowhere.gpkg", "not found"),
}


@pytest.mark.filterwarnings("ignore:'crs' was not provided")
@pytest.mark.parametrize("case", list(REFERENCE_CASES.values()), ids=list(REFERENCE_CASES))
def test_bad_reference(case, tmp_path, job):
    step, out = case.make(tmp_path)
    status, first, err = job(step)
    assert status == 1, err
    assert first.startswith("cropchain error: ") and case.named in first.split(": ", 2)[1] + first, first
    assert case.says in first, first
    assert "Traceback" not in err
    assert no_file_under(out)


# --------------------------------------------------------------------------- nomenclature
def _nomenclature(tmp, text: str):
    path = tmp / "nomenclature.csv"
    path.write_text(text)
    return (lambda: read_nomenclature(path)), tmp / "out"


NOMENCLATURE_CASES = {
    "duplicate code": Case(
        lambda t: _nomenclature(t, "code,name,color\n1,wheat,#ff0000\n2,maize,#00ff00\n1,rape,#0000ff\n"),
        "nomenclature.csv",
        "code 1 is given twice (lines 2 and 4)",
    ),
    "unknown colour name": Case(
        lambda t: _nomenclature(t, "code,name,color\n1,wheat,purpel\n"),
        "nomenclature.csv",
        "line 2: color 'purpel'",
    ),
    "code not an integer": Case(
        lambda t: _nomenclature(t, "code,name,color\n1,wheat,red\nx,maize,blue\n"),
        "nomenclature.csv",
        "line 3: code 'x' is not an integer",
    ),
    "code out of range": Case(
        lambda t: _nomenclature(t, "code,name,color\n0,wheat,red\n"), "nomenclature.csv", "[0] outside 1..254"
    ),
    "missing column": Case(
        lambda t: _nomenclature(t, "code,name\n1,wheat\n"), "nomenclature.csv", "missing column(s) ['color']"
    ),
    "class without name": Case(
        lambda t: _nomenclature(t, "code,name,color\n1,,red\n"),
        "nomenclature.csv",
        "line 2: class 1 has no name",
    ),
}


@pytest.mark.parametrize("case", list(NOMENCLATURE_CASES.values()), ids=list(NOMENCLATURE_CASES))
def test_bad_nomenclature(case, tmp_path, job):
    step, _ = case.make(tmp_path)
    status, first, err = job(step)
    assert status == 1, err
    assert first.startswith(f"cropchain error: {tmp_path / case.named}: "), first
    assert case.says in first, first
    assert "Traceback" not in err


def test_named_colours_are_accepted(tmp_path):
    path = tmp_path / "n.csv"
    path.write_text("code,name,color\n1,wheat,purple\n2,maize,tab:green\n3,rape,#FFD700\n4,vine,00ff00\n")
    nom = read_nomenclature(path)
    assert nom.colors == ((128, 0, 128), (44, 160, 44), (255, 215, 0), (0, 255, 0))


# --------------------------------------------------------------------------- configuration
GOOD_CONFIG = (ROOT / "config" / "t31tej.yaml").read_text()


def _config(tmp, text: str):
    path = tmp / "config.yaml"
    path.write_text(text)
    return (lambda: load_config(path)), tmp / "out"


CONFIG_CASES = {
    "impossible date (quoted)": Case(
        lambda t: _config(t, GOOD_CONFIG.replace('start: "2018-01-23"', 'start: "2018-02-30"')),
        "dates.start",
        "'2018-02-30' is not a calendar date",
    ),
    "impossible date (YAML date)": Case(
        lambda t: _config(t, GOOD_CONFIG.replace('end: "2018-10-05"', "end: 2018-09-31")),
        "dates.end",
        "'2018-09-31' is not a calendar date",
    ),
    "YAML syntax error": Case(
        lambda t: _config(t, GOOD_CONFIG.replace("dates:\n", "dates: {\n", 1)),
        "config.yaml, line",
        "YAML syntax error",
    ),
    "tab indentation": Case(
        lambda t: _config(t, GOOD_CONFIG.replace("\n  start:", "\n\tstart:", 1)),
        "config.yaml, line 18",
        "YAML syntax error",
    ),
    "misspelled key": Case(
        lambda t: _config(t, GOOD_CONFIG.replace("dates:", "datse:", 1)), "datse", "did you mean 'dates'"
    ),
    "start after end": Case(
        lambda t: _config(t, GOOD_CONFIG.replace('start: "2018-01-23"', 'start: "2018-12-23"')),
        "dates.start",
        "after dates.end",
    ),
}


@pytest.mark.parametrize("case", list(CONFIG_CASES.values()), ids=list(CONFIG_CASES))
def test_bad_config(case, tmp_path, job):
    step, _ = case.make(tmp_path)
    status, first, err = job(step)
    assert status == 1, err
    assert case.named in first and case.says in first, first
    assert "Traceback" not in err


def test_yaml_dates_are_accepted_as_text(tmp_path):
    path = tmp_path / "config.yaml"
    path.write_text(GOOD_CONFIG.replace('start: "2018-01-23"', "start: 2018-01-23"))
    assert load_config(path)["dates"]["start"] == "2018-01-23"


# --------------------------------------------------------------------------- GeoTIFF stacks
def _stack(tmp, cube, bands=ts.BANDS, **kw):
    from cropchain.sources.stack import find_stack_files, ingest_stack

    ts.write_stack(tmp / "stack", cube, None, [f"{d:%Y%m%d}" for d in ts.DATES])
    out = tmp / "out"
    return (
        lambda: ingest_stack(
            find_stack_files(tmp / "stack"), *ts._outputs(out), bands=bands, tile="T31TXA", **kw
        )
    ), out


def _cube():
    return (
        np.random.default_rng(4)
        .integers(50, 9000, (len(ts.DATES), len(ts.BANDS), ts.H, ts.W))
        .astype(np.int16)
    )


def _stack_non_utf8(tmp):
    from cropchain.sources.stack import find_stack_files

    folder = Path(os.fsdecode(os.fsencode(tmp) + b"/s\xe9ries"))
    ts.write_stack(tmp / "series", _cube(), None, [f"{d:%Y%m%d}" for d in ts.DATES])
    os.rename(tmp / "series", folder)  # GDAL cannot even write there
    return (lambda: find_stack_files(folder)), tmp / "out"


STACK_CASES = {
    "float reflectance 0-1 without scale": Case(
        lambda t: _stack(t, _cube().astype(np.float32) / 10000),
        "S2_20210304.tif",
        "set tiles.T31TXA.scale to 10000",
    ),
    "reflectance x10000 with scale 10000": Case(
        lambda t: _stack(t, _cube(), scale=10000), "S2_20210304.tif", "set tiles.T31TXA.scale to 1 "
    ),
    "float NDVI without scale": Case(
        lambda t: _stack(
            t,
            np.random.default_rng(1).uniform(-0.2, 0.9, (len(ts.DATES), 1, ts.H, ts.W)).astype(np.float32),
            bands=["NDVI"],
        ),
        "S2_20210304.tif",
        "band NDVI (index)",
    ),
    "percent reflectance without scale": Case(
        lambda t: _stack(t, _cube().astype(np.float32) / 100), "stack", "set tiles.T31TXA.scale to 100"
    ),
    "folder name not UTF-8": Case(_stack_non_utf8, "s\\xe9ries", "is not valid UTF-8"),
}


@pytest.mark.parametrize("case", list(STACK_CASES.values()), ids=list(STACK_CASES))
def test_bad_stack(case, tmp_path, job):
    step, out = case.make(tmp_path)
    status, first, err = job(step)
    assert status == 1, err
    assert case.named in first and case.says in first, first
    assert "Traceback" not in err
    assert no_file_under(out)


# --------------------------------------------------------------------------- time series coverage
def _gapfill(tmp, start, end, mask_fn=None):
    from cropchain.series.gapfill import gapfill_tile

    tile = tmp / "tiles" / "T31TEJ"
    tile.mkdir(parents=True)
    raw, mask, dates, _, m = tg.write_inputs(tile)
    if mask_fn is not None:
        with rasterio.open(mask) as src:
            profile = src.profile
        with rasterio.open(mask, "w", **profile) as dst:
            dst.write(mask_fn(m))
    out = tmp / "out"
    return (
        lambda: gapfill_tile(
            raw,
            mask,
            dates,
            out / "gapfilled.tif",
            out / "dates.txt",
            out / "validity.tif",
            start=start,
            end=end,
        )
    ), out


def _mostly_cloudy(m):
    m = np.ones_like(m)
    m[:, :3, :3] = 0
    return m


COVERAGE_CASES = {
    "date grid of another year": Case(
        lambda t: _gapfill(t, "2019-01-01", "2019-12-31"),
        "dates.start / dates.end",
        "(2018-01-23 to 2018-05-03",
    ),
    "date grid mostly after the products": Case(
        lambda t: _gapfill(t, "2018-01-01", "2019-06-30"),
        "dates.start / dates.end",
        "acquisitions of tile T31TEJ",
    ),
    "no clear date for most pixels": Case(
        lambda t: _gapfill(t, None, None, _mostly_cloudy),
        "raw_mask.tif",
        "tile T31TEJ: 100% of the observed pixels have no clear observation",
    ),
}


@pytest.mark.parametrize("case", list(COVERAGE_CASES.values()), ids=list(COVERAGE_CASES))
def test_bad_time_series(case, tmp_path, job):
    step, out = case.make(tmp_path)
    status, first, err = job(step)
    assert status == 1, err
    assert case.named in first and case.says in first, first
    assert "Traceback" not in err
    assert no_file_under(out)


# --------------------------------------------------------------------------- SAFE / Theia products
DEMO_DATES = [dt.date(2021, 3, 1), dt.date(2021, 5, 20), dt.date(2021, 8, 8)]


@pytest.fixture(scope="module")
def demo_safe(tmp_path_factory):
    from cropchain.demo import generate_demo_products, generate_demo_theia_products

    root = tmp_path_factory.mktemp("products")
    generate_demo_products(root / "safe", "T31TXA", seed=3, width=24, height=20, dates=DEMO_DATES)
    generate_demo_theia_products(root / "theia", "T31TXA", seed=3, width=24, height=20, dates=DEMO_DATES)
    return root


def _ingest_script(tmp, products: Path, tile: str, source: str = "safe"):
    """scripts/ingest.py as Snakemake runs it for tiles.<tile> = {source, products}."""
    found = sorted(str(p) for p in products.iterdir())
    out = tmp / "out"
    smk = fake_snakemake(
        tmp,
        "ingest",
        input={"products": found},
        output={
            "raw": str(out / "raw.tif"),
            "mask": str(out / "raw_mask.tif"),
            "dates": str(out / "raw_dates.txt"),
        },
        params={
            "ingest": {"bands": ["B02", "B04", "B08", "B11"], "resampling": "bilinear"},
            "source": {"source": source, "products": str(products)},
            "scl_masked": [0, 1, 3, 8, 9, 10],
        },
        wildcards={"tile": tile},
    )
    return smk, out


@pytest.mark.parametrize("source", ["safe", "theia"])
def test_products_of_another_tile_than_the_config(source, demo_safe, tmp_path, job):
    smk, out = _ingest_script(tmp_path, demo_safe / source, "T31TEJ", source)
    status, first, err = job(ROOT / "scripts" / "ingest.py", smk)
    assert status == 1, err
    assert (
        "product of tile T31TXA, expected T31TEJ (the tile named in the configuration, tiles.T31TEJ)" in first
    ), first
    assert "Traceback" not in err and no_file_under(out)
    # A tile name that is no MGRS id is free (products of any one tile).
    smk, out = _ingest_script(tmp_path / "free", demo_safe / source, "herault", source)
    status, first, err = job(ROOT / "scripts" / "ingest.py", smk)
    assert status == 0, err
    assert (out / "raw.tif").is_file()


def test_products_folder_not_utf8(demo_safe, tmp_path, job):
    from cropchain.sources.sentinel2 import find_safe_products

    folder = Path(os.fsdecode(os.fsencode(tmp_path) + b"/produits_\xe9t\xe9"))
    shutil.copytree(demo_safe / "safe", folder)
    status, first, err = job(lambda: find_safe_products(folder))
    assert status == 1 and "produits_\\xe9t\\xe9" in first and "is not valid UTF-8" in first, err
    assert "Traceback" not in err


def _zip_product(product: Path, name: str | None = None) -> Path:
    """Zip a product folder the way the Copernicus Data Space delivers it (``<name>.SAFE.zip``)."""
    archive = shutil.make_archive(
        str(product.parent / (name or product.name)), "zip", product.parent, product.name
    )
    return Path(archive)


@pytest.mark.parametrize("given", ["folder", "product paths"])
def test_zipped_safe_beside_folders_is_read_in_place(given, demo_safe, tmp_path, job):
    """A *.SAFE.zip (as the Copernicus Data Space delivers it) is read through GDAL's /vsizip/:
    the same raw.tif as the unzipped folder, no date lost."""
    from cropchain.sources.sentinel2 import find_safe_products, ingest_safe

    folder = tmp_path / "products"
    shutil.copytree(demo_safe / "safe", folder)
    products = sorted(folder.iterdir())
    zipped = _zip_product(products[1])
    shutil.rmtree(products[1])
    args = folder if given == "folder" else [*[p for p in products if p.exists()], zipped]
    found = find_safe_products(args)
    assert zipped.resolve() in found and len(found) == 3
    bands = ["B04", "B08", "B11"]
    status, first, err = job(lambda: ingest_safe(found, *ts._outputs(tmp_path / "zip"), bands=bands))
    assert status == 0, err
    ingest_safe(find_safe_products(demo_safe / "safe"), *ts._outputs(tmp_path / "folders"), bands=bands)
    for name in ("raw.tif", "raw_mask.tif"):
        np.testing.assert_array_equal(
            ts._read(tmp_path / "zip" / name), ts._read(tmp_path / "folders" / name)
        )
    assert (tmp_path / "zip/raw_dates.txt").read_text() == (tmp_path / "folders/raw_dates.txt").read_text()


def test_damaged_or_incomplete_zipped_safe_is_named(demo_safe, tmp_path, job):
    from cropchain.sources.sentinel2 import find_safe_products, ingest_safe

    folder = tmp_path / "products"
    shutil.copytree(demo_safe / "safe", folder)
    products = sorted(folder.iterdir())
    zipped = _zip_product(products[0])
    shutil.rmtree(products[0])
    zipped.write_bytes(zipped.read_bytes()[:2000])  # an interrupted download
    out = tmp_path / "out"
    status, first, err = job(
        lambda: ingest_safe(find_safe_products(folder), *ts._outputs(out), bands=["B04"])
    )
    assert (
        status == 1
        and first.startswith(f"cropchain error: {zipped}")
        and "download the product again" in first
    ), err
    assert no_file_under(out)
    # A zip of a folder without its band files: the band and the archive named.
    part = _zip_product(products[1])  # whole product
    with zipfile.ZipFile(part) as zf:
        keep = [n for n in zf.namelist() if "_B04_" not in n]
        data = {n: zf.read(n) for n in keep}
    part.unlink()
    with zipfile.ZipFile(part, "w") as zf:
        for n, b in data.items():
            zf.writestr(n, b)
    shutil.rmtree(products[1])
    zipped.unlink()
    status, first, err = job(
        lambda: ingest_safe(find_safe_products(folder), *ts._outputs(out), bands=["B04"])
    )
    assert status == 1 and "band B04 (10 m) not found" in first and part.name in first, err
    assert no_file_under(out)


def test_zipped_safe_with_its_unzipped_twin_is_ignored(demo_safe, tmp_path):
    from cropchain.sources.sentinel2 import find_safe_products

    folder = tmp_path / "products"
    shutil.copytree(demo_safe / "safe", folder)
    products = sorted(folder.iterdir())
    _zip_product(products[0])
    assert sorted(p.name for p in find_safe_products(folder)) == [p.name for p in products]


def test_zipped_theia_read_in_place(demo_safe, tmp_path, job):
    from cropchain.sources.theia import find_theia_products, ingest_theia

    folder = tmp_path / "theia"
    shutil.copytree(demo_safe / "theia", folder)
    products = sorted(p for p in folder.iterdir() if p.is_dir())
    zipped = Path(shutil.make_archive(str(products[0]), "zip", folder, products[0].name))
    shutil.rmtree(products[0])
    bands = ["B04", "B08", "B11"]
    for given in (folder, [*products[1:], zipped]):
        found = find_theia_products(given)
        assert zipped.resolve() in found and len(found) == 3
    status, first, err = job(
        lambda: ingest_theia(find_theia_products(folder), *ts._outputs(tmp_path / "zip"), bands=bands)
    )
    assert status == 0, err
    ingest_theia(find_theia_products(demo_safe / "theia"), *ts._outputs(tmp_path / "folders"), bands=bands)
    for name in ("raw.tif", "raw_mask.tif"):
        np.testing.assert_array_equal(
            ts._read(tmp_path / "zip" / name), ts._read(tmp_path / "folders" / name)
        )


# --------------------------------------------------------------------------- disk and process faults
def test_disk_full_names_the_disk_and_what_was_written(tmp_path, job):
    from cropchain.io.atomic import atomic_output

    out = tmp_path / "out"

    def write():
        with atomic_output(out / "gapfilled.tif") as tmp:
            tmp.write_bytes(b"x" * 300_000)
            raise OSError(errno.ENOSPC, "No space left on device", str(tmp))

    status, first, err = job(write)
    assert status == 1, err
    assert f"{out / 'gapfilled.tif'}: no space left on device (disk /" in first, first
    assert "free of" in first and "the job had written 293.0 KB of this output" in first, first
    assert "Traceback" not in err and no_file_under(out)


def test_disk_full_outside_atomic_outputs(tmp_path, job):
    smk = fake_snakemake(tmp_path, "case", output={"x": str(tmp_path / "out" / "x.tif")})

    def write():
        raise OSError(errno.ENOSPC, "No space left on device")

    status, first, err = job(write, smk)
    assert status == 1 and "x.tif: no space left on device (disk /" in first, err
    assert "Traceback" not in err


def test_contested_reference_overlap_is_a_warning_with_a_correct_result(tmp_path, job):
    """Overlapping polygons of different classes: exit 0, the contested area dropped, a WARNING line."""
    src = tr.write_source(
        tmp_path / "s.gpkg", ["W", "V"], [tr.rect(0, 0, 400, 400), tr.rect(200, 0, 600, 400)]
    )
    step, out = _fuse(tmp_path, src)
    status, first, err = job(step)
    assert status == 0 and first == ""
    assert "WARNING" in err and "overlapping polygons of different classes" in err
    fused = gpd.read_file(out / "reference.gpkg")
    assert fused["area_m2"].tolist() == pytest.approx([200 * 400, 200 * 400])
    assert pd.Series(fused.geometry.area).sum() == pytest.approx(2 * 200 * 400)


def test_non_utf8_product_folder_in_the_workflow(demo_safe, tmp_path):
    """Snakemake cannot even write a non-UTF-8 input path in its locks: the input function names it."""
    from conftest import safe_demo_config, snakemake, write_config

    folder = Path(os.fsdecode(os.fsencode(tmp_path) + b"/products/donn\xe9es"))
    folder.parent.mkdir()
    shutil.copytree(demo_safe / "safe", folder)
    configfile = write_config(tmp_path / "config.yaml", safe_demo_config({"T31TXA": "products"}))
    proc = snakemake(tmp_path, configfile, "--dry-run", "results/tiles/T31TXA/raw.tif", check=False)
    assert proc.returncode == 1
    assert (
        "products/donn\\xe9es/S2" in proc.stderr + proc.stdout
        and "is not valid UTF-8" in proc.stderr + proc.stdout
    )
    assert "UnicodeEncodeError" not in proc.stderr + proc.stdout


@pytest.mark.parametrize(
    "fault, says",
    [
        (
            PermissionError(errno.EACCES, "Permission denied", "/data/ro/raw.tif"),
            "/data/ro/raw.tif: permission denied",
        ),
        (
            OSError(errno.EROFS, "Read-only file system", "/mnt/cd/raw.tif"),
            "/mnt/cd/raw.tif: read-only file system",
        ),
        (MemoryError(), "x.tif: out of memory"),
    ],
    ids=["permission denied", "read-only disk", "out of memory"],
)
def test_machine_faults_are_one_line(fault, says, tmp_path, job):
    smk = fake_snakemake(tmp_path, "case", output={"x": str(tmp_path / "out" / "x.tif")})

    def fail():
        raise fault

    status, first, err = job(fail, smk)
    assert status == 1 and says in first, err
    assert "Traceback" not in err


def test_empty_reference_source_is_named(tmp_path, job):
    path = tmp_path / "empty.gpkg"
    pyogrio.write_dataframe(gpd.GeoDataFrame({"crop": []}, geometry=[], crs="EPSG:32631"), path)
    step, out = _fuse(tmp_path, path)
    status, first, err = job(step)
    assert status == 1 and first.startswith(
        f"cropchain error: {path}: reference source 'parcels' has no feature"
    ), first


def test_semicolon_nomenclature_is_read(tmp_path):
    path = tmp_path / "n.csv"
    path.write_text("code;name;color\n1;wheat;#ff0000\n2;maize;purple\n")
    assert read_nomenclature(path).codes == (1, 2)


def test_same_date_products_stop_naming_both_and_the_merge_option(demo_safe, tmp_path, job):
    from cropchain.sources.sentinel2 import find_safe_products, ingest_safe

    folder = tmp_path / "products"
    shutil.copytree(demo_safe / "safe", folder)
    first = sorted(folder.iterdir())[0]
    twin = folder / first.name.replace(
        "T120000.SAFE", "T180000.SAFE"
    )  # a reprocessing of the same acquisition
    shutil.copytree(first, twin)
    out = tmp_path / "out"
    status, line, err = job(
        lambda: ingest_safe(find_safe_products(folder), *ts._outputs(out), bands=["B04", "B08"])
    )
    assert status == 1 and twin.name in line and first.name in line and "ingest.same_date: merge" in line, err
    assert no_file_under(out)
    status, line, err = job(
        lambda: ingest_safe(
            find_safe_products(folder), *ts._outputs(out), bands=["B04", "B08"], same_date="merge"
        )
    )
    assert status == 0 and "2 products of the same date merged per pixel" in err, err
    assert len((out / "raw_dates.txt").read_text().split()) == len(DEMO_DATES)


def test_single_clear_date_is_a_warning(tmp_path, job):
    def one_date(m):
        m = np.ones_like(m)
        m[3] = 0
        return m

    step, out = _gapfill(tmp_path, None, None, one_date)
    status, first, err = job(step)
    assert status == 0 and first == ""
    assert "WARNING" in err and "tile T31TEJ: a single date with clear pixels (2018-03-04)" in err
    assert (out / "gapfilled.tif").is_file()
