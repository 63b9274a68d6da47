# Field delineation (config `delineation`, absent = off): Mask R-CNN cropland instances per run and
# input variant (cropchain.delineation.fields, cropchain.models.mask_rcnn), tiled inference to one polygon
# per field, RC-matching scores of the instances and of the vectorized pixel maps as baseline
# (cropchain.delineation.metrics), summary over runs.

DELINEATION = config.get("delineation") or {}  # filled by the schema's defaults when given
if not DELINEATION.get("enabled"):
    DELINEATION = {}
DELINEATION_VARIANTS = list(DELINEATION.get("variants") or {})
DELINEATION_BASELINES = (ARCHS if DELINEATION.get("baseline_architectures") is None
                         else list(DELINEATION["baseline_architectures"]))

if DELINEATION:
    _unknown_baselines = sorted(set(DELINEATION_BASELINES) - set(ARCHS))
    if _unknown_baselines:
        raise WorkflowError(f"delineation.baseline_architectures: {_unknown_baselines} are not in "
                            f"`architectures` ({', '.join(ARCHS)})")

DELINEATION_CODE = ("cropchain.delineation.fields", "cropchain.models.mask_rcnn", "cropchain.series.features")


def delineation_outputs():
    """Final products of the delineation (added to `rule all` when `delineation` is configured and
    enabled)."""
    if not DELINEATION or not DELINEATION_VARIANTS:
        return []
    outs = [results("reports/delineation_summary.csv"), results("reports/delineation_summary.html")]
    for run in RUNS:
        for tile in TILES:
            for name in DELINEATION_VARIANTS:
                outs.append(results(f"runs/{run}/delineation/{name}/{tile}.gpkg"))
    return outs


def delineation_report_files(folder):
    base = results(f"runs/{{run}}/delineation/{folder}/{{tile}}")
    return {"report": f"{base}.json", "curves": f"{base}_curves.csv", "png": f"{base}_curves.png",
            "targets": f"{base}_targets.csv"}


wildcard_constraints:
    dvariant="bgrn|bgr_ndvi|ndvi_stack",


rule delineation_train:
    input:
        **series_of(TILES),
        splits=expand(results("runs/{{run}}/tiles/{tile}/split.gpkg"), tile=TILES),
    output:
        model=results("runs/{run}/delineation/{dvariant}/model.pt"),
        meta=results("runs/{run}/delineation/{dvariant}/model.json"),
        metrics=results("runs/{run}/delineation/{dvariant}/metrics.json"),
    params:
        settings=lambda wc: DELINEATION["variants"][wc.dvariant] or {},
        training=DELINEATION.get("training"),
        features=FEATURES,
        seed=run_seed,
        code=code_hash(*DELINEATION_CODE),
    log:
        logs("delineation_train/{run}_{dvariant}"),
    benchmark:
        benchmarks("delineation_train/{run}_{dvariant}")
    threads: THREADS
    resources:
        mem_mb=mem_mb("delineation_train"),
        runtime=runtime_min("train"),
    script:
        "../../scripts/delineation_train.py"


rule delineation_predict:
    input:
        model=rules.delineation_train.output.model,
        meta=rules.delineation_train.output.meta,
        **series_of(),
    output:
        fields=results("runs/{run}/delineation/{dvariant}/{tile}.gpkg"),
    params:
        inference=DELINEATION.get("inference"),
        features=FEATURES,
        code=code_hash(*DELINEATION_CODE),
    log:
        logs("delineation_predict/{run}_{dvariant}_{tile}"),
    benchmark:
        benchmarks("delineation_predict/{run}_{dvariant}_{tile}")
    threads: THREADS
    resources:
        mem_mb=mem_mb("delineation_predict"),
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
        code=code_hash("cropchain.delineation"),
    log:
        logs("delineation_evaluate/{run}_{dvariant}_{tile}"),
    benchmark:
        benchmarks("delineation_evaluate/{run}_{dvariant}_{tile}")
    resources:
        mem_mb=mem_mb("delineation_evaluate"),
        runtime=runtime_min("delineation_evaluate"),
    script:
        "../../scripts/delineation_evaluate.py"


rule delineation_baseline:
    input:
        predictions=results("runs/{run}/vectors/{arch}/{tile}.gpkg"),
        split=rules.split.output.split,
    output:
        **delineation_report_files("baseline_{arch}"),
    params:
        name=lambda wc: f"baseline_{wc.arch}",
        kind="vectorized_map",
        code=code_hash("cropchain.delineation"),
    log:
        logs("delineation_baseline/{run}_{arch}_{tile}"),
    benchmark:
        benchmarks("delineation_baseline/{run}_{arch}_{tile}")
    resources:
        mem_mb=mem_mb("delineation_evaluate"),
        runtime=runtime_min("delineation_evaluate"),
    script:
        "../../scripts/delineation_evaluate.py"


rule delineation_summary:
    input:
        reports=expand(results("runs/{run}/delineation/{name}/{tile}.json"), run=RUNS, tile=TILES,
                       name=DELINEATION_VARIANTS + [f"baseline_{a}" for a in DELINEATION_BASELINES]),
        metrics=expand(results("runs/{run}/delineation/{name}/metrics.json"), run=RUNS,
                       name=DELINEATION_VARIANTS),
    output:
        csv=results("reports/delineation_summary.csv"),
        html=report(results("reports/delineation_summary.html"), caption="../report/delineation_summary.rst",
                    category="Field delineation"),
    params:
        code=code_hash("cropchain.delineation"),
    log:
        logs("delineation_summary"),
    benchmark:
        benchmarks("delineation_summary")
    resources:
        mem_mb=mem_mb("summary"),
        runtime=runtime_min("summary"),
    script:
        "../../scripts/delineation_summary.py"
