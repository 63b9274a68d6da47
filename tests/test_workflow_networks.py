"""End-to-end with the convolutional networks on the real T31TEJ products (../shared).

Each network is trained by its own `train_network` job for a single short epoch (the
committed defaults are measured in docs/results.md, "Neural architectures"), mapped by the same
tiled inference, vectorized and reported beside RF, and compared in the summary.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pytest
import rasterio
import torch
from conftest import absolute_config, snakemake

pytestmark = [pytest.mark.e2e, pytest.mark.realdata]

NETWORKS = ("fg_unet", "temporal_unet", "dilated_cnn", "tempcnn")


@pytest.fixture(scope="module")
def networks_run(t31tej, tmp_path_factory) -> Path:
    work = tmp_path_factory.mktemp("networks")
    short = {"epochs": 1, "patches_per_epoch": 8, "batch_size": 4, "patch_size": 32}
    archs = {"rf": {"n_estimators": 20, "max_depth": 12}}
    archs.update({name: dict(short) for name in NETWORKS})
    archs["tempcnn"]["patch_size"] = 16
    cfg = absolute_config(
        "t31tej.yaml",
        work,
        split={"ratio": 0.66, "runs": 1, "seed": 0},
        architectures=archs,
        parcels={"enabled": False},
        delineation={"enabled": False},
    )
    snakemake(work, cfg)
    return work


@pytest.mark.parametrize("arch", NETWORKS)
def test_network_trained_mapped_and_reported(networks_run: Path, arch: str):
    res = networks_run / "results"
    models = res / f"runs/0/models/{arch}"
    meta = json.loads((models / "model.json").read_text())
    assert meta["architecture"] == arch and meta["kind"] == "network" and meta["classes"] == list(range(1, 9))
    assert meta["hyperparameters"]["epochs"] == 1 and meta["seed"] == 0
    # the saved model carries what it needs to predict: architecture, classes, normalization
    saved = torch.load(models / "model.pt", map_location="cpu", weights_only=False)
    assert saved["architecture"] == arch and len(saved["feature_names"]) == 26 * 13
    assert len(saved["mean"]) == len(saved["std"]) == 26 * 13
    metrics = json.loads((models / "metrics.json").read_text())
    assert metrics["epochs_run"] == 1 and metrics["threads"] == 2 and metrics["n_learning_pixels"] > 1000

    with rasterio.open(res / f"runs/0/maps/{arch}/T31TEJ_classification.tif") as src:
        assert (src.height, src.width) == (353, 232) and src.colormap(1)
        classes = src.read(1)
    with rasterio.open(res / f"runs/0/maps/{arch}/T31TEJ_confidence.tif") as src:
        confidence = src.read(1)
    assert set(np.unique(classes)) <= set(range(0, 9))  # 8 classes of the nomenclature + nodata 0
    assert (classes > 0).mean() > 0.9 and confidence[classes > 0].max() <= 100  # 255: nodata

    report = json.loads((res / f"runs/0/reports/{arch}/T31TEJ.json").read_text())
    assert report["architecture"] == arch and 1000 < report["n_pixels"] < 12000
    assert 0.0 <= report["macro_f1"] <= 1.0 and -1.0 <= report["kappa"] <= 1.0
    assert (res / f"runs/0/vectors/{arch}/T31TEJ.gpkg").stat().st_size > 0


def test_summary_compares_networks_with_rf_on_the_same_validation_pixels(networks_run: Path):
    res = networks_run / "results"
    with open(res / "reports/summary.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert {r["architecture"] for r in rows} == {"rf", *NETWORKS}
    assert all(r["tile"] in ("T31TEJ", "all") and r["n_runs"] == "1" for r in rows)  # "all": over tiles
    sizes = {
        json.loads((res / f"runs/0/reports/{a}/T31TEJ.json").read_text())["n_pixels"]
        for a in ("rf", *NETWORKS)
    }
    assert len(sizes) == 1  # every architecture is scored on the same validation polygons
