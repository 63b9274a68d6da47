# Pixel samples of a run, all tiles, in Parquet (cropchain.learning.samples).


rule samples:
    input:
        **series_of(TILES),
        validity=expand(results("tiles/{tile}/validity.tif"), tile=TILES),
        split=expand(results("runs/{{run}}/tiles/{tile}/split.gpkg"), tile=TILES),
    output:
        pixels=results("runs/{run}/pixels.parquet"),
    params:
        tiles=TILES,
        samples=config["samples"],
        features=FEATURES,
        seed=run_seed,
        code=code_hash("cropchain.learning.samples", "cropchain.series.features"),
    log:
        logs("samples/{run}"),
    benchmark:
        benchmarks("samples/{run}")
    threads: THREADS  # GDAL decodes and encodes blocks on them (GDAL_NUM_THREADS)
    resources:
        mem_mb=mem_mb("samples"),
        runtime=runtime_min("samples"),
    script:
        "../../scripts/samples.py"
