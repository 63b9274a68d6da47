"""Rule samples_presto: pixel table of a run whose features are the Presto embeddings."""

from cropchain.learning.presto_features import presto_spec
from cropchain.learning.samples import extract_pixels, run_tiles
from cropchain.workflow import run_step


def main(smk):
    features = [
        presto_spec(r, m, d, smk.input.weights, smk.params.presto, smk.params.start, inputs=smk.params.inputs)
        for r, m, d in zip(smk.input.raw, smk.input.mask, smk.input.raw_dates)
    ]
    tiles = run_tiles(smk.params.tiles, features, smk.input.validity, smk.input.split)
    cap = smk.params.samples.get("max_learn_pixels_per_class")
    extract_pixels(tiles, smk.output.pixels, max_learn_pixels_per_class=cap, seed=smk.params.seed)


run_step(snakemake, main)  # noqa: F821
