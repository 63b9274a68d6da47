"""Rule stac_item: STAC Item beside a tile's final products (one run, one architecture)."""

from cropchain.provenance import write_stac_item
from cropchain.workflow import run_step


def main(smk):
    i, w = smk.input, smk.wildcards
    write_stac_item(
        smk.output.item,
        item_id=f"{w.tile}-{w.arch}-run{w.run}",
        assets={
            "classification": i.classification,
            "confidence": i.confidence,
            "validity": i.validity,
            "uncertainty": i.uncertainty,
            **({"probabilities": i.probabilities} if hasattr(i, "probabilities") else {}),
            "vectors": i.vectors,
            "report": i.report,
            "confusion_matrix": i.confusion,
        },
        dates_file=i.dates,
        config=smk.params.config,
        run=int(w.run),
        seed=smk.params.seed,
        architecture=w.arch,
        tile=w.tile,
        input_products=i.manifest,
        reference_files=list(i.references),
        model_files=[i.model, i.model_meta],
    )


run_step(snakemake, main)  # noqa: F821
