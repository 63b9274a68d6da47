"""Rule ingest: Sentinel-2 L2A SAFE products of a tile -> raw.tif, raw_mask.tif, raw_dates.txt."""
from cropchain.io.sentinel2 import find_safe_products, ingest_safe
from cropchain.workflow import run_step


def main(smk):
    cfg = smk.params.ingest
    products = find_safe_products(list(smk.input.products))
    ingest_safe(products, smk.output.raw, smk.output.mask, smk.output.dates, bands=cfg["bands"],
                scl_masked_classes=cfg["scl_masked_classes"], resampling=cfg["resampling"], tile=None)


run_step(snakemake, main)  # noqa: F821
