"""Rule assessment_validation_sample: the run's validation parcels as labelled points
(`assessment.samples: validation`)."""

from cropchain.assessment.olofsson import validation_sample
from cropchain.workflow import run_step


def main(smk):
    validation_sample(
        smk.input.split,
        smk.input.classification,
        smk.output.points,
        reference_field=smk.params.reference_field,
    )


run_step(snakemake, main)  # noqa: F821
