# Ingest: a tile's images -> raw.tif, raw_mask.tif, raw_dates.txt, whatever the source
# (cropchain.sources.sentinel2: SAFE L2A and the demo; cropchain.sources.theia: Theia / MAJA L2A;
# cropchain.sources.stack: per-date GeoTIFFs or one multi-band GeoTIFF with a dates file).
from cropchain.models import PRESTO_ARCHS
from cropchain.sources.sentinel2 import scl_masked_for_kept


def keep_raw():
    """ingest.keep_raw, or when null: whether a Presto architecture (which reads raw.tif in every
    run) is configured."""
    keep = config["ingest"].get("keep_raw")  # a null default is not filled in
    return any(a in PRESTO_ARCHS for a in config["architectures"]) if keep is None else bool(keep)


def ingest_scl_masked():
    """SCL classes masked when ingesting SAFE products: ingest.scl_masked_classes for gap filling;
    every class but gapfill.scl_kept_classes (4-7 by default) for monthly composites."""
    if config["gapfill"]["temporal"] == "monthly_median":
        return scl_masked_for_kept(config["gapfill"]["scl_kept_classes"])
    return list(config["ingest"]["scl_masked_classes"])


rule ingest:
    input:
        products=tile_products,
    output:
        # temp() unless kept (keep_raw()): deleted once gap filling has read it
        raw=results("tiles/{tile}/raw.tif") if keep_raw() else temp(results("tiles/{tile}/raw.tif")),
        mask=results("tiles/{tile}/raw_mask.tif"),
        dates=results("tiles/{tile}/raw_dates.txt"),
    params:
        source=lambda wc: config["tiles"][wc.tile],
        ingest={k: v for k, v in config["ingest"].items() if k != "keep_raw"},  # what the series depends on
        scl_masked=ingest_scl_masked(),
        products=tile_products_stamp,  # content of the product folders (common.smk)
        code=code_hash("cropchain.sources", "cropchain.io.raster"),
    log:
        logs("ingest/{tile}"),
    benchmark:
        benchmarks("ingest/{tile}")
    threads: THREADS  # GDAL decodes and encodes blocks on them (GDAL_NUM_THREADS)
    resources:
        mem_mb=mem_mb("ingest"),
        runtime=runtime_min("ingest"),
    script:
        "../../scripts/ingest.py"
