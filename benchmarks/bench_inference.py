"""Benchmark: cropchain's tiled inference -- random forest against Orfeo ToolBox ``ImageClassifier``,
and the throughput of each convolutional network (``--networks``).

Both classify the same synthetic float32 feature stack (GeoTIFF, ``--features`` bands)
with a random forest of the same size (``--trees`` trees, max depth ``--depth``, nodes
with fewer than 10 samples not split, sqrt(F) features tried per split) trained on the
same pixel samples, with the same number of threads, and write a class map plus a
confidence map (tiled, DEFLATE). Each classifier runs in its own process under
``/usr/bin/time -v``: wall time (including start-up and I/O) gives pixels/s, and the
maximum resident set size gives the peak memory.

Run (about 2 min with the defaults, one thread)::

    python benchmarks/bench_inference.py --size 768 --threads 1

OTB 8.1 (Debian ``otb-bin``): the model is trained with ``otbcli_TrainVectorClassifier``
(``-classifier rf``, OOB early stop disabled with ``-classifier.rf.acc 0`` so that all
trees are grown), the map made with ``otbcli_ImageClassifier`` with
``ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS`` threads and ``-ram`` MB.

Networks (no OTB needed; about 2 min with the defaults, one thread)::

    python benchmarks/bench_inference.py --networks --size 512 --threads 1

classifies a synthetic ``features.tif`` laid out like T31TEJ's (``--dates`` dates x 10
bands + NDVI, NDWI, brightness; 338 features by default) with each network of
:mod:`cropchain.models` at its default size (random weights: the speed does not depend on
them), by :func:`cropchain.mapping.classify.classify_tile` with 512 px windows and the overlap the
network needs, and prints pixels per second and per core (wall time of the tiled
inference, reading and writing included; PyTorch's import and the model load excluded).
The issue's target for TempCNN is >= 35,000 px/s per core.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import geopandas as gpd
import joblib
import numpy as np
import rasterio
from rasterio.crs import CRS
from rasterio.transform import from_origin
from sklearn.ensemble import RandomForestClassifier

from cropchain.io.raster import geotiff_profile

CODES = np.array([1, 2, 3, 4, 5, 6, 7, 8])


def synthetic_stack(size: int, n_features: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """[F, size, size] float32 features of 16x16 px parcels of 8 classes (overlapping distributions)."""
    rng = np.random.default_rng(seed)
    n = size // 16 + 1
    truth = np.kron(rng.integers(0, len(CODES), (n, n)), np.ones((16, 16), dtype=np.int64))[:size, :size]
    means = rng.normal(0.0, 1.0, (len(CODES), n_features)).astype(np.float32)
    feats = np.empty((n_features, size, size), dtype=np.float32)
    for f in range(n_features):  # band by band keeps the peak memory at one stack
        feats[f] = means[truth, f] + rng.normal(0.0, 2.0, (size, size)).astype(np.float32)
    return feats, truth


def timed(cmd: list[str], env: dict[str, str]) -> tuple[float, float, str]:
    """Run ``cmd`` under ``/usr/bin/time -v``; return (wall s, peak RSS MiB, output)."""
    t0 = time.perf_counter()
    proc = subprocess.run(["/usr/bin/time", "-v", *cmd], env=env, capture_output=True, text=True)
    wall = time.perf_counter() - t0
    out = proc.stdout + proc.stderr
    if proc.returncode != 0:
        sys.exit(f"command failed ({proc.returncode}): {' '.join(cmd)}\n{out[-3000:]}")
    rss = re.search(r"Maximum resident set size \(kbytes\): (\d+)", out)
    return wall, (int(rss.group(1)) / 1024 if rss else float("nan")), out


BANDS = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"]


def bench_networks(args: argparse.Namespace) -> None:
    """Pixels per second of the tiled inference of each network (see the module docstring)."""
    import torch

    from cropchain.mapping.classify import classify_tile
    from cropchain.models import get_model
    from cropchain.nomenclature import Nomenclature

    torch.set_num_threads(args.threads)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_networks_"))
    work.mkdir(parents=True, exist_ok=True)
    dates = [f"2018{1 + i // 3:02d}{1 + 10 * (i % 3):02d}" for i in range(args.dates)]
    names = [f"{d}_{b}" for d in dates for b in BANDS] + [
        f"{d}_{i}" for i in ("NDVI", "NDWI", "brightness") for d in dates
    ]
    size, n = args.size, len(names)
    rng = np.random.default_rng(0)
    base = {
        "crs": CRS.from_epsg(32631),
        "transform": from_origin(500000, 4800000, 10, 10),
        "width": size,
        "height": size,
    }
    fpath, vpath = work / "features.tif", work / "validity.tif"
    with rasterio.open(fpath, "w", **geotiff_profile(base, count=n, dtype="float32", nodata=-9999)) as dst:
        for b in range(n):
            dst.write(rng.uniform(0.0, 0.5, (size, size)).astype(np.float32), b + 1)
        dst.descriptions = tuple(names)
    with rasterio.open(vpath, "w", **geotiff_profile(base, count=1, dtype="uint8", nodata=None)) as dst:
        dst.write(np.full((size, size), 9, np.uint8), 1)
    nomenclature = Nomenclature(
        codes=tuple(int(c) for c in CODES),
        names=tuple(f"class{c}" for c in CODES),
        colors=tuple((30 * int(c), 80, 80) for c in CODES),
    )
    print(
        f"workdir {work}: {size}x{size} px, {n} features ({args.dates} dates x 13), "
        f"{args.threads} thread(s), window {args.window}"
    )
    print(
        f"{'network':15s} {'params':>9s} {'margin':>6s} {'overlap':>7s} "
        f"{'wall s':>8s} {'px/s':>9s} {'px/s/core':>10s}"
    )
    for arch in args.archs.split(","):
        model = get_model(arch, seed=0, threads=args.threads)
        model.initialize(names, CODES, np.full(n, 0.25), np.full(n, 0.15))
        overlap = -(-model.margin // model.alignment) * model.alignment
        t0 = time.perf_counter()
        classify_tile(
            fpath,
            vpath,
            model,
            nomenclature,
            work / f"{arch}_map.tif",
            work / f"{arch}_conf.tif",
            window=args.window,
            overlap=overlap,
        )
        wall = time.perf_counter() - t0
        rate = size * size / wall
        print(
            f"{arch:15s} {model.n_parameters:9d} {model.margin:6d} {overlap:7d} "
            f"{wall:8.2f} {rate:9.0f} {rate / args.threads:10.0f}"
        )
    if args.workdir is None:
        shutil.rmtree(work)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--size", type=int, default=768, help="image width = height in px")
    ap.add_argument("--features", type=int, default=100)
    ap.add_argument("--trees", type=int, default=100)
    ap.add_argument("--depth", type=int, default=25)
    ap.add_argument("--samples", type=int, default=8000, help="training pixels")
    ap.add_argument("--threads", type=int, default=1, help="threads of both classifiers")
    ap.add_argument("--window", type=int, default=512, help="cropchain window (px)")
    ap.add_argument("--ram", type=int, default=256, help="OTB -ram (MB)")
    ap.add_argument(
        "--workdir", type=Path, default=None, help="keep files here (default: a temporary folder)"
    )
    ap.add_argument(
        "--networks", action="store_true", help="benchmark the networks' inference instead of RF vs OTB"
    )
    ap.add_argument(
        "--archs", default="tempcnn,dilated_cnn,fg_unet,temporal_unet", help="networks to time (--networks)"
    )
    ap.add_argument("--dates", type=int, default=26, help="dates of the synthetic features (--networks)")
    args = ap.parse_args()
    if args.networks:
        bench_networks(args)
        return
    if shutil.which("otbcli_ImageClassifier") is None:
        sys.exit("otbcli_ImageClassifier not found: apt-get install otb-bin")

    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench_inference_"))
    work.mkdir(parents=True, exist_ok=True)
    names = [f"f{i:03d}" for i in range(args.features)]
    print(
        f"workdir {work}: {args.size}x{args.size} px, {args.features} features, "
        f"RF {args.trees} trees depth {args.depth}, {args.threads} thread(s)"
    )

    feats, truth = synthetic_stack(args.size, args.features)
    base = {
        "crs": CRS.from_epsg(32631),
        "transform": from_origin(500000, 4800000, 10, 10),
        "width": args.size,
        "height": args.size,
    }
    fpath, vpath = work / "features.tif", work / "validity.tif"
    with rasterio.open(
        fpath, "w", **geotiff_profile(base, count=args.features, dtype="float32", nodata=-9999)
    ) as dst:
        dst.write(feats)
        dst.descriptions = tuple(names)
    with rasterio.open(vpath, "w", **geotiff_profile(base, count=1, dtype="uint8", nodata=None)) as dst:
        dst.write(np.full((args.size, args.size), 9, np.uint8), 1)
    nom = work / "nomenclature.csv"
    nom.write_text("code,name,color\n" + "".join(f"{c},class{c},#{(40 * c) % 256:02x}8080\n" for c in CODES))

    rng = np.random.default_rng(1)
    idx = rng.choice(args.size * args.size, args.samples, replace=False)
    rows, cols = np.unravel_index(idx, (args.size, args.size))
    X = feats[:, rows, cols].T.copy()
    y = CODES[truth[rows, cols]]
    del feats

    # same samples for both: a points layer with one field per feature for OTB
    xs, ys = rasterio.transform.xy(base["transform"], rows, cols)
    samples = gpd.GeoDataFrame(
        {n: X[:, i].astype(np.float64) for i, n in enumerate(names)} | {"class": y.astype(np.int32)},
        geometry=gpd.points_from_xy(xs, ys),
        crs=base["crs"],
    )
    samples.to_file(work / "samples.gpkg", layer="samples")

    t0 = time.perf_counter()
    rf = RandomForestClassifier(
        n_estimators=args.trees,
        max_depth=args.depth,
        min_samples_split=10,
        max_features="sqrt",
        random_state=0,
        n_jobs=args.threads,
    ).fit(X, y)
    rf.feature_names = names
    joblib.dump(rf, work / "model.joblib")
    print(
        f"sklearn training {time.perf_counter() - t0:.1f} s, "
        f"mean depth {np.mean([e.get_depth() for e in rf.estimators_]):.1f}"
    )

    env = dict(
        os.environ,
        ITK_GLOBAL_DEFAULT_NUMBER_OF_THREADS=str(args.threads),
        OTB_MAX_RAM_HINT=str(args.ram),
        OMP_NUM_THREADS=str(args.threads),
        OTB_LOGGER_LEVEL="WARNING",
    )
    t0 = time.perf_counter()
    timed(
        [
            "otbcli_TrainVectorClassifier",
            "-io.vd",
            str(work / "samples.gpkg"),
            "-io.out",
            str(work / "model.rf"),
            "-feat",
            *names,
            "-cfield",
            "class",
            "-classifier",
            "rf",
            "-classifier.rf.nbtrees",
            str(args.trees),
            "-classifier.rf.max",
            str(args.depth),
            "-classifier.rf.min",
            "10",
            "-classifier.rf.acc",
            "0",
            "-rand",
            "0",
        ],
        env,
    )
    print(f"OTB training {time.perf_counter() - t0:.1f} s")

    npix = args.size * args.size
    cc_cmd = [
        sys.executable,
        "-c",
        (
            "import joblib; from cropchain.mapping.classify import classify_tile; "
            f"m = joblib.load({str(work / 'model.joblib')!r}); m.n_jobs = {args.threads}; "
            f"classify_tile({str(fpath)!r}, {str(vpath)!r}, m, {str(nom)!r}, {str(work / 'cc_map.tif')!r}, "
            f"{str(work / 'cc_conf.tif')!r}, window={args.window})"
        ),
    ]
    cc_wall, cc_rss, _ = timed(cc_cmd, env)
    co = "?&gdal:co:TILED=YES&gdal:co:COMPRESS=DEFLATE"
    otb_wall, otb_rss, _ = timed(
        [
            "otbcli_ImageClassifier",
            "-in",
            str(fpath),
            "-model",
            str(work / "model.rf"),
            "-out",
            f"{work / 'otb_map.tif'}{co}",
            "uint8",
            "-confmap",
            f"{work / 'otb_conf.tif'}{co}",
            "float",
            "-ram",
            str(args.ram),
        ],
        env,
    )

    acc = {}
    for key, path in (("cropchain", work / "cc_map.tif"), ("otb", work / "otb_map.tif")):
        with rasterio.open(path) as src:
            acc[key] = float((src.read(1) == CODES[truth]).mean())
    print(f"{'':10s} {'wall s':>8s} {'Mpx/s':>8s} {'peak MiB':>9s} {'acc vs truth':>12s}")
    for key, wall, rss in (("cropchain", cc_wall, cc_rss), ("otb", otb_wall, otb_rss)):
        print(f"{key:10s} {wall:8.2f} {npix / wall / 1e6:8.3f} {rss:9.0f} {acc[key]:12.3f}")
    print(f"speed ratio cropchain / OTB = {otb_wall / cc_wall:.2f}x (target >= 1.5x)")
    if args.workdir is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
