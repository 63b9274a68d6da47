"""Rule manifest: checksums of a tile's input products."""

from cropchain.provenance import input_manifest
from cropchain.workflow import run_step


def main(smk):
    input_manifest(list(smk.input.products), smk.output.manifest)


run_step(snakemake, main)  # noqa: F821
