# Reports: per tile/run/architecture on the validation polygons (cropchain.assessment.evaluate), a page
# per map (quicklook, confusion matrix, accuracies, areas, training curves) and the summary
# (cropchain.assessment.report).


def assessment_areas(wildcards):
    """The map's area estimates (rule assessment_estimate of assessment.smk, which reads no report) as
    an optional input `areas`: with `assessment.samples` only."""
    if not ASSESSMENT.get("samples"):
        return {}
    run, arch, tile = wildcards.run, wildcards.arch, wildcards.tile
    return {"areas": results(f"runs/{run}/assessment/{arch}/{tile}_areas.json")}


def evaluate_code(wildcards):
    """The evaluate job's code: with the area estimates, the module that reads them too."""
    areas = ["cropchain.assessment.olofsson"] if assessment_areas(wildcards) else []
    return code_hash("cropchain.assessment.evaluate", *areas)


rule evaluate:
    input:
        unpack(assessment_areas),
        classification=rules.classify.output.classification,
        split=rules.split.output.split,
        nomenclature=config["nomenclature"],
    output:
        json=results("runs/{run}/reports/{arch}/{tile}.json"),
        csv=results("runs/{run}/reports/{arch}/{tile}_confusion.csv"),
        png=report(
            results("runs/{run}/reports/{arch}/{tile}_confusion.png"),
            caption="../report/confusion.rst",
            category="Confusion matrices",
            subcategory="{arch}",
            labels={"tile": "{tile}", "run": "{run}", "architecture": "{arch}"},
        ),
    params:
        code=evaluate_code,
    log:
        logs("evaluate/{run}_{arch}_{tile}"),
    benchmark:
        benchmarks("evaluate/{run}_{arch}_{tile}")
    resources:
        mem_mb=mem_mb("evaluate"),
        runtime=runtime_min("evaluate"),
    script:
        "../../scripts/evaluate.py"


def map_page_extras(wildcards):
    """Optional inputs of a map page: the network's training curves, the assessment's area estimates."""
    extras = {}
    if wildcards.arch in NETWORK_ARCHS:  # train.smk
        extras["curves"] = results(f"runs/{wildcards.run}/models/{wildcards.arch}/training_curves.png")
    extras.update(assessment_areas(wildcards))
    return extras


rule map_page:
    input:
        unpack(map_page_extras),
        classification=rules.classify.output.classification,
        report=rules.evaluate.output.json,
        confusion=rules.evaluate.output.png,
        nomenclature=config["nomenclature"],
    output:
        html=report(
            results("runs/{run}/reports/{arch}/{tile}.html"),
            caption="../report/map_page.rst",
            category="Maps",
            subcategory="{arch}",
            labels={"tile": "{tile}", "run": "{run}", "architecture": "{arch}", "file": "page"},
        ),
        quicklook=report(
            results("runs/{run}/reports/{arch}/{tile}_quicklook.png"),
            caption="../report/quicklook.rst",
            category="Maps",
            subcategory="{arch}",
            labels={"tile": "{tile}", "run": "{run}", "architecture": "{arch}", "file": "quicklook"},
        ),
    params:
        summary=results("reports/summary.html"),
        code=code_hash("cropchain.assessment.report"),
    log:
        logs("map_page/{run}_{arch}_{tile}"),
    benchmark:
        benchmarks("map_page/{run}_{arch}_{tile}")
    resources:
        mem_mb=mem_mb("summary"),
        runtime=runtime_min("summary"),
    script:
        "../../scripts/map_page.py"


rule summary:
    input:
        reports=expand(
            results("runs/{run}/reports/{arch}/{tile}.json"), run=RUNS, arch=ARCHS, tile=TILES
        ),
        pages=expand(results("runs/{run}/reports/{arch}/{tile}.html"), run=RUNS, arch=ARCHS, tile=TILES),
        quicklooks=expand(
            results("runs/{run}/reports/{arch}/{tile}_quicklook.png"), run=RUNS, arch=ARCHS, tile=TILES
        ),
    output:
        csv=results("reports/summary.csv"),
        html=report(results("reports/summary.html"), caption="../report/summary.rst", category="Summary"),
    params:
        code=code_hash("cropchain.assessment.report", "cropchain.assessment.evaluate"),
    log:
        logs("summary"),
    benchmark:
        benchmarks("summary")
    resources:
        mem_mb=mem_mb("summary"),
        runtime=runtime_min("summary"),
    script:
        "../../scripts/summary.py"
