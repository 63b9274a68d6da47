"""Rule features: gap-filled bands + NDVI, NDWI, brightness per date."""
from cropchain.features import compute_features
from cropchain.workflow import run_step


def main(smk):
    compute_features(smk.input.gapfilled, smk.input.dates, smk.output.features, bands=list(smk.params.bands),
                     indices=tuple(smk.params.features["indices"]))


run_step(snakemake, main)  # noqa: F821
