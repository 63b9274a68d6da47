"""Rules predict_parcel / predict_parcel_permuted: parcel map and reports of one model, run and tile."""

from pathlib import Path

from cropchain.parcels.train import PARCEL_OUTPUTS, predict_parcel_tile
from cropchain.workflow import run_step


def main(smk):
    outputs = {key: getattr(smk.output, key) for key in PARCEL_OUTPUTS}
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
