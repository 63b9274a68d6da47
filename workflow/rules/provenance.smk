# Provenance (cropchain.provenance): checksums of each tile's input products, and a STAC Item
# beside each tile's final products with the config, versions, inputs and seed.


rule manifest:
    input:
        products=tile_products,
    output:
        manifest=results("tiles/{tile}/inputs.json"),
    params:
        products=tile_products_stamp,  # content of the product folders (common.smk)
        code=code_hash("cropchain.provenance"),
    log:
        logs("manifest/{tile}"),
    benchmark:
        benchmarks("manifest/{tile}")
    resources:
        mem_mb=mem_mb("manifest"),
        runtime=runtime_min("manifest"),
    script:
        "../../scripts/manifest.py"


rule stac_item:
    input:
        classification=rules.classify.output.classification,
        confidence=rules.classify.output.confidence,
        validity=rules.classify.output.validity,
        uncertainty=rules.classify.output.uncertainty,
        **PROBABILITIES,  # classify.smk: with classify.probabilities only
        vectors=rules.vectorize.output.vectors,
        report=rules.evaluate.output.json,
        confusion=rules.evaluate.output.csv,
        dates=rules.gapfill.output.dates,
        manifest=rules.manifest.output.manifest,
        references=reference_inputs() + [config["nomenclature"]],
        model=model_weights,  # model.joblib or model.pt (train.smk)
        model_meta=results("runs/{run}/models/{arch}/model.json"),
    output:
        item=results("runs/{run}/maps/{arch}/{tile}_item.json"),
    params:
        config=config,
        seed=run_seed,
        code=code_hash("cropchain.provenance"),
    log:
        logs("stac_item/{run}_{arch}_{tile}"),
    benchmark:
        benchmarks("stac_item/{run}_{arch}_{tile}")
    resources:
        mem_mb=mem_mb("stac_item"),
        runtime=runtime_min("stac_item"),
    script:
        "../../scripts/stac_item.py"
