"""Parcel classification in the workflow: the DAG it adds (dry run) and an end-to-end run on T31TEJ."""

from __future__ import annotations

import json
import re

import geopandas as gpd
import pandas as pd
import pytest
import rasterio
from conftest import absolute_config, snakemake


def _job_counts(stdout: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry run."""
    table = stdout.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.M)}


def test_dry_run_adds_the_parcel_jobs_only_when_configured(tmp_path):
    parcels = {
        "models": {"parcel_gru": {}, "parcel_cnn_gru90": {"epochs": 2}},
        "vote_architectures": ["rf"],
        "ablation_permute_dates": True,
    }
    cfg = absolute_config("config.yaml", tmp_path, parcels=parcels)  # the demo: 2 tiles, 2 runs
    jobs = _job_counts(snakemake(tmp_path, cfg, "-n").stdout)
    assert jobs["parcel_dataset"] == 2  # once per tile, not per run
    assert jobs["train_parcel"] == jobs["train_parcel_permuted"] == 2 * 2  # runs x models
    assert jobs["predict_parcel"] == jobs["predict_parcel_permuted"] == 2 * 2 * 2  # runs x models x tiles
    assert jobs["majority_vote"] == 2 * 2  # runs x tiles, rf only
    assert jobs["parcel_summary"] == jobs["parcel_ablation"] == 1
    plain = absolute_config("config.yaml", tmp_path)
    jobs = _job_counts(snakemake(tmp_path, plain, "-n").stdout)
    assert not any("parcel" in rule or rule == "majority_vote" for rule in jobs)


@pytest.mark.e2e
@pytest.mark.realdata
def test_parcel_chain_on_t31tej(t31tej, tmp_path):
    parcels = {
        "models": {"parcel_gru": {"epochs": 10}, "parcel_cnn_gru90": {"epochs": 2}},
        "ablation_permute_dates": True,
    }
    cfg = absolute_config(
        "t31tej.yaml",
        tmp_path,
        split={"ratio": 0.66, "runs": 1, "seed": 0},
        architectures={"rf": {"n_estimators": 30, "max_depth": 20}},
        parcels=parcels,
    )
    res = tmp_path / "results"
    targets = ["results/reports/parcels_summary.csv", "results/reports/parcels_ablation.csv"]
    snakemake(tmp_path, cfg, *targets, timeout=600)

    ds = res / "tiles/T31TEJ"
    assert (
        (ds / "parcels.npy").exists()
        and (ds / "parcels_mask.npy").exists()
        and (ds / "parcels.parquet").exists()
    )
    rf = json.loads((res / "runs/0/reports/rf/T31TEJ.json").read_text())
    with rasterio.open(ds / "validity.tif") as grid:
        grid_profile = (grid.crs, grid.transform, grid.width, grid.height)
    for name in ("parcel_gru", "parcel_cnn_gru90", "vote_rf"):
        folder = res / "runs/0/parcels" / name
        report = json.loads((folder / "T31TEJ.json").read_text())
        assert report["architecture"] == name and report["level"] == "parcel"
        # the same validation parcels as the pixel chain's report
        assert report["split"].endswith("runs/0/tiles/T31TEJ/split.gpkg")
        assert report["n_validation_parcels"] == rf["n_validation_polygons"]
        assert 0.0 <= report["macro_f1"] <= 1.0 and "pixel_level" in report
        # class 5 (a single polygon, always learning) is never in the macro F-score
        assert 5 not in report["macro_f1_classes"] and 5 not in report["pixel_level"]["macro_f1_classes"]
        assert report["pixel_level"]["n_pixels"] > 1000
        gdf = gpd.read_file(folder / "T31TEJ.gpkg", layer="parcels")
        assert len(gdf) >= 100 and gdf.crs.to_epsg() == 32631
        assert {"code", "name", "confidence", "reference_code", "split"} <= set(gdf.columns)
        with rasterio.open(folder / "T31TEJ_classification.tif") as src:
            assert (src.crs, src.transform, src.width, src.height) == grid_profile
            assert src.dtypes[0] == "uint8" and src.colormap(1)
    vote = json.loads((res / "runs/0/parcels/vote_rf/T31TEJ.json").read_text())
    assert vote["kappa"] > 0.3  # the RF map aggregated per parcel
    summary = pd.read_csv(res / "reports/parcels_summary.csv")
    assert set(summary["architecture"]) == {"parcel_gru", "parcel_cnn_gru90", "vote_rf"}
    pixel = pd.read_csv(res / "reports/parcels_pixel_summary.csv")
    assert {"rf", "vote_rf", "parcel_gru"} <= set(pixel["architecture"])  # side by side with the pixel maps
    ablation = pd.read_csv(res / "reports/parcels_ablation.csv")
    assert set(ablation["model"]) == {"parcel_gru", "parcel_cnn_gru90"}
    row = ablation[(ablation["model"] == "parcel_gru") & (ablation["run"].astype(str) == "0")].iloc[0]
    assert row["delta_macro_f1"] == pytest.approx(row["macro_f1_permuted"] - row["macro_f1"])
    training = pd.read_csv(res / "reports/parcels_training.csv")
    assert (
        set(training["model"]) == {"parcel_gru", "parcel_cnn_gru90"}
        and (training["training_time_s"] > 0).all()
    )
    meta = json.loads((res / "runs/0/parcels/parcel_cnn_gru90/model.json").read_text())
    assert abs(meta["temporal_ratio"] - 0.9) < 0.01 and meta["seed"] == 0
