"""Rule delineation_predict: field polygons of one tile with a run's Mask R-CNN (tiled inference)."""
from pathlib import Path

from cropchain.delineation import predict_delineation
from cropchain.workflow import run_step


def main(smk):
    predict_delineation(Path(smk.input.model).parent, smk.input.features, smk.output.fields, dict(smk.params.inference),
                        threads=smk.threads)


run_step(snakemake, main)  # noqa: F821
