# Vectorization: regularisation, minimum mapping unit, polygons in GeoPackage (cropchain.mapping.vectorize).


rule vectorize:
    input:
        classification=rules.classify.output.classification,
        nomenclature=config["nomenclature"],
    output:
        vectors=results("runs/{run}/vectors/{arch}/{tile}.gpkg"),
    params:
        vectorize=config["vectorize"],
        code=code_hash("cropchain.mapping.vectorize"),
    log:
        logs("vectorize/{run}_{arch}_{tile}"),
    benchmark:
        benchmarks("vectorize/{run}_{arch}_{tile}")
    resources:
        mem_mb=mem_mb("vectorize"),
        runtime=runtime_min("vectorize"),
    script:
        "../../scripts/vectorize.py"
