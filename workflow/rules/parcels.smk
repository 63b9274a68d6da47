# Parcel classification (config `parcels`, absent = off): parcel datasets per tile
# (cropchain.parcels.dataset), parcel models per run (cropchain.models.parcel, cropchain.parcels.train),
# parcel maps and reports, majority vote of the pixel maps per parcel, summaries and the permuted-dates
# ablation.

PARCELS = config.get("parcels") or {}  # filled by the schema's defaults when given
if not PARCELS.get("enabled"):
    PARCELS = {}
PARCEL_MODELS = list(PARCELS.get("models") or {})
VOTE_ARCHS = ARCHS if PARCELS.get("vote_architectures") is None else list(PARCELS["vote_architectures"])
PARCEL_ABLATION = bool(PARCELS.get("ablation_permute_dates"))

if PARCELS:
    _unknown_votes = sorted(set(VOTE_ARCHS) - set(ARCHS))
    if _unknown_votes:
        raise WorkflowError(f"parcels.vote_architectures: {_unknown_votes} are not in `architectures` "
                            f"({', '.join(ARCHS)})")


# the code of the parcel jobs: datasets, parcel models, training, prediction, evaluation
PARCEL_CODE = ("cropchain.parcels", "cropchain.models.parcel", "cropchain.assessment.evaluate",
               "cropchain.metrics")


def parcel_outputs():
    """Final products of the parcel classification (added to `rule all` when `parcels` is configured
    and enabled, with at least one model or vote)."""
    if not PARCELS or not (PARCEL_MODELS or VOTE_ARCHS):
        return []
    outs = [results("reports/parcels_summary.csv"), results("reports/parcels_summary.html"),
            results("reports/parcels_pixel_summary.csv"), results("reports/parcels_pixel_summary.html"),
            results("reports/parcels_training.csv")]
    if PARCEL_ABLATION and PARCEL_MODELS:
        outs.append(results("reports/parcels_ablation.csv"))
    for run in RUNS:
        for tile in TILES:
            for name in PARCEL_MODELS + [f"vote_{a}" for a in VOTE_ARCHS]:
                outs.append(results(f"runs/{run}/parcels/{name}/{tile}.gpkg"))
                outs.append(results(f"runs/{run}/parcels/{name}/{tile}_classification.tif"))
    return outs


def parcel_tile_outputs(folder):
    """Outputs of a parcel map of one run and tile in `folder` (a model or a vote)."""
    base = results(f"runs/{{run}}/{folder}/{{tile}}")
    return {"gpkg": f"{base}.gpkg", "tif": f"{base}_classification.tif", "json": f"{base}.json",
            "csv": f"{base}_confusion.csv", "png": f"{base}_confusion.png",
            "pixel_json": f"{base}_pixel.json"}


rule parcel_dataset:
    input:
        gapfilled=rules.gapfill.output.gapfilled,
        validity=rules.gapfill.output.validity,
        reference=rules.reference.output.reference,
    output:
        index=results("tiles/{tile}/parcels.parquet"),
        patches=results("tiles/{tile}/parcels.npy"),
        masks=results("tiles/{tile}/parcels_mask.npy"),
    params:
        patch_size=PARCELS.get("patch_size"),
        code=code_hash("cropchain.parcels.dataset"),
    log:
        logs("parcel_dataset/{tile}"),
    benchmark:
        benchmarks("parcel_dataset/{tile}")
    resources:
        mem_mb=mem_mb("parcel_dataset"),
        runtime=runtime_min("parcel_dataset"),
    script:
        "../../scripts/parcel_dataset.py"


_PARCEL_TRAIN_INPUT = dict(
    datasets=expand(results("tiles/{tile}/parcels.parquet"), tile=TILES),
    patches=expand(results("tiles/{tile}/parcels.npy"), tile=TILES),
    masks=expand(results("tiles/{tile}/parcels_mask.npy"), tile=TILES),
    splits=expand(results("runs/{{run}}/tiles/{tile}/split.gpkg"), tile=TILES),
)


rule train_parcel:
    input:
        **_PARCEL_TRAIN_INPUT,
    output:
        model=results("runs/{run}/parcels/{pmodel}/model.pt"),
        meta=results("runs/{run}/parcels/{pmodel}/model.json"),
        metrics=results("runs/{run}/parcels/{pmodel}/metrics.json"),
    wildcard_constraints:
        pmodel="parcel_[a-z0-9_]+",
    params:
        settings=lambda wc: PARCELS["models"][wc.pmodel] or {},
        training=PARCELS.get("training"),
        seed=run_seed,
        permute=False,
        code=code_hash(*PARCEL_CODE),
    log:
        logs("train_parcel/{run}_{pmodel}"),
    benchmark:
        benchmarks("train_parcel/{run}_{pmodel}")
    threads: THREADS
    resources:
        mem_mb=mem_mb("train_parcel"),
        runtime=runtime_min("train"),
    script:
        "../../scripts/parcel_train.py"


rule train_parcel_permuted:
    input:
        **_PARCEL_TRAIN_INPUT,
    output:
        model=results("runs/{run}/parcels_permuted/{pmodel}/model.pt"),
        meta=results("runs/{run}/parcels_permuted/{pmodel}/model.json"),
        metrics=results("runs/{run}/parcels_permuted/{pmodel}/metrics.json"),
    wildcard_constraints:
        pmodel="parcel_[a-z0-9_]+",
    params:
        settings=lambda wc: PARCELS["models"][wc.pmodel] or {},
        training=PARCELS.get("training"),
        seed=run_seed,
        permute=True,
        code=code_hash(*PARCEL_CODE),
    log:
        logs("train_parcel_permuted/{run}_{pmodel}"),
    benchmark:
        benchmarks("train_parcel_permuted/{run}_{pmodel}")
    threads: THREADS
    resources:
        mem_mb=mem_mb("train_parcel"),
        runtime=runtime_min("train"),
    script:
        "../../scripts/parcel_train.py"


rule predict_parcel:
    input:
        model=rules.train_parcel.output.model,
        meta=rules.train_parcel.output.meta,
        dataset=results("tiles/{tile}/parcels.parquet"),
        patches=results("tiles/{tile}/parcels.npy"),
        masks=results("tiles/{tile}/parcels_mask.npy"),
        split=rules.split.output.split,
        grid=rules.gapfill.output.validity,
        nomenclature=config["nomenclature"],
    output:
        **parcel_tile_outputs("parcels/{pmodel}"),
    wildcard_constraints:
        pmodel="parcel_[a-z0-9_]+",
    params:
        permute=False,
        code=code_hash(*PARCEL_CODE),
    log:
        logs("predict_parcel/{run}_{pmodel}_{tile}"),
    benchmark:
        benchmarks("predict_parcel/{run}_{pmodel}_{tile}")
    threads: THREADS
    resources:
        mem_mb=mem_mb("predict_parcel"),
        runtime=runtime_min("predict_parcel"),
    script:
        "../../scripts/parcel_predict.py"


rule predict_parcel_permuted:
    input:
        model=rules.train_parcel_permuted.output.model,
        meta=rules.train_parcel_permuted.output.meta,
        dataset=results("tiles/{tile}/parcels.parquet"),
        patches=results("tiles/{tile}/parcels.npy"),
        masks=results("tiles/{tile}/parcels_mask.npy"),
        split=rules.split.output.split,
        grid=rules.gapfill.output.validity,
        nomenclature=config["nomenclature"],
    output:
        **parcel_tile_outputs("parcels_permuted/{pmodel}"),
    wildcard_constraints:
        pmodel="parcel_[a-z0-9_]+",
    params:
        permute=True,
        code=code_hash(*PARCEL_CODE),
    log:
        logs("predict_parcel_permuted/{run}_{pmodel}_{tile}"),
    benchmark:
        benchmarks("predict_parcel_permuted/{run}_{pmodel}_{tile}")
    threads: THREADS
    resources:
        mem_mb=mem_mb("predict_parcel"),
        runtime=runtime_min("predict_parcel"),
    script:
        "../../scripts/parcel_predict.py"


rule majority_vote:
    input:
        classification=results("runs/{run}/maps/{arch}/{tile}_classification.tif"),
        split=rules.split.output.split,
        nomenclature=config["nomenclature"],
    output:
        **parcel_tile_outputs("parcels/vote_{arch}"),
    params:
        code=code_hash(*PARCEL_CODE),
    log:
        logs("majority_vote/{run}_{arch}_{tile}"),
    benchmark:
        benchmarks("majority_vote/{run}_{arch}_{tile}")
    resources:
        mem_mb=mem_mb("evaluate"),
        runtime=runtime_min("majority_vote"),
    script:
        "../../scripts/parcel_vote.py"


def parcel_report_files(suffix, folder="parcels"):
    names = PARCEL_MODELS + ([f"vote_{a}" for a in VOTE_ARCHS] if folder == "parcels" else [])
    return expand(results(f"runs/{{run}}/{folder}/{{name}}/{{tile}}{suffix}"), run=RUNS, name=names,
                  tile=TILES)


rule parcel_summary:
    input:
        reports=parcel_report_files(".json"),
        pixel_reports=parcel_report_files("_pixel.json")
        + expand(results("runs/{run}/reports/{arch}/{tile}.json"), run=RUNS, arch=ARCHS, tile=TILES),
        metrics=expand(results("runs/{run}/parcels/{name}/metrics.json"), run=RUNS, name=PARCEL_MODELS),
    output:
        csv=results("reports/parcels_summary.csv"),
        html=report(results("reports/parcels_summary.html"), caption="../report/parcels_summary.rst",
                    category="Parcels"),
        pixel_csv=results("reports/parcels_pixel_summary.csv"),
        pixel_html=report(results("reports/parcels_pixel_summary.html"),
                          caption="../report/parcels_summary.rst", category="Parcels"),
        training=results("reports/parcels_training.csv"),
    params:
        code=code_hash(*PARCEL_CODE, "cropchain.assessment.report"),
    log:
        logs("parcel_summary"),
    benchmark:
        benchmarks("parcel_summary")
    resources:
        mem_mb=mem_mb("summary"),
        runtime=runtime_min("summary"),
    script:
        "../../scripts/parcel_summary.py"


rule parcel_ablation:
    input:
        reports=expand(results("runs/{run}/parcels/{name}/{tile}.json"), run=RUNS, name=PARCEL_MODELS,
                       tile=TILES),
        permuted=parcel_report_files(".json", "parcels_permuted"),
    output:
        csv=results("reports/parcels_ablation.csv"),
    params:
        code=code_hash(*PARCEL_CODE),
    log:
        logs("parcel_ablation"),
    benchmark:
        benchmarks("parcel_ablation")
    resources:
        mem_mb=mem_mb("summary"),
        runtime=runtime_min("summary"),
    script:
        "../../scripts/parcel_ablation.py"
