"""Rule assessment_design: sample size, allocation and stratified random points of one map
(Olofsson et al. 2014)."""

from cropchain.assessment.olofsson import design_sample
from cropchain.workflow import run_step


def main(smk):
    cfg = smk.params.assessment
    design_sample(
        smk.input.classification,
        smk.input.nomenclature,
        smk.output.sample,
        smk.output.design,
        users_accuracy=cfg["users_accuracy"],
        target_se=cfg["target_se"],
        allocation=cfg["allocation"],
        min_per_class=cfg["min_per_class"],
        n_total=cfg.get("sample_size"),
        seed=cfg["seed"],
        reference_field=cfg["reference_field"],
    )


run_step(snakemake, main)  # noqa: F821
