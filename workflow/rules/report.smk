# Reports: per tile/run/architecture on the validation polygons (cropchain.assessment.evaluate), a page per map
# (quicklook, confusion matrix, accuracies, areas, training curves) and the summary (cropchain.assessment.report).


rule evaluate:
    input:
        classification=rules.classify.output.classification,
        split=rules.split.output.split,
        nomenclature=config["nomenclature"],
    output:
        json=f"{RESULTS}/runs/{{run}}/reports/{{arch}}/{{tile}}.json",
        csv=f"{RESULTS}/runs/{{run}}/reports/{{arch}}/{{tile}}_confusion.csv",
        png=report(
            f"{RESULTS}/runs/{{run}}/reports/{{arch}}/{{tile}}_confusion.png",
            caption="../report/confusion.rst",
            category="Confusion matrices",
            subcategory="{arch}",
            labels={"tile": "{tile}", "run": "{run}", "architecture": "{arch}"},
        ),
    params:
        code=code_hash("cropchain.assessment.evaluate"),
    log:
        f"{RESULTS}/logs/evaluate/{{run}}_{{arch}}_{{tile}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{run}}_{{arch}}_{{tile}}.tsv"
    resources:
        mem_mb=mem_mb("evaluate"),
        runtime=runtime_min("evaluate"),
    script:
        "../../scripts/evaluate.py"


def map_page_extras(wildcards):
    """Optional inputs of a map page: the network's training curves, the assessment's area estimates."""
    extras = {}
    if wildcards.arch in NETWORK_ARCHS:  # train.smk
        extras["curves"] = f"{RESULTS}/runs/{wildcards.run}/models/{wildcards.arch}/training_curves.png"
    if ASSESSMENT.get("samples"):  # assessment.smk
        extras["areas"] = f"{RESULTS}/runs/{wildcards.run}/assessment/{wildcards.arch}/{wildcards.tile}_areas.json"
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
            f"{RESULTS}/runs/{{run}}/reports/{{arch}}/{{tile}}.html",
            caption="../report/map_page.rst",
            category="Maps",
            subcategory="{arch}",
            labels={"tile": "{tile}", "run": "{run}", "architecture": "{arch}", "file": "page"},
        ),
        quicklook=report(
            f"{RESULTS}/runs/{{run}}/reports/{{arch}}/{{tile}}_quicklook.png",
            caption="../report/quicklook.rst",
            category="Maps",
            subcategory="{arch}",
            labels={"tile": "{tile}", "run": "{run}", "architecture": "{arch}", "file": "quicklook"},
        ),
    params:
        summary=f"{RESULTS}/reports/summary.html",
        code=code_hash("cropchain.assessment.report"),
    log:
        f"{RESULTS}/logs/map_page/{{run}}_{{arch}}_{{tile}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/map_page/{{run}}_{{arch}}_{{tile}}.tsv"
    resources:
        mem_mb=mem_mb("summary"),
        runtime=runtime_min("summary"),
    script:
        "../../scripts/map_page.py"


rule summary:
    input:
        reports=expand(
            f"{RESULTS}/runs/{{run}}/reports/{{arch}}/{{tile}}.json", run=RUNS, arch=ARCHS, tile=TILES
        ),
        pages=expand(f"{RESULTS}/runs/{{run}}/reports/{{arch}}/{{tile}}.html", run=RUNS, arch=ARCHS, tile=TILES),
        quicklooks=expand(
            f"{RESULTS}/runs/{{run}}/reports/{{arch}}/{{tile}}_quicklook.png", run=RUNS, arch=ARCHS, tile=TILES
        ),
    output:
        csv=f"{RESULTS}/reports/summary.csv",
        html=report(f"{RESULTS}/reports/summary.html", caption="../report/summary.rst", category="Summary"),
    params:
        code=code_hash("cropchain.assessment.report", "cropchain.assessment.evaluate"),
    log:
        f"{RESULTS}/logs/summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/summary.tsv"
    resources:
        mem_mb=mem_mb("summary"),
        runtime=runtime_min("summary"),
    script:
        "../../scripts/summary.py"
