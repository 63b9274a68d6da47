"""Rule evaluate: accuracy report of one map on the validation polygons of its run (with the
assessment's estimated areas when `assessment.samples` is set)."""

from cropchain.assessment.evaluate import evaluate_map, write_report
from cropchain.assessment.olofsson import read_assessment, report_areas
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
    areas_json = getattr(smk.input, "areas", None)  # report.smk's assessment_areas
    if areas_json:
        report.update(report_areas(read_assessment(areas_json)))
    write_report(report, smk.output.json, smk.output.csv, smk.output.png, nomenclature)


run_step(snakemake, main)  # noqa: F821
