# Pixel samples of a run, all tiles, in Parquet (cropchain.learning.samples).


rule samples:
    input:
        **series_of(TILES),
        validity=expand(f"{RESULTS}/tiles/{{tile}}/validity.tif", tile=TILES),
        split=expand(f"{RESULTS}/runs/{{{{run}}}}/tiles/{{tile}}/split.gpkg", tile=TILES),
    output:
        pixels=f"{RESULTS}/runs/{{run}}/pixels.parquet",
    params:
        tiles=TILES,
        samples=config["samples"],
        features=FEATURES,
        seed=lambda wc: config["split"]["seed"] + int(wc.run),
        code=code_hash("cropchain.learning.samples", "cropchain.series.features"),
    log:
        f"{RESULTS}/logs/samples/{{run}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/samples/{{run}}.tsv"
    threads: THREADS  # GDAL decodes and encodes blocks on them (GDAL_NUM_THREADS)
    resources:
        mem_mb=mem_mb("samples"),
        runtime=runtime_min("samples"),
    script:
        "../../scripts/samples.py"
