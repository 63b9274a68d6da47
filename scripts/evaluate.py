"""Rule evaluate: accuracy report of one map on the validation polygons of its run."""

from cropchain.assessment.evaluate import evaluate_map, write_report
from cropchain.nomenclature import read_nomenclature
from cropchain.workflow import run_step


def main(smk):
    nomenclature = read_nomenclature(smk.input.nomenclature)
    report = evaluate_map(
        smk.input.classification,
        smk.input.split,
        nomenclature,
        tile=smk.wildcards.tile,
        run=int(smk.wildcards.run),
        architecture=smk.wildcards.arch,
    )
    write_report(report, smk.output.json, smk.output.csv, smk.output.png, nomenclature)


run_step(snakemake, main)  # noqa: F821
