# Reports: per tile/run/architecture on the validation polygons (cropchain.evaluate); summary (cropchain.report).


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
        code=code_hash("cropchain.evaluate"),
    log:
        f"{RESULTS}/logs/evaluate/{{run}}_{{arch}}_{{tile}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/evaluate/{{run}}_{{arch}}_{{tile}}.tsv"
    resources:
        mem_mb=mem_mb("evaluate"),
        runtime=runtime_min("evaluate"),
    script:
        "../../scripts/evaluate.py"


rule summary:
    input:
        reports=expand(
            f"{RESULTS}/runs/{{run}}/reports/{{arch}}/{{tile}}.json", run=RUNS, arch=ARCHS, tile=TILES
        ),
    output:
        csv=f"{RESULTS}/reports/summary.csv",
        html=report(f"{RESULTS}/reports/summary.html", caption="../report/summary.rst", category="Summary"),
    params:
        code=code_hash("cropchain.report", "cropchain.evaluate"),
    log:
        f"{RESULTS}/logs/summary.log",
    benchmark:
        f"{RESULTS}/benchmarks/summary.tsv"
    resources:
        mem_mb=mem_mb("summary"),
        runtime=runtime_min("summary"),
    script:
        "../../scripts/summary.py"
