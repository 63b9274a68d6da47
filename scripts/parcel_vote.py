"""Rule majority_vote: a pixel architecture's map aggregated to one label per parcel, with its reports."""

from cropchain.parcels.train import majority_vote_tile
from cropchain.workflow import run_step


def main(smk):
    o = smk.output
    outputs = {
        "gpkg": o.gpkg,
        "tif": o.tif,
        "json": o.json,
        "csv": o.csv,
        "png": o.png,
        "pixel_json": o.pixel_json,
    }
    majority_vote_tile(
        smk.input.classification,
        smk.input.split,
        smk.input.nomenclature,
        outputs,
        tile=smk.wildcards.tile,
        run=int(smk.wildcards.run),
        architecture=smk.wildcards.arch,
    )


run_step(snakemake, main)  # noqa: F821
