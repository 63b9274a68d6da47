"""Rule delineation_predict: field polygons of one tile with a run's Mask R-CNN (tiled inference)."""

from pathlib import Path

from cropchain.delineation.fields import predict_delineation
from cropchain.workflow import feature_specs, run_step


def main(smk):
    predict_delineation(
        Path(smk.input.model).parent,
        feature_specs(smk.input.gapfilled, smk.input.dates, smk.params.features)[0],
        smk.output.fields,
        dict(smk.params.inference),
        threads=smk.threads,
    )


run_step(snakemake, main)  # noqa: F821
