"""Rule majority_vote: a pixel architecture's map aggregated to one label per parcel, with its reports."""

from cropchain.parcels.train import PARCEL_OUTPUTS, majority_vote_tile
from cropchain.workflow import run_step


def main(smk):
    outputs = {key: getattr(smk.output, key) for key in PARCEL_OUTPUTS}
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
