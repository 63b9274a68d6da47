"""Each job owns its threads: OpenMP, BLAS, PyTorch and GDAL pinned to the rule's `threads`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import pytest


@pytest.mark.parametrize(("rule", "cache_mb"), [("classify", "256"), ("ingest", "64"), ("vectorize", "16")])
def test_run_step_pins_every_thread_pool(rule, cache_mb):
    """In a fresh process (as a Snakemake script job): numpy's BLAS, scikit-learn's OpenMP and
    PyTorch run on the job's threads; GDAL's codecs and cache are bounded (the cache per rule);
    OpenMP waits passively."""
    code = textwrap.dedent("""
        import json, os, types
        import numpy, sklearn.ensemble, torch  # loaded before the step, as in a script's imports
        from threadpoolctl import threadpool_info
        from cropchain.workflow import run_step

        def step(smk):
            pools = {p["user_api"]: p["num_threads"] for p in threadpool_info()}
            print(json.dumps({"pools": pools, "torch": torch.get_num_threads(),
                              "env": {k: os.environ.get(k) for k in ("OMP_NUM_THREADS", "GDAL_NUM_THREADS",
                                                                     "OMP_WAIT_POLICY", "GDAL_CACHEMAX")}}))

        smk = types.SimpleNamespace(log=[], rule=RULE, wildcards={}, threads=1, output=[])
        run_step(smk, step)
    """).replace("RULE", repr(rule))
    env = {"PATH": "/usr/bin:/bin", "OMP_NUM_THREADS": "", "HOME": "/tmp"}
    out = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, env=env
    ).stdout
    state = json.loads(out.strip().splitlines()[-1])
    assert state["pools"] and all(n == 1 for n in state["pools"].values()), state["pools"]
    assert "openmp" in state["pools"] and "blas" in state["pools"]
    assert state["torch"] == 1
    assert state["env"] == {
        "OMP_NUM_THREADS": "1",
        "GDAL_NUM_THREADS": "1",
        "OMP_WAIT_POLICY": "PASSIVE",
        "GDAL_CACHEMAX": cache_mb,
    }


def test_peak_rss_is_measured_exactly():
    """A job's peak RSS (logged by run_step, read by benchmarks/bench_tile.py) sees a 300 MB
    array held for a few milliseconds, which sampling every 0.5 s would miss."""
    code = textwrap.dedent("""
        import numpy
        from cropchain.workflow import peak_rss_mb
        before = peak_rss_mb()
        a = numpy.ones(300 * 2**20, dtype=numpy.uint8)  # touched: resident
        del a
        print(before, peak_rss_mb())
    """)
    parent = "import numpy, subprocess, sys; big = numpy.ones(400 * 2**20, dtype=numpy.uint8); "
    parent += (
        f"print(subprocess.run([sys.executable, '-c', {code!r}], capture_output=True, text=True).stdout)"
    )
    out = subprocess.run([sys.executable, "-c", parent], capture_output=True, text=True, check=True).stdout
    before, after = (float(v) for v in out.split())
    assert before < 250 and after - before > 290  # the parent's 400 MB are not the job's
