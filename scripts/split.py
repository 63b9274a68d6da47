"""Rule split: learning/validation split of a tile's reference polygons for one run."""

from cropchain.reference.split import split_polygons
from cropchain.workflow import run_step


def main(smk):
    cfg = smk.params.split
    split_polygons(
        smk.input.reference,
        smk.output.split,
        ratio=cfg["ratio"],
        seed=cfg["seed"],
        run=int(smk.wildcards.run),
        tile=smk.wildcards.tile,
    )


run_step(snakemake, main)  # noqa: F821
