"""Rule reference: fusion of the reference sources on one tile."""

from cropchain.nomenclature import read_nomenclature
from cropchain.reference.fusion import ReferenceSource, fuse_reference, read_mapping_csv
from cropchain.workflow import run_step


def main(smk):
    cfg = smk.params.reference
    sources = []
    for s in cfg["sources"]:
        if "mapping_csv" in s:
            m = s["mapping_csv"]
            mapping = read_mapping_csv(m["path"], m["source_column"], m["code_column"])
        else:
            mapping = dict(s["mapping"])
        sources.append(
            ReferenceSource(
                name=s["name"], path=s["path"], field=s["field"], mapping=mapping, priority=s["priority"]
            )
        )
    fuse_reference(
        sources,
        read_nomenclature(smk.input.nomenclature),
        smk.input.grid,
        smk.output.reference,
        min_area_m2=cfg["min_area_m2"],
    )


run_step(snakemake, main)  # noqa: F821
