# Embedded demo: synthetic Sentinel-2 L2A SAFE products and reference files (cropchain.demo).


rule demo_products:
    output:
        directory(resources_path("demo/{tile}")),
    params:
        demo=config.get("demo"),
        spec=lambda wc: demo_tile_specs()[wc.tile],
        code=code_hash("cropchain.demo"),
    log:
        logs("demo_products/{tile}"),
    benchmark:
        benchmarks("demo_products/{tile}")
    resources:
        mem_mb=mem_mb("demo_products"),
        runtime=runtime_min("demo_products"),
    script:
        "../../scripts/demo_products.py"


rule demo_reference:
    output:
        parcels=resources_path("demo/reference/parcels.gpkg"),
        landcover=resources_path("demo/reference/landcover.gpkg"),
    params:
        demo=config.get("demo"),
        specs=demo_tile_specs(),
        code=code_hash("cropchain.demo"),
    log:
        logs("demo_reference"),
    benchmark:
        benchmarks("demo_reference")
    resources:
        mem_mb=mem_mb("demo_reference"),
        runtime=runtime_min("demo_reference"),
    script:
        "../../scripts/demo_reference.py"
