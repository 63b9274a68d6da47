# Training of one architecture per run: pixel classifiers on the learning pixels (cropchain.learning.train),
# convolutional networks on patches of the feature rasters (cropchain.learning.train_network).
# Both write runs/{run}/models/{arch}/model.json, the input of the inference and provenance rules.
from cropchain.models import BUILTIN as MODEL_BUILTIN

PIXEL_ARCHS = [a for a, (_, k) in MODEL_BUILTIN.items() if k == "pixel"]
NETWORK_ARCHS = [a for a, (_, k) in MODEL_BUILTIN.items() if k == "network"]


def model_weights(wildcards):
    """The weights file of a trained model: model.pt for a network, model.joblib otherwise."""
    name = "model.pt" if wildcards.arch in NETWORK_ARCHS else "model.joblib"
    return results(f"runs/{wildcards.run}/models/{wildcards.arch}/{name}")


rule train:
    input:
        pixels=rules.samples.output.pixels,
    output:
        model=results("runs/{run}/models/{arch}/model.joblib"),
        meta=results("runs/{run}/models/{arch}/model.json"),
        metrics=results("runs/{run}/models/{arch}/metrics.json"),
    wildcard_constraints:
        arch="|".join(PIXEL_ARCHS),
    params:
        hyperparameters=lambda wc: config["architectures"][wc.arch],
        seed=run_seed,
        code=lambda wc: code_hash("cropchain.learning.train",
                                  f"cropchain.models.{MODEL_BUILTIN[wc.arch][0]}"),
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


rule train_network:
    input:
        **series_of(TILES),
        validity=expand(results("tiles/{tile}/validity.tif"), tile=TILES),
        split=expand(results("runs/{{run}}/tiles/{tile}/split.gpkg"), tile=TILES),
    output:
        model=results("runs/{run}/models/{arch}/model.pt"),
        meta=results("runs/{run}/models/{arch}/model.json"),
        metrics=results("runs/{run}/models/{arch}/metrics.json"),
        curves=report(
            results("runs/{run}/models/{arch}/training_curves.png"),
            caption="../report/training_curves.rst",
            category="Training curves",
            subcategory="{arch}",
            labels={"run": "{run}", "architecture": "{arch}"},
        ),
    wildcard_constraints:
        arch="|".join(NETWORK_ARCHS),
    params:
        tiles=TILES,
        hyperparameters=lambda wc: config["architectures"][wc.arch],
        features=FEATURES,
        seed=run_seed,
        code=lambda wc: code_hash("cropchain.learning.train_network", "cropchain.series.features",
                                  "cropchain.learning.patches", "cropchain.models.networks",
                                  f"cropchain.models.{MODEL_BUILTIN[wc.arch][0]}"),
    log:
        logs("train/{run}_{arch}"),
    benchmark:
        benchmarks("train/{run}_{arch}")
    threads: THREADS
    resources:
        mem_mb=mem_mb("train_network"),
        runtime=runtime_min("train"),
    script:
        "../../scripts/train_network.py"
