# Ingest: Sentinel-2 L2A SAFE products -> raw.tif, raw_mask.tif, raw_dates.txt (cropchain.io.sentinel2).


rule ingest:
    input:
        products=safe_products,
    output:
        raw=f"{RESULTS}/tiles/{{tile}}/raw.tif",
        mask=f"{RESULTS}/tiles/{{tile}}/raw_mask.tif",
        dates=f"{RESULTS}/tiles/{{tile}}/raw_dates.txt",
    params:
        ingest=config["ingest"],
        code=code_hash("cropchain.io.sentinel2", "cropchain.io.raster"),
    log:
        f"{RESULTS}/logs/ingest/{{tile}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/ingest/{{tile}}.tsv"
    resources:
        mem_mb=4000,
    script:
        "../../scripts/ingest.py"
