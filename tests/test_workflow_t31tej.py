"""End-to-end on the real Sentinel-2 L2A products of T31TEJ (read in place from ../shared)."""

from __future__ import annotations

import json
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pytest
import rasterio
from conftest import absolute_config, snakemake

from cropchain.series.features import FeatureSpec

pytestmark = [pytest.mark.e2e, pytest.mark.realdata]


@pytest.fixture(scope="module")
def t31tej_run(t31tej, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("t31tej")
    # the pixel chain with RF and XGBoost; networks and parcel models have their own tests
    cfg = absolute_config(
        "t31tej.yaml",
        work,
        split={"ratio": 0.66, "runs": 2, "seed": 0},
        architectures={
            "rf": {"n_estimators": 100, "max_depth": 25},
            "xgboost": {"n_estimators": 200, "max_depth": 6, "learning_rate": 0.1},
        },
        parcels={"enabled": False},
        delineation={"enabled": False},
    )
    snakemake(work, cfg)
    return work


def test_real_chain_products(t31tej_run: Path):
    res = t31tej_run / "results"
    raw_dates = (res / "tiles/T31TEJ/raw_dates.txt").read_text().split()
    assert len(raw_dates) == 10 and "20180212" in raw_dates
    with rasterio.open(res / "tiles/T31TEJ/raw_mask.tif") as src:
        empty_date = src.read(raw_dates.index("20180212") + 1)
        assert (empty_date == 1).all()  # the all-nodata product is a fully masked date
    assert not (res / "tiles/T31TEJ/features.tif").exists()  # features are computed, never stored
    spec = FeatureSpec(
        res / "tiles/T31TEJ/gapfilled.tif",
        res / "tiles/T31TEJ/dates.txt",
        ("B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"),
        ("NDVI", "NDWI", "brightness"),
    )
    with spec.open() as src:
        assert (src.height, src.width) == (353, 232)
        assert src.count == 26 * 13  # 26 dates x (10 bands + NDVI, NDWI, brightness)
    # the learning table holds the learning pixels only (validation is evaluated on the maps)
    assert set(pd.read_parquet(res / "runs/0/pixels.parquet", columns=["split"])["split"].astype(str)) == {
        "learn"
    }
    ref = gpd.read_file(res / "tiles/T31TEJ/reference.gpkg")
    assert ref.crs.to_epsg() == 32631 and len(ref) >= 100
    for run in ("0", "1"):
        split = gpd.read_file(res / f"runs/{run}/tiles/T31TEJ/split.gpkg")
        assert set(split["split"]) == {"learn", "validation"}
        for arch in ("rf", "xgboost"):
            report = json.loads((res / f"runs/{run}/reports/{arch}/T31TEJ.json").read_text())
            assert report["tile"] == "T31TEJ" and report["architecture"] == arch and report["run"] == int(run)
            # validation pixels only: far fewer than the ~16,000 labelled pixels
            assert 1000 < report["n_pixels"] < 12000
            assert 0.3 < report["kappa"] <= 1.0
            cm = np.array(report["confusion_matrix"]["matrix"])
            assert cm.sum() == report["n_pixels"]
            # macro F1 over the classes with validation pixels: class 5 (unspecified cereals,
            # a single polygon, always learning) is never averaged, even where it is mapped
            labels = np.array(report["confusion_matrix"]["labels"])
            validated = labels[cm.sum(axis=1) > 0].tolist()  # rows: reference classes with scored pixels
            assert report["macro_f1_classes"] == validated and 5 not in validated
            assert set(validated) <= set(split.loc[split["split"] == "validation", "code"].astype(int))
            assert "5" not in report["per_class"]
            assert report["macro_f1"] == pytest.approx(
                np.mean([report["per_class"][str(c)]["f1"] for c in validated])
            )
            assert set(report["commission_unvalidated"]) <= {"5"}
            with rasterio.open(res / f"runs/{run}/maps/{arch}/T31TEJ_classification.tif") as src:
                assert src.crs.to_epsg() == 32631 and src.colormap(1)
    s0 = gpd.read_file(res / "runs/0/tiles/T31TEJ/split.gpkg").sort_values("polygon_id")
    s1 = gpd.read_file(res / "runs/1/tiles/T31TEJ/split.gpkg").sort_values("polygon_id")
    assert (s0["split"].to_numpy() != s1["split"].to_numpy()).any()  # each run redraws the split
