"""Reruns after data updates: Snakemake's own dry run tells which jobs a change triggers."""

from __future__ import annotations

import re
import shutil
from collections import Counter
from pathlib import Path

import pytest
import yaml
from conftest import ROOT, safe_demo_config, snakemake, write_config

pytestmark = pytest.mark.e2e


def dry_run(workdir: Path, configfile: Path, env: dict | None = None, snakefile: Path | None = None) -> str:
    proc = snakemake(workdir, configfile, "--dry-run", env=env, snakefile=snakefile)
    return proc.stdout + proc.stderr


def planned_jobs(
    workdir: Path, configfile: Path, env: dict | None = None, snakefile: Path | None = None
) -> Counter:
    """Jobs a dry run would execute, counted per rule (empty when nothing is to be done)."""
    out = dry_run(workdir, configfile, env, snakefile)
    if "Nothing to be done" in out:
        return Counter()
    table = out.split("Job stats:")[1]
    jobs = Counter()
    for line in table.splitlines()[3:]:
        m = re.match(r"^(\w+)\s+(\d+)$", line.strip())
        if not m:
            break
        if m.group(1) != "total":
            jobs[m.group(1)] = int(m.group(2))
    return jobs


@pytest.fixture
def copy_of_demo(demo_run: Path, tmp_path: Path) -> Path:
    """A copy of the completed demo run (mtimes and Snakemake metadata kept)."""
    work = tmp_path / "demo"
    shutil.copytree(demo_run, work, symlinks=True)
    assert planned_jobs(work, work / "config.yaml") == Counter()
    return work


def one_safe_tile(work: Path, dates: list) -> tuple[list[Path], dict, Path]:
    """A 32 x 32 px tile T31TXA of SAFE products on ``dates`` and the demo's references under
    ``work``, and the demo configuration pointing at them: (products, config, config file)."""
    from cropchain.demo import demo_origin, generate_demo_products, generate_demo_references

    products = generate_demo_products(
        work / "products" / "T31TXA", "T31TXA", seed=4, width=32, height=32, dates=dates
    )
    generate_demo_references(
        work / "resources/demo/reference",
        {"T31TXA": {"origin": demo_origin(0, 32), "width": 32, "height": 32}},
        seed=4,
    )
    cfg = safe_demo_config({"T31TXA": "products/T31TXA"})
    return products, cfg, write_config(work / "config.yaml", cfg)


def test_new_date_reruns_one_tile(tmp_path: Path):
    """Two tiles of SAFE products (as a user holds them); one more product for one tile."""
    import datetime as dt

    from cropchain.demo import (
        demo_origin,
        generate_demo_products,
        generate_demo_references,
    )

    work = tmp_path / "safe"
    tiles = {"T31TXA": 0, "T31TXB": 1}
    for tile, i in tiles.items():
        generate_demo_products(
            work / "products" / tile, tile, seed=42, width=64, height=64, origin=demo_origin(i, 64)
        )
    generate_demo_references(
        work / "resources/demo/reference",
        {t: {"origin": demo_origin(i, 64), "width": 64, "height": 64} for t, i in tiles.items()},
        seed=42,
    )
    cfg = safe_demo_config({t: f"products/{t}" for t in tiles})
    cfg["split"]["runs"] = 1
    cfg["architectures"] = {"rf": {"n_estimators": 10}}
    configfile = write_config(work / "config.yaml", cfg)
    snakemake(work, configfile)
    assert planned_jobs(work, configfile) == Counter()

    new = generate_demo_products(
        tmp_path / "new",
        "T31TXA",
        seed=42,
        width=64,
        height=64,
        origin=demo_origin(0, 64),
        dates=[dt.date(2021, 7, 3)],
    )
    shutil.move(str(new[0]), work / "products/T31TXA" / new[0].name)
    jobs = planned_jobs(work, configfile)
    assert jobs["ingest"] == 1 and jobs["gapfill"] == 1 and jobs["manifest"] == 1
    assert jobs["reference"] == 1  # the tile's grid is an input of its fusion
    assert jobs["samples"] == 1 and jobs["train"] == 1  # downstream of the tile's gap-filled series
    outputs = [line for line in dry_run(work, configfile).splitlines() if line.strip().startswith("output:")]
    assert any("results/tiles/T31TXA/raw.tif" in line for line in outputs)
    assert not any("results/tiles/T31TXB/" in line for line in outputs)  # the other tile's products stay


def test_file_replaced_inside_a_safe_reruns_ingest_and_manifest(tmp_path: Path):
    """A band file replaced inside a .SAFE (the folder's own mtime unchanged): the ingest and the
    input manifest rerun (issue 12); touching nothing leaves nothing to do."""
    import datetime as dt
    import os

    work = tmp_path / "safe"
    dates = [dt.date(2021, 3, 1), dt.date(2021, 6, 1), dt.date(2021, 9, 1)]
    products, _, configfile = one_safe_tile(work, dates)
    targets = ["results/tiles/T31TXA/raw.tif", "results/tiles/T31TXA/inputs.json"]
    snakemake(work, configfile, *targets)
    first = snakemake(work, configfile, "--dry-run", *targets)
    assert "Nothing to be done" in first.stdout + first.stderr

    band = next(products[1].rglob("*_B04_10m.jp2"))
    folder_mtime = products[1].stat().st_mtime_ns
    shutil.copyfile(next(products[0].rglob("*_B04_10m.jp2")), band)  # another date's band: new content
    os.utime(products[1], ns=(folder_mtime, folder_mtime))
    out = snakemake(work, configfile, "--dry-run", *targets)
    text = out.stdout + out.stderr
    assert "Nothing to be done" not in text
    assert re.search(r"^ingest\s+1$", text, re.M) and re.search(r"^manifest\s+1$", text, re.M), text


def test_shapefile_dbf_edited_alone_reruns_the_fusion(tmp_path: Path):
    """Class labels edited in a reference shapefile's .dbf (the .shp untouched): the fusion reruns."""
    import pyogrio

    from cropchain.demo import (
        demo_origin,
        generate_demo_products,
        generate_demo_references,
    )

    work = tmp_path / "shp"
    generate_demo_products(
        work / "products" / "T31TXA",
        "T31TXA",
        seed=4,
        width=32,
        height=32,
        dates=["2021-03-01", "2021-06-01"],
    )
    ref = work / "resources/demo/reference"
    generate_demo_references(
        ref, {"T31TXA": {"origin": demo_origin(0, 32), "width": 32, "height": 32}}, seed=4
    )
    parcels = pyogrio.read_dataframe(ref / "parcels.gpkg")
    pyogrio.write_dataframe(parcels, ref / "parcels.shp")
    cfg = safe_demo_config({"T31TXA": "products/T31TXA"})
    cfg["reference"]["sources"][0]["path"] = "resources/demo/reference/parcels.shp"
    configfile = write_config(work / "config.yaml", cfg)
    targets = ["results/tiles/T31TXA/reference.gpkg"]
    snakemake(work, configfile, *targets)
    first = snakemake(work, configfile, "--dry-run", *targets)
    assert "Nothing to be done" in first.stdout + first.stderr

    relabelled = parcels.copy()
    relabelled["CODE_CULTU"] = relabelled["CODE_CULTU"].replace({"BTH": "MIS", "MIS": "BTH"})
    pyogrio.write_dataframe(relabelled, tmp_path / "relabelled.shp")
    shutil.copyfile(tmp_path / "relabelled.dbf", ref / "parcels.dbf")
    out = snakemake(work, configfile, "--dry-run", *targets)
    text = out.stdout + out.stderr
    assert re.search(r"^reference\s+1$", text, re.M) and not re.search(r"^ingest\s", text, re.M), text


def test_raw_series_is_kept_or_deleted_after_gap_filling(tmp_path: Path):
    """`ingest.keep_raw: true` keeps `raw.tif`; switched to the default (null: deleted without a
    Presto architecture) nothing reruns (the option is not a parameter of the series),
    a new parcel register reruns the fusion (whose grid is `raw_mask.tif`) and not the ingest, and
    the next gap filling deletes `raw.tif` once it has read it. (test_workflow_demo: a default run
    leaves no `raw.tif`; test_workflow_presto: with presto_rf it stays.)"""
    import pyogrio

    work = tmp_path / "temp_raw"
    _, cfg, configfile = one_safe_tile(work, ["2021-03-01", "2021-06-01", "2021-09-01"])
    ref = work / "resources/demo/reference"
    tile = work / "results/tiles/T31TXA"
    targets = ["results/tiles/T31TXA/gapfilled.tif", "results/tiles/T31TXA/reference.gpkg"]
    cfg["ingest"]["keep_raw"] = True
    configfile.write_text(yaml.safe_dump(cfg, sort_keys=False))

    snakemake(work, configfile, *targets)
    assert (tile / "raw.tif").is_file()
    del cfg["ingest"]["keep_raw"]  # the default, null: deleted without a Presto architecture
    configfile.write_text(yaml.safe_dump(cfg, sort_keys=False))
    first = snakemake(work, configfile, "--dry-run", *targets)
    assert "Nothing to be done" in first.stdout + first.stderr

    parcels = pyogrio.read_dataframe(ref / "parcels.gpkg")
    pyogrio.write_dataframe(parcels.iloc[1:], ref / "parcels.gpkg")  # one parcel withdrawn
    out = snakemake(work, configfile, "--dry-run", *targets)
    text = out.stdout + out.stderr
    assert re.search(r"^reference\s+1$", text, re.M), text
    assert not re.search(r"^(ingest|gapfill)\s", text, re.M), text

    cfg["gapfill"]["mode"] = "spline"  # a new gap filling reads raw.tif, then deletes it
    configfile.write_text(yaml.safe_dump(cfg, sort_keys=False))
    ran = snakemake(work, configfile, *targets)
    text = ran.stdout + ran.stderr
    assert not re.search(r"^ingest\s", text, re.M) and re.search(r"^gapfill\s+1$", text, re.M), text
    assert not (tile / "raw.tif").exists()
    assert (tile / "raw_mask.tif").is_file() and (tile / "gapfilled.tif").is_file()


def test_new_reference_reruns_fusion_and_after(copy_of_demo: Path):
    import geopandas as gpd

    path = copy_of_demo / "resources/demo/reference/landcover.gpkg"
    gdf = gpd.read_file(path)
    gdf.iloc[1:].to_file(path, driver="GPKG")  # one land-cover polygon withdrawn from the source
    jobs = planned_jobs(copy_of_demo, copy_of_demo / "config.yaml")
    assert jobs["reference"] == 2 and jobs["split"] == 4 and jobs["samples"] == 2 and jobs["train"] == 4
    assert jobs["ingest"] == 0 and jobs["gapfill"] == 0


def test_hyperparameter_reruns_one_architecture(copy_of_demo: Path):
    cfg = yaml.safe_load((copy_of_demo / "config.yaml").read_text())
    cfg["architectures"]["xgboost"]["max_depth"] = 4
    (copy_of_demo / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    jobs = planned_jobs(copy_of_demo, copy_of_demo / "config.yaml")
    # xgboost of both runs: train, classify x2 tiles, vectorize, evaluate, map page, item; the mosaics;
    # the summary
    # (every STAC Item records the whole config, so all Items are rewritten: metadata only)
    assert jobs == Counter(
        {
            "train": 2,
            "classify": 4,
            "vectorize": 4,
            "evaluate": 4,
            "map_page": 4,
            "stac_item": 8,
            "mosaic": 2,
            "summary": 1,
            "all": 1,
        }
    )


def test_smoothing_reruns_the_inference_of_its_architecture_only(copy_of_demo: Path):
    cfg = yaml.safe_load((copy_of_demo / "config.yaml").read_text())
    cfg.setdefault("classify", {})["smoothing"] = {"architectures": ["rf"], "smoothness": 10}
    (copy_of_demo / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    jobs = planned_jobs(copy_of_demo, copy_of_demo / "config.yaml")
    assert jobs["classify"] == 4 and jobs["train"] == 0  # rf: 2 runs x 2 tiles; xgboost and the models kept
    assert jobs["evaluate"] == 4 and jobs["map_page"] == 4 and jobs["summary"] == 1


def test_probabilities_switched_on_rerun_the_inference(copy_of_demo: Path):
    cfg = yaml.safe_load((copy_of_demo / "config.yaml").read_text())
    cfg.setdefault("classify", {})["probabilities"] = True
    (copy_of_demo / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    jobs = planned_jobs(copy_of_demo, copy_of_demo / "config.yaml")
    assert jobs["classify"] == 8 and jobs["train"] == 0 and jobs["samples"] == 0


def test_code_change_reruns_the_rules_that_run_it(copy_of_demo: Path, tmp_path: Path):
    """A new version of cropchain's vectorization code reruns vectorization and what follows.

    The new version is a copy of this checkout with `cropchain/mapping/vectorize.py` edited: Snakemake
    puts the Snakefile's folder first on `sys.path`, so the workflow of the copy hashes the
    copy's modules (each rule's `code` param, workflow/rules/common.smk).
    """
    checkout = tmp_path / "checkout"
    for name in ("Snakefile", "workflow", "scripts", "cropchain", "config", "profiles"):
        src = ROOT / name
        if src.is_dir():
            shutil.copytree(src, checkout / name, ignore=shutil.ignore_patterns("__pycache__"))
        else:
            checkout.mkdir(exist_ok=True)
            shutil.copy2(src, checkout / name)
    snakefile = checkout / "Snakefile"
    config = copy_of_demo / "config.yaml"
    assert (
        planned_jobs(copy_of_demo, config, snakefile=snakefile) == Counter()
    )  # same code elsewhere: nothing

    module = checkout / "cropchain/mapping/vectorize.py"
    module.write_text(module.read_text() + "\n# a new version of the vectorization\n")
    jobs = planned_jobs(copy_of_demo, config, snakefile=snakefile)
    assert jobs["vectorize"] == 8  # 2 runs x 2 architectures x 2 tiles
    for rule in ("ingest", "gapfill", "reference", "split", "samples", "train", "classify", "evaluate"):
        assert jobs[rule] == 0, f"{rule} does not run cropchain.mapping.vectorize: {jobs}"


def test_one_more_run_leaves_the_others(copy_of_demo: Path):
    """`split.runs` 2 -> 3: the new run's split, samples, models, maps and reports only."""
    cfg = yaml.safe_load((copy_of_demo / "config.yaml").read_text())
    cfg["split"]["runs"] = 3
    (copy_of_demo / "config.yaml").write_text(yaml.safe_dump(cfg, sort_keys=False))
    jobs = planned_jobs(copy_of_demo, copy_of_demo / "config.yaml")
    assert (
        jobs["split"] == 2 and jobs["samples"] == 1 and jobs["train"] == 2
    )  # run 2: 2 tiles, rf and xgboost
    assert jobs["classify"] == 4 and jobs["vectorize"] == 4 and jobs["evaluate"] == 4 and jobs["mosaic"] == 2
    assert jobs["ingest"] == jobs["gapfill"] == jobs["reference"] == 0
    outputs = [
        line
        for line in dry_run(copy_of_demo, copy_of_demo / "config.yaml").splitlines()
        if line.strip().startswith("output:") and "/runs/" in line
    ]
    assert outputs and all(
        "results/runs/2/" in line for line in outputs if "stac" not in line and "item" not in line
    )
