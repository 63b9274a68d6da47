"""End-to-end: presto_rf (a forest on Presto embeddings) and presto_finetune (the encoder
fine-tuned with a linear head) through Snakemake on small demo tiles, beside rf on the same
split; the embeddings are computed per window and never stored."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pandas as pd
import pyarrow.parquet as pq
import pytest
import rasterio
import yaml
from conftest import SHARED, absolute_config, snakemake, write_config

pytestmark = pytest.mark.e2e

WEIGHTS = SHARED / "models" / "presto" / "default_model.pt"


@pytest.fixture(scope="module")
def presto_run(tmp_path_factory) -> Path:
    if not WEIGHTS.is_file():
        pytest.skip(f"Presto weights not found at {WEIGHTS} (../shared is absent on this machine)")
    work = tmp_path_factory.mktemp("presto_demo")
    cfg = absolute_config(
        "config.yaml",
        work,
        demo__width=64,
        demo__height=48,
        split={"ratio": 0.66, "runs": 1, "seed": 0},
        architectures={
            "rf": {"n_estimators": 50},
            "presto_rf": {"n_estimators": 50},
            "presto_finetune": {"epochs": 3, "max_pixels_per_class": 300, "batch_size": 64},
        },
        presto={"weights": str(WEIGHTS)},
        classify={"window": 32, "overlap": 0},
        resources={"threads": 1},
    )
    snakemake(work, cfg)
    return work


def test_presto_rf_trained_on_embeddings_mapped_and_reported(presto_run: Path):
    res = presto_run / "results"
    pixels = pq.read_table(res / "runs/0/pixels.parquet").to_pandas()
    embedded = pq.read_table(res / "runs/0/pixels_presto.parquet").to_pandas()
    names = [f"presto_{i:03d}" for i in range(128)]
    assert [c for c in embedded.columns if c.startswith("presto_")] == names
    assert not any(c.endswith("_NDVI") for c in embedded.columns)
    # the same learning pixels as the spectral samples (same split, same cap draw)
    key = ["tile", "row", "col", "code"]
    pd.testing.assert_frame_equal(
        pixels[key].sort_values(key).reset_index(drop=True),
        embedded[key].sort_values(key).reset_index(drop=True),
    )
    assert (
        embedded[names].abs().max().max() < 100 and embedded[names].std().max() > 0.01
    )  # LayerNorm'd, not constant
    meta = json.loads((res / "runs/0/models/presto_rf/model.json").read_text())
    assert meta["kind"] == "pixel" and meta["feature_names"] == names
    for tile in ("T31TXA", "T31TXB"):
        with (
            rasterio.open(res / f"runs/0/maps/presto_rf/{tile}_classification.tif") as src,
            rasterio.open(res / f"runs/0/maps/rf/{tile}_classification.tif") as ref,
        ):
            assert (src.width, src.height, src.transform) == (64, 48, ref.transform)
            got, want = src.read(1), ref.read(1)
        assert ((got == 0) == (want == 0)).all()  # the same pixels mapped (clear dates), every window
        report = json.loads((res / f"runs/0/reports/presto_rf/{tile}.json").read_text())
        # the demo is learnable from the embeddings too
        assert report["n_pixels"] > 200 and report["overall_accuracy"] > 0.6
    summary = pd.read_csv(res / "reports/summary.csv")
    assert {"rf", "presto_rf"} <= set(summary["architecture"])
    # embeddings are never stored: only the learning pixels' table has them
    stored = [p.name for p in res.rglob("*.tif")]
    assert not any("presto" in n or "embedding" in n or n == "features.tif" for n in stored)


def test_presto_finetune_trained_on_encoder_inputs_mapped_and_reported(presto_run: Path):
    res = presto_run / "results"
    pixels = pq.read_table(res / "runs/0/pixels.parquet").to_pandas()
    inputs = pq.read_table(res / "runs/0/pixels_presto_inputs.parquet").to_pandas()
    names = [c for c in inputs.columns if c.startswith("presto_")]
    assert len(names) == 12 * 11 + 2 and names[-2:] == ["presto_lat", "presto_lon"]
    key = ["tile", "row", "col", "code"]
    pd.testing.assert_frame_equal(
        pixels[key].sort_values(key).reset_index(drop=True),
        inputs[key].sort_values(key).reset_index(drop=True),
    )
    meta = json.loads((res / "runs/0/models/presto_finetune/model.json").read_text())
    assert meta["feature_names"] == names and meta["hyperparameters"]["weights"] == str(WEIGHTS)
    for tile in ("T31TXA", "T31TXB"):
        with (
            rasterio.open(res / f"runs/0/maps/presto_finetune/{tile}_classification.tif") as src,
            rasterio.open(res / f"runs/0/maps/rf/{tile}_classification.tif") as ref,
        ):
            got, want = src.read(1), ref.read(1)
        assert ((got == 0) == (want == 0)).all()
        report = json.loads((res / f"runs/0/reports/presto_finetune/{tile}.json").read_text())
        assert report["n_pixels"] > 200 and report["overall_accuracy"] > 0.6
    assert "presto_finetune" in set(pd.read_csv(res / "reports/summary.csv")["architecture"])


def test_rerun_does_nothing(presto_run: Path):
    proc = snakemake(presto_run, presto_run / "config.yaml", "-n")
    assert "Nothing to be done" in proc.stdout + proc.stderr


def test_raw_series_kept_with_a_presto_architecture(presto_run: Path):
    """ingest.keep_raw null (the default) keeps raw.tif when a Presto architecture reads it in every
    run: one more run embeds its samples from it instead of re-ingesting the tile."""
    for tile in ("T31TXA", "T31TXB"):
        assert (presto_run / f"results/tiles/{tile}/raw.tif").is_file()
    cfg = yaml.safe_load((presto_run / "config.yaml").read_text())
    cfg["split"]["runs"] = 2
    proc = snakemake(presto_run, write_config(presto_run / "config_two_runs.yaml", cfg), "-n")
    text = proc.stdout + proc.stderr
    assert "samples_presto" in text and not re.search(r"^(ingest|gapfill|reference)\s", text, re.M), text
