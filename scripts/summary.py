"""Rule summary: metrics across tiles, runs (mean +- std) and architectures, as CSV and HTML,
linking each map page."""

from cropchain.assessment.report import summarize
from cropchain.workflow import run_step


def main(smk):
    summarize(
        list(smk.input.reports),
        smk.output.csv,
        smk.output.html,
        pages=list(smk.input.pages),
        quicklooks=list(smk.input.quicklooks),
    )


run_step(snakemake, main)  # noqa: F821
