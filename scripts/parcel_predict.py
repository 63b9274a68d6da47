"""Rules predict_parcel / predict_parcel_permuted: parcel map and reports of one model, run and tile."""

from pathlib import Path

from cropchain.parcels.train import predict_parcel_tile
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
    predict_parcel_tile(
        Path(smk.input.model).parent,
        smk.input.dataset,
        smk.input.split,
        smk.input.grid,
        smk.input.nomenclature,
        outputs,
        tile=smk.wildcards.tile,
        run=int(smk.wildcards.run),
        threads=smk.threads,
        permute=smk.params.permute,
    )


run_step(snakemake, main)  # noqa: F821
