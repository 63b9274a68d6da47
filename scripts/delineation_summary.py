"""Rule delineation_summary: mean and spread over runs of the delineation scores, training times."""

from cropchain.delineation.metrics import summarize_delineation
from cropchain.workflow import run_step


def main(smk):
    summarize_delineation(list(smk.input.reports), list(smk.input.metrics), smk.output.csv, smk.output.html)


run_step(snakemake, main)  # noqa: F821
