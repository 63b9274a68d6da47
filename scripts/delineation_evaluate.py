"""Rules delineation_evaluate / delineation_baseline: RC-matching scores of field polygons on the
validation parcels."""

from cropchain.delineation.metrics import evaluate_instances
from cropchain.workflow import run_step


def main(smk):
    evaluate_instances(
        smk.input.predictions,
        smk.input.split,
        smk.output.report,
        smk.output.curves,
        smk.output.png,
        smk.output.targets,
        name=smk.params.name,
        tile=smk.wildcards.tile,
        run=smk.wildcards.run,
        kind=smk.params.kind,
    )


run_step(snakemake, main)  # noqa: F821
