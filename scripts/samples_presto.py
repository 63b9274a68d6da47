"""Rule samples_presto: pixel table of a run whose features are the Presto embeddings."""

from cropchain.learning.presto_features import presto_spec
from cropchain.learning.samples import extract_pixels
from cropchain.workflow import run_step


def main(smk):
    tiles = [
        dict(
            tile=t,
            features=presto_spec(r, m, d, smk.input.weights, smk.params.presto, smk.params.start),
            validity=v,
            split=s,
        )
        for t, r, m, d, v, s in zip(
            smk.params.tiles,
            smk.input.raw,
            smk.input.mask,
            smk.input.raw_dates,
            smk.input.validity,
            smk.input.split,
        )
    ]
    extract_pixels(
        tiles,
        smk.output.pixels,
        max_learn_pixels_per_class=smk.params.samples.get("max_learn_pixels_per_class"),
        seed=smk.params.seed,
    )


run_step(snakemake, main)  # noqa: F821
