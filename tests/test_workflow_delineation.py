"""Field delineation in the workflow: the DAG it adds (dry run) and an end-to-end run on T31TEJ."""

from __future__ import annotations

import json
import re

import geopandas as gpd
import pandas as pd
import pytest
from conftest import absolute_config, snakemake


def _job_counts(stdout: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry run."""
    table = stdout.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.M)}


def test_dry_run_adds_the_delineation_jobs_only_when_configured(tmp_path):
    delineation = {"variants": {"bgrn": {}, "ndvi_stack": {"steps": 2}}, "baseline_architectures": ["rf"]}
    cfg = absolute_config("config.yaml", tmp_path, delineation=delineation)  # the demo: 2 tiles, 2 runs
    jobs = _job_counts(snakemake(tmp_path, cfg, "-n").stdout)
    assert jobs["delineation_train"] == 2 * 2  # runs x variants, all tiles together
    assert jobs["delineation_predict"] == jobs["delineation_evaluate"] == 2 * 2 * 2  # runs x variants x tiles
    assert jobs["delineation_baseline"] == 2 * 2  # runs x tiles, rf only
    assert jobs["delineation_summary"] == 1
    off = absolute_config("config.yaml", tmp_path, delineation={**delineation, "enabled": False})
    assert not any(
        rule.startswith("delineation") for rule in _job_counts(snakemake(tmp_path, off, "-n").stdout)
    )
    plain = absolute_config("config.yaml", tmp_path)
    assert not any(
        rule.startswith("delineation") for rule in _job_counts(snakemake(tmp_path, plain, "-n").stdout)
    )


def test_unknown_baseline_architecture_is_refused(tmp_path):
    cfg = absolute_config("config.yaml", tmp_path, delineation={"baseline_architectures": ["unet"]})
    proc = snakemake(tmp_path, cfg, "-n", check=False)
    assert proc.returncode != 0 and "delineation.baseline_architectures" in proc.stdout + proc.stderr


@pytest.mark.e2e
@pytest.mark.realdata
def test_delineation_chain_on_t31tej(t31tej, tmp_path):
    delineation = {
        "variants": {"bgr_ndvi": {}, "ndvi_stack": {}},
        "baseline_architectures": ["rf"],
        "training": {"steps": 3, "n_stats_patches": 8},
    }
    cfg = absolute_config(
        "t31tej.yaml",
        tmp_path,
        split={"ratio": 0.66, "runs": 1, "seed": 0},
        architectures={"rf": {"n_estimators": 30, "max_depth": 20}},
        delineation=delineation,
    )
    snakemake(tmp_path, cfg, "results/reports/delineation_summary.csv", timeout=900)
    res = tmp_path / "results"
    for variant, n_channels in (("bgr_ndvi", 4), ("ndvi_stack", 26)):
        folder = res / "runs/0/delineation" / variant
        meta = json.loads((folder / "model.json").read_text())
        assert len(meta["channels"]) == len(meta["image_mean"]) == n_channels and meta["seed"] == 0
        assert json.loads((folder / "metrics.json").read_text())["steps"] == 3
        fields = gpd.read_file(folder / "T31TEJ.gpkg", layer="fields")
        assert fields.crs.to_epsg() == 32631 and fields.geometry.is_valid.all()
        assert fields["score"].between(0, 1).all()
        report = json.loads((folder / "T31TEJ.json").read_text())
        assert report["n_targets"] == 40  # the run's validation parcels (120 parcels, 66/34 split per class)
        assert set(report["pairs"]) == {"conf0.8_rc0.8", "conf0.7_rc0.5"}
        assert (folder / "T31TEJ_curves.png").stat().st_size > 1000
    baseline = json.loads((res / "runs/0/delineation/baseline_rf/T31TEJ.json").read_text())
    assert baseline["kind"] == "vectorized_map" and baseline["n_targets"] == 40
    # the pixel map merges neighbouring fields of one crop: most validation parcels end up in shared polygons
    assert baseline["pairs"]["conf0.7_rc0.5"]["agglomerated_target_rate"] > 0.3
    summary = pd.read_csv(res / "reports/delineation_summary.csv")
    assert set(summary["architecture"]) == {"bgr_ndvi", "ndvi_stack", "baseline_rf"}
    assert len(summary) == 3 * 2 and (summary["n_runs"] == 1).all()
    assert summary.loc[summary["kind"] == "mask_rcnn", "training_time_s_mean"].gt(0).all()
