# Training of one architecture per run (cropchain.train, cropchain.models).


rule train:
    input:
        pixels=rules.samples.output.pixels,
    output:
        model=f"{RESULTS}/runs/{{run}}/models/{{arch}}/model.joblib",
        meta=f"{RESULTS}/runs/{{run}}/models/{{arch}}/model.json",
        metrics=f"{RESULTS}/runs/{{run}}/models/{{arch}}/metrics.json",
    params:
        hyperparameters=lambda wc: config["architectures"][wc.arch],
        seed=lambda wc: config["split"]["seed"] + int(wc.run),
        code=lambda wc: code_hash("cropchain.train", f"cropchain.models.{'random_forest' if wc.arch == 'rf' else wc.arch}"),
    log:
        f"{RESULTS}/logs/train/{{run}}_{{arch}}.log",
    benchmark:
        f"{RESULTS}/benchmarks/train/{{run}}_{{arch}}.tsv"
    threads: THREADS
    resources:
        mem_mb=mem_mb("train"),
        runtime=runtime_min("train"),
    script:
        "../../scripts/train.py"
