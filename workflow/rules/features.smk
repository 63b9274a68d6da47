# Spectral features: gap-filled bands + NDVI, NDWI, brightness per date (cropchain.features).


rule features:
    input:
        gapfilled=rules.gapfill.output.gapfilled,
        dates=rules.gapfill.output.dates,
    output:
        features=f"{RESULTS}/tiles/{{tile}}/features.tif",
    params:
        bands=config["ingest"]["bands"],
        features=config["features"],
        code=code_hash("cropchain.features"),
    log:
        f"{RESULTS}/logs/features/{{tile}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/features/{{tile}}.tsv"
    resources:
        mem_mb=mem_mb("features"),
        runtime=runtime_min("features"),
    script:
        "../../scripts/features.py"
