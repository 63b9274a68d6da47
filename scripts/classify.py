"""Rule classify: tiled inference of one model on one tile."""

from cropchain.workflow import classify_job, feature_specs, run_step


def main(smk):
    classify_job(smk, feature_specs(smk.input.gapfilled, smk.input.dates, smk.params.features)[0])


run_step(snakemake, main)  # noqa: F821
