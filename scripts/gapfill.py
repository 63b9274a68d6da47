"""Rule gapfill: gap filling onto the regular date grid + validity raster."""
from cropchain.gapfill import gapfill_tile
from cropchain.workflow import run_step


def main(smk):
    dates, cfg = smk.params.dates, smk.params.gapfill
    gapfill_tile(smk.input.raw, smk.input.mask, smk.input.dates, smk.output.gapfilled, smk.output.dates,
                 smk.output.validity, start=dates["start"], end=dates["end"], step_days=dates["step_days"],
                 mode=cfg["mode"], backend=cfg["backend"])


run_step(snakemake, main)  # noqa: F821
