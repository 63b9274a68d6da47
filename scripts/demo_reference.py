"""Rule demo_reference: the demo's two reference sources (RPG-like parcels, Corine-like land cover)."""

from cropchain.demo import generate_demo_references
from cropchain.workflow import run_step


def main(smk):
    paths = generate_demo_references(
        smk.output.parcels.rsplit("/", 1)[0], smk.params.specs, seed=smk.params.demo["seed"]
    )
    missing = {str(p) for p in (smk.output.parcels, smk.output.landcover)} - {str(p) for p in paths.values()}
    if missing:
        raise RuntimeError(f"demo generator did not write {sorted(missing)}")


run_step(snakemake, main)  # noqa: F821
