"""End-to-end: the default demo config through Snakemake, then a rerun that does nothing."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import pandas as pd
import pyarrow.parquet as pq
import pytest
import rasterio
from conftest import snakemake

pytestmark = pytest.mark.e2e


def test_demo_products_and_reports(demo_run: Path):
    res = demo_run / "results"
    tiles, runs, archs = ["T31TXA", "T31TXB"], ["0", "1"], ["rf", "xgboost"]
    for tile in tiles:
        assert not (res / "tiles" / tile / "raw.tif").exists()  # a temp() file (ingest.keep_raw: false)
        with rasterio.open(res / "tiles" / tile / "raw_mask.tif") as src:
            assert src.dtypes[0] == "uint8" and (src.width, src.height) == (200, 200)
        with rasterio.open(res / "tiles" / tile / "gapfilled.tif") as src:
            assert src.dtypes[0] == "int16" and src.count == 23 * 10
        dates = (res / "tiles" / tile / "dates.txt").read_text().split()
        assert dates[0] == "20210115" and len(dates) == 23
    for run in runs:
        pixels = pq.read_table(res / "runs" / run / "pixels.parquet")
        assert set(pixels.column("split").to_pylist()) == {"learn"}  # validation: evaluated on the maps
        for arch in archs:
            assert (res / "runs" / run / "models" / arch / "model.json").exists()
            with rasterio.open(res / "runs" / run / "maps" / arch / "mosaic_classification.tif") as src:
                assert src.width == 400 and src.height == 200
            for tile in tiles:
                with rasterio.open(res / "runs" / run / "maps" / arch / f"{tile}_classification.tif") as src:
                    assert src.dtypes[0] == "uint8" and src.nodata == 0
                    cmap = src.colormap(1)
                    assert cmap[1][:3] == (0xE8, 0xC5, 0x47)
                with rasterio.open(res / "runs" / run / "maps" / arch / f"{tile}_confidence.tif") as src:
                    conf = src.read(1, masked=True)
                    assert 0 <= conf.min() and conf.max() <= 100
                vec = gpd.read_file(res / "runs" / run / "vectors" / arch / f"{tile}.gpkg")
                assert len(vec) > 10 and set(vec.columns) >= {"code", "name", "geometry"}
                report = json.loads((res / "runs" / run / "reports" / arch / f"{tile}.json").read_text())
                for key in (
                    "tile",
                    "run",
                    "architecture",
                    "overall_accuracy",
                    "kappa",
                    "macro_f1",
                    "per_class",
                    "confusion_matrix",
                    "n_pixels",
                ):
                    assert key in report
                assert report["n_pixels"] > 1000
                # the demo is learnable: a pixel classifier maps it well, but not perfectly
                assert 0.75 < report["overall_accuracy"] < 1.0
                assert (res / "runs" / run / "reports" / arch / f"{tile}_confusion.png").stat().st_size > 1000
    summary = pd.read_csv(res / "reports" / "summary.csv")
    assert set(summary["architecture"]) >= set(archs)
    html = (res / "reports" / "summary.html").read_text()
    assert "kappa" in html.lower() and "xgboost" in html
    # provenance: a STAC Item beside each map, whose asset checksums are those of the products
    import hashlib

    item = json.loads((res / "runs/1/maps/rf/T31TXB_item.json").read_text())
    assert item["properties"]["cropchain:seed"] == 1 and item["properties"]["cropchain:architecture"] == "rf"
    assert len(item["properties"]["cropchain:input_products"]) == 1  # the demo tile's product folder
    for asset in item["assets"].values():
        data = (res / "runs/1/maps/rf" / asset["href"]).read_bytes()
        assert asset["file:checksum"] == "1220" + hashlib.sha256(data).hexdigest()
    # a log and a benchmark file per job
    assert (res / "logs" / "ingest" / "T31TXA.log").stat().st_size > 0
    assert (res / "benchmarks" / "train" / "0_rf.tsv").exists()


def test_maps_are_cogs_with_class_names(demo_run: Path):
    """Every map a user opens is a valid COG with overviews; class maps carry the class names
    (GDAL raster attribute table and QGIS style) of the nomenclature."""
    import xml.etree.ElementTree as ET

    import yaml
    from rio_cogeo.cogeo import cog_validate

    from cropchain.nomenclature import read_nomenclature

    nomenclature = read_nomenclature(yaml.safe_load((demo_run / "config.yaml").read_text())["nomenclature"])
    maps = sorted((demo_run / "results/runs").glob("*/maps/*/*.tif"))
    assert len(maps) == 2 * 2 * (4 * 2 + 1)  # runs x archs x (4 maps x 2 tiles + mosaic)
    for path in maps:
        valid, errors, _ = cog_validate(str(path))
        assert valid, (path, errors)
        with rasterio.open(path) as src:  # GDAL adds overviews down to one 512 px block
            assert bool(src.overviews(1)) == (max(src.width, src.height) > 512), path
            if path.name.endswith("_uncertainty.tif"):  # classify.uncertainty's default
                assert src.descriptions == ("margin",) and src.nodata == 255
        if not path.name.endswith("_classification.tif"):
            continue
        rat = (
            ET.parse(path.with_name(path.name + ".aux.xml"))
            .getroot()
            .find("./PAMRasterBand/GDALRasterAttributeTable")
        )
        rows = [[f.text for f in row.findall("F")] for row in rat.findall("Row")]
        assert [(int(r[0]), r[1]) for r in rows] == list(zip(nomenclature.codes, nomenclature.names))
        qml = ET.parse(path.with_suffix(".qml")).getroot()
        entries = qml.findall(".//colorPalette/paletteEntry")
        assert [(int(e.get("value")), e.get("label")) for e in entries] == list(
            zip(nomenclature.codes, nomenclature.names)
        )
        with rasterio.open(path) as src:
            assert all(
                src.colormap(1)[c][:3] == rgb for c, rgb in zip(nomenclature.codes, nomenclature.colors)
            )


def test_rerun_does_nothing(demo_run: Path):
    cfg = demo_run / "config.yaml"
    proc = snakemake(demo_run, cfg, "--dry-run")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_misspelled_config_key_is_named(demo_run: Path):
    import yaml

    cfg = yaml.safe_load((demo_run / "config.yaml").read_text())
    cfg["splt"] = cfg.pop("split")
    bad = demo_run / "bad.yaml"
    bad.write_text(yaml.safe_dump(cfg))
    proc = snakemake(demo_run, bad, "--dry-run", check=False)
    assert proc.returncode != 0
    assert "unknown key 'splt' (did you mean 'split'?)" in proc.stdout + proc.stderr
