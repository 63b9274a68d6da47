"""Rule mosaic: the classification rasters of all tiles of a run and architecture, mosaicked."""

from cropchain.mapping.classify import mosaic
from cropchain.workflow import run_step


def main(smk):
    mosaic(list(smk.input.classifications), smk.output.mosaic)


run_step(snakemake, main)  # noqa: F821
