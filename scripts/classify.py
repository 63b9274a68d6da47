"""Rule classify: tiled inference of one model on one tile."""
import shutil
from pathlib import Path

from cropchain.classify import classify_tile
from cropchain.io.atomic import atomic_output
from cropchain.nomenclature import read_nomenclature
from cropchain.train import load_model
from cropchain.workflow import run_step


def main(smk):
    cfg = smk.params.classify
    model = load_model(Path(smk.input.model).parent, threads=smk.threads)
    classify_tile(smk.input.features, smk.input.validity, model, read_nomenclature(smk.input.nomenclature),
                  smk.output.classification, smk.output.confidence, window=cfg["window"], overlap=cfg["overlap"])
    with atomic_output(smk.output.validity) as tmp:  # the validity raster beside the map, as iota2 does
        shutil.copyfile(smk.input.validity, tmp)


run_step(snakemake, main)  # noqa: F821
