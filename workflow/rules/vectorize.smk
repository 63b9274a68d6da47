# Vectorization: regularisation, minimum mapping unit, polygons in GeoPackage (cropchain.mapping.vectorize).


rule vectorize:
    input:
        classification=rules.classify.output.classification,
        nomenclature=config["nomenclature"],
    output:
        vectors=f"{RESULTS}/runs/{{run}}/vectors/{{arch}}/{{tile}}.gpkg",
    params:
        vectorize=config["vectorize"],
        code=code_hash("cropchain.mapping.vectorize"),
    log:
        f"{RESULTS}/logs/vectorize/{{run}}_{{arch}}_{{tile}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/vectorize/{{run}}_{{arch}}_{{tile}}.tsv"
    resources:
        mem_mb=mem_mb("vectorize"),
        runtime=runtime_min("vectorize"),
    script:
        "../../scripts/vectorize.py"
