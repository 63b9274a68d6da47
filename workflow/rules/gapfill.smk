# Temporal step onto the output dates: gap filling (cropchain.series.gapfill, OTB ImageTimeSeriesGapFilling
# semantics) or monthly median composites (cropchain.series.composite), chosen by gapfill.temporal.


rule gapfill:
    input:
        raw=rules.ingest.output.raw,
        mask=rules.ingest.output.mask,
        dates=rules.ingest.output.dates,
    output:
        gapfilled=results("tiles/{tile}/gapfilled.tif"),
        dates=results("tiles/{tile}/dates.txt"),
        validity=results("tiles/{tile}/validity.tif"),
    params:
        dates=config["dates"],
        gapfill=config["gapfill"],
        code=code_hash("cropchain.series.temporal"),  # and what it imports: gapfill, composite, dates, tile
    log:
        logs("gapfill/{tile}"),
    benchmark:
        benchmarks("gapfill/{tile}")
    threads: THREADS
    resources:
        mem_mb=mem_mb("gapfill"),
        runtime=runtime_min("gapfill"),
    script:
        "../../scripts/gapfill.py"
