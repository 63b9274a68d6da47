"""Rule gapfill: gap filling onto the regular date grid, or monthly median composites, + validity raster."""

from cropchain.series.composite import monthly_composite_tile
from cropchain.series.gapfill import gapfill_tile
from cropchain.workflow import run_step


def main(smk):
    dates, cfg = smk.params.dates, smk.params.gapfill
    files = (
        smk.input.raw,
        smk.input.mask,
        smk.input.dates,
        smk.output.gapfilled,
        smk.output.dates,
        smk.output.validity,
    )
    coverage = {k: cfg[k] for k in ("max_gap_days", "max_gap_share", "max_unclear_share") if k in cfg}
    if cfg["temporal"] == "monthly_median":
        monthly_composite_tile(
            *files, start=dates["start"], end=dates["end"], day=cfg["composite_day"], **coverage
        )
    else:
        gapfill_tile(
            *files,
            start=dates["start"],
            end=dates["end"],
            step_days=dates["step_days"],
            mode=cfg["mode"],
            backend=cfg["backend"],
            threads=smk.threads,
            **coverage,
        )


run_step(snakemake, main)  # noqa: F821
