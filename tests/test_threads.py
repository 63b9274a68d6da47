"""Each job owns its threads: OpenMP, BLAS, PyTorch and GDAL pinned to the rule's `threads`."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap


def test_run_step_pins_every_thread_pool():
    """In a fresh process (as a Snakemake script job): numpy's BLAS, scikit-learn's OpenMP and
    PyTorch run on the job's threads; GDAL's codecs and cache are bounded; OpenMP waits passively."""
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

        smk = types.SimpleNamespace(log=[], rule="classify", wildcards={}, threads=1, output=[])
        run_step(smk, step)
    """)
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
        "GDAL_CACHEMAX": "256",
    }
