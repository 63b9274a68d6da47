"""Rule map_page: the page of one map (quicklook with legend, confusion matrix, accuracies, areas,
training curves)."""

from cropchain.assessment.report import write_map_page
from cropchain.workflow import run_step


def main(smk):
    write_map_page(
        smk.input.classification,
        smk.input.report,
        smk.input.confusion,
        smk.input.nomenclature,
        smk.output.html,
        smk.output.quicklook,
        areas_json=getattr(smk.input, "areas", None),
        curves_png=getattr(smk.input, "curves", None),
        summary_html=smk.params.summary,
    )


run_step(snakemake, main)  # noqa: F821
