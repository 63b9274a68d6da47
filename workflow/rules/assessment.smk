# Accuracy assessment and area estimation (config `assessment`, absent = off), Olofsson et al. (2014):
# a stratified random sampling design of each map (points to photo-interpret) and, given a labelled
# sample (`assessment.samples`), the error-adjusted areas with 95% intervals (cropchain.assessment.olofsson).

ASSESSMENT = config.get("assessment") or {}  # filled by the schema's defaults when given
if not ASSESSMENT.get("enabled"):
    ASSESSMENT = {}
ASSESSMENT_DIR = results("runs/{run}/assessment/{arch}")
CLASSIFICATION = results("runs/{run}/maps/{arch}/{tile}_classification.tif")  # rule classify
# `samples: validation`: each run's validation parcels as labelled points (a test of the mechanics)
VALIDATION_POINTS = f"{ASSESSMENT_DIR}/{{tile}}_validation_points.gpkg"
ASSESSMENT_SAMPLES = (VALIDATION_POINTS if ASSESSMENT.get("samples") == "validation"
                      else ASSESSMENT.get("samples"))


def assessment_outputs():
    """Final products of the assessment (added to `rule all` when `assessment` is configured and enabled)."""
    if not ASSESSMENT:
        return []
    names = ["sample.gpkg"] + (["areas.json"] if ASSESSMENT.get("samples") else [])
    return [results(f"runs/{run}/assessment/{arch}/{tile}_{name}")
            for run in RUNS for arch in ARCHS for tile in TILES for name in names]


rule assessment_design:
    input:
        classification=CLASSIFICATION,
        nomenclature=config["nomenclature"],
    output:
        sample=f"{ASSESSMENT_DIR}/{{tile}}_sample.gpkg",
        design=f"{ASSESSMENT_DIR}/{{tile}}_design.json",
    params:
        assessment={k: v for k, v in ASSESSMENT.items() if k not in ("samples", "enabled")},
        code=code_hash("cropchain.assessment.olofsson"),
    log:
        logs("assessment_design/{run}_{arch}_{tile}"),
    benchmark:
        benchmarks("assessment_design/{run}_{arch}_{tile}")
    resources:
        mem_mb=mem_mb("assessment"),
        runtime=runtime_min("assessment"),
    script:
        "../../scripts/assessment_design.py"


rule assessment_estimate:
    input:
        classification=CLASSIFICATION,
        samples=ASSESSMENT_SAMPLES or [],
        nomenclature=config["nomenclature"],
    output:
        json=f"{ASSESSMENT_DIR}/{{tile}}_areas.json",
        csv=f"{ASSESSMENT_DIR}/{{tile}}_areas.csv",
    params:
        reference_field=ASSESSMENT.get("reference_field"),
        code=code_hash("cropchain.assessment.olofsson"),
    log:
        logs("assessment_estimate/{run}_{arch}_{tile}"),
    benchmark:
        benchmarks("assessment_estimate/{run}_{arch}_{tile}")
    resources:
        mem_mb=mem_mb("assessment"),
        runtime=runtime_min("assessment"),
    script:
        "../../scripts/assessment_estimate.py"


rule assessment_validation_sample:
    input:
        classification=CLASSIFICATION,
        split=results("runs/{run}/tiles/{tile}/split.gpkg"),  # rule split
    output:
        points=VALIDATION_POINTS,
    params:
        reference_field=ASSESSMENT.get("reference_field"),
        code=code_hash("cropchain.assessment.olofsson"),
    log:
        logs("assessment_validation_sample/{run}_{arch}_{tile}"),
    benchmark:
        benchmarks("assessment_validation_sample/{run}_{arch}_{tile}")
    resources:
        mem_mb=mem_mb("assessment"),
        runtime=runtime_min("assessment"),
    script:
        "../../scripts/assessment_validation_sample.py"
