"""Rule gapfill: gap filling onto the regular date grid, or monthly median composites, + validity raster."""

from cropchain.series.temporal import fill_series
from cropchain.workflow import run_step


def main(smk):
    fill_series(
        smk.input.raw,
        smk.input.mask,
        smk.input.dates,
        smk.output.gapfilled,
        smk.output.dates,
        smk.output.validity,
        dates=smk.params.dates,
        gapfill=smk.params.gapfill,
        threads=smk.threads,
    )


run_step(snakemake, main)  # noqa: F821
