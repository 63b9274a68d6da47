"""Rules train_parcel / train_parcel_permuted: one parcel model on the learning parcels of one run."""

from pathlib import Path

from cropchain.parcels.train import train_parcel_model
from cropchain.workflow import run_step


def main(smk):
    train_parcel_model(
        list(smk.input.datasets),
        list(smk.input.splits),
        smk.wildcards.pmodel,
        dict(smk.params.settings),
        Path(smk.output.model).parent,
        seed=smk.params.seed,
        threads=smk.threads,
        training_defaults=dict(smk.params.training),
        permute=smk.params.permute,
    )


run_step(snakemake, main)  # noqa: F821
