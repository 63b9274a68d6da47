"""Rule samples: pixel table (Parquet) of a run over all tiles."""

from cropchain.learning.samples import extract_pixels, run_tiles
from cropchain.workflow import feature_specs, run_step


def main(smk):
    features = feature_specs(smk.input.gapfilled, smk.input.dates, smk.params.features)
    tiles = run_tiles(smk.params.tiles, features, smk.input.validity, smk.input.split)
    cap = smk.params.samples.get("max_learn_pixels_per_class")
    extract_pixels(tiles, smk.output.pixels, max_learn_pixels_per_class=cap, seed=smk.params.seed)


run_step(snakemake, main)  # noqa: F821
