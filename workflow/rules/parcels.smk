# Parcel classification (config `parcels`, absent = off): parcel datasets per tile (cropchain.parcels.dataset),
# parcel models per run (cropchain.models.parcel, cropchain.parcels.train), parcel maps and reports,
# majority vote of the pixel maps per parcel, summaries and the permuted-dates ablation.
import hashlib as _hashlib

PARCELS = config.get("parcels") or {}
if not PARCELS.get("enabled", True):
    PARCELS = {}
PARCEL_MODELS = list(PARCELS.get("models") or {})
VOTE_ARCHS = ARCHS if PARCELS.get("vote_architectures") is None else list(PARCELS["vote_architectures"])
PARCEL_ABLATION = bool(PARCELS.get("ablation_permute_dates", False))

if PARCELS:
    _unknown_votes = sorted(set(VOTE_ARCHS) - set(ARCHS))
    if _unknown_votes:
        raise WorkflowError(f"parcels.vote_architectures: {_unknown_votes} are not in `architectures` ({', '.join(ARCHS)})")


def parcel_code_hash(*files):
    """Hash of cropchain source files (paths under the package), read without importing them:
    importing cropchain.models.parcel would load PyTorch each time Snakemake parses the workflow."""
    root = Path(cropchain.__file__).parent
    h = _hashlib.sha256(cropchain.__version__.encode())
    for pattern in files:
        for path in sorted(root.glob(pattern)):
            h.update(path.read_bytes())
    return h.hexdigest()[:16]


PARCEL_CODE = parcel_code_hash("parcels/dataset.py", "parcels/train.py", "models/parcel/*.py", "assessment/evaluate.py", "metrics.py")


def parcel_mem_mb(rule):
    """Memory (MB) of a parcel job: PyTorch (~1 GB), the arrays each step holds (docstrings of
    cropchain.parcels.dataset / cropchain.parcels.train), the whole-tile rasters of the evaluation."""
    n_dates, n_bands = n_output_dates(), len(config["ingest"]["bands"])
    size = PARCELS.get("patch_size", 32)
    batch = PARCELS.get("training", {}).get("batch_size", 32)

    def estimate(wildcards, input, attempt=1):
        if rule == "parcel_dataset":  # one parcel crop of up to 512 x 512 px, float32, x3
            need = 1000 + n_dates * n_bands * 512 * 512 * 4 * 3 / 1e6
        elif rule == "train_parcel":  # a batch and the activations of ~64 channels per date, x6
            need = 1000 + batch * n_dates * max(n_bands, 64) * size * size * 4 * 6 / 1e6
        else:  # prediction batches of 64 parcels + the evaluation's whole-tile label rasters
            hw = tile_shape(wildcards.tile)
            need = 1000 + 64 * n_dates * max(n_bands, 64) * size * size * 4 * 3 / 1e6 + hw[0] * hw[1] * 16 / 1e6
        return int(1000 + 1.5 * need) * attempt

    return estimate


def parcel_dataset_files(tile):
    base = f"{RESULTS}/tiles/{tile}/parcels"
    return [f"{base}.parquet", f"{base}.npy", f"{base}_mask.npy"]


def parcel_outputs():
    """Final products of the parcel classification (added to `rule all` when `parcels` is configured
    and enabled, with at least one model or vote)."""
    if not PARCELS or not (PARCEL_MODELS or VOTE_ARCHS):
        return []
    outs = [f"{RESULTS}/reports/parcels_summary.csv", f"{RESULTS}/reports/parcels_summary.html",
            f"{RESULTS}/reports/parcels_pixel_summary.csv", f"{RESULTS}/reports/parcels_pixel_summary.html",
            f"{RESULTS}/reports/parcels_training.csv"]
    if PARCEL_ABLATION and PARCEL_MODELS:
        outs.append(f"{RESULTS}/reports/parcels_ablation.csv")
    for run in RUNS:
        for tile in TILES:
            for name in PARCEL_MODELS + [f"vote_{a}" for a in VOTE_ARCHS]:
                outs.append(f"{RESULTS}/runs/{run}/parcels/{name}/{tile}.gpkg")
                outs.append(f"{RESULTS}/runs/{run}/parcels/{name}/{tile}_classification.tif")
    return outs


def parcel_tile_outputs(folder):
    """Outputs of a parcel map of one run and tile in `folder` (a model or a vote)."""
    base = f"{RESULTS}/runs/{{run}}/{folder}/{{tile}}"
    return {"gpkg": f"{base}.gpkg", "tif": f"{base}_classification.tif", "json": f"{base}.json",
            "csv": f"{base}_confusion.csv", "png": f"{base}_confusion.png", "pixel_json": f"{base}_pixel.json"}


rule parcel_dataset:
    input:
        gapfilled=rules.gapfill.output.gapfilled,
        validity=rules.gapfill.output.validity,
        reference=rules.reference.output.reference,
    output:
        index=f"{RESULTS}/tiles/{{tile}}/parcels.parquet",
        patches=f"{RESULTS}/tiles/{{tile}}/parcels.npy",
        masks=f"{RESULTS}/tiles/{{tile}}/parcels_mask.npy",
    params:
        patch_size=PARCELS.get("patch_size", 32),
        code=parcel_code_hash("parcels/dataset.py"),
    log:
        f"{RESULTS}/logs/parcel_dataset/{{tile}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/parcel_dataset/{{tile}}.tsv"
    resources:
        mem_mb=parcel_mem_mb("parcel_dataset"),
        runtime=runtime_min("parcel_dataset"),
    script:
        "../../scripts/parcel_dataset.py"


_PARCEL_TRAIN_INPUT = dict(
    datasets=expand(f"{RESULTS}/tiles/{{tile}}/parcels.parquet", tile=TILES),
    patches=expand(f"{RESULTS}/tiles/{{tile}}/parcels.npy", tile=TILES),
    masks=expand(f"{RESULTS}/tiles/{{tile}}/parcels_mask.npy", tile=TILES),
    splits=expand(f"{RESULTS}/runs/{{{{run}}}}/tiles/{{tile}}/split.gpkg", tile=TILES),
)


rule train_parcel:
    input:
        **_PARCEL_TRAIN_INPUT,
    output:
        model=f"{RESULTS}/runs/{{run}}/parcels/{{pmodel}}/model.pt",
        meta=f"{RESULTS}/runs/{{run}}/parcels/{{pmodel}}/model.json",
        metrics=f"{RESULTS}/runs/{{run}}/parcels/{{pmodel}}/metrics.json",
    wildcard_constraints:
        pmodel="parcel_[a-z0-9_]+",
    params:
        settings=lambda wc: PARCELS["models"][wc.pmodel] or {},
        training=PARCELS.get("training", {}),
        seed=lambda wc: config["split"]["seed"] + int(wc.run),
        permute=False,
        code=PARCEL_CODE,
    log:
        f"{RESULTS}/logs/train_parcel/{{run}}_{{pmodel}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_parcel/{{run}}_{{pmodel}}.tsv"
    threads: THREADS
    resources:
        mem_mb=parcel_mem_mb("train_parcel"),
        runtime=runtime_min("train"),
    script:
        "../../scripts/parcel_train.py"


rule train_parcel_permuted:
    input:
        **_PARCEL_TRAIN_INPUT,
    output:
        model=f"{RESULTS}/runs/{{run}}/parcels_permuted/{{pmodel}}/model.pt",
        meta=f"{RESULTS}/runs/{{run}}/parcels_permuted/{{pmodel}}/model.json",
        metrics=f"{RESULTS}/runs/{{run}}/parcels_permuted/{{pmodel}}/metrics.json",
    wildcard_constraints:
        pmodel="parcel_[a-z0-9_]+",
    params:
        settings=lambda wc: PARCELS["models"][wc.pmodel] or {},
        training=PARCELS.get("training", {}),
        seed=lambda wc: config["split"]["seed"] + int(wc.run),
        permute=True,
        code=PARCEL_CODE,
    log:
        f"{RESULTS}/logs/train_parcel_permuted/{{run}}_{{pmodel}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train_parcel_permuted/{{run}}_{{pmodel}}.tsv"
    threads: THREADS
    resources:
        mem_mb=parcel_mem_mb("train_parcel"),
        runtime=runtime_min("train"),
    script:
        "../../scripts/parcel_train.py"


rule predict_parcel:
    input:
        model=rules.train_parcel.output.model,
        meta=rules.train_parcel.output.meta,
        dataset=f"{RESULTS}/tiles/{{tile}}/parcels.parquet",
        patches=f"{RESULTS}/tiles/{{tile}}/parcels.npy",
        masks=f"{RESULTS}/tiles/{{tile}}/parcels_mask.npy",
        split=rules.split.output.split,
        grid=rules.gapfill.output.validity,
        nomenclature=config["nomenclature"],
    output:
        **parcel_tile_outputs("parcels/{pmodel}"),
    wildcard_constraints:
        pmodel="parcel_[a-z0-9_]+",
    params:
        permute=False,
        code=PARCEL_CODE,
    log:
        f"{RESULTS}/logs/predict_parcel/{{run}}_{{pmodel}}_{{tile}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/predict_parcel/{{run}}_{{pmodel}}_{{tile}}.tsv"
    threads: THREADS
    resources:
        mem_mb=parcel_mem_mb("predict_parcel"),
        runtime=runtime_min("predict_parcel"),
    script:
        "../../scripts/parcel_predict.py"


rule predict_parcel_permuted:
    input:
        model=rules.train_parcel_permuted.output.model,
        meta=rules.train_parcel_permuted.output.meta,
        dataset=f"{RESULTS}/tiles/{{tile}}/parcels.parquet",
        patches=f"{RESULTS}/tiles/{{tile}}/parcels.npy",
        masks=f"{RESULTS}/tiles/{{tile}}/parcels_mask.npy",
        split=rules.split.output.split,
        grid=rules.gapfill.output.validity,
        nomenclature=config["nomenclature"],
    output:
        **parcel_tile_outputs("parcels_permuted/{pmodel}"),
    wildcard_constraints:
        pmodel="parcel_[a-z0-9_]+",
    params:
        permute=True,
        code=PARCEL_CODE,
    log:
        f"{RESULTS}/logs/predict_parcel_permuted/{{run}}_{{pmodel}}_{{tile}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/predict_parcel_permuted/{{run}}_{{pmodel}}_{{tile}}.tsv"
    threads: THREADS
    resources:
        mem_mb=parcel_mem_mb("predict_parcel"),
        runtime=runtime_min("predict_parcel"),
    script:
        "../../scripts/parcel_predict.py"


rule majority_vote:
    input:
        classification=f"{RESULTS}/runs/{{run}}/maps/{{arch}}/{{tile}}_classification.tif",
        split=rules.split.output.split,
        nomenclature=config["nomenclature"],
    output:
        **parcel_tile_outputs("parcels/vote_{arch}"),
    params:
        code=PARCEL_CODE,
    log:
        f"{RESULTS}/logs/majority_vote/{{run}}_{{arch}}_{{tile}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/majority_vote/{{run}}_{{arch}}_{{tile}}.tsv"
    resources:
        mem_mb=mem_mb("evaluate"),
        runtime=runtime_min("majority_vote"),
    script:
        "../../scripts/parcel_vote.py"


def parcel_report_files(suffix, folder="parcels"):
    names = PARCEL_MODELS + ([f"vote_{a}" for a in VOTE_ARCHS] if folder == "parcels" else [])
    return expand(f"{RESULTS}/runs/{{run}}/{folder}/{{name}}/{{tile}}{suffix}", run=RUNS, name=names, tile=TILES)


rule parcel_summary:
    input:
        reports=parcel_report_files(".json"),
        pixel_reports=parcel_report_files("_pixel.json")
        + expand(f"{RESULTS}/runs/{{run}}/reports/{{arch}}/{{tile}}.json", run=RUNS, arch=ARCHS, tile=TILES),
        metrics=expand(f"{RESULTS}/runs/{{run}}/parcels/{{name}}/metrics.json", run=RUNS, name=PARCEL_MODELS),
    output:
        csv=f"{RESULTS}/reports/parcels_summary.csv",
        html=report(f"{RESULTS}/reports/parcels_summary.html", caption="../report/parcels_summary.rst", category="Parcels"),
        pixel_csv=f"{RESULTS}/reports/parcels_pixel_summary.csv",
        pixel_html=report(f"{RESULTS}/reports/parcels_pixel_summary.html", caption="../report/parcels_summary.rst",
                          category="Parcels"),
        training=f"{RESULTS}/reports/parcels_training.csv",
    params:
        code=PARCEL_CODE + code_hash("cropchain.assessment.report"),
    log:
        f"{RESULTS}/logs/parcel_summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/parcel_summary.tsv"
    resources:
        mem_mb=mem_mb("summary"),
        runtime=runtime_min("summary"),
    script:
        "../../scripts/parcel_summary.py"


rule parcel_ablation:
    input:
        reports=expand(f"{RESULTS}/runs/{{run}}/parcels/{{name}}/{{tile}}.json", run=RUNS, name=PARCEL_MODELS, tile=TILES),
        permuted=parcel_report_files(".json", "parcels_permuted"),
    output:
        csv=f"{RESULTS}/reports/parcels_ablation.csv",
    params:
        code=PARCEL_CODE,
    log:
        f"{RESULTS}/logs/parcel_ablation.log",
    benchmark:
        f"{RESULTS}/benchmarks/parcel_ablation.tsv"
    resources:
        mem_mb=mem_mb("summary"),
        runtime=runtime_min("summary"),
    script:
        "../../scripts/parcel_ablation.py"
