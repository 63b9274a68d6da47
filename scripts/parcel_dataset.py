"""Rule parcel_dataset: the parcel patch series of one tile (32 x 32 px per reference parcel and date)."""

from cropchain.parcels.dataset import build_parcel_dataset
from cropchain.workflow import run_step


def main(smk):
    build_parcel_dataset(
        smk.input.gapfilled,
        smk.input.validity,
        smk.input.reference,
        smk.output.index,
        tile=smk.wildcards.tile,
        patch_size=smk.params.patch_size,
    )


run_step(snakemake, main)  # noqa: F821
