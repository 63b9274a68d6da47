"""Rule train: one architecture on the learning pixels of one run."""

from pathlib import Path

from cropchain.learning.train import train_model
from cropchain.workflow import run_step


def main(smk):
    train_model(
        smk.input.pixels,
        smk.wildcards.arch,
        dict(smk.params.hyperparameters),
        Path(smk.output.model).parent,
        seed=smk.params.seed,
        threads=smk.threads,
    )


run_step(snakemake, main)  # noqa: F821
