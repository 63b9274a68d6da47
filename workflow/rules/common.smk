# Config validation, input functions and wildcard constraints (snakemake-workflows style).
import hashlib
import importlib.util
from pathlib import Path

import cropchain
from cropchain.config import validate_config
from cropchain.errors import ConfigError

try:
    validate_config(config)
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

RESULTS = "results"
RESOURCES = "resources"
TILES = list(config["tiles"])
RUNS = [str(r) for r in range(config["split"]["runs"])]
ARCHS = list(config["architectures"])
THREADS = config["resources"]["threads"]


wildcard_constraints:
    tile="|".join(TILES),
    run=r"\d+",
    arch="[a-z0-9_]+",


def code_hash(*modules):
    """Hash of the source of the cropchain modules a rule runs: editing them reruns the rule."""
    h = hashlib.sha256(cropchain.__version__.encode())
    for name in modules:
        h.update(Path(importlib.util.find_spec(name).origin).read_bytes())
    return h.hexdigest()[:16]


def demo_tiles():
    return [t for t, spec in config["tiles"].items() if spec["source"] == "demo"]


def demo_tile_specs():
    """Origin and size of each demo tile: side by side along x, in EPSG:32631."""
    demo = config.get("demo") or {}
    w, h = demo.get("width", 200), demo.get("height", 200)
    return {
        t: {"origin": (500000.0 + i * w * 10.0, 4800000.0), "width": w, "height": h}
        for i, t in enumerate(demo_tiles())
    }


def safe_products(wildcards):
    """Input products of a tile: the demo folder, or every *.SAFE found under `products`."""
    spec = config["tiles"][wildcards.tile]
    if spec["source"] == "demo":
        return [f"{RESOURCES}/demo/{wildcards.tile}"]
    found = sorted(str(p) for p in Path(spec["products"]).rglob("*.SAFE") if p.is_dir())
    if not found:
        raise WorkflowError(
            f"tiles.{wildcards.tile}.products: no *.SAFE folder under {spec['products']} "
            "(check the path; it is relative to the working directory)"
        )
    return found


def reference_inputs():
    files = [s["path"] for s in config["reference"]["sources"]]
    files += [s["mapping_csv"]["path"] for s in config["reference"]["sources"] if "mapping_csv" in s]
    return files


def all_outputs():
    outs = [f"{RESULTS}/reports/summary.html", f"{RESULTS}/reports/summary.csv"]
    for run in RUNS:
        for arch in ARCHS:
            outs.append(f"{RESULTS}/runs/{run}/maps/{arch}/mosaic_classification.tif")
            for tile in TILES:
                outs.append(f"{RESULTS}/runs/{run}/vectors/{arch}/{tile}.gpkg")
                outs.append(f"{RESULTS}/runs/{run}/reports/{arch}/{tile}.json")
    return outs
