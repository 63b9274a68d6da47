"""Kill and restart: SIGKILL of the whole run midway, then the same command again."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import rasterio
from conftest import ROOT, absolute_config, snakemake

pytestmark = pytest.mark.e2e


def test_sigkill_then_same_command_gives_identical_products(demo_run: Path, tmp_path: Path):
    work = tmp_path / "killed"
    work.mkdir()
    cfg = absolute_config("config.yaml", work)
    exe = Path(sys.executable).with_name("snakemake")
    cmd = [
        str(exe),
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(work),
        "--configfile",
        str(cfg),
        "--cores",
        "2",
    ]
    with open(work / "first.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=work, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
        try:
            deadline = time.monotonic() + 900
            # midway: once the first model exists, while other models train and maps are written
            while not list(work.glob("results/runs/*/models/*/model.joblib")):
                assert proc.poll() is None, (work / "first.log").read_text()[-3000:]
                assert time.monotonic() < deadline, "the run never reached training"
                time.sleep(0.5)
            time.sleep(3)
        finally:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()
    assert not (work / "results/reports/summary.html").exists()
    # whatever the kill left under a final name is complete: every raster reads to the end
    # (hidden `.name.tmp-*` files are the temporaries of killed jobs, never taken as products)
    for tif in work.glob("results/**/*.tif"):
        if tif.name.startswith("."):
            continue
        with rasterio.open(tif) as src:
            src.read()

    snakemake(work, cfg)  # the same command again

    maps = sorted(
        p.relative_to(demo_run) for p in demo_run.glob("results/runs/*/maps/*/*_classification.tif")
    )
    assert len(maps) == 12  # 2 runs x 2 architectures: 2 tiles and their mosaic
    for rel in maps:
        assert (work / rel).read_bytes() == (demo_run / rel).read_bytes(), (
            f"{rel} differs from an uninterrupted run"
        )
    for rel in sorted(p.relative_to(demo_run) for p in demo_run.glob("results/runs/*/reports/*/*.json")):
        assert json.loads((work / rel).read_text()) == json.loads((demo_run / rel).read_text()), rel
    assert not list(work.glob("results/**/.*.tmp-*")), "temporaries of killed jobs were left behind"
