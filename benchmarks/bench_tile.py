"""Scale benchmark: one synthetic Sentinel-2 tile of SIZE x SIZE px through the RF chain.

    python benchmarks/bench_tile.py 2048 [--dates 36] [--cores 2] [--work /tmp/bench_tile_2048]

Writes a synthetic tile as the per-date GeoTIFF source (36 dates x 10 bands of int16
reflectance x10000 with cloud masks, written by windows in seconds rather than the hours a JP2
encoding would take), an RPG-like parcel reference of rectangular fields over 8 crop classes
with distinct NDVI phenologies, runs the Random Forest chain (ingest to vectors and report, 1
run) through Snakemake, and prints per job: wall time, peak RSS, bytes written and the
throughput in Mpx/s, the size of the tile's intermediates, of the learning samples, and the
projection of the wall time to a whole Sentinel-2 tile (10980 x 10980 px). Results also go to
``<work>/bench_tile.json``.

The projection scales every per-tile job linearly with the pixel count (they stream by
windows) and keeps the per-run jobs that do not depend on the tile size (training on the
capped learning pixels) as measured.
"""

from __future__ import annotations

import argparse
import csv
import datetime as dt
import json
import os
import platform
import re
import shutil
import subprocess
import sys
import time
from pathlib import Path

import geopandas as gpd
import numpy as np
import rasterio
import yaml
from rasterio.transform import from_origin
from shapely.geometry import box

ROOT = Path(__file__).resolve().parents[1]
BANDS = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"]
FULL_TILE = 10980
CLASSES = [  # code, name, colour, day of peak NDVI, peak NDVI, width of the season (days)
    (1, "winter wheat", "#e6c547", 120, 0.85, 60),
    (2, "maize", "#f07814", 210, 0.9, 45),
    (3, "sunflower", "#ffe119", 190, 0.8, 35),
    (4, "grassland", "#3cb44b", 150, 0.7, 150),
    (5, "vineyard", "#911eb4", 200, 0.5, 80),
    (6, "rapeseed", "#bcf60c", 100, 0.8, 40),
    (7, "forest", "#1b5e20", 180, 0.85, 400),
    (8, "built-up", "#808080", 180, 0.1, 400),
]
ORIGIN = (500000.0, 4800000.0)  # EPSG:32631


def _fields(size: int, rng: np.random.Generator) -> tuple[np.ndarray, list[tuple[int, int, int, int, int]]]:
    """Rectangular fields of 20-80 px: a [size, size] field index map and (row0, col0, row1, col1, class)."""
    cuts_r = np.unique(np.concatenate([[0], np.cumsum(rng.integers(20, 80, size)), [size]]).clip(0, size))
    fields, index = [], np.zeros((size, size), dtype=np.int32)
    k = 0
    for r0, r1 in zip(cuts_r[:-1], cuts_r[1:]):
        cuts_c = np.unique(np.concatenate([[0], np.cumsum(rng.integers(20, 80, size)), [size]]).clip(0, size))
        for c0, c1 in zip(cuts_c[:-1], cuts_c[1:]):
            index[r0:r1, c0:c1] = k
            fields.append((int(r0), int(c0), int(r1), int(c1), int(rng.integers(len(CLASSES)))))
            k += 1
    return index, fields


def _reflectance_tables(days: np.ndarray, rng: np.random.Generator) -> np.ndarray:
    """int16 [T, K, B] reflectance x10000 of each class on each date (NDVI phenology -> red/NIR)."""
    out = np.empty((len(days), len(CLASSES), len(BANDS)), dtype=np.float64)
    for k, (_, _, _, peak_day, peak, width) in enumerate(CLASSES):
        ndvi = 0.15 + (peak - 0.15) * np.exp(-0.5 * ((days - peak_day) / width) ** 2)
        red = 0.12 * (1 - ndvi) / 0.85 + 0.02
        nir = red * (1 + ndvi) / (1 - ndvi)
        base = np.array([0.05, 0.08, red.mean(), 0, 0.15, 0.2, 0.25, 0, 0.25, 0.18]) * (
            1 + 0.1 * rng.standard_normal(10)
        )
        out[:, k, :] = base
        out[:, k, 2] = red
        out[:, k, 3] = nir
        out[:, k, 7] = nir * 0.95
        out[:, k, 8] = 0.3 - 0.15 * ndvi  # SWIR falls with vegetation water
    return np.clip(np.rint(out * 10000), 1, 10000).astype(np.int16)


def write_tile(folder: Path, size: int, n_dates: int, seed: int = 0) -> dict:
    """Write the synthetic tile; return what the config needs."""
    rng = np.random.default_rng(seed)
    folder.mkdir(parents=True, exist_ok=True)
    start = dt.date(2022, 1, 5)
    step = max(1, 360 // n_dates)
    dates = [start + dt.timedelta(days=step * i) for i in range(n_dates)]
    days = np.array([(d - dt.date(2022, 1, 1)).days for d in dates], dtype=np.float64)
    index, fields = _fields(size, rng)
    field_class = np.array([f[4] for f in fields], dtype=np.int16)
    field_offset = rng.normal(0, 400, size=(len(fields), len(BANDS))).astype(np.int16)  # field to field
    table = _reflectance_tables(days, rng)
    noise = rng.normal(0, 250, size=(len(BANDS), 512, 512)).astype(np.int16)  # pixel texture, tiled
    transform = from_origin(*ORIGIN, 10, 10)
    profile = dict(
        driver="GTiff",
        width=size,
        height=size,
        count=len(BANDS),
        dtype="int16",
        crs="EPSG:32631",
        transform=transform,
        tiled=True,
        blockxsize=256,
        blockysize=256,
        interleave="band",
        compress="zstd",
        zstd_level=1,
        predictor=2,
        nodata=-32768,
        BIGTIFF="IF_SAFER",
    )
    mask_profile = dict(profile, count=1, dtype="uint8", nodata=None, interleave="pixel")
    strip = 512
    for t, d in enumerate(dates):
        texture = np.roll(noise, tuple(rng.integers(0, 512, 2)), axis=(1, 2))  # another texture every date
        clouds = [
            (rng.uniform(0, size), rng.uniform(0, size), rng.uniform(50, 400)) for _ in range(rng.poisson(6))
        ]
        name = d.strftime("%Y%m%d")
        with (
            rasterio.open(folder / f"S2_{name}.tif", "w", **profile) as img,
            rasterio.open(folder / f"MASK_{name}.tif", "w", **mask_profile) as msk,
        ):
            for r0 in range(0, size, strip):
                h = min(strip, size - r0)
                idx = index[r0 : r0 + h]
                values = table[t][field_class[idx]] + field_offset[idx]  # [h, size, B]
                values = np.moveaxis(values, -1, 0)
                values += np.tile(texture, (1, (h + 511) // 512, (size + 511) // 512))[:, :h, :size]
                rows, cols = np.mgrid[r0 : r0 + h, 0:size]
                cloud = np.zeros((h, size), dtype=bool)
                for cy, cx, rad in clouds:
                    if abs(cy - (r0 + h / 2)) < rad + h:
                        cloud |= (rows - cy) ** 2 + (cols - cx) ** 2 < rad**2
                values[:, cloud] = 9000  # bright clouds, masked
                img.write(values, window=rasterio.windows.Window(0, r0, size, h))
                msk.write(cloud.astype(np.uint8), 1, window=rasterio.windows.Window(0, r0, size, h))
    # the reference: 30% of the fields, as a parcel register declares them
    keep = rng.random(len(fields)) < 0.3
    x0, y0 = ORIGIN
    geoms = [
        box(x0 + 10 * c0 + 5, y0 - 10 * r1 + 5, x0 + 10 * c1 - 5, y0 - 10 * r0 - 5)
        for (r0, c0, r1, c1, _), k in zip(fields, keep)
        if k
    ]
    labels = [CLASSES[f[4]][1] for f, k in zip(fields, keep) if k]
    gpd.GeoDataFrame({"crop": labels}, geometry=geoms, crs="EPSG:32631").to_file(
        folder / "parcels.gpkg", driver="GPKG"
    )
    with open(folder / "nomenclature.csv", "w") as f:
        f.write("code,name,color\n" + "".join(f"{c},{n},{col}\n" for c, n, col, *_ in CLASSES))
    return {"dates": dates, "n_fields": len(fields), "n_parcels": int(keep.sum())}


def write_config(work: Path, data: Path, dates: list[dt.date], threads: int) -> Path:
    cfg = {
        "nomenclature": str(data / "nomenclature.csv"),
        "tiles": {
            "T31TBM": {
                "source": "stack",
                "products": str(data),
                "files": "S2_*.tif",
                "masks": "MASK_*.tif",
                "bands": BANDS,
            }
        },
        "ingest": {"bands": BANDS},
        "dates": {"start": dates[0].isoformat(), "end": dates[-1].isoformat(), "step_days": 10},
        "gapfill": {"backend": "numpy", "mode": "linear"},
        "features": {"indices": ["NDVI", "NDWI", "brightness"]},
        "reference": {
            "min_area_m2": 200,
            "sources": [
                {
                    "name": "parcels",
                    "path": str(data / "parcels.gpkg"),
                    "field": "crop",
                    "priority": 1,
                    "mapping": {c[1]: c[0] for c in CLASSES},
                }
            ],
        },
        "split": {"ratio": 0.66, "runs": 1, "seed": 0},
        "samples": {"max_learn_pixels_per_class": 5000},
        "architectures": {"rf": {"n_estimators": 100, "max_depth": 25}},
        "classify": {"window": 512, "overlap": 16},
        "vectorize": {"mmu_ha": 0.1, "majority_radius": 1, "simplify_m": 0},
        "resources": {"threads": threads},
    }
    path = work / "config.yaml"
    path.write_text(yaml.safe_dump(cfg, sort_keys=False))
    return path


def _watch_tile_folder(proc: subprocess.Popen, tiles: Path, every_s: float = 1.0) -> dict:
    """Sizes under the tile's folder while the chain runs, until ``proc`` ends: the peak of their
    sum and each file's largest size (``raw.tif`` is a temp() file, deleted after gap filling)."""
    peak_total, peak_files = 0, {}
    while proc.poll() is None:
        sizes = {}
        for p in tiles.glob("*") if tiles.is_dir() else []:
            try:
                if p.is_file():  # with the temporary names of outputs being written
                    sizes[p.name] = p.stat().st_size
            except FileNotFoundError:  # renamed or deleted meanwhile
                continue
        peak_total = max(peak_total, sum(sizes.values()))
        for name, size in sizes.items():
            peak_files[name] = max(size, peak_files.get(name, 0))
        time.sleep(every_s)
    return {"intermediates_peak_total": peak_total, "intermediates_peak_files": peak_files}


def _du(path: Path) -> int:
    return (
        sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        if path.is_dir()
        else (path.stat().st_size if path.exists() else 0)
    )


#: files each rule writes (glob under results/), for the bytes written per job
OUTPUTS = {
    "ingest": ["tiles/*/raw.tif", "tiles/*/raw_mask.tif", "tiles/*/raw_dates.txt"],
    "gapfill": ["tiles/*/gapfilled.tif", "tiles/*/validity.tif", "tiles/*/dates.txt"],
    "reference": ["tiles/*/reference.gpkg"],
    "manifest": ["tiles/*/inputs.json"],
    "split": ["runs/*/tiles/*/split.gpkg"],
    "samples": ["runs/*/pixels.parquet"],
    "train": ["runs/*/models/*/*"],
    "classify": [
        "runs/*/maps/*/*_classification.tif*",
        "runs/*/maps/*/*_classification.qml",
        "runs/*/maps/*/*_confidence.tif",
        "runs/*/maps/*/*_validity.tif",
    ],
    "mosaic": ["runs/*/maps/*/mosaic_*"],
    "vectorize": ["runs/*/vectors/*/*.gpkg"],
    "evaluate": ["runs/*/reports/*/*"],
}


def _logged_peak_rss(log: Path) -> float | None:
    """The job's exact peak RSS (MB) from its log (``cropchain.workflow.run_step``'s last line)."""
    if not log.is_file():
        return None
    found = re.findall(r"done in [0-9.]+ s, peak RSS ([0-9.]+) MB", log.read_text(errors="replace"))
    return float(found[-1]) if found else None


def collect(work: Path, size: int, n_dates: int, peak_files: dict | None = None) -> dict:
    """Per job: wall s, peak RSS MB (exact, from the job's log; Snakemake's benchmark files only
    sample memory and miss the peak of a short job), MB of the files it wrote, Mpx/s."""
    jobs = []
    benchmarks = work / "results/benchmarks"
    for tsv in sorted(benchmarks.rglob("*.tsv")):
        with open(tsv) as f:
            row = next(csv.DictReader(f, delimiter="\t"))
        s = float(row["s"])
        rule = tsv.stem if tsv.parent.name == "benchmarks" else tsv.parent.name
        logged = _logged_peak_rss(work / "results/logs" / tsv.relative_to(benchmarks).with_suffix(".log"))
        written = sum(
            f.stat().st_size for pattern in OUTPUTS.get(rule, []) for f in (work / "results").glob(pattern)
        )
        if rule == "ingest" and peak_files:  # raw.tif, a temp() file, is gone by now
            written = max(written, sum(v for k, v in peak_files.items() if k.startswith("raw")))
        jobs.append(
            {
                "rule": rule,
                "job": tsv.stem,
                "wall_s": s,
                "max_rss_mb": logged if logged is not None else float(row["max_rss"] or 0),
                "sampled_rss_mb": float(row["max_rss"] or 0),
                "written_mb": written / 1e6,
                "cpu_s": float(row["cpu_time"] or 0),
                "mpx_per_s": size * size / 1e6 / s if s > 0 else None,
            }
        )
    tiles = work / "results/tiles/T31TBM"
    inter = {p.name: p.stat().st_size for p in tiles.iterdir() if p.is_file()}
    samples = _du(work / "results/runs/0/pixels.parquet")
    return {
        "jobs": jobs,
        "intermediates_bytes": inter,
        "intermediates_total": sum(inter.values()),
        "bytes_per_px_band_date": sum(inter.values()) / (size * size * len(BANDS) * n_dates),
        "samples_bytes": samples,
    }


PER_RUN = {"train", "split", "summary", "stac_item", "reference"}  # not proportional to the tile's pixels


def projection(jobs: list[dict], size: int) -> float:
    factor = FULL_TILE**2 / size**2
    return sum(j["wall_s"] * (1 if j["rule"] in PER_RUN else factor) for j in jobs)


def table(result: dict) -> str:
    size = result["size"]
    lines = [
        "| job | wall s | peak RSS MB | sampled RSS MB | written MB | Mpx/s "
        f"| projected s at {FULL_TILE} px |",
        "|---|---|---|---|---|---|---|",
    ]
    factor = FULL_TILE**2 / size**2
    for j in result["jobs"]:
        proj = j["wall_s"] * (1 if j["rule"] in PER_RUN else factor)
        mpx = f"{j['mpx_per_s']:.3f}" if j["mpx_per_s"] and j["rule"] not in PER_RUN else "-"
        lines.append(
            f"| {j['rule']} | {j['wall_s']:.1f} | {j['max_rss_mb']:.0f} | {j.get('sampled_rss_mb', 0):.0f} | "
            f"{j['written_mb']:.0f} | {mpx} | {proj:.0f} |"
        )
    lines.append(
        f"| **total** | {result['chain_wall_s']:.0f} (chain) | "
        f"{max(j['max_rss_mb'] for j in result['jobs']):.0f} (max) | "
        f"| | | **{result['projected_full_tile_s'] / 60:.1f} min** |"
    )
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("size", type=int, help="tile side in 10 m pixels (10980 = a whole Sentinel-2 tile)")
    ap.add_argument("--dates", type=int, default=36, help="acquisitions (default 36)")
    ap.add_argument("--cores", type=int, default=2, help="snakemake --cores and job threads (default 2)")
    ap.add_argument("--work", type=Path, default=None, help="working folder (default /tmp/bench_tile_SIZE)")
    ap.add_argument("--keep-data", action="store_true", help="reuse the synthetic tile of a previous run")
    ap.add_argument("--report-only", action="store_true", help="tabulate the finished run in --work again")
    args = ap.parse_args(argv)
    work = args.work or Path(f"/tmp/bench_tile_{args.size}")
    if args.report_only:
        result = json.loads((work / "bench_tile.json").read_text())
        result.update(collect(work, args.size, result["dates"], result.get("intermediates_peak_files")))
        result["projected_full_tile_s"] = projection(result["jobs"], args.size)
        (work / "bench_tile.json").write_text(json.dumps(result, indent=2))
        _print(result)
        return 0
    data = work / "data"
    if not (args.keep_data and (data / "parcels.gpkg").exists()):
        shutil.rmtree(work, ignore_errors=True)
        t0 = time.perf_counter()
        info = write_tile(data, args.size, args.dates)
        print(
            f"synthetic tile {args.size} px x {args.dates} dates x {len(BANDS)} bands, "
            f"{info['n_fields']} fields, "
            f"{info['n_parcels']} reference parcels, written in {time.perf_counter() - t0:.0f} s",
            flush=True,
        )
    dates = sorted(dt.datetime.strptime(p.stem[3:], "%Y%m%d").date() for p in data.glob("S2_*.tif"))
    shutil.rmtree(work / "results", ignore_errors=True)
    shutil.rmtree(work / ".snakemake", ignore_errors=True)
    config = write_config(work, data, dates, args.cores)
    t0 = time.perf_counter()
    cmd = ["snakemake", "-s", str(ROOT / "Snakefile"), "--directory", str(work)]
    cmd += ["--configfile", str(config), "--cores", str(args.cores)]
    with open(work / "snakemake.log", "w") as log:
        proc = subprocess.Popen(cmd, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT)
        peak = _watch_tile_folder(proc, work / "results/tiles/T31TBM")
    wall = time.perf_counter() - t0
    if proc.returncode:
        print((work / "snakemake.log").read_text()[-4000:], file=sys.stderr)
        return proc.returncode
    result = {
        "size": args.size,
        "dates": len(dates),
        "bands": len(BANDS),
        "cores": args.cores,
        "chain_wall_s": wall,
        "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, "
        f"{os.sysconf('SC_PAGE_SIZE') * os.sysconf('SC_PHYS_PAGES') / 2**30:.0f} GiB",
        **collect(work, args.size, len(dates), peak["intermediates_peak_files"]),
        **peak,
    }
    result["projected_full_tile_s"] = projection(result["jobs"], args.size)
    (work / "bench_tile.json").write_text(json.dumps(result, indent=2))
    _print(result)
    return 0


def _print(result: dict) -> None:
    print(
        f"machine: {result['machine']}; tile {result['size']} x {result['size']} px, "
        f"{result['dates']} dates x "
        f"{result['bands']} bands, {result['cores']} cores"
    )
    print(table(result))
    print(
        f"intermediates under results/tiles/T31TBM: {result['intermediates_total'] / 1e9:.2f} GB "
        f"({result['bytes_per_px_band_date']:.2f} bytes per pixel per band and date): "
        + ", ".join(f"{k} {v / 1e9:.2f} GB" for k, v in result["intermediates_bytes"].items())
    )
    if "intermediates_peak_total" in result:
        px = result["size"] ** 2 * result["bands"] * result["dates"]
        print(
            f"peak under results/tiles/T31TBM while the chain ran (sampled every second): "
            f"{result['intermediates_peak_total'] / 1e9:.2f} GB "
            f"({result['intermediates_peak_total'] / px:.2f} bytes per pixel per band and date); "
            + ", ".join(
                f"{k} {v / 1e9:.2f} GB" for k, v in result["intermediates_peak_files"].items() if v > 1e8
            )
        )
    print(f"learning samples (runs/0/pixels.parquet): {result['samples_bytes'] / 1e6:.1f} MB")


if __name__ == "__main__":
    sys.exit(main())
