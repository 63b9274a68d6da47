"""Rule ingest: the images of a tile (SAFE, Theia, GeoTIFF stacks) -> raw.tif, raw_mask.tif, raw_dates.txt."""

from cropchain.sources import ingest_tile
from cropchain.workflow import run_step


def main(smk):
    ingest_tile(
        smk.params.source,
        smk.params.ingest,
        (smk.output.raw, smk.output.mask, smk.output.dates),
        tile=smk.wildcards.tile,
        products=smk.input.products,
        scl_masked=smk.params.scl_masked,
    )


run_step(snakemake, main)  # noqa: F821
