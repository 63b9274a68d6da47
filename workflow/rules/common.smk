# Config validation, input functions and wildcard constraints (snakemake-workflows style).
import os
from pathlib import Path

from cropchain.config import validate_config
from cropchain.errors import ConfigError
from cropchain.workflow import code_hash  # the `code` param of every rule: editing the code reruns it
from snakemake.logging import logger

try:
    validate_config(config)
except ConfigError as exc:
    raise WorkflowError(str(exc)) from None

# OpenMP threads of every job wait passively (not busy-spinning) between parallel regions: on a
# shared node busy-waiting threads steal the other jobs' cores. Set here, before any job starts,
# because the OpenMP runtime reads it when it loads; each job pins its thread counts itself
# (cropchain.workflow.pin_threads).
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")

RESULTS = "results"
RESOURCES = "resources"


# --- paths (PyPSA-Eur / snakemake-workflows idiom): results("tiles/{tile}/raw.tif") ---
def results(path):
    """A path under the results folder (wildcards in braces, as in any rule path)."""
    return f"{RESULTS}/{path}"


def logs(name):
    """The log file of a job, results/logs/{name}.log (name: the rule's folder and its wildcards)."""
    return results(f"logs/{name}.log")


def benchmarks(name):
    """The benchmark file of a job, results/benchmarks/{name}.tsv."""
    return results(f"benchmarks/{name}.tsv")


def resources_path(path):
    """A path under the resources folder (the demo's generated inputs)."""
    return f"{RESOURCES}/{path}"


def run_seed(wildcards):
    """The random seed of a job of run `{run}`: split.seed + the run number (a rule param)."""
    return config["split"]["seed"] + int(wildcards.run)

TILES = list(config["tiles"])
RUNS = [str(r) for r in range(config["split"]["runs"])]
ARCHS = list(config["architectures"])
THREADS = config["resources"]["threads"]
# What defines the features of a tile, computed on the fly from its gap-filled series wherever
# they are read (samples, inference, patches): rules that read features take these as params.
FEATURES = {"bands": list(config["ingest"]["bands"]), "indices": list(config["features"]["indices"])}


def series_of(tiles=None):
    """Inputs from which features are computed: the gap-filled series and dates of `tiles`
    (all tiles), or of the rule's `{tile}` wildcard when `tiles` is None and used per tile."""
    if tiles is None:
        return {"gapfilled": results("tiles/{tile}/gapfilled.tif"),
                "dates": results("tiles/{tile}/dates.txt")}
    return {"gapfilled": expand(results("tiles/{tile}/gapfilled.tif"), tile=tiles),
            "dates": expand(results("tiles/{tile}/dates.txt"), tile=tiles)}


wildcard_constraints:
    tile="|".join(TILES),
    run=r"\d+",
    arch="[a-z0-9_]+",


def clear_stale_locks():
    """Remove the locks a killed run left behind, so that the same command restarts it.

    Snakemake writes `.snakemake/locks` and removes them on exit; a run killed by SIGKILL
    (or a node failure) leaves them, and the next run refuses to start. They are removed
    only by the main process, and only when no other Snakemake process on this host works
    in this directory. A run of the same directory from another host is not seen: do not
    start two runs of one directory from two hosts.
    """
    locks = Path(".snakemake/locks")
    if not workflow.is_main_process or os.environ.get("SLURM_JOB_ID") or not locks.is_dir():
        return
    if not any(locks.iterdir()):
        return
    here, me = os.path.realpath(os.getcwd()), os.getpid()
    for pid in filter(str.isdigit, os.listdir("/proc")):
        if int(pid) == me:
            continue
        try:
            cmdline = Path(f"/proc/{pid}/cmdline").read_bytes()
            cwd = os.path.realpath(os.readlink(f"/proc/{pid}/cwd"))
        except OSError:
            continue
        if b"snakemake" in cmdline and cwd == here:
            return  # another run is alive here: its locks are real
    for lock in locks.iterdir():
        lock.unlink()
    logger.warning("cropchain: removed the locks of a previous run of this directory that was killed")


clear_stale_locks()


def demo_tiles():
    return [t for t, spec in config["tiles"].items() if spec["source"] == "demo"]


def demo_tile_specs():
    """Origin and size of each demo tile: side by side along x, in EPSG:32631."""
    from cropchain.demo import demo_origin

    if not demo_tiles():
        return {}
    w, h = config["demo"]["width"], config["demo"]["height"]  # a demo tile needs the `demo` section
    return {t: {"origin": demo_origin(i, w), "width": w, "height": h} for i, t in enumerate(demo_tiles())}


def tile_products(wildcards):
    """Input files of a tile's ingest, by source: the demo folder; every *.SAFE (safe) or Theia
    product folder (theia) under `products`; the per-date GeoTIFFs and mask files of a stack;
    the file, dates file and mask file of a stack_file. Dates and grids are checked by the ingest."""
    spec = config["tiles"][wildcards.tile]
    source = spec["source"]
    if source == "demo":
        return [resources_path(f"demo/{wildcards.tile}")]
    if source == "stack_file":
        return [spec[key] for key in ("file", "dates_file", "mask_file") if key in spec]
    folder = Path(spec["products"])
    # Zipped products are inputs too: the ingest reads them in place (GDAL /vsizip/).
    if source == "safe":
        found = sorted(str(p) for p in folder.rglob("*.SAFE") if p.is_dir())
        found += sorted(str(p) for p in folder.rglob("S2*_MSIL2A_*.zip") if p.is_file())
        what = "*.SAFE folder"
    elif source == "theia":
        found = sorted(str(p) for p in folder.rglob("SENTINEL2*_L2A_T*") if p.is_dir())
        found += sorted(str(p) for p in folder.rglob("SENTINEL2*_L2A_T*.zip") if p.is_file())
        what = "Theia product folder (SENTINEL2X_YYYYMMDD-HHMMSS-mmm_L2A_Txxxxx_C_Vx-x, unzipped)"
    else:
        globs = [spec.get("files", "*.tif")] + ([spec["masks"]] if "masks" in spec else [])
        found = sorted({str(p) for pattern in globs for p in folder.glob(pattern) if p.is_file()})
        what = f"file matching {spec.get('files', '*.tif')!r}"
    from cropchain.io.atomic import printable_path

    for p in found:  # Snakemake itself cannot write a non-UTF-8 path in its locks
        if printable_path(p) != p:
            raise WorkflowError(f"{printable_path(p)}: a file or folder name is not valid UTF-8 -> rename it "
                                "in UTF-8 (e.g. convmv -f latin1 -t utf8 --notest -r on the folder)")
    if not found:
        raise WorkflowError(
            f"tiles.{wildcards.tile}.products: no {what} under {folder} "
            "(check the path; it is relative to the working directory)"
        )
    return found


def tile_products_stamp(wildcards):
    """Names, sizes and mtimes of every file inside a tile's product folders (SAFE, Theia), as a
    rule param: a band replaced inside a .SAFE reruns the rules that read the products, which
    the folder's own mtime would not. Other sources give their files as inputs already."""
    from cropchain.provenance import content_stamp

    if config["tiles"][wildcards.tile]["source"] not in ("safe", "theia"):
        return ""
    return content_stamp(tile_products(wildcards))


def reference_inputs():
    """Reference files, with a shapefile's .dbf/.shx/.prj/.cpg: editing the class table (.dbf)
    alone reruns the fusion. A missing sidecar is left to the fusion to name."""
    files = []
    for s in config["reference"]["sources"]:
        files.append(s["path"])
        shp = Path(s["path"])
        if shp.suffix.lower() == ".shp":
            files += [str(shp.with_suffix(ext)) for e in (".dbf", ".shx", ".prj", ".cpg")
                      for ext in (e, e.upper()) if shp.with_suffix(ext).is_file()]
    files += [s["mapping_csv"]["path"] for s in config["reference"]["sources"] if "mapping_csv" in s]
    return files


def all_outputs():
    outs = [results("reports/summary.html"), results("reports/summary.csv")]
    for run in RUNS:
        for arch in ARCHS:
            outs.append(results(f"runs/{run}/maps/{arch}/mosaic_classification.tif"))
            for tile in TILES:
                outs.append(results(f"runs/{run}/vectors/{arch}/{tile}.gpkg"))
                outs.append(results(f"runs/{run}/reports/{arch}/{tile}.json"))
                outs.append(results(f"runs/{run}/maps/{arch}/{tile}_item.json"))
    if config.get("parcels"):
        outs += parcel_outputs()  # workflow/rules/parcels.smk
    if config.get("delineation"):
        outs += delineation_outputs()  # workflow/rules/delineation.smk
    if config.get("assessment"):
        outs += assessment_outputs()  # workflow/rules/assessment.smk
    return outs


# --- resources: memory (MB) and runtime (min) per job, from the windows and the tile size ---
# The formulas follow what each step holds in memory (cropchain's docstrings say which arrays):
# streaming jobs are bounded by their windows, not by the tile; calibrated on
# benchmarks/bench_tile.py (README "Scale": measured peak RSS at 2048 and 5490 px), with 50%
# headroom plus 300 MB for Python and the libraries and GDAL's block cache (256 MB a job).
# A SLURM job asks for them (profiles/cluster); locally they only limit concurrency.
FULL_TILE = (10980, 10980)  # a whole Sentinel-2 tile at 10 m, when the size cannot be read


def tile_shape(tile):
    """(height, width) of a tile in 10 m pixels: from its raw_mask.tif when ingested (kept when
    raw.tif is a temp() file), the demo config, or the first 10 m band found among its products;
    a whole Sentinel-2 tile otherwise."""
    import rasterio

    raw = Path(results(f"tiles/{tile}/raw_mask.tif"))
    spec = config["tiles"][tile]
    try:
        if raw.exists():
            with rasterio.open(raw) as src:
                return src.height, src.width
        if spec["source"] == "demo":
            return config["demo"]["height"], config["demo"]["width"]
        first = next(iter(tile_products(type("W", (), {"tile": tile}))), None)
        if first:
            candidates = [first] if first.endswith(".tif") else sorted(Path(first).rglob("*B0*2*"))
            if candidates:
                with rasterio.open(candidates[0]) as src:
                    scale = max(1, round(src.res[0] / 10))
                    return src.height * scale, src.width * scale
    except Exception:  # a size estimate must never stop the DAG; the ingest reports bad inputs
        pass
    return FULL_TILE


def n_output_dates():
    import datetime as dt

    d = config["dates"]
    days = (dt.date.fromisoformat(d["end"]) - dt.date.fromisoformat(d["start"])).days
    return days // d["step_days"] + 1


def n_features():
    return n_output_dates() * (len(config["ingest"]["bands"]) + len(config["features"]["indices"]))


# Jobs that load PyTorch (~1 GB): parcel and delineation rules.
TORCH_RULES = ("parcel_dataset", "train_parcel", "predict_parcel", "delineation_train", "delineation_predict",
               "delineation_evaluate")


def mem_mb(rule):
    """Callable giving the memory (MB) of a job of `rule` from its wildcards and inputs: a base (Python,
    the libraries and GDAL's block cache; 1 GB with PyTorch) plus 1.5 x what the step holds (need_mb)."""
    from cropchain.workflow import gdal_cache_mb

    base = 1000 if rule in TORCH_RULES or rule == "train_network" else 300 + gdal_cache_mb(rule)

    def estimate(wildcards, input, attempt=1):
        return int(base + 1.5 * need_mb(rule, wildcards, input)) * attempt

    return estimate


def need_mb(rule, wildcards, input):
    """Memory (MB) of the arrays a job of `rule` holds (cropchain's docstrings say which)."""
    from cropchain.mapping.classify import PREDICT_CHUNK

    n_bands, n_dates, n_feat = len(config["ingest"]["bands"]), n_output_dates(), n_features()
    hw = tile_shape(wildcards.tile) if hasattr(wildcards, "tile") else FULL_TILE
    px = hw[0] * hw[1]
    if rule == "ingest":  # one date and one 1024 px window at a time, a few arrays per band
        return min(1024 * 1024, px) * n_bands * 24 / 1e6
    if rule == "gapfill":  # THREADS + 2 windows of 256 px: input and output series, plan
        return (THREADS + 2) * min(256 * 256, px) * n_dates * (4 * n_bands + 40) / 1e6
    if rule == "samples":  # 1024 px windows of labels and one date, buffered learning rows
        return (min(1024 * 1024, px) * (8 + 2 * n_bands) + 2 * (1 << 16) * n_feat * 4) / 1e6
    if rule == "train":  # the learning pixels (Parquet decompresses ~3x, copies), forests
        return 10 * input.size_mb  # input.size_mb is in MB already
    if rule == "train_network":  # the patch sampler's block cache, batches and activations
        from cropchain.learning.patches import PATCH_CACHE_MB

        return PATCH_CACHE_MB + 500
    if rule == "classify":  # a window (+ smoothing margin) of features and series, probabilities,
        # pixel-major chunks, the model
        window = config["classify"]["window"] + 2 * config["classify"]["overlap"]
        side = window + 2 * (config["classify"]["smoothing"]["window_size"] // 2)
        model = sum(f.stat().st_size for f in Path(input.model).parent.glob("model.*") if f.exists())
        return (min(side * side, px) * (n_feat * 4 + n_dates * n_bands * 2 + 3 * 4 * n_classes())
                + 2 * PREDICT_CHUNK * n_feat * 4 + 3 * model) / 1e6
    if rule == "vectorize":  # the sieved map (uint8) and GDAL's sieve, a strip of votes (~1 Mpx)
        return (px * 2 + (1 << 20) * 28) / 1e6
    if rule == "evaluate":  # 1024 px windows of the map and burnt validation polygons
        return (1024 * 1024 * 8 + px * 2) / 1e6
    if rule == "summary":  # summaries and map pages: matplotlib, quicklooks of <= 1000 px from overviews
        return 150
    if rule == "reference":  # vector sources of the tile
        return 700e6 / 1e6
    if rule in TORCH_RULES:
        return torch_need_mb(rule, wildcards, hw)
    return 0


def torch_need_mb(rule, wildcards, hw):
    """Memory (MB) of a parcel or delineation job: PyTorch (~1 GB, 1.5 GB for Mask R-CNN) and the
    arrays of cropchain.parcels.dataset / .train, cropchain.delineation.fields."""
    n_dates, n_bands = n_output_dates(), len(config["ingest"]["bands"])
    if rule == "parcel_dataset":  # one parcel crop of up to 512 x 512 px, float32, x3
        return 1000 + n_dates * n_bands * 512 * 512 * 4 * 3 / 1e6
    if rule in ("train_parcel", "predict_parcel"):
        size, batch = config["parcels"]["patch_size"], config["parcels"]["training"]["batch_size"]
        if rule == "train_parcel":  # a batch and the activations of ~64 channels per date, x6
            return 1000 + batch * n_dates * max(n_bands, 64) * size * size * 4 * 6 / 1e6
        # prediction batches of 64 parcels + the evaluation's whole-tile label rasters
        return 1000 + 64 * n_dates * max(n_bands, 64) * size * size * 4 * 3 / 1e6 + hw[0] * hw[1] * 16 / 1e6
    # delineation: the variant's channels of the whole tile (float32), the activations of a batch of
    # upscaled patches (~64 channels at stride 2, x8)
    training, window = config["delineation"]["training"], config["delineation"]["inference"]["window"]
    if not hasattr(wildcards, "tile"):
        hw = max(map(tile_shape, TILES))
    tile = max(4, n_dates) * hw[0] * hw[1] * 4 * 2 / 1e6
    if rule == "delineation_train":
        side = training["patch_size"] * training["upscale"]
        return 1500 + tile * len(TILES) + training["batch_size"] * 64 * (side / 2) ** 2 * 4 * 8 / 1e6
    if rule == "delineation_predict":
        side = window * training["upscale"]
        return 1500 + tile + 100 * side * side * 4 * 2 / 1e6 + 64 * (side / 2) ** 2 * 4 * 4 / 1e6
    return 500


def n_classes():
    """Classes of the nomenclature (a table with a header line); 50 while the file does not exist."""
    path = Path(config["nomenclature"])
    if not path.is_file():
        return 50
    return max(1, sum(1 for line in path.read_text().splitlines()[1:] if line.strip()))


def runtime_min(rule):
    """Wall time (minutes) asked of the scheduler: generous bounds for a whole Sentinel-2 tile."""
    return {"train": 240, "classify": 120, "samples": 120, "gapfill": 120, "ingest": 60}.get(rule, 30)
