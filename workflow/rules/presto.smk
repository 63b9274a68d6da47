# Presto architectures (presto_rf, presto_xgboost): heads on the 128-d embeddings of the
# pre-trained Presto encoder. The embeddings are features computed per window, never stored
# (cropchain.learning.presto_features): from monthly composites of each tile's raw series (whatever
# gapfill.temporal the other architectures use), for the learning pixels of a run (rule
# samples_presto) and for the map (rule classify_presto). The heads are trained by the
# ordinary pixel trainer (rule train_presto, cropchain.learning.train).
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
PRESTO_CODE = ("cropchain.learning.presto_features", "cropchain.models.presto", "cropchain.series.composite",
               "cropchain.series.features")


rule samples_presto:
    input:
        **raw_series_of(TILES),
        weights=presto_weights,
        validity=expand(results("tiles/{tile}/validity.tif"), tile=TILES),
        split=expand(results("runs/{{run}}/tiles/{tile}/split.gpkg"), tile=TILES),
    output:
        pixels=results("runs/{run}/pixels_presto.parquet"),
    params:
        tiles=TILES,
        samples=config["samples"],
        presto=PRESTO_PARAMS,
        start=config["dates"]["start"],
        seed=run_seed,
        code=code_hash("cropchain.learning.samples", *PRESTO_CODE),
    log:
        logs("samples_presto/{run}"),
    benchmark:
        benchmarks("samples_presto/{run}")
    threads: THREADS
    resources:
        mem_mb=mem_mb("samples"),
        runtime=runtime_min("samples"),
    script:
        "../../scripts/samples_presto.py"


rule train_presto:
    input:
        pixels=rules.samples_presto.output.pixels,
    output:
        model=results("runs/{run}/models/{arch}/model.joblib"),
        meta=results("runs/{run}/models/{arch}/model.json"),
        metrics=results("runs/{run}/models/{arch}/metrics.json"),
    wildcard_constraints:
        arch="|".join(PRESTO_ARCHS),
    params:
        hyperparameters=lambda wc: config["architectures"][wc.arch],
        seed=run_seed,
        code=code_hash("cropchain.learning.train", "cropchain.models.presto_heads",
                       "cropchain.models.random_forest", "cropchain.models.xgboost"),
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
        start=config["dates"]["start"],
        code=code_hash("cropchain.mapping.classify", "cropchain.mapping.smoothing",
                       "cropchain.learning.train", "cropchain.io.products", "cropchain.workflow",
                       *PRESTO_CODE),
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
