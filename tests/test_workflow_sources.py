"""The workflow with every tile source (SAFE, demo, Theia, per-date stack, single stack file) and
with monthly composites as the temporal step."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import rasterio
import yaml
from conftest import absolute_config, snakemake, write_config

from cropchain.demo import (
    demo_origin,
    generate_demo_products,
    generate_demo_theia_products,
)
from cropchain.io.raster import read_dates
from cropchain.sources.sentinel2 import find_safe_products, ingest_safe, scl_masked_for_kept

pytestmark = pytest.mark.e2e

W, H = 48, 40


def _read(path: Path) -> np.ndarray:
    with rasterio.open(path) as src:
        return src.read()


def test_theia_stack_file_and_demo_tiles_give_the_same_monthly_composites(tmp_path):
    """One demo scene through three sources: the demo's SAFE products (ingest masking every SCL class
    but 4-7), the same scene as Theia products (CLM/EDG masks) and as one multi-band GeoTIFF with a
    dates file and a mask file (OTB's layout). Monthly composites of the three tiles are identical."""
    scene = "T31TXA"
    origin = demo_origin(0, W)
    data = tmp_path / "data"
    generate_demo_theia_products(data / "theia", scene, seed=5, width=W, height=H, origin=origin)
    safe = generate_demo_products(data / "safe", scene, seed=5, width=W, height=H, origin=origin)
    otb = data / "otb"
    ingest_safe(
        find_safe_products(safe),
        otb / "series.tif",
        otb / "mask.tif",
        otb / "dates.txt",
        scl_masked_classes=scl_masked_for_kept([4, 5, 6, 7]),
    )
    cfg = {
        "nomenclature": "nomenclature.csv",
        "demo": {"seed": 5, "width": W, "height": H, "year": 2021},
        "tiles": {
            scene: {"source": "demo"},
            "THEIA": {"source": "theia", "products": "data/theia"},
            "OTB": {
                "source": "stack_file",
                "file": "data/otb/series.tif",
                "dates_file": "data/otb/dates.txt",
                "mask_file": "data/otb/mask.tif",
            },
        },
        "dates": {"start": "2021-01-10", "end": "2021-12-20"},
        "gapfill": {"temporal": "monthly_median", "scl_kept_classes": [4, 5, 6, 7]},
        "reference": {
            "sources": [{"name": "r", "path": "none.gpkg", "field": "f", "priority": 1, "mapping": {"a": 1}}]
        },
    }
    config = write_config(tmp_path / "config.yaml", cfg)
    targets = [f"results/tiles/{t}/{f}" for t in cfg["tiles"] for f in ("gapfilled.tif", "validity.tif")]
    snakemake(tmp_path, config, *targets)
    res = tmp_path / "results/tiles"
    months = [f"2021{m:02d}15" for m in range(1, 13)]
    for tile in cfg["tiles"]:
        assert read_dates(res / tile / "dates.txt") == months
    ref = _read(res / scene / "gapfilled.tif")
    assert ref.shape == (12 * 10, H, W) and (ref != -32768).mean() > 0.99
    for tile in ("THEIA", "OTB"):
        np.testing.assert_array_equal(_read(res / tile / "raw_mask.tif"), _read(res / scene / "raw_mask.tif"))
        np.testing.assert_array_equal(_read(res / tile / "gapfilled.tif"), ref)
        np.testing.assert_array_equal(_read(res / tile / "validity.tif"), _read(res / scene / "validity.tif"))
    with rasterio.open(res / "THEIA/gapfilled.tif") as src:
        assert src.descriptions[:2] == ("20210115_B02", "20210115_B03")


def _stack_from_safe(products: list[Path], folder: Path) -> None:
    """Export SAFE products as per-date GeoTIFFs (int16 reflectance x10000, nodata -32768) and mask files."""
    work = folder / "ingest"
    ingest_safe(products, work / "raw.tif", work / "raw_mask.tif", work / "raw_dates.txt")
    dates = read_dates(work / "raw_dates.txt")
    with rasterio.open(work / "raw.tif") as src, rasterio.open(work / "raw_mask.tif") as msk:
        n = src.count // len(dates)
        for t, d in enumerate(dates):
            profile = dict(src.profile, count=n)
            with rasterio.open(folder / f"S2_T31TEJ_{d}_10m.tif", "w", **profile) as dst:
                dst.write(src.read(list(range(t * n + 1, (t + 1) * n + 1))))
            with rasterio.open(
                folder / f"S2_T31TEJ_{d}_clouds.tif", "w", **dict(msk.profile, count=1)
            ) as dst:
                dst.write(msk.read(t + 1), 1)


@pytest.mark.realdata
def test_t31tej_as_a_per_date_stack_gives_the_safe_classification(t31tej_safe_products, tmp_path):
    """The real T31TEJ products, converted to a per-date GeoTIFF stack with mask files, give pixel for
    pixel the classification of the SAFE source for the same configuration and seed."""
    stack = tmp_path / "geotiffs"
    stack.mkdir()
    _stack_from_safe(t31tej_safe_products, stack)
    reduced = {"split": {"ratio": 0.66, "runs": 1, "seed": 0}, "architectures": {"rf": {"n_estimators": 20}}}
    target = "results/runs/0/maps/rf/T31TEJ_classification.tif"
    maps = {}
    for name in ("safe", "stack"):
        work = tmp_path / name
        work.mkdir()
        config = absolute_config("t31tej.yaml", work, **reduced)
        if name == "stack":
            cfg = yaml.safe_load(config.read_text())
            cfg["tiles"]["T31TEJ"] = {
                "source": "stack",
                "products": str(stack),
                "files": "S2_*_10m.tif",
                "masks": "S2_*_clouds.tif",
                "date_pattern": r"_(?P<date>\d{8})_",
            }
            write_config(config, cfg)
        snakemake(work, config, target)
        maps[name] = _read(work / target)
        if name == "stack":
            log = (work / "results/logs/ingest/T31TEJ.log").read_text()
            assert "ingest 10 dates (2018-01-23 .. 2018-10-05)" in log
    assert maps["safe"].shape == (1, 353, 232) and len(np.unique(maps["safe"])) >= 4
    np.testing.assert_array_equal(maps["stack"], maps["safe"])
