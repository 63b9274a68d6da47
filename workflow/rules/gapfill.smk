# Temporal step onto the output dates: gap filling (cropchain.series.gapfill, OTB ImageTimeSeriesGapFilling
# semantics) or monthly median composites (cropchain.series.composite), chosen by gapfill.temporal.


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
        code=code_hash("cropchain.series.gapfill", "cropchain.series.composite"),
    log:
        f"{RESULTS}/logs/gapfill/{{tile}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/gapfill/{{tile}}.tsv"
    threads: THREADS
    resources:
        mem_mb=mem_mb("gapfill"),
        runtime=runtime_min("gapfill"),
    script:
        "../../scripts/gapfill.py"
