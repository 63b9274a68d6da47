"""Rule classify_presto: tiled inference of a head on Presto embeddings, computed per window."""

from cropchain.learning.presto_features import presto_spec
from cropchain.workflow import classify_job, run_step


def main(smk):
    # a pixel classifier: margin 0, only the core windows are embedded
    classify_job(
        smk,
        presto_spec(
            smk.input.raw,
            smk.input.mask,
            smk.input.raw_dates,
            smk.input.weights,
            smk.params.presto,
            smk.params.start,
            inputs=smk.params.inputs,
        ),
    )


run_step(snakemake, main)  # noqa: F821
