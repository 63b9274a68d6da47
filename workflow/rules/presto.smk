# Presto architectures (presto_rf, presto_xgboost): heads on the 128-d embeddings of the
# pre-trained Presto encoder. The embeddings are features computed per window, never stored
# (cropchain.learning.presto_features): from monthly composites of each tile's raw series (whatever
# gapfill.temporal the other architectures use), for the learning pixels of a run (rule
# samples_presto) and for the map (rule classify_presto). The heads are trained by the
# ordinary pixel trainer (rule train_presto, cropchain.learning.train).
# presto_finetune (the encoder fine-tuned with a linear head) goes through the same rules, its
# features the encoder's inputs (monthly composites, clear months, latitude / longitude:
# runs/{run}/pixels_presto_inputs.parquet) instead of the embeddings.
from cropchain.models import PRESTO_ARCHS

PRESTO = config.get("presto") or {}


def presto_weights(wildcards):
    """`presto.weights` (checked against `presto.sha256` by the job): an input, so that a new
    file reruns the embeddings."""
    if not PRESTO:
        arch = wildcards.arch if hasattr(wildcards, "arch") else "presto_*"
        raise WorkflowError(f"architecture {arch} needs the `presto` "
                            "section of the configuration (presto.weights: path of default_model.pt)")
    return PRESTO["weights"]


def raw_series_of(tiles=None):
    """The raw series of `tiles` (all tiles), or of the `{tile}` wildcard when None."""
    names = {"raw": "raw.tif", "mask": "raw_mask.tif", "raw_dates": "raw_dates.txt"}
    if tiles is None:
        return {k: results(f"tiles/{{tile}}/{v}") for k, v in names.items()}
    return {k: expand(results(f"tiles/{{tile}}/{v}"), tile=tiles) for k, v in names.items()}


PRESTO_PARAMS = {k: PRESTO.get(k) for k in ("sha256", "months", "batch_size", "device")}


def presto_table(arch):
    """The pixel table kind of a Presto architecture: the encoder's inputs for presto_finetune,
    its embeddings for the heads."""
    return "presto_inputs" if arch == "presto_finetune" else "presto"


def presto_hyperparameters(wildcards):
    """`architectures.<arch>`; presto_finetune also gets the weights it starts from."""
    hp = dict(config["architectures"][wildcards.arch])
    if wildcards.arch == "presto_finetune":
        hp.update(weights=str(presto_weights(wildcards)), sha256=PRESTO.get("sha256"))
    return hp
PRESTO_CODE = ("cropchain.learning.presto_features", "cropchain.models.presto", "cropchain.series.composite",
               "cropchain.series.features")


rule samples_presto:
    input:
        **raw_series_of(TILES),
        weights=presto_weights,
        validity=expand(results("tiles/{tile}/validity.tif"), tile=TILES),
        split=expand(results("runs/{{run}}/tiles/{tile}/split.gpkg"), tile=TILES),
    output:
        pixels=results("runs/{run}/pixels_{presto_kind}.parquet"),
    wildcard_constraints:
        presto_kind="presto|presto_inputs",
    params:
        tiles=TILES,
        samples=config["samples"],
        presto=PRESTO_PARAMS,
        inputs=lambda wc: wc.presto_kind == "presto_inputs",
        start=config["dates"]["start"],
        seed=run_seed,
        code=code_hash("cropchain.learning.samples", *PRESTO_CODE),
    log:
        logs("samples_{presto_kind}/{run}"),
    benchmark:
        benchmarks("samples_{presto_kind}/{run}")
    threads: THREADS
    resources:
        mem_mb=mem_mb("samples"),
        runtime=runtime_min("samples"),
    script:
        "../../scripts/samples_presto.py"


rule train_presto:
    input:
        pixels=lambda wc: results(f"runs/{wc.run}/pixels_{presto_table(wc.arch)}.parquet"),
        weights=lambda wc: presto_weights(wc) if wc.arch == "presto_finetune" else [],  # it starts from them
    output:
        model=results("runs/{run}/models/{arch}/model.joblib"),
        meta=results("runs/{run}/models/{arch}/model.json"),
        metrics=results("runs/{run}/models/{arch}/metrics.json"),
    wildcard_constraints:
        arch="|".join(PRESTO_ARCHS),
    params:
        hyperparameters=presto_hyperparameters,
        seed=run_seed,
        code=code_hash("cropchain.learning.train", "cropchain.models.presto_heads",
                       "cropchain.models.random_forest", "cropchain.models.xgboost",
                       "cropchain.models.presto_finetune", "cropchain.models.presto"),
    log:
        logs("train/{run}_{arch}"),
    benchmark:
        benchmarks("train/{run}_{arch}")
    threads: THREADS
    resources:
        mem_mb=mem_mb("train"),
        runtime=runtime_min("train"),
    script:
        "../../scripts/train.py"


rule classify_presto:
    input:
        **raw_series_of(),
        weights=presto_weights,
        validity=rules.gapfill.output.validity,
        model=results("runs/{run}/models/{arch}/model.json"),
        nomenclature=config["nomenclature"],
    output:
        classification=results("runs/{run}/maps/{arch}/{tile}_classification.tif"),
        confidence=results("runs/{run}/maps/{arch}/{tile}_confidence.tif"),
        validity=results("runs/{run}/maps/{arch}/{tile}_validity.tif"),
        uncertainty=results("runs/{run}/maps/{arch}/{tile}_uncertainty.tif"),
        **PROBABILITIES,  # the products of rule classify, for every architecture
    wildcard_constraints:
        arch="|".join(PRESTO_ARCHS),
    params:
        classify={k: v for k, v in config["classify"].items() if k != "smoothing"},
        smoothing=lambda wc: smoothing_of(config, wc.arch),
        presto=PRESTO_PARAMS,
        inputs=lambda wc: presto_table(wc.arch) == "presto_inputs",
        start=config["dates"]["start"],
        code=code_hash("cropchain.mapping.classify", "cropchain.mapping.smoothing",
                       "cropchain.learning.train", "cropchain.io.products", "cropchain.workflow",
                       "cropchain.models.presto_finetune", *PRESTO_CODE),
    log:
        logs("classify/{run}_{arch}_{tile}"),
    benchmark:
        benchmarks("classify/{run}_{arch}_{tile}")
    threads: THREADS
    resources:
        mem_mb=mem_mb("classify"),
        runtime=runtime_min("classify"),
    script:
        "../../scripts/classify_presto.py"


ruleorder: train_presto > train
ruleorder: classify_presto > classify
