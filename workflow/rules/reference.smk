# Reference fusion per tile (cropchain.reference.fusion) and learning/validation split per run
# (cropchain.reference.split).


rule reference:
    input:
        sources=reference_inputs(),
        nomenclature=config["nomenclature"],
        grid=rules.ingest.output.mask,  # the tile grid; raw.tif may be a temp() file (ingest.keep_raw)
    output:
        reference=results("tiles/{tile}/reference.gpkg"),
    params:
        reference=config["reference"],
        code=code_hash("cropchain.reference.fusion"),
    log:
        logs("reference/{tile}"),
    benchmark:
        benchmarks("reference/{tile}")
    resources:
        mem_mb=mem_mb("reference"),
        runtime=runtime_min("reference"),
    script:
        "../../scripts/reference.py"


rule split:
    input:
        reference=rules.reference.output.reference,
    output:
        split=results("runs/{run}/tiles/{tile}/split.gpkg"),
    params:
        # the ratio and seed, not the number of runs: adding a run leaves the others as they are
        split={"ratio": config["split"]["ratio"], "seed": config["split"]["seed"]},
        code=code_hash("cropchain.reference.split"),
    log:
        logs("split/{run}_{tile}"),
    benchmark:
        benchmarks("split/{run}_{tile}")
    resources:
        mem_mb=mem_mb("split"),
        runtime=runtime_min("split"),
    script:
        "../../scripts/split.py"
