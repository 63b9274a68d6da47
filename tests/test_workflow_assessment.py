"""Accuracy assessment in the workflow: the jobs it adds (dry run) and its two rules run on a given map."""

from __future__ import annotations

import json
import re

import geopandas as gpd
import numpy as np
import pandas as pd
import shapely
from conftest import absolute_config, snakemake
from test_assessment import ORIGIN, write_map


def _job_counts(stdout: str) -> dict[str, int]:
    """Rule -> job count from the 'Job stats' table of a dry run."""
    table = stdout.split("Job stats:", 1)[1]
    return {m.group(1): int(m.group(2)) for m in re.finditer(r"^(\w+)\s+(\d+)$", table, flags=re.M)}


def _evaluate_inputs(stdout: str) -> list[str | None]:
    """The areas input of each evaluate job of a dry run: "_areas.json" where it has one, else None."""
    inputs = re.findall(r"^rule evaluate:\n\s+input: ([^\n]+)", stdout, flags=re.M)
    return ["_areas.json" if "_areas.json" in line else None for line in inputs]


def test_dry_run_adds_the_assessment_jobs_only_when_configured(tmp_path):
    labelled = tmp_path / "labelled.gpkg"
    labelled.touch()
    cfg = absolute_config(
        "config.yaml", tmp_path, assessment={"samples": str(labelled)}
    )  # demo: 2 tiles, 2 runs
    jobs = _job_counts(snakemake(tmp_path, cfg, "-n").stdout)
    assert (
        jobs["assessment_design"] == jobs["assessment_estimate"] == 2 * 2 * 2
    )  # runs x architectures x tiles
    design_only = absolute_config("config.yaml", tmp_path, assessment={})
    jobs = _job_counts(snakemake(tmp_path, design_only, "-n").stdout)
    assert jobs["assessment_design"] == 8 and "assessment_estimate" not in jobs
    validation = absolute_config("config.yaml", tmp_path, assessment={"samples": "validation"})
    stdout = snakemake(tmp_path, validation, "-n").stdout
    jobs = _job_counts(stdout)
    assert jobs["assessment_validation_sample"] == jobs["assessment_estimate"] == 8
    # each map's accuracy report waits for its area estimates (the report JSON's `areas`)
    assert _evaluate_inputs(stdout) == 8 * ["_areas.json"]
    for cfg in (
        absolute_config("config.yaml", tmp_path, assessment={"enabled": False}),
        absolute_config("config.yaml", tmp_path),
    ):
        stdout = snakemake(tmp_path, cfg, "-n").stdout
        assert not any(rule.startswith("assessment") for rule in _job_counts(stdout))
        assert _evaluate_inputs(stdout) == 8 * [None]  # no area estimates: the report as before


def test_design_then_estimate_rules_on_a_map(tmp_path):
    """The design rule draws points on a map; labelled (here from a known truth) they give areas with
    intervals."""
    rng = np.random.default_rng(0)
    truth = np.kron(rng.integers(1, 8, (21, 21)), np.ones((10, 10), int))[:200, :200].astype(np.uint8)
    mapped = truth.copy()
    mapped[(truth == 3) & (rng.random(truth.shape) < 0.4)] = 5  # grassland partly mapped as forest
    maps = tmp_path / "results" / "runs" / "0" / "maps" / "rf"
    maps.mkdir(parents=True)
    write_map(maps / "T31TXA_classification.tif", mapped)
    labelled = tmp_path / "labelled.gpkg"
    assessment = {"samples": str(labelled), "min_per_class": 30, "target_se": 0.02, "seed": 3}
    cfg = absolute_config("config.yaml", tmp_path, assessment=assessment)
    out = tmp_path / "results" / "runs" / "0" / "assessment" / "rf"
    # only the assessment rules: the map above stands for the classification of the chain
    snakemake(
        tmp_path,
        cfg,
        "--allowed-rules",
        "assessment_design",
        "--",
        str((out / "T31TXA_sample.gpkg").relative_to(tmp_path)),
    )
    sample = gpd.read_file(out / "T31TXA_sample.gpkg")
    design = json.loads((out / "T31TXA_design.json").read_text())
    assert len(sample) == design["n"] and sample["reference"].isna().all()
    sample["reference"] = truth[sample["row"], sample["col"]].astype(int)
    sample.to_crs(2154).to_file(labelled)  # photo-interpreted in Lambert-93
    snakemake(
        tmp_path,
        cfg,
        "--allowed-rules",
        "assessment_estimate",
        "--",
        str((out / "T31TXA_areas.json").relative_to(tmp_path)),
    )
    result = json.loads((out / "T31TXA_areas.json").read_text())
    assert result["tile"] == "T31TXA" and result["n"] == len(sample)
    grass = result["areas"]["3"]
    true_ha = float((truth == 3).sum()) * 0.01
    assert grass["mapped_ha"] < true_ha - 3 * grass["ci95_ha"] / 1.96  # the map misses grassland ...
    assert abs(grass["estimated_ha"] - true_ha) <= grass["ci95_ha"]  # ... the estimate recovers it
    table = pd.read_csv(out / "T31TXA_areas.csv")
    assert list(table["name"]) == ["wheat", "maize", "grassland", "vineyard", "forest", "urban", "water"]
    # the map's accuracy report (rule evaluate, on validation parcels) carries the estimated areas
    x0, y0 = ORIGIN
    cells = [(r, c) for r in range(0, 200, 10) for c in range(0, 200, 10) if (r + c) % 30 == 0]
    split = gpd.GeoDataFrame(
        {
            "polygon_id": range(len(cells)),
            "code": [int(truth[r, c]) for r, c in cells],
            "split": "validation",
        },
        geometry=[
            shapely.box(x0 + 10 * c, y0 - 10 * (r + 10), x0 + 10 * (c + 10), y0 - 10 * r) for r, c in cells
        ],
        crs=32631,
    )
    tiles = tmp_path / "results" / "runs" / "0" / "tiles" / "T31TXA"
    tiles.mkdir(parents=True)
    split.to_file(tiles / "split.gpkg")
    report_json = tmp_path / "results" / "runs" / "0" / "reports" / "rf" / "T31TXA.json"
    snakemake(tmp_path, cfg, "--allowed-rules", "evaluate", "--", str(report_json.relative_to(tmp_path)))
    report = json.loads(report_json.read_text())
    assert report["n_validation_polygons"] == len(cells)
    assert report["areas"] == {
        code: {k: a[k] for k in ("name", "mapped_ha", "estimated_ha", "ci95_ha")}
        for code, a in result["areas"].items()
    }
    assert report["areas"]["3"]["name"] == "grassland" and report["areas"]["3"]["ci95_ha"] > 0
    assert report["areas_definition"].startswith("Olofsson et al. 2014")
    assert report["areas_definition"].endswith(f"sample: {labelled}")
