"""Rule demo_products: synthetic Sentinel-2 L2A SAFE products of one demo tile."""

from cropchain.demo import generate_demo_products
from cropchain.workflow import run_step


def main(smk):
    demo, spec = smk.params.demo, smk.params.spec
    generate_demo_products(
        smk.output[0],
        smk.wildcards.tile,
        seed=demo["seed"],
        width=spec["width"],
        height=spec["height"],
        origin=tuple(spec["origin"]),
        year=demo["year"],
    )


run_step(snakemake, main)  # noqa: F821
