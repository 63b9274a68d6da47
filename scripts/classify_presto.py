"""Rule classify_presto: tiled inference of a head on Presto embeddings, computed per window."""
from pathlib import Path

from cropchain.classify import classify_tile
from cropchain.io.products import write_cog
from cropchain.nomenclature import read_nomenclature
from cropchain.presto_features import presto_spec
from cropchain.train import load_model
from cropchain.workflow import run_step


def main(smk):
    cfg = smk.params.classify
    model = load_model(Path(smk.input.model).parent, threads=smk.threads)
    features = presto_spec(smk.input.raw, smk.input.mask, smk.input.raw_dates, smk.input.weights, smk.params.presto, smk.params.start)
    # a pixel classifier: margin 0, only the core windows are embedded
    classify_tile(features, smk.input.validity, model, read_nomenclature(smk.input.nomenclature),
                  smk.output.classification, smk.output.confidence, window=cfg["window"], overlap=cfg["overlap"],
                  out_probabilities=getattr(smk.output, "probabilities", None), out_uncertainty=smk.output.uncertainty,
                  uncertainty=cfg["uncertainty"], smoothing=smk.params.smoothing)
    write_cog(smk.input.validity, smk.output.validity, overview_resampling="nearest")  # beside the map, as iota2 does


run_step(snakemake, main)  # noqa: F821
