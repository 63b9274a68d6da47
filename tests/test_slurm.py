"""End-to-end on a real scheduler: the demo through ``profiles/cluster`` on a one-node SLURM cluster.

A one-node SLURM cluster (slurmctld + slurmd from Debian's ``slurm-wlm``, authenticated by
munge) is started on localhost for the session, with its state, logs and pid files under a
temporary folder and its configuration in ``/etc/slurm/slurm.conf`` (the previous file is put
back at the end): the plugin's job step drops ``SLURM_CONF`` before calling ``srun``, so the
configuration must be at the default path. The demo config then runs with the user's cluster
profile (``--profile profiles/cluster``) plus a small test profile holding only what differs on
this machine: the partition, a short first status check and kept SLURM logs. The test checks
that every Snakemake job was a SLURM job with the partition, memory, time limit and CPUs
Snakemake asked for, and that the maps and reports are identical to those of the local run of
the same config (``demo_run``).

Needs root and the packages of ``.ci/install-system-packages``; skipped with the reason otherwise.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, absolute_config, write_config

pytestmark = [pytest.mark.e2e, pytest.mark.slurm]

BINARIES = (
    "slurmctld",
    "slurmd",
    "sbatch",
    "srun",
    "squeue",
    "scontrol",
    "scancel",
    "sinfo",
    "munged",
    "munge",
    "unmunge",
)
SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin", "/usr/bin"])
MUNGE_KEY = Path("/etc/munge/munge.key")
SLURM_CONF = Path("/etc/slurm/slurm.conf")  # the default path: srun inside the jobs reads it
MUNGE_PID = Path("/run/munge/munged.pid")
PARTITION = "cropchain"  # not the default partition: a job lands there only if the profile says so
RUN_TIMEOUT_S = 2400  # hard limit of the SLURM run of the demo (18 min measured on 2 busy cores)


def _alive(pid: int, name: str) -> bool:
    """``pid`` is a live process called ``name`` (guards against pid reuse)."""
    return _comm(Path(f"/proc/{pid}/comm")) == name


def _comm(path: Path) -> str:
    """Name of a process from its ``/proc/PID/comm``; "" if it ended meanwhile."""
    try:
        return path.read_text().strip()
    except OSError:
        return ""


def _free_ports(n: int) -> list[int]:
    """``n`` distinct TCP ports free on localhost now."""
    socks = [socket.socket() for _ in range(n)]
    try:
        for s in socks:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in socks]
    finally:
        for s in socks:
            s.close()


def _stop_pid(pid: int, name: str, timeout: float = 15.0) -> None:
    """SIGTERM ``pid`` if it is ``name``, wait up to ``timeout`` s, then SIGKILL."""
    if not _alive(pid, name):
        return
    os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _alive(pid, name):
            return
        time.sleep(0.2)
    os.kill(pid, signal.SIGKILL)


class LocalSlurm:
    """A one-node SLURM cluster on localhost with its configuration under ``root``.

    Two partitions: ``debug`` (the default) and :data:`PARTITION`. Finished jobs stay visible
    to ``squeue``/``scontrol`` (``MinJobAge``) longer than the test's run lasts: the executor
    plugin's ``squeue`` status mode needs it without slurmdbd (no ``sacct``), and the test
    reads every job afterwards.
    """

    def __init__(self, root: Path) -> None:
        self.root = root
        self.conf = SLURM_CONF
        self.saved_conf: bytes | None = None  # the file this cluster's configuration replaced
        self.env = {**os.environ, "SLURM_CONF": str(self.conf), "PATH": SEARCH_PATH}
        self.pids: dict[str, int] = {}  # daemons started here, stopped by pid at the end
        self.host = socket.gethostname().split(".")[0]

    def command(self, *args: str, check: bool = True, timeout: float = 30) -> subprocess.CompletedProcess:
        """Run a SLURM client command (``sinfo``, ``scontrol`` ...) against this cluster."""
        return subprocess.run(
            args, env=self.env, capture_output=True, text=True, check=check, timeout=timeout
        )

    def start(self) -> None:
        self._start_munge()
        node = subprocess.run(
            ["slurmd", "-C"], capture_output=True, text=True, check=True, env=self.env
        ).stdout.splitlines()[0]
        mem = int(re.search(r"RealMemory=(\d+)", node).group(1))
        node = re.sub(
            r"RealMemory=\d+", f"RealMemory={mem * 9 // 10}", node
        )  # above the real value: node INVALID
        ctld_port, slurmd_port = _free_ports(2)
        for sub in ("state", "spool"):
            (self.root / sub).mkdir(exist_ok=True)
        if self.conf.exists():
            self.saved_conf = self.conf.read_bytes()
        self.conf.parent.mkdir(parents=True, exist_ok=True)
        self.conf.write_text(f"""\
ClusterName=cropchaintest
SlurmctldHost={self.host}(127.0.0.1)
SlurmctldPort={ctld_port}
SlurmdPort={slurmd_port}
SlurmUser=root
SlurmdUser=root
AuthType=auth/munge
CredType=cred/munge
StateSaveLocation={self.root}/state
SlurmdSpoolDir={self.root}/spool
SlurmctldPidFile={self.root}/slurmctld.pid
SlurmdPidFile={self.root}/slurmd.pid
SlurmctldLogFile={self.root}/slurmctld.log
SlurmdLogFile={self.root}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerType=sched/backfill
SelectType=select/cons_tres
SelectTypeParameters=CR_Core_Memory
ReturnToService=2
MinJobAge={RUN_TIMEOUT_S + 600}
MpiDefault=none
{node} NodeAddr=127.0.0.1 State=UNKNOWN
PartitionName=debug Nodes=ALL Default=YES MaxTime=INFINITE State=UP
PartitionName={PARTITION} Nodes=ALL Default=NO MaxTime=INFINITE State=UP
""")
        for daemon in ("slurmctld", "slurmd"):
            subprocess.run([daemon, "-f", str(self.conf)], env=self.env, check=True, timeout=60)
            pidfile = self.root / f"{daemon}.pid"
            self._wait(
                lambda pidfile=pidfile: pidfile.exists() and pidfile.read_text().strip(),
                20,
                f"{daemon} wrote no pid file",
            )
            self.pids[daemon] = int(pidfile.read_text())
        state = ""
        for _ in range(60):
            state = self.command("sinfo", "-h", "-n", self.host, "-o", "%T", check=False).stdout.split()
            state = state[0] if state else ""
            if state in ("idle", "mixed", "allocated"):
                return
            if state.startswith(("drain", "down")):
                self.command("scontrol", "update", f"NodeName={self.host}", "State=RESUME", check=False)
            time.sleep(1)
        raise RuntimeError(
            f"SLURM node {self.host} not ready (state {state!r}); see {self.root}/slurmctld.log"
        )

    def _start_munge(self) -> None:
        if (
            subprocess.run("munge -n | unmunge", shell=True, capture_output=True, env=self.env).returncode
            == 0
        ):
            return  # a munged already answers (the system's): use it, leave it running
        Path("/run/munge").mkdir(parents=True, exist_ok=True)
        shutil.chown("/run/munge", "munge", "munge")
        subprocess.run(["runuser", "-u", "munge", "--", "munged"], env=self.env, check=True, timeout=30)
        self._wait(
            lambda: subprocess.run("munge -n | unmunge", shell=True, capture_output=True).returncode == 0,
            20,
            "munged does not answer",
        )
        self.pids["munged"] = int(MUNGE_PID.read_text())

    @staticmethod
    def _wait(predicate, seconds: float, message: str) -> None:
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:
            if predicate():
                return
            time.sleep(0.25)
        raise RuntimeError(message)

    def jobs(self) -> list[dict[str, str]]:
        """``scontrol show job`` of every job the controller still knows, as key -> value."""
        out = self.command("scontrol", "-o", "show", "job").stdout
        return [
            dict(re.findall(r"(\w+)=(\S*)", line)) for line in out.splitlines() if line.startswith("JobId=")
        ]

    def stop(self) -> list[str]:
        """Cancel the jobs left, stop the daemons started here by pid; returns those still alive."""
        if _alive(self.pids.get("slurmctld", -1), "slurmctld"):
            self.command("scancel", "--user", "root", check=False)
            time.sleep(2)
        for name in ("slurmd", "slurmctld", "munged"):
            if name in self.pids:
                _stop_pid(self.pids[name], name)
        if self.saved_conf is not None:
            self.conf.write_bytes(self.saved_conf)
        else:
            self.conf.unlink(missing_ok=True)
        return [f"{n} (pid {p})" for n, p in self.pids.items() if _alive(p, n)]


@pytest.fixture(scope="session")
def slurm_cluster(tmp_path_factory) -> Iterator[LocalSlurm]:
    """A one-node SLURM cluster on localhost for the session; its daemons stopped by pid at the end."""
    if os.geteuid() != 0:
        pytest.skip("the SLURM test starts slurmctld, slurmd and munged: it must run as root")
    missing = [b for b in BINARIES if shutil.which(b, path=SEARCH_PATH) is None]
    if missing:
        pytest.skip(
            f"SLURM/munge commands not installed ({', '.join(missing)}): "
            "run .ci/install-system-packages as root"
        )
    if not MUNGE_KEY.exists():
        pytest.skip(f"{MUNGE_KEY} is missing: reinstall munge (.ci/install-system-packages)")
    running = sorted({_comm(p) for p in Path("/proc").glob("[0-9]*/comm")} & {"slurmctld", "slurmd"})
    if running:
        pytest.skip(
            f"SLURM daemons already run on this machine ({', '.join(running)}): stop them first "
            "(e.g. ../shared/tools/local-slurm.sh stop); this test starts its own cluster"
        )
    cluster = LocalSlurm(tmp_path_factory.mktemp("slurm"))
    try:
        cluster.start()
        yield cluster
    finally:
        left = cluster.stop()
        assert not left, f"SLURM daemons still running after stop: {left}"


def _minutes(limit: str) -> int:
    """SLURM time limit ``[D-][HH:]MM:SS`` in minutes."""
    days, _, hms = limit.rpartition("-")
    h, m, s = ([0, 0] + [int(x) for x in hms.split(":")])[-3:]
    return int(days or 0) * 1440 + h * 60 + m + (s > 0)


def _megabytes(mem: str) -> float:
    """SLURM memory like ``6000M`` or ``15.62G`` in MB."""
    return float(mem[:-1]) * {"K": 1 / 1024, "M": 1, "G": 1024, "T": 1024**2}[mem[-1]]


def _resources(entries) -> dict[str, object]:
    """A profile's ``default-resources`` (mapping or list of ``key=value``) as a dict."""
    if isinstance(entries, dict):
        return dict(entries)
    return {k: yaml.safe_load(v) for k, _, v in (e.partition("=") for e in entries or [])}


def _snakemake_jobs(log: str) -> dict[str, dict]:
    """Jobs Snakemake ran through its executor, from its log: jobid -> rule, threads, resources."""
    jobs = {}
    for rule, body in re.findall(r"^rule (\w+):\n((?:    .*\n)+)", log, re.M):
        fields = dict(re.findall(r"^    (\w+): (.*)$", body, re.M))
        resources = dict(kv.split("=", 1) for kv in fields.get("resources", "").split(", ") if "=" in kv)
        jobs[fields["jobid"]] = {**resources, "rule": rule, "threads": int(fields.get("threads", 1))}
    return jobs


def _run_snakemake(cmd: list[str], workdir: Path, env: dict, log: Path, cluster: LocalSlurm) -> int:
    """Run ``cmd`` in its own process group under :data:`RUN_TIMEOUT_S`; on timeout kill it all."""
    with log.open("w") as out:
        proc = subprocess.Popen(
            cmd, cwd=workdir, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
        try:
            return proc.wait(timeout=RUN_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGTERM)
            try:
                proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            cluster.command("scancel", "--user", "root", check=False)
            queue = cluster.command("squeue", "--states=all", "-o", "%i %j %T %R %k", check=False).stdout
            pytest.fail(
                f"the SLURM run did not finish in {RUN_TIMEOUT_S} s; queue:\n{queue}\n"
                f"log tail:\n{log.read_text()[-4000:]}"
            )


@pytest.mark.timeout(4200)  # the local demo run (demo_run, when this test comes first) + the SLURM run
def test_demo_on_slurm_matches_local_run(slurm_cluster: LocalSlurm, demo_run: Path, tmp_path_factory):
    work = tmp_path_factory.mktemp("slurm_demo")
    cfg = absolute_config("config.yaml", work)
    config = yaml.safe_load(cfg.read_text())
    profile = yaml.safe_load((ROOT / "profiles" / "cluster" / "config.yaml").read_text())
    defaults = _resources(profile.get("default-resources"))
    # What a user edits for this machine, in a second profile read after the user's one
    # (per key, the later profile wins; default-resources are repeated with the partition set).
    # No account is set: the plugin finds none to guess here and submits without one.
    test_profile = work / "test-profile"
    test_profile.mkdir()
    write_config(
        test_profile / "config.yaml",
        {
            "default-resources": {**defaults, "slurm_partition": PARTITION},
            "slurm-init-seconds-before-status-checks": 5,  # demo jobs last seconds, not hours
            "slurm-keep-successful-logs": True,  # the SLURM job logs are checked below
        },
    )
    snakemake_exe = Path(sys.executable).with_name("snakemake")
    cmd = [
        str(snakemake_exe),
        "--snakefile",
        str(ROOT / "Snakefile"),
        "--directory",
        str(work),
        "--configfile",
        str(cfg),
        "--profile",
        str(ROOT / "profiles" / "cluster"),
        "--profile",
        str(test_profile),
    ]
    log = work / "snakemake.log"
    rc = _run_snakemake(cmd, work, slurm_cluster.env, log, slurm_cluster)
    text = log.read_text()
    assert rc == 0, f"snakemake --profile cluster failed ({rc}):\n{text[-6000:]}"

    # --- every Snakemake job of the run was a SLURM job, with the resources Snakemake gave it ---
    blocks = _snakemake_jobs(text)  # jobs run through the executor ("localrule" jobs are not)
    submitted = {
        int(slurm): smk
        for smk, slurm in re.findall(r"^Job (\d+) has been submitted with SLURM jobid (\d+)", text, re.M)
    }
    assert blocks and set(submitted.values()) == set(blocks), (
        f"Snakemake jobs not submitted to SLURM: {sorted(set(blocks) - set(submitted.values()))}"
    )
    jobs = {int(j["JobId"]): j for j in slurm_cluster.jobs() if j.get("WorkDir") == str(work)}
    assert set(jobs) == set(submitted), (
        f"SLURM jobs {sorted(jobs)} != jobs Snakemake submitted {sorted(submitted)}"
    )
    local_rules = {
        p.parent.name if p.parent.name != "benchmarks" else p.stem
        for p in (demo_run / "results" / "benchmarks").rglob("*.tsv")
    }
    slurm_rules = {b["rule"] for b in blocks.values()}
    assert local_rules <= slurm_rules, (
        f"rules of the local run that did not run on SLURM: {local_rules - slurm_rules}"
    )
    slurm_logs = {p.stem for p in (work / "results" / "logs" / "slurm").rglob("*.log")}
    for slurm_id, job in sorted(jobs.items()):
        want = blocks[submitted[slurm_id]]
        where = f"SLURM job {slurm_id} (rule {want['rule']})"
        assert job["JobState"] == "COMPLETED", f"{where}: {job['JobState']}"
        assert job["Comment"].startswith(f"rule_{want['rule']}"), f"{where}: comment {job['Comment']}"
        assert job["Partition"] == PARTITION, (
            f"{where} ran in partition {job['Partition']}, not the profile's {PARTITION}: a workflow profile "
            "(profiles/default) that sets default-resources replaces those of the user's profile"
        )
        assert _megabytes(job["MinMemoryNode"]) == pytest.approx(int(want["mem_mb"])), (
            f"{where}: memory {job['MinMemoryNode']}"
        )
        assert _minutes(job["TimeLimit"]) == int(want["runtime"]), f"{where}: time limit {job['TimeLimit']}"
        assert int(job["NumCPUs"]) == want["threads"], (
            f"{where}: {job['NumCPUs']} CPUs for {want['threads']} threads"
        )
        assert str(slurm_id) in slurm_logs, f"{where}: no SLURM log under results/logs/slurm"
    # the threaded rules keep the config's thread count, as in the local run (same maps)
    threads = {b["threads"] for b in blocks.values() if b["rule"] in ("train", "classify")}
    assert threads == {config["resources"]["threads"]}, f"train/classify threads {threads}"

    # --- same products as the local run of the same config ---
    res, ref = work / "results", demo_run / "results"
    maps = sorted(p.relative_to(ref) for p in ref.glob("runs/*/maps/*/*_classification.tif"))
    assert maps and maps == sorted(p.relative_to(res) for p in res.glob("runs/*/maps/*/*_classification.tif"))
    different = [str(m) for m in maps if (ref / m).read_bytes() != (res / m).read_bytes()]
    assert not different, f"classification rasters differ from the local run: {different}"
    reports = sorted(p.relative_to(ref) for p in ref.glob("runs/*/reports/**/*.json"))
    assert reports and reports == sorted(p.relative_to(res) for p in res.glob("runs/*/reports/**/*.json"))
    for rel in reports:
        assert json.loads((res / rel).read_text()) == json.loads((ref / rel).read_text()), (
            f"report {rel} differs"
        )
