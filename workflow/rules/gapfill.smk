# Temporal gap filling onto the regular date grid (cropchain.gapfill, OTB ImageTimeSeriesGapFilling semantics).


rule gapfill:
    input:
        raw=rules.ingest.output.raw,
        mask=rules.ingest.output.mask,
        dates=rules.ingest.output.dates,
    output:
        gapfilled=f"{RESULTS}/tiles/{{tile}}/gapfilled.tif",
        dates=f"{RESULTS}/tiles/{{tile}}/dates.txt",
        validity=f"{RESULTS}/tiles/{{tile}}/validity.tif",
    params:
        dates=config["dates"],
        gapfill=config["gapfill"],
        code=code_hash("cropchain.gapfill"),
    log:
        f"{RESULTS}/logs/gapfill/{{tile}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/gapfill/{{tile}}.tsv"
    resources:
        mem_mb=2000,
    script:
        "../../scripts/gapfill.py"
