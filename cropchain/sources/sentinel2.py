"""Sentinel-2 L2A products in ESA's SAFE format -> the chain's raw time series of a tile.

A SAFE product is a folder ``S2A_MSIL2A_<sensing>_N<baseline>_R<orbit>_T<tile>_<generation>.SAFE``
with ``MTD_MSIL2A.xml`` at its root and JPEG 2000 bands under
``GRANULE/*/IMG_DATA/R10m`` (B02 B03 B04 B08) and ``R20m`` (B05 B06 B07 B8A B11 B12 and the
scene classification SCL). Band files are found by globbing these folders: the file names listed
in ``MTD_MSIL2A.xml`` do not always match the files on disk (older baselines, clipped products).

Digital numbers (DN, uint16) convert to surface reflectance as
``(DN + BOA_ADD_OFFSET) / BOA_QUANTIFICATION_VALUE`` (ESA, Sentinel-2 L2A Product Specification,
processing baseline 04.00 onwards adds the offset of -1000); DN 0 is nodata.

:func:`ingest_safe` writes the three files of the ingest stage (DESIGN.md section 1), following
Orfeo ToolBox's conventions for image time series (as iota2 does):

* ``raw.tif``: int16 reflectance x10000, one band per (date, band), date-major
  (date1b1, date1b2, ..., date1bN, date2b1, ...), described ``YYYYMMDD_Bxx``;
* ``raw_mask.tif``: uint8, one band per date, 1 = masked (cloud, shadow, cirrus, saturated or
  nodata from the SCL, or DN 0 in any band), 0 = clear;
* ``raw_dates.txt``: one ``YYYYMMDD`` per line.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import fnmatch
import logging
import os
import re
import shutil
import tempfile
import xml.etree.ElementTree as ET
import zipfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling

from cropchain.errors import ConfigError, InputError
from cropchain.io.atomic import require_utf8_path
from cropchain.io.raster import GridReader, block_windows, geotiff_profile
from cropchain.sources.common import (
    RAW_NODATA,
    REFLECTANCE_SCALE,
    check_one_per_date,
    check_one_tile,
    normalize_tile,
    parse_resampling,
    product_tags,
    unreadable,
    write_raw_series,
    write_windows,
)

log = logging.getLogger(__name__)

#: Default bands and their order in ``raw.tif``: the four 10 m bands, then the six 20 m bands.
SENTINEL2_BANDS: tuple[str, ...] = ("B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12")

#: SCL classes masked by default: 0 nodata, 1 saturated/defective, 3 cloud shadows,
#: 8 cloud medium probability, 9 cloud high probability, 10 thin cirrus.
DEFAULT_SCL_MASKED: tuple[int, ...] = (0, 1, 3, 8, 9, 10)

#: Every SCL class of Sentinel-2 L2A (0 nodata .. 11 snow / ice).
SCL_CLASSES: tuple[int, ...] = tuple(range(12))

#: Native resolution (m) of every band of an L2A product, and of the scene classification.
NATIVE_RESOLUTION: dict[str, int] = {
    "B01": 60,
    "B02": 10,
    "B03": 10,
    "B04": 10,
    "B05": 20,
    "B06": 20,
    "B07": 20,
    "B08": 10,
    "B8A": 20,
    "B09": 60,
    "B11": 20,
    "B12": 20,
    "SCL": 20,
}

#: ESA's ``bandId`` order in the product metadata (used when the metadata has no
#: ``Spectral_Information_List`` to map ``BOA_ADD_OFFSET band_id`` to band names).
ESA_BAND_IDS: tuple[str, ...] = (
    "B01",
    "B02",
    "B03",
    "B04",
    "B05",
    "B06",
    "B07",
    "B08",
    "B8A",
    "B09",
    "B10",
    "B11",
    "B12",
)

MTD_NAME = "MTD_MSIL2A.xml"
_TILE_RE = re.compile(r"_T(\d{2}[A-Z]{3})(?:_|$)")
_SENSING_RE = re.compile(r"_(\d{8}T\d{6})_")


@dataclass(frozen=True)
class SafeProduct:
    """What the chain needs from one Sentinel-2 L2A SAFE product.

    Attributes
    ----------
    path : the ``.SAFE`` folder.
    date : sensing date (UTC) from ``PRODUCT_START_TIME``.
    sensing_time : sensing start time (UTC, naive datetime).
    tile : MGRS tile with its leading ``T``, e.g. ``"T31TEJ"``.
    spacecraft : ``"Sentinel-2A"``, ``"Sentinel-2B"`` ...
    baseline : processing baseline as written in the metadata, e.g. ``"02.08"``, ``"05.00"``.
    quantification : ``BOA_QUANTIFICATION_VALUE`` (reflectance = (DN + offset) / quantification).
    offsets : ``BOA_ADD_OFFSET`` per band name (``"B02"`` ...), 0 for products before baseline 04.00.
    band_files : band name -> JPEG 2000 file at the band's native resolution.
    scl_file : scene classification (SCL) at 20 m.
    """

    path: Path
    date: dt.date
    sensing_time: dt.datetime
    tile: str
    spacecraft: str
    baseline: str
    quantification: float
    offsets: dict[str, int] = field(default_factory=dict)
    band_files: dict[str, Path] = field(default_factory=dict)
    scl_file: Path | None = None

    @property
    def datestr(self) -> str:
        """Sensing date as ``YYYYMMDD`` (OTB's dates file convention)."""
        return self.date.strftime("%Y%m%d")


_TILE_ID_RE = re.compile(r"T?\d{2}[C-HJ-NP-X][A-HJ-NP-Z]{2}", re.IGNORECASE)


def tile_id_of_name(name: str) -> str | None:
    """The MGRS tile id (``T31TEJ``) a config tile name stands for, or None when the name is
    not a tile id (``"herault"``, ``"OTB"``): only then can products be checked against it."""
    text = str(name).strip()
    return normalize_tile(text) if _TILE_ID_RE.fullmatch(text) else None


def scl_masked_for_kept(kept: Sequence[int]) -> list[int]:
    """The SCL classes to mask at ingest so that only ``kept`` classes are clear.

    Parameters
    ----------
    kept : SCL classes kept (e.g. ``[4, 5, 6, 7]``), each 0-11.

    Returns
    -------
    sorted list of the other SCL classes (0-11).

    Raises
    ------
    ConfigError
        an unknown class, or no class kept.
    """
    kept_set = {int(c) for c in kept}
    bad = sorted(c for c in kept_set if c not in SCL_CLASSES)
    if bad:
        raise ConfigError(f"gapfill.scl_kept_classes: SCL classes are 0-11, got {bad}")
    if not kept_set:
        raise ConfigError("gapfill.scl_kept_classes: keep at least one SCL class (default 4, 5, 6, 7)")
    return [c for c in SCL_CLASSES if c not in kept_set]


def _local(tag: str) -> str:
    return tag.rsplit("}", 1)[-1]


def _sensing_from_name(path: Path) -> dt.datetime | None:
    m = _SENSING_RE.search(path.name)
    if not m:
        return None
    try:
        return dt.datetime.strptime(m.group(1), "%Y%m%dT%H%M%S")
    except ValueError:
        return None


_ZIPPED_SAFE_RE = re.compile(r"^S2[A-D]_MSIL2A_\w+(\.SAFE)?\.zip$", re.IGNORECASE)


def is_zipped_safe(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a zipped Sentinel-2 L2A product (``S2B_MSIL2A_...SAFE.zip`` as the
    Copernicus Data Space delivers it, or ``S2B_MSIL2A_....zip``)."""
    return bool(_ZIPPED_SAFE_RE.match(Path(path).name))


def _safe_name_of_zip(path: Path) -> str:
    name = path.name[:-4]
    return name if name.upper().endswith(".SAFE") else name + ".SAFE"


class ZippedFolder:
    """A zipped product read in place: its members as GDAL ``/vsizip/{archive}/...`` paths.

    The archive holds one product folder (``<name>.SAFE/`` as the Copernicus Data Space
    delivers it, or a Theia product folder); files are located by name patterns relative to
    that folder, as in the unzipped product. ``top``: that folder's name (default: the folder
    holding ``MTD_MSIL2A.xml``, else the archive's name without ``.zip``).
    """

    def __init__(self, archive: Path, top: str | None = None) -> None:
        self.archive = archive
        try:
            with zipfile.ZipFile(archive) as zf:
                names = [n for n in zf.namelist() if not n.endswith("/")]
        except (zipfile.BadZipFile, OSError) as exc:
            raise InputError(
                archive,
                f"zipped product cannot be read ({exc})",
                "download the product again (the zip is damaged or incomplete)",
            ) from None
        tops = sorted(
            {n.split("/", 1)[0] for n in names if n.count("/") >= 1 and n.split("/", 1)[1] == MTD_NAME}
        )
        self.top = top or (tops[0] if tops else _safe_name_of_zip(archive))
        prefix = self.top + "/"
        self.members = sorted(n[len(prefix) :] for n in names if n.startswith(prefix))

    def path(self, rel: str) -> Path:
        """GDAL's path of a member (``rasterio.open`` reads it in place)."""
        return Path(f"/vsizip/{{{self.archive.resolve()}}}/{self.top}/{rel}")

    def exists(self, rel: str) -> bool:
        return rel in self.members

    def read(self, rel: str) -> bytes:
        with zipfile.ZipFile(self.archive) as zf:
            return zf.read(f"{self.top}/{rel}")

    def glob(self, pattern: str) -> list[Path]:
        parts = pattern.split("/")
        return [
            self.path(m)
            for m in self.members
            if len(m.split("/")) == len(parts)
            and all(fnmatch.fnmatchcase(a, b) for a, b in zip(m.split("/"), parts))
        ]

    def folders(self, pattern: str) -> list[Path]:
        parts = pattern.split("/")
        found = {"/".join(m.split("/")[: len(parts)]) for m in self.members if len(m.split("/")) > len(parts)}
        return [
            self.path(f)
            for f in sorted(found)
            if all(fnmatch.fnmatchcase(a, b) for a, b in zip(f.split("/"), parts))
        ]


def find_safe_products(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Find Sentinel-2 ``.SAFE`` product folders.

    Parameters
    ----------
    paths : one path or several; each is a ``.SAFE`` folder or a zipped product
        (``*.SAFE.zip``) itself, or a folder searched recursively for both.

    Returns
    -------
    list of Path
        The product folders and zipped products (read in place through GDAL's ``/vsizip/``;
        a zip whose unzipped ``.SAFE`` folder is also there is left out), without duplicates,
        sorted by sensing time (from the name, or from ``MTD_MSIL2A.xml`` where the name does
        not carry it).

    Raises
    ------
    InputError
        a path does not exist or is not valid UTF-8; no product was found at all.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [require_utf8_path(p, "products folder") for p in paths]
    found: dict[Path, None] = {}
    zipped: list[Path] = []
    for p in paths:
        if not p.exists():
            raise InputError(p, "folder not found", "give a .SAFE folder or a folder holding .SAFE products")
        if p.is_dir() and p.suffix.upper() == ".SAFE":
            found[p.resolve()] = None
        elif p.is_dir():
            for q in sorted(p.rglob("*")):
                if q.is_dir() and q.suffix.upper() == ".SAFE":
                    found[q.resolve()] = None
                elif q.is_file() and is_zipped_safe(q):
                    zipped.append(q)
        elif is_zipped_safe(p):
            zipped.append(p)
        else:
            raise InputError(
                p,
                "not a folder",
                "give a .SAFE folder or a folder holding .SAFE products (unzip .zip downloads first)",
            )
    for q in found:
        require_utf8_path(q, "SAFE product")
    unzipped = {q.name.upper() for q in found}
    in_place = sorted({z.resolve() for z in zipped if _safe_name_of_zip(z).upper() not in unzipped})
    twins = len({z.resolve() for z in zipped}) - len(in_place)
    if twins:
        log.info("%d zipped product(s) ignored: the same .SAFE folder is there unzipped", twins)
    if in_place:
        log.info(
            "%d zipped product(s) read in place (GDAL /vsizip/): %s",
            len(in_place),
            ", ".join(z.name for z in in_place[:5]) + (" ..." if len(in_place) > 5 else ""),
        )
    for z in in_place:
        found[z] = None
    if not found:
        where = ", ".join(str(p) for p in paths) or "<no path given>"
        raise InputError(
            where,
            "no Sentinel-2 .SAFE product folder found",
            "download L2A products (unzipped .SAFE folders) there, or fix the path",
        )

    def key(p: Path):
        t = _sensing_from_name(p)
        if t is None:
            t = read_safe_product(p, bands=()).sensing_time
        return (t, p.name)

    return sorted(found, key=key)


def _parse_mtd(mtd: Path, zipped: ZippedFolder | None = None) -> ET.Element:
    text = zipped.read(MTD_NAME) if zipped else None
    try:
        return ET.fromstring(text) if zipped else ET.parse(mtd).getroot()
    except (ET.ParseError, OSError) as exc:
        raise InputError(
            mtd,
            f"product metadata cannot be parsed ({exc})",
            "download the product again; MTD_MSIL2A.xml is damaged",
        ) from None


def _find_text(root: ET.Element, *names: str) -> str | None:
    for el in root.iter():
        if _local(el.tag) in names and el.text and el.text.strip():
            return el.text.strip()
    return None


def _band_offsets(root: ET.Element, mtd: Path) -> dict[str, int]:
    id_to_band = {}
    for el in root.iter():
        if _local(el.tag) == "Spectral_Information" and "bandId" in el.attrib and "physicalBand" in el.attrib:
            name = el.attrib["physicalBand"].upper()
            m = re.fullmatch(r"B(\d+)(A?)", name)
            if m:
                name = f"B{int(m.group(1)):02d}{m.group(2)}" if not m.group(2) else f"B{m.group(1)}A"
            id_to_band[el.attrib["bandId"]] = name
    offsets: dict[str, int] = {}
    for el in root.iter():
        if _local(el.tag) != "BOA_ADD_OFFSET":
            continue
        band_id = el.attrib.get("band_id", el.attrib.get("bandId"))
        try:
            value = int(round(float(el.text)))
            name = id_to_band.get(band_id) or ESA_BAND_IDS[int(band_id)]
        except (TypeError, ValueError, IndexError):
            raise InputError(
                mtd,
                f"BOA_ADD_OFFSET band_id={band_id!r} value={el.text!r} is not understood",
                "download the product again; MTD_MSIL2A.xml is damaged",
            ) from None
        offsets[name] = value
    return offsets


def _tile_of(root: ET.Element, safe: Path) -> str | None:
    for el in root.iter():
        name = _local(el.tag)
        texts = []
        if name in ("PRODUCT_URI", "PRODUCT_URI_2A"):
            texts.append(el.text or "")
        if name == "Granule":
            texts.append(el.attrib.get("granuleIdentifier", ""))
        for t in texts:
            m = _TILE_RE.search(t.strip().removesuffix(".SAFE"))
            if m:
                return "T" + m.group(1)
    m = _TILE_RE.search(safe.name.removesuffix(".SAFE"))
    return "T" + m.group(1) if m else None


def _band_file(safe: Path, band: str, zipped: ZippedFolder | None = None) -> Path:
    res = NATIVE_RESOLUTION[band]
    pattern = f"GRANULE/*/IMG_DATA/R{res}m/*_{band}_{res}m.jp2"
    hits = sorted(zipped.glob(pattern) if zipped else safe.glob(pattern))
    if not hits:
        folders = sorted(
            zipped.folders(f"GRANULE/*/IMG_DATA/R{res}m")
            if zipped
            else safe.glob(f"GRANULE/*/IMG_DATA/R{res}m")
        )
        where = folders[0] if folders else safe / "GRANULE" / "*" / "IMG_DATA" / f"R{res}m"
        raise InputError(
            where,
            f"band {band} ({res} m) not found: no file *_{band}_{res}m.jp2",
            "the product is incomplete; download it again or remove it from the inputs",
        )
    if len(hits) > 1:
        raise InputError(
            hits[0].parent,
            f"several files for band {band}: {[h.name for h in hits]}",
            "keep one granule per SAFE product",
        )
    return hits[0]


def _check_bands(bands: Sequence[str]) -> tuple[str, ...]:
    bands = tuple(str(b).upper() for b in bands)
    for b in bands:
        if b not in NATIVE_RESOLUTION or b == "SCL":
            valid = [x for x in NATIVE_RESOLUTION if x != "SCL"]
            raise ConfigError(f"ingest.bands: unknown Sentinel-2 L2A band {b!r} (valid: {', '.join(valid)})")
    if len(set(bands)) != len(bands):
        raise ConfigError(f"ingest.bands: duplicate band in {list(bands)}")
    return bands


def read_safe_product(safe_dir: str | os.PathLike, bands: Sequence[str] = SENTINEL2_BANDS) -> SafeProduct:
    """Read the metadata of one L2A SAFE product and locate its band files.

    Parameters
    ----------
    safe_dir : the ``.SAFE`` folder, or a zipped product (``*.SAFE.zip``, read in place: its
        band files are GDAL ``/vsizip/{archive}/...`` paths).
    bands : bands whose files must be present (default :data:`SENTINEL2_BANDS`); the SCL file
        is always looked up when ``bands`` is not empty.

    Returns
    -------
    SafeProduct

    Raises
    ------
    InputError
        the folder does not exist, has no ``MTD_MSIL2A.xml``, the metadata cannot be parsed or
        lacks the sensing time / baseline / quantification value, a baseline >= 04.00 product
        has no ``BOA_ADD_OFFSET``, or a band file is missing (the message names the band and
        the folder searched).
    """
    safe = Path(safe_dir)
    bands = _check_bands(bands)
    zipped = ZippedFolder(safe) if safe.is_file() and is_zipped_safe(safe) else None
    if zipped is None and not safe.is_dir():
        raise InputError(safe, "SAFE product folder not found", "check the path of the product")
    mtd = zipped.path(MTD_NAME) if zipped else safe / MTD_NAME
    if not (zipped.exists(MTD_NAME) if zipped else mtd.is_file()):
        raise InputError(
            safe,
            f"not a Sentinel-2 L2A product: {MTD_NAME} is missing",
            "give complete L2A .SAFE folders (download the product again, or remove this folder)",
        )
    root = _parse_mtd(mtd, zipped)
    sensing, baseline, quantification = _sensing_baseline_quantification(root, mtd)
    offsets = _checked_offsets(root, mtd, baseline, bands)
    tile = _tile_of(root, Path(zipped.top) if zipped else safe)
    if tile is None:
        raise InputError(
            safe,
            "the MGRS tile (e.g. T31TEJ) is neither in the metadata nor in the folder name",
            "keep ESA's product name S2x_MSIL2A_..._Txxxxx_....SAFE",
        )
    spacecraft = _find_text(root, "SPACECRAFT_NAME") or "unknown"
    band_files = {b: _band_file(safe, b, zipped) for b in bands}
    scl = _band_file(safe, "SCL", zipped) if bands else None
    return SafeProduct(
        path=safe,
        date=sensing.date(),
        sensing_time=sensing,
        tile=tile,
        spacecraft=spacecraft,
        baseline=baseline,
        quantification=quantification,
        offsets={b: offsets.get(b, 0) for b in (bands or offsets)},
        band_files=band_files,
        scl_file=scl,
    )


def _sensing_baseline_quantification(root: ET.Element, mtd: Path) -> tuple[dt.datetime, str, float]:
    """``PRODUCT_START_TIME`` (naive UTC), ``PROCESSING_BASELINE`` as written and
    ``BOA_QUANTIFICATION_VALUE`` of the metadata; InputError naming ``mtd`` when one is missing
    or malformed."""
    fix = "download the product again; MTD_MSIL2A.xml is incomplete"
    start = _find_text(root, "PRODUCT_START_TIME", "DATATAKE_SENSING_START")
    if start is None:
        raise InputError(mtd, "no PRODUCT_START_TIME in the metadata", fix)
    try:
        sensing = dt.datetime.fromisoformat(start.replace("Z", "+00:00")).replace(tzinfo=None)
    except ValueError:
        raise InputError(mtd, f"PRODUCT_START_TIME {start!r} is not an ISO date-time", fix) from None
    baseline = _find_text(root, "PROCESSING_BASELINE")
    if baseline is None:
        raise InputError(mtd, "no PROCESSING_BASELINE in the metadata", fix)
    try:
        float(baseline)
    except ValueError:
        raise InputError(mtd, f"PROCESSING_BASELINE {baseline!r} is not a number like 05.00", fix) from None
    quant = _find_text(root, "BOA_QUANTIFICATION_VALUE", "L2A_BOA_QUANTIFICATION_VALUE")
    if quant is None:
        raise InputError(
            mtd, "no BOA_QUANTIFICATION_VALUE in the metadata (is this a Level-2A product?)", fix
        )
    try:
        quantification = float(quant)
        if quantification <= 0:
            raise ValueError
    except ValueError:
        raise InputError(mtd, f"BOA_QUANTIFICATION_VALUE {quant!r} is not a positive number", fix) from None
    return sensing, baseline, quantification


def _checked_offsets(root: ET.Element, mtd: Path, baseline: str, bands: Sequence[str]) -> dict[str, int]:
    """``BOA_ADD_OFFSET`` per band; InputError when a baseline >= 04.00 product has none, or none
    for one of ``bands``."""
    offsets = _band_offsets(root, mtd)
    if float(baseline) >= 4.0 and bands and not offsets:
        raise InputError(
            mtd,
            f"processing baseline {baseline} but no BOA_ADD_OFFSET in the metadata",
            "restore the original MTD_MSIL2A.xml (baselines >= 04.00 carry a -1000 offset per band)",
        )
    missing_off = [b for b in bands if offsets and b not in offsets]
    if missing_off:
        raise InputError(
            mtd,
            f"no BOA_ADD_OFFSET for band(s) {missing_off}",
            "download the product again; MTD_MSIL2A.xml is incomplete",
        )
    return offsets


def _open(path: Path):
    try:
        return rasterio.open(path)
    except rasterio.errors.RasterioIOError as exc:
        raise unreadable(path, exc) from None


def _resampling(name: str) -> Resampling:
    return parse_resampling(name, ["nearest", "bilinear", "cubic", "cubic_spline", "lanczos", "average"])


def _grid(src) -> tuple:
    return (src.crs, tuple(round(v, 6) for v in src.transform[:6]), src.width, src.height)


def _grid_reader(path: Path, grid: dict, resampling: Resampling) -> GridReader:
    """Band 1 of ``path`` read by windows on the reference ``grid`` (crs, transform, width,
    height): as it is when on the grid, else warped with ``resampling``, DN 0 being excluded
    from the interpolation (L2A nodata)."""
    src = _open(path)
    if src.crs != grid["crs"]:
        src.close()
        raise InputError(
            path,
            f"CRS {src.crs} differs from the tile's {grid['crs']}",
            "all bands and products of a tile must share its UTM projection",
        )
    return GridReader(src, grid, resampling, src_nodata=0, nodata=0)


def _read_window(reader: GridReader, path: Path, window) -> np.ndarray:
    """uint16 [h, w] DN of a window; a damaged file raises InputError naming it."""
    try:
        return reader.read(window, "uint16")
    except rasterio.errors.RasterioError as exc:
        raise unreadable(path, exc) from None


SAME_DATE_RULES = ("error", "merge")


def _baseline_key(p: SafeProduct) -> tuple:
    """Most recent first: processing baseline, then the product's generation time (end of its name)."""
    try:
        baseline = float(p.baseline)
    except ValueError:
        baseline = -1.0
    return (-baseline, tuple(-ord(c) for c in p.path.name))


def merge_same_date_products(
    products: Sequence[SafeProduct],
    scl_masked_classes: Sequence[int],
    work_dir: str | os.PathLike,
    *,
    block: int = 1024,
) -> list[SafeProduct]:
    """Merge products of the same sensing date into one per date: per pixel, the clear observation
    of the most recent processing baseline.

    Two products of one date come from a tile at the overlap of two orbits' datastrips, or from
    a reprocessing (the same acquisition under a newer baseline). For each date with several
    products, and for each band at its native resolution, a pixel takes its value from the
    first product, in order of processing baseline (newest first, then the newest generation
    time), where the pixel is clear (SCL not in ``scl_masked_classes`` and DN not 0); where no
    product is clear, from the first product with data (the pixel stays masked through its SCL).
    DNs are converted to the chosen reference's ``BOA_ADD_OFFSET`` and quantification, so that
    reflectance is unchanged. The SCL is merged by the same rule.

    Parameters
    ----------
    products : products of one tile, as :func:`read_safe_product` returns them.
    scl_masked_classes : SCL classes that are not clear (the ingest's mask).
    work_dir : folder for the merged band files (uint16 GeoTIFF at each band's resolution); it
        must outlive the ingest that reads them.
    block : rows per window (memory: a few ``block x width`` arrays per product).

    Returns
    -------
    list of SafeProduct
        one per date, sorted by sensing time; single products are returned as they are; a
        merged one keeps the metadata of the most recent baseline and points at the merged files.

    Raises
    ------
    InputError
        products of one date whose band files are not on one grid.
    """
    work_dir = Path(work_dir)
    masked = np.array(sorted({int(c) for c in scl_masked_classes}), dtype=np.int64)
    by_date: dict[dt.date, list[SafeProduct]] = {}
    for p in products:
        by_date.setdefault(p.date, []).append(p)
    out: list[SafeProduct] = []
    for date, group in sorted(by_date.items()):
        if len(group) == 1:
            out.append(group[0])
            continue
        out.append(_merge_date(date, sorted(group, key=_baseline_key), masked, work_dir, block))
    return out


def _merge_date(
    date: dt.date, group: list[SafeProduct], masked: np.ndarray, work_dir: Path, block: int
) -> SafeProduct:
    """The products of one date (newest baseline first) merged into ``work_dir/YYYYMMDD/<band>.tif``
    (see :func:`merge_same_date_products`)."""
    ref = group[0]
    folder = work_dir / f"{date:%Y%m%d}"
    folder.mkdir(parents=True, exist_ok=True)
    merged: dict[str, Path] = {}
    from_ref = total = 0
    for band in [*ref.band_files, "SCL"]:
        merged[band] = folder / f"{band}.tif"
        counts = _merge_band(group, band, date, merged[band], masked, block)
        if band == "SCL":
            from_ref, total = counts
    log.warning(
        "%s: %d products of the same date merged per pixel, the clear observation of the most recent "
        "processing baseline first (%s); %.1f%% of the clear pixels from %s",
        date,
        len(group),
        ", ".join(f"{p.path.name} (baseline {p.baseline})" for p in group),
        100.0 * from_ref / total if total else 0.0,
        ref.path.name,
    )
    return SafeProduct(
        path=ref.path,
        date=ref.date,
        sensing_time=ref.sensing_time,
        tile=ref.tile,
        spacecraft=ref.spacecraft,
        baseline=ref.baseline,
        quantification=ref.quantification,
        offsets=dict(ref.offsets),
        band_files={b: merged[b] for b in ref.band_files},
        scl_file=merged["SCL"],
    )


def _merge_band(
    group: list[SafeProduct], band: str, date: dt.date, target: Path, masked: np.ndarray, block: int
) -> tuple[int, int]:
    """Write ``target``, ``band`` (or ``"SCL"``) of the products of one date merged per pixel
    (see :func:`merge_same_date_products`; ``group`` newest baseline first, the reference).
    Returns (pixels taken from the reference, pixels taken at all) by the clear rule."""
    from rasterio.windows import Window

    files = [p.scl_file if band == "SCL" else p.band_files.get(band) for p in group]
    if any(f is None for f in files):
        raise InputError(
            group[[f is None for f in files].index(True)].path,
            f"band {band} missing in one of the products of {date}",
            "give products with the same bands",
        )
    from_ref = total = 0
    with contextlib.ExitStack() as stack:
        srcs = [stack.enter_context(_open(f)) for f in files]
        scls = [stack.enter_context(_open(p.scl_file)) for p in group]
        first = srcs[0]
        for f, src in zip(files[1:], srcs[1:]):
            if _grid(src) != _grid(first):
                raise InputError(
                    f,
                    f"grid differs from {files[0]}, a product of the same date {date}",
                    "products of one date can only be merged on one tile grid",
                )
        profile = geotiff_profile(first.profile, count=1, dtype="uint16", nodata=0)
        profile.update(driver="GTiff")
        with rasterio.open(target, "w", **profile) as dst:
            for row in range(0, first.height, block):
                win = Window(0, row, first.width, min(block, first.height - row))
                value, chosen = _merge_window(group, band, srcs, scls, win, masked)
                dst.write(value, 1, window=win)
                if band == "SCL":
                    from_ref += int((chosen == 0).sum())
                    total += int((chosen >= 0).sum())
    return from_ref, total


def _merge_window(
    group: list[SafeProduct], band: str, srcs: list, scls: list, win, masked: np.ndarray
) -> tuple[np.ndarray, np.ndarray]:
    """One window of :func:`_merge_band`: the merged uint16 values [h, w] and the index of the
    product each pixel's clear observation comes from (-1: none clear)."""
    from rasterio.windows import bounds as window_bounds
    from rasterio.windows import from_bounds

    ref, first = group[0], srcs[0]
    shape = (int(win.height), int(win.width))
    value = np.zeros(shape, dtype=np.uint16)
    chosen = np.full(shape, -1, dtype=np.int16)
    fallback = np.full(shape, -1, dtype=np.int16)
    for k, (p, src, scl) in enumerate(zip(group, srcs, scls)):
        dn = src.read(1, window=win)
        sw = from_bounds(*window_bounds(win, first.transform), transform=scl.transform)
        cls = scl.read(
            1,
            window=sw,
            out_shape=shape,
            resampling=Resampling.nearest,
            boundless=True,
            fill_value=0,
        )
        has = (cls != 0) if band == "SCL" else (dn != 0)
        clear = has & ~np.isin(cls, masked)
        take = clear & (chosen < 0)
        chosen[take] = k
        fallback[has & (fallback < 0)] = k
        if band == "SCL":
            v = dn.astype(np.float64)
        else:
            v = (dn.astype(np.float64) + p.offsets.get(band, 0)) * (
                ref.quantification / p.quantification
            ) - ref.offsets.get(band, 0)
            v = np.clip(np.rint(v), 1, 65535)
        pick = take | ((chosen < 0) & (fallback == k) & has)
        value[pick] = v[pick].astype(np.uint16)
    return value, chosen


def ingest_safe(
    products: Sequence[str | os.PathLike],
    out_raw: str | os.PathLike,
    out_mask: str | os.PathLike,
    out_dates: str | os.PathLike,
    *,
    bands: Sequence[str] = SENTINEL2_BANDS,
    scl_masked_classes: Sequence[int] = DEFAULT_SCL_MASKED,
    resampling: str = "bilinear",
    tile: str | None = None,
    same_date: str = "error",
    block: int = 1024,
) -> None:
    """Stack Sentinel-2 L2A SAFE products of one tile into ``raw.tif``, ``raw_mask.tif``, ``raw_dates.txt``.

    Parameters
    ----------
    products : ``.SAFE`` folders of one tile (any order; see :func:`find_safe_products`).
    out_raw : ``raw.tif``: int16 reflectance x10000, i.e. ``(DN + BOA_ADD_OFFSET) * 10000 /
        BOA_QUANTIFICATION_VALUE``, rounded and clipped to [-32767, 32767]; :data:`RAW_NODATA`
        (-32768) where DN is 0. ``n_dates * len(bands)`` bands, date-major (OTB's order:
        date1b1 .. date1bN, date2b1 ...), described ``YYYYMMDD_Bxx``; shape
        [n_dates * n_bands, H, W] on the 10 m grid.
    out_mask : ``raw_mask.tif``: uint8 [n_dates, H, W], 1 = masked (SCL class in
        ``scl_masked_classes``, or DN 0 in any band), 0 = clear.
    out_dates : ``raw_dates.txt``: one ``YYYYMMDD`` per line, in band order.
    bands : band names in output order (default :data:`SENTINEL2_BANDS`).
    scl_masked_classes : scene classification classes to mask (default :data:`DEFAULT_SCL_MASKED`).
    resampling : rasterio resampling of the 20 m (and 60 m) bands onto the 10 m grid
        (``"bilinear"``, ``"cubic"``, ``"nearest"`` ...). SCL is always resampled by nearest.
    tile : expected tile (``"T31TEJ"`` or ``"31TEJ"``); by default the tile of the first product.
    same_date : ``"error"`` (default): two products of one date stop the ingest; ``"merge"``:
        they are merged per pixel, the clear observation of the most recent processing baseline
        first (:func:`merge_same_date_products`, config ``ingest.same_date``).

    block : window size in px: products are read (20 m bands warped) and written one date
        and one window at a time, so memory is a few ``block`` x ``block`` arrays, whatever
        the tile size.

    The output grid is that of the first product's first 10 m band (B02 by default).

    Raises
    ------
    InputError
        no product, a product that :func:`read_safe_product` rejects, products of another tile
        than ``tile`` (or than the first product), two products of the same date (both named),
        a 10 m band not on the grid of the first product, an unreadable band file. Nothing is
        written then.
    ConfigError
        unknown band or resampling name.
    """
    bands = _check_bands(bands)
    if not bands:
        raise ConfigError("ingest.bands: at least one band is needed")
    rs = _resampling(resampling)
    masked = np.array(sorted({int(c) for c in scl_masked_classes}), dtype=np.int64)
    if not products:
        raise InputError(
            out_raw, "no Sentinel-2 product given for this tile", "check the products folder of the tile"
        )
    if same_date not in SAME_DATE_RULES:
        raise ConfigError(f"ingest.same_date: {same_date!r}, choose one of {', '.join(SAME_DATE_RULES)}")
    prods = sorted(
        (p if isinstance(p, SafeProduct) else read_safe_product(p, bands) for p in products),
        key=lambda p: (p.sensing_time, p.path.name),
    )
    expected = check_one_tile(prods, tile)
    if same_date == "merge" and len({p.date for p in prods}) < len(prods):
        outs = (out_raw, out_mask, out_dates)
        _ingest_merged(prods, outs, bands, scl_masked_classes, resampling, expected, block)
        return
    check_one_per_date(
        prods,
        "sensing",
        "keep one product per date (e.g. the latest processing baseline) and remove the other, "
        "or set ingest.same_date: merge (per pixel, the clear observation of the newest baseline)",
    )
    _write_safe_series(prods, (out_raw, out_mask, out_dates), bands, expected, rs, masked, block)


def _write_safe_series(
    prods: list[SafeProduct],
    outs: tuple,
    bands: tuple[str, ...],
    expected: str,
    rs: Resampling,
    masked: np.ndarray,
    block: int,
) -> None:
    """The writing part of :func:`ingest_safe`: products checked (one tile, one per date)."""
    ref_band = next((b for b in bands if NATIVE_RESOLUTION[b] == 10), bands[0])
    base, grid = _reference_grid(prods, ref_band)
    log.info(
        "ingest %d products of tile %s (%s .. %s), %d bands, grid %dx%d",
        len(prods),
        expected,
        prods[0].date,
        prods[-1].date,
        len(bands),
        grid["width"],
        grid["height"],
    )
    windows = list(block_windows(grid["height"], grid["width"], block))
    datestrs = [p.datestr for p in prods]
    labels = [f"{p.datestr} {p.spacecraft}" for p in prods]
    tags = product_tags(
        expected, datestrs, bands, ("SCL_MASKED", ",".join(str(int(c)) for c in masked)), None
    )

    def write_date(raw, msk, d: int) -> int:
        return _write_safe_date(raw, msk, d, prods[d], bands, grid, windows, rs, masked)

    write_raw_series(
        outs, base, datestrs, bands, write_date, tile=expected, labels=labels, tags=tags, logger=log
    )


def _ingest_merged(
    prods: list[SafeProduct],
    outs: tuple,
    bands: tuple[str, ...],
    scl_masked_classes: Sequence[int],
    resampling: str,
    expected: str,
    block: int,
) -> None:
    """:func:`ingest_safe` of products with several of one date, merged first
    (:func:`merge_same_date_products`) into a temporary folder beside ``raw.tif``."""
    out_raw = outs[0]
    Path(out_raw).parent.mkdir(parents=True, exist_ok=True)
    for stale in Path(out_raw).parent.glob(".same-date-*"):  # left by a killed ingest of this tile
        shutil.rmtree(stale, ignore_errors=True)
    with tempfile.TemporaryDirectory(dir=Path(out_raw).parent, prefix=".same-date-") as work:
        merged = merge_same_date_products(prods, scl_masked_classes, work)
        ingest_safe(
            merged,
            *outs,
            bands=bands,
            scl_masked_classes=scl_masked_classes,
            resampling=resampling,
            tile=expected,
            block=block,
        )


def _reference_grid(prods: list[SafeProduct], ref_band: str) -> tuple[dict, dict]:
    """Profile and grid (crs, transform, width, height) of the first product's ``ref_band``;
    InputError when it has no CRS or another product's ``ref_band`` is on another grid."""
    with _open(prods[0].band_files[ref_band]) as src:
        base = src.profile
        grid = {"crs": src.crs, "transform": src.transform, "width": src.width, "height": src.height}
        ref_grid = _grid(src)
    if grid["crs"] is None:
        raise InputError(prods[0].band_files[ref_band], "band file has no CRS", "download the product again")
    for p in prods[1:]:
        f = p.band_files[ref_band]
        with _open(f) as src:
            if _grid(src) != ref_grid:
                raise InputError(
                    f,
                    f"grid {src.crs} {src.width}x{src.height} {tuple(src.transform)[:6]} differs from "
                    f"{prods[0].band_files[ref_band]} ({grid['crs']} {grid['width']}x{grid['height']} "
                    f"{tuple(grid['transform'])[:6]})",
                    "give products clipped to the same extent of the same tile",
                )
    return base, grid


def _write_safe_date(
    raw, msk, d: int, p: SafeProduct, bands: tuple[str, ...], grid: dict, windows: list, rs, masked
) -> int:
    """Write date ``d`` (product ``p``) window by window: the bands converted to reflectance
    x10000 and the mask (SCL class in ``masked``, or DN 0 in any band). Returns the masked count."""
    scale = REFLECTANCE_SCALE / p.quantification
    n_bands = len(bands)
    with contextlib.ExitStack() as stack:
        scl_reader = stack.enter_context(_grid_reader(p.scl_file, grid, Resampling.nearest))
        readers = [stack.enter_context(_grid_reader(p.band_files[band], grid, rs)) for band in bands]

        def write_window(win):
            mask = np.isin(_read_window(scl_reader, p.scl_file, win), masked)
            for b, (band, reader) in enumerate(zip(bands, readers)):
                dn = _read_window(reader, p.band_files[band], win)
                nodata = dn == 0
                mask |= nodata
                refl = dn.astype(np.int32) + p.offsets.get(band, 0)
                if scale != 1:
                    refl = np.rint(refl * scale)
                out = np.clip(refl, RAW_NODATA + 1, 32767).astype(np.int16)
                out[nodata] = RAW_NODATA
                raw.write(out, d * n_bands + b + 1, window=win)
            return mask

        return write_windows(msk, d, windows, write_window)
