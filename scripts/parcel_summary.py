"""Rule parcel_summary: parcel-level and pixel-level summaries of the parcel models and votes,
training times."""

from cropchain.assessment.report import summarize
from cropchain.parcels.train import training_table
from cropchain.workflow import run_step


def main(smk):
    summarize(list(smk.input.reports), smk.output.csv, smk.output.html)
    summarize(list(smk.input.pixel_reports), smk.output.pixel_csv, smk.output.pixel_html)
    training_table(list(smk.input.metrics), smk.output.training)


run_step(snakemake, main)  # noqa: F821
