"""Rule classify: tiled inference of one model on one tile."""
from pathlib import Path

from cropchain.classify import classify_tile
from cropchain.io.products import write_cog
from cropchain.nomenclature import read_nomenclature
from cropchain.train import load_model
from cropchain.workflow import feature_specs, run_step


def main(smk):
    cfg = smk.params.classify
    model = load_model(Path(smk.input.model).parent, threads=smk.threads)
    features = feature_specs(smk.input.gapfilled, smk.input.dates, smk.params.features)[0]
    classify_tile(features, smk.input.validity, model, read_nomenclature(smk.input.nomenclature),
                  smk.output.classification, smk.output.confidence, window=cfg["window"], overlap=cfg["overlap"],
                  out_probabilities=getattr(smk.output, "probabilities", None), out_uncertainty=smk.output.uncertainty,
                  uncertainty=cfg["uncertainty"], smoothing=smk.params.smoothing)
    write_cog(smk.input.validity, smk.output.validity, overview_resampling="nearest")  # beside the map, as iota2 does


run_step(snakemake, main)  # noqa: F821
