"""Rule vectorize: regularised classification polygons with a minimum mapping unit."""

from cropchain.mapping.vectorize import vectorize_map
from cropchain.nomenclature import read_nomenclature
from cropchain.workflow import run_step


def main(smk):
    cfg = smk.params.vectorize
    vectorize_map(
        smk.input.classification,
        read_nomenclature(smk.input.nomenclature),
        smk.output.vectors,
        mmu_ha=cfg["mmu_ha"],
        majority_radius=cfg["majority_radius"],
        simplify_m=cfg["simplify_m"],
    )


run_step(snakemake, main)  # noqa: F821
