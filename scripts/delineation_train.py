"""Rule delineation_train: a Mask R-CNN of one input variant on the learning parcels of one run."""

from pathlib import Path

from cropchain.delineation.fields import train_delineation
from cropchain.workflow import feature_specs, run_step


def main(smk):
    train_delineation(
        feature_specs(smk.input.gapfilled, smk.input.dates, smk.params.features),
        list(smk.input.splits),
        smk.wildcards.dvariant,
        dict(smk.params.settings),
        Path(smk.output.model).parent,
        seed=smk.params.seed,
        threads=smk.threads,
        training=dict(smk.params.training),
    )


run_step(snakemake, main)  # noqa: F821
