# Field delineation (config `delineation`, absent = off): Mask R-CNN cropland instances per run and
# input variant (cropchain.delineation.fields, cropchain.models.mask_rcnn), tiled inference to one polygon
# per field, RC-matching scores of the instances and of the vectorized pixel maps as baseline
# (cropchain.delineation.metrics), summary over runs.

DELINEATION = config.get("delineation") or {}
if not DELINEATION.get("enabled", True):
    DELINEATION = {}
DELINEATION_VARIANTS = list(DELINEATION.get("variants") or {})
DELINEATION_BASELINES = (ARCHS if DELINEATION.get("baseline_architectures") is None
                         else list(DELINEATION["baseline_architectures"]))

if DELINEATION:
    _unknown_baselines = sorted(set(DELINEATION_BASELINES) - set(ARCHS))
    if _unknown_baselines:
        raise WorkflowError(f"delineation.baseline_architectures: {_unknown_baselines} are not in `architectures` "
                            f"({', '.join(ARCHS)})")

# read without importing: importing cropchain.delineation.fields would load PyTorch at every parse
DELINEATION_CODE = parcel_code_hash("delineation/fields.py", "models/mask_rcnn.py", "series/features.py")
INSTANCE_CODE = parcel_code_hash("delineation/metrics.py", "delineation/fields.py")


def delineation_mem_mb(rule):
    """Memory (MB) of a delineation job: PyTorch (~1.5 GB), the variant's channels of the whole
    tile (float32), the activations of a batch of upscaled patches (~64 channels at stride 2, x8)."""
    training = {"patch_size": 64, "upscale": 2, "batch_size": 4, **(DELINEATION.get("training") or {})}
    window = (DELINEATION.get("inference") or {}).get("window", 128)
    n_channels = max(4, n_output_dates())

    def estimate(wildcards, input, attempt=1):
        hw = tile_shape(wildcards.tile) if hasattr(wildcards, "tile") else max(map(tile_shape, TILES))
        tile = n_channels * hw[0] * hw[1] * 4 * 2 / 1e6
        if rule == "train":
            side = training["patch_size"] * training["upscale"]
            need = 1500 + tile * len(TILES) + training["batch_size"] * 64 * (side / 2) ** 2 * 4 * 8 / 1e6
        elif rule == "predict":
            side = window * training["upscale"]
            need = 1500 + tile + 100 * side * side * 4 * 2 / 1e6 + 64 * (side / 2) ** 2 * 4 * 4 / 1e6
        else:
            need = 500
        return int(1000 + 1.5 * need) * attempt

    return estimate


def delineation_outputs():
    """Final products of the delineation (added to `rule all` when `delineation` is configured and enabled)."""
    if not DELINEATION or not DELINEATION_VARIANTS:
        return []
    outs = [f"{RESULTS}/reports/delineation_summary.csv", f"{RESULTS}/reports/delineation_summary.html"]
    for run in RUNS:
        for tile in TILES:
            for name in DELINEATION_VARIANTS:
                outs.append(f"{RESULTS}/runs/{run}/delineation/{name}/{tile}.gpkg")
    return outs


def delineation_report_files(folder):
    base = f"{RESULTS}/runs/{{run}}/delineation/{folder}/{{tile}}"
    return {"report": f"{base}.json", "curves": f"{base}_curves.csv", "png": f"{base}_curves.png",
            "targets": f"{base}_targets.csv"}


wildcard_constraints:
    dvariant="bgrn|bgr_ndvi|ndvi_stack",


rule delineation_train:
    input:
        **series_of(TILES),
        splits=expand(f"{RESULTS}/runs/{{{{run}}}}/tiles/{{tile}}/split.gpkg", tile=TILES),
    output:
        model=f"{RESULTS}/runs/{{run}}/delineation/{{dvariant}}/model.pt",
        meta=f"{RESULTS}/runs/{{run}}/delineation/{{dvariant}}/model.json",
        metrics=f"{RESULTS}/runs/{{run}}/delineation/{{dvariant}}/metrics.json",
    params:
        settings=lambda wc: DELINEATION["variants"][wc.dvariant] or {},
        training=DELINEATION.get("training", {}),
        features=FEATURES,
        seed=lambda wc: config["split"]["seed"] + int(wc.run),
        code=DELINEATION_CODE,
    log:
        f"{RESULTS}/logs/delineation_train/{{run}}_{{dvariant}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/delineation_train/{{run}}_{{dvariant}}.tsv"
    threads: THREADS
    resources:
        mem_mb=delineation_mem_mb("train"),
        runtime=runtime_min("train"),
    script:
        "../../scripts/delineation_train.py"


rule delineation_predict:
    input:
        model=rules.delineation_train.output.model,
        meta=rules.delineation_train.output.meta,
        **series_of(),
    output:
        fields=f"{RESULTS}/runs/{{run}}/delineation/{{dvariant}}/{{tile}}.gpkg",
    params:
        inference=DELINEATION.get("inference", {}),
        features=FEATURES,
        code=DELINEATION_CODE,
    log:
        f"{RESULTS}/logs/delineation_predict/{{run}}_{{dvariant}}_{{tile}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/delineation_predict/{{run}}_{{dvariant}}_{{tile}}.tsv"
    threads: THREADS
    resources:
        mem_mb=delineation_mem_mb("predict"),
        runtime=runtime_min("classify"),
    script:
        "../../scripts/delineation_predict.py"


rule delineation_evaluate:
    input:
        predictions=rules.delineation_predict.output.fields,
        split=rules.split.output.split,
    output:
        **delineation_report_files("{dvariant}"),
    params:
        name=lambda wc: wc.dvariant,
        kind="mask_rcnn",
        code=INSTANCE_CODE,
    log:
        f"{RESULTS}/logs/delineation_evaluate/{{run}}_{{dvariant}}_{{tile}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/delineation_evaluate/{{run}}_{{dvariant}}_{{tile}}.tsv"
    resources:
        mem_mb=delineation_mem_mb("evaluate"),
        runtime=runtime_min("delineation_evaluate"),
    script:
        "../../scripts/delineation_evaluate.py"


rule delineation_baseline:
    input:
        predictions=f"{RESULTS}/runs/{{run}}/vectors/{{arch}}/{{tile}}.gpkg",
        split=rules.split.output.split,
    output:
        **delineation_report_files("baseline_{arch}"),
    params:
        name=lambda wc: f"baseline_{wc.arch}",
        kind="vectorized_map",
        code=INSTANCE_CODE,
    log:
        f"{RESULTS}/logs/delineation_baseline/{{run}}_{{arch}}_{{tile}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/delineation_baseline/{{run}}_{{arch}}_{{tile}}.tsv"
    resources:
        mem_mb=delineation_mem_mb("evaluate"),
        runtime=runtime_min("delineation_evaluate"),
    script:
        "../../scripts/delineation_evaluate.py"


rule delineation_summary:
    input:
        reports=expand(f"{RESULTS}/runs/{{run}}/delineation/{{name}}/{{tile}}.json", run=RUNS, tile=TILES,
                       name=DELINEATION_VARIANTS + [f"baseline_{a}" for a in DELINEATION_BASELINES]),
        metrics=expand(f"{RESULTS}/runs/{{run}}/delineation/{{name}}/metrics.json", run=RUNS, name=DELINEATION_VARIANTS),
    output:
        csv=f"{RESULTS}/reports/delineation_summary.csv",
        html=report(f"{RESULTS}/reports/delineation_summary.html", caption="../report/delineation_summary.rst",
                    category="Field delineation"),
    params:
        code=INSTANCE_CODE,
    log:
        f"{RESULTS}/logs/delineation_summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/delineation_summary.tsv"
    resources:
        mem_mb=mem_mb("summary"),
        runtime=runtime_min("summary"),
    script:
        "../../scripts/delineation_summary.py"
