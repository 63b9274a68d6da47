"""Shared fixtures: the real T31TEJ data in ../shared, skipped with a reason where absent."""

from __future__ import annotations

from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SHARED = ROOT.parent / "shared"
T31TEJ = SHARED / "data" / "s2_t31tej_2018"


@pytest.fixture(scope="session")
def t31tej() -> Path:
    """Folder of the real Sentinel-2 L2A products of tile T31TEJ (DESIGN.md section 5)."""
    if not (T31TEJ / "eodata").is_dir():
        pytest.skip(f"real Sentinel-2 data not found at {T31TEJ} (../shared is absent on this machine)")
    return T31TEJ


@pytest.fixture(scope="module")
def torch_one_thread():
    """PyTorch on one thread for a test module (small networks, reproducible sums), restored after."""
    import torch

    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(scope="session")
def t31tej_safe_products(t31tej: Path) -> list[Path]:
    """The 10 SAFE folders of T31TEJ, sorted by date."""
    return sorted(t31tej.glob("eodata/Sentinel-2/L2A/*/*/*/*.SAFE"), key=lambda p: p.name.split("_")[2])


def snakemake(
    workdir: Path,
    configfile: Path,
    *args: str,
    timeout: int = 1500,
    check: bool = True,
    env: dict | None = None,
    snakefile: Path | None = None,
):
    """Run the cropchain workflow with ``workdir`` as working directory; returns the CompletedProcess.

    Uses the ``snakemake`` of the running interpreter's environment and this checkout's
    Snakefile, or ``snakefile`` (the Snakefile of another checkout).
    """
    import subprocess
    import sys

    exe = Path(sys.executable).with_name("snakemake")
    cmd = [
        str(exe),
        "--snakefile",
        str(snakefile or ROOT / "Snakefile"),
        "--directory",
        str(workdir),
        "--configfile",
        str(configfile),
        "--cores",
        "2",
        *args,
    ]
    proc = subprocess.run(cmd, cwd=workdir, capture_output=True, text=True, timeout=timeout, env=env)
    if check and proc.returncode != 0:
        raise AssertionError(
            f"snakemake failed ({proc.returncode}):\n{proc.stdout[-4000:]}\n{proc.stderr[-8000:]}"
        )
    return proc


def write_config(path: Path, config: dict) -> Path:
    """Dump a config dict as YAML to ``path``."""
    import yaml

    path.write_text(yaml.safe_dump(config, sort_keys=False))
    return path


def safe_demo_config(products: dict[str, str]) -> dict:
    """The demo configuration turned into tiles of SAFE products: ``products`` maps each tile
    to its folder (relative to the work folder)."""
    import yaml

    cfg = yaml.safe_load((ROOT / "config/config.yaml").read_text())
    del cfg["demo"]
    cfg["nomenclature"] = str(ROOT / cfg["nomenclature"])
    cfg["tiles"] = {tile: {"source": "safe", "products": folder} for tile, folder in products.items()}
    return cfg


def absolute_config(name: str, workdir: Path, **overrides) -> Path:
    """Copy ``config/<name>`` to ``workdir`` with project-relative input paths made absolute."""
    import yaml

    cfg = yaml.safe_load((ROOT / "config" / name).read_text())

    def fix(p: str) -> str:
        if p.startswith("resources/") or Path(p).is_absolute():
            return p
        return str((ROOT / p).resolve())

    cfg["nomenclature"] = fix(cfg["nomenclature"])
    for spec in cfg["tiles"].values():
        if "products" in spec:
            spec["products"] = fix(spec["products"])
    for s in cfg["reference"]["sources"]:
        s["path"] = fix(s["path"])
        if "mapping_csv" in s:
            s["mapping_csv"]["path"] = fix(s["mapping_csv"]["path"])
    if cfg.get("presto"):
        cfg["presto"]["weights"] = fix(cfg["presto"]["weights"])
    for key, value in overrides.items():
        section, _, sub = key.partition("__")
        if sub:
            cfg.setdefault(section, {})[sub] = value
        else:
            cfg[section] = value
    return write_config(workdir / "config.yaml", cfg)


@pytest.fixture(scope="session")
def demo_run(tmp_path_factory) -> Path:
    """Working directory of one complete local run of the default demo config (shared by tests)."""
    work = tmp_path_factory.mktemp("demo")
    cfg = absolute_config("config.yaml", work)
    snakemake(work, cfg)
    return work
