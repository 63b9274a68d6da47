# Tiled inference (cropchain.mapping.classify): classification, confidence, uncertainty and validity
# per tile (and the class probabilities with `classify.probabilities: true`); mosaic per run and
# architecture.
from cropchain.config import smoothing_of

# Probabilities are an output only when asked for (one band per class: large); switching the key
# changes the rule's outputs and params, so Snakemake reruns the inference that writes them.
PROBABILITIES = (
    {"probabilities": results("runs/{run}/maps/{arch}/{tile}_probabilities.tif")}
    if config["classify"]["probabilities"] else {}
)


rule classify:
    input:
        **series_of(),
        validity=rules.gapfill.output.validity,
        model=results("runs/{run}/models/{arch}/model.json"),  # rule train or train_network
        nomenclature=config["nomenclature"],
    output:
        classification=results("runs/{run}/maps/{arch}/{tile}_classification.tif"),
        confidence=results("runs/{run}/maps/{arch}/{tile}_confidence.tif"),
        validity=results("runs/{run}/maps/{arch}/{tile}_validity.tif"),
        uncertainty=results("runs/{run}/maps/{arch}/{tile}_uncertainty.tif"),
        **PROBABILITIES,
    params:
        classify={k: v for k, v in config["classify"].items() if k != "smoothing"},
        smoothing=lambda wc: smoothing_of(config, wc.arch),  # per architecture: editing it reruns only those
        features=FEATURES,
        code=code_hash("cropchain.mapping.classify", "cropchain.mapping.smoothing",
                       "cropchain.learning.train", "cropchain.series.features", "cropchain.io.products",
                       "cropchain.workflow"),
    log:
        logs("classify/{run}_{arch}_{tile}"),
    benchmark:
        benchmarks("classify/{run}_{arch}_{tile}")
    threads: THREADS
    resources:
        mem_mb=mem_mb("classify"),
        runtime=runtime_min("classify"),
    script:
        "../../scripts/classify.py"


rule mosaic:
    input:
        classifications=expand(
            results("runs/{{run}}/maps/{{arch}}/{tile}_classification.tif"), tile=TILES
        ),
    output:
        mosaic=results("runs/{run}/maps/{arch}/mosaic_classification.tif"),
    params:
        code=code_hash("cropchain.mapping.classify", "cropchain.io.products"),
    log:
        logs("mosaic/{run}_{arch}"),
    benchmark:
        benchmarks("mosaic/{run}_{arch}")
    resources:
        mem_mb=mem_mb("mosaic"),
        runtime=runtime_min("mosaic"),
    script:
        "../../scripts/mosaic.py"
