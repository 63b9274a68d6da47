"""Rule train_network: one convolutional network on patches of the features of one run."""

from pathlib import Path

from cropchain.learning.train_network import train_network
from cropchain.workflow import feature_specs, run_step


def main(smk):
    classify = smk.config["classify"]  # read here, not as a param: a new overlap must not retrain
    train_network(
        feature_specs(smk.input.gapfilled, smk.input.dates, smk.params.features),
        list(smk.input.validity),
        list(smk.input.split),
        smk.wildcards.arch,
        dict(smk.params.hyperparameters),
        Path(smk.output.model).parent,
        seed=smk.params.seed,
        threads=smk.threads,
        tiles=list(smk.params.tiles),
        classify_window=classify["window"],
        classify_overlap=classify["overlap"],
    )


run_step(snakemake, main)  # noqa: F821
