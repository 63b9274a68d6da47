"""Rule assessment_estimate: accuracies and error-adjusted areas of one map from the labelled
sample (Olofsson et al. 2014)."""

from cropchain.assessment.olofsson import assess_map, write_assessment
from cropchain.errors import ConfigError
from cropchain.workflow import run_step


def main(smk):
    if not smk.input.samples:
        raise ConfigError("assessment.samples: not set; give the labelled sample file to estimate areas")
    result = assess_map(
        smk.input.classification,
        smk.input.samples,
        smk.input.nomenclature,
        reference_field=smk.params.reference_field,
    )
    result.update(tile=smk.wildcards.tile, run=int(smk.wildcards.run), architecture=smk.wildcards.arch)
    write_assessment(result, smk.output.json, smk.output.csv)


run_step(snakemake, main)  # noqa: F821
