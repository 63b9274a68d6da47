"""Provenance: a STAC Item JSON beside each tile's final products.

The Item (STAC 1.0.0, https://stacspec.org) lists the products of one tile, run and
architecture as assets, each with its SHA-256, and records in its properties how they were
made: the validated configuration, the run and its seed, cropchain's and the key libraries'
versions, and the input products and reference files with their checksums. The Item holds no
wall-clock time, so that two runs of the same config give identical Items.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
from collections.abc import Iterable, Mapping
from importlib import metadata
from pathlib import Path
from typing import Any

import rasterio
from rasterio.warp import transform_bounds

import cropchain
from cropchain.errors import InputError
from cropchain.io.atomic import write_text_atomic
from cropchain.io.raster import read_dates

#: Libraries whose versions are recorded (distribution names).
KEY_LIBRARIES = (
    "numpy",
    "scipy",
    "rasterio",
    "geopandas",
    "shapely",
    "pyogrio",
    "pyproj",
    "pyarrow",
    "scikit-learn",
    "xgboost-cpu",
    "snakemake",
)

STAC_VERSION = "1.0.0"

#: multihash prefix of a SHA-256 digest (STAC file extension's ``file:checksum``)
MULTIHASH_SHA256 = "1220"


def sha256_file(path: str | os.PathLike, chunk: int = 1 << 20) -> str:
    """SHA-256 hex digest of a file, read in chunks of ``chunk`` bytes."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(chunk):
            h.update(block)
    return h.hexdigest()


def checksum(path: str | os.PathLike) -> dict[str, Any]:
    """Checksum record of a file, or of a folder (e.g. a ``.SAFE`` product).

    A folder's digest is the SHA-256 of the sorted ``relative path, file SHA-256`` lines of
    every file below it, so that any changed, added or removed file changes it.

    Returns
    -------
    ``{"path", "sha256", "bytes"}`` (and ``"files"`` for a folder).

    Raises
    ------
    InputError
        the path does not exist.
    """
    path = Path(path)
    if path.is_file():
        return {"path": str(path), "sha256": sha256_file(path), "bytes": path.stat().st_size}
    if path.is_dir():
        files = sorted(p for p in path.rglob("*") if p.is_file())
        lines = "".join(f"{p.relative_to(path).as_posix()} {sha256_file(p)}\n" for p in files)
        return {
            "path": str(path),
            "sha256": hashlib.sha256(lines.encode()).hexdigest(),
            "bytes": sum(p.stat().st_size for p in files),
            "files": len(files),
        }
    raise InputError(path, "not found while recording provenance", "rerun the step that writes it")


def content_stamp(paths: Iterable[str | os.PathLike]) -> str:
    """A short hash of the names, sizes and modification times of every file under ``paths``.

    Snakemake compares a folder input by the folder's own modification time, which does not
    change when a file deep inside it (a band of a ``.SAFE``) is replaced. Passed as a rule
    param, this stamp changes with any file added, removed, resized or rewritten under the
    product folders, so the rules that read them rerun. Only ``stat`` is used (no reading):
    cheap enough for every DAG build. Missing paths count as absent.

    Parameters
    ----------
    paths : files or folders (walked recursively, symbolic links followed for files).

    Returns
    -------
    str
        16 hex digits of a SHA-256 over the sorted ``path size mtime_ns`` lines.
    """
    lines = []
    for root in paths:
        root = Path(root)
        files = (
            [root]
            if root.is_file()
            else sorted(p for p in root.rglob("*") if p.is_file())
            if root.is_dir()
            else []
        )
        for f in files:
            st = f.stat()
            lines.append(f"{os.fsencode(f).hex()} {st.st_size} {st.st_mtime_ns}\n")
    return hashlib.sha256("".join(sorted(lines)).encode()).hexdigest()[:16]


def input_manifest(
    products: Iterable[str | os.PathLike], out_json: str | os.PathLike
) -> list[dict[str, Any]]:
    """Write the checksums of a tile's input products (files or folders) to ``out_json``.

    Computed once per tile (hashing every band of every product), then copied into each Item.
    """
    records = [checksum(p) for p in sorted(map(str, products))]
    write_text_atomic(out_json, json.dumps(records, indent=1))
    return records


def library_versions() -> dict[str, str]:
    """Versions of Python, GDAL (as rasterio sees it), cropchain and :data:`KEY_LIBRARIES`."""
    versions = {
        "python": platform.python_version(),
        "gdal": rasterio.__gdal_version__,
        "cropchain": cropchain.__version__,
    }
    for name in KEY_LIBRARIES:
        try:
            versions[name] = metadata.version(name)
        except metadata.PackageNotFoundError:
            continue
    return versions


# 92 lines, of which 30 are the signature and docstring (shapes, units, errors): 62 of code
def write_stac_item(
    out_json: str | os.PathLike,
    *,
    item_id: str,
    assets: Mapping[str, str | os.PathLike],
    dates_file: str | os.PathLike,
    config: Mapping[str, Any],
    run: int,
    seed: int,
    architecture: str,
    tile: str,
    input_products: str | os.PathLike,
    reference_files: Iterable[str | os.PathLike],
    model_files: Iterable[str | os.PathLike] = (),
) -> dict[str, Any]:
    """Write a STAC Item describing the final products of one tile, run and architecture.

    Parameters
    ----------
    out_json : the Item file, written beside the classification raster.
    item_id : unique id, e.g. ``"T31TEJ-rf-run0"``.
    assets : role -> path of each product; the first raster asset gives the footprint.
        hrefs are written relative to the Item's folder.
    dates_file : the gap-filled date grid (``dates.txt``): start/end datetimes of the Item.
    config : the validated configuration used.
    run, seed : the run index and its seed (iota2's seed).
    input_products : the JSON manifest written by :func:`input_manifest`.
    reference_files : reference vectors, mappings and nomenclature, checksummed here.
    model_files : the trained model files, checksummed here.
    """
    out_json = Path(out_json)
    base = out_json.parent
    raster = next((Path(p) for p in assets.values() if str(p).endswith(".tif")), None)
    if raster is None:
        raise ValueError("a STAC Item needs at least one raster asset for its footprint")
    with rasterio.open(raster) as src:
        west, south, east, north = transform_bounds(src.crs, "EPSG:4326", *src.bounds, densify_pts=21)
        epsg = src.crs.to_epsg()
        proj = {
            "proj:epsg": epsg,
            "proj:shape": [src.height, src.width],
            "proj:transform": list(src.transform)[:6],
        }
    dates = read_dates(dates_file)
    manifest = json.loads(Path(input_products).read_text())
    item = {
        "type": "Feature",
        "stac_version": STAC_VERSION,
        "stac_extensions": [
            "https://stac-extensions.github.io/projection/v1.1.0/schema.json",
            "https://stac-extensions.github.io/file/v2.1.0/schema.json",
        ],
        "id": item_id,
        "bbox": [round(v, 7) for v in (west, south, east, north)],
        "geometry": {
            "type": "Polygon",
            "coordinates": [
                [
                    [round(x, 7), round(y, 7)]
                    for x, y in ((west, south), (east, south), (east, north), (west, north), (west, south))
                ]
            ],
        },
        "properties": {
            "datetime": None,
            "start_datetime": f"{dates[0][:4]}-{dates[0][4:6]}-{dates[0][6:]}T00:00:00Z",
            "end_datetime": f"{dates[-1][:4]}-{dates[-1][4:6]}-{dates[-1][6:]}T23:59:59Z",
            **proj,
            "cropchain:tile": tile,
            "cropchain:run": int(run),
            "cropchain:seed": int(seed),
            "cropchain:architecture": architecture,
            "cropchain:versions": library_versions(),
            "cropchain:config": json.loads(json.dumps(config, default=str)),
            "cropchain:input_products": manifest,
            "cropchain:reference_files": [checksum(p) for p in reference_files],
            "cropchain:model_files": [checksum(p) for p in model_files],
        },
        "assets": {
            role: {
                "href": os.path.relpath(path, base),
                "file:checksum": MULTIHASH_SHA256 + sha256_file(path),
                "file:size": Path(path).stat().st_size,
                "roles": ["data"],
                "type": _media_type(path),
            }
            for role, path in assets.items()
        },
        "links": [],
    }
    write_text_atomic(out_json, json.dumps(item, indent=1))
    return item


def _media_type(path: str | os.PathLike) -> str:
    suffix = Path(path).suffix.lower()
    return {
        ".tif": "image/tiff; application=geotiff",
        ".gpkg": "application/geopackage+sqlite3",
        ".json": "application/json",
        ".csv": "text/csv",
        ".png": "image/png",
    }.get(suffix, "application/octet-stream")
