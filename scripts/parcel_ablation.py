"""Rule parcel_ablation: F-score change of each parcel model when the dates are randomly permuted."""

from cropchain.parcels.train import ablation_table
from cropchain.workflow import run_step


def main(smk):
    ablation_table(list(smk.input.reports), list(smk.input.permuted), smk.output.csv)


run_step(snakemake, main)  # noqa: F821
