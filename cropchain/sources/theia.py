"""Sentinel-2 L2A products of Theia (MAJA processor, MUSCATE format) -> the chain's raw time series.

A Theia product is a folder named ``SENTINEL2A_20180123-104329-123_L2A_T31TEJ_C_V2-2``
(platform, acquisition date and time with milliseconds, level, tile, ``C``/``D`` product
nature, format version) holding one GeoTIFF per band and a ``MASKS/`` folder (Theia's
"Sentinel-2 L2A product format", CNES/CESBIO; https://labo.obs-mip.fr/multitemp/sentinel-2/
theias-sentinel-2-l2a-product-format/):

* ``<name>_FRE_B2.tif`` ... : flat reflectance (surface reflectance corrected for adjacency
  and slope effects), int16 reflectance x10000, nodata -10000. B2 B3 B4 B8 at 10 m, B5 B6 B7
  B8A B11 B12 at 20 m (``_SRE_`` files, without the slope correction, are not read);
* ``MASKS/<name>_CLM_R1.tif`` / ``_R2`` : cloud mask, one bit per test (R1 = 10 m, R2 = 20 m):
  bit 0 all clouds except the thinnest and all shadows, bit 1 all clouds except the thinnest,
  bit 2 clouds from mono-temporal thresholds, bit 3 clouds from multi-temporal thresholds,
  bit 4 thinnest clouds, bit 5 shadows of detected clouds, bit 6 shadows of clouds outside the
  image, bit 7 high clouds from the 1.38 um band;
* ``MASKS/<name>_EDG_R1.tif`` / ``_R2`` : edge mask, non-zero outside the swath (nodata);
* ``MASKS/<name>_SAT_R1.tif`` / ``_R2`` : saturation, one bit per band in resolution order
  (R1: B2 B3 B4 B8 = bits 0-3; R2: B5 B6 B7 B8A B11 B12 = bits 0-5).

:func:`ingest_theia` writes the same three files as :func:`cropchain.sources.sentinel2.ingest_safe`
(DESIGN.md section 1): ``raw.tif`` (int16 reflectance x10000 date-major, bands named with
the chain's names ``B02`` ... ``B8A`` ... , so that ``B2`` is written ``YYYYMMDD_B02``),
``raw_mask.tif`` (uint8, 1 = masked) and ``raw_dates.txt``. A pixel of a date is masked where
any selected CLM bit is set (all eight by default: clouds of every kind, thin clouds, cirrus and
shadows, i.e. the usual ``CLM != 0`` test), where EDG is set, where the SAT bit of an ingested
band is set, or where an ingested band is nodata (-10000). The date is that of the product name.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import logging
import os
import re
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import rasterio
from rasterio.enums import Resampling

from cropchain.errors import ConfigError, InputError
from cropchain.io.atomic import require_utf8_path
from cropchain.io.raster import GridReader, block_windows
from cropchain.sources.common import (
    RAW_NODATA,
    check_one_per_date,
    check_one_tile,
    parse_resampling,
    product_tags,
    unreadable,
    write_raw_series,
    write_windows,
)
from cropchain.sources.sentinel2 import SENTINEL2_BANDS, ZippedFolder

log = logging.getLogger(__name__)

#: The chain's band name -> Theia's band name in ``_FRE_<band>.tif``.
THEIA_BAND_NAMES: dict[str, str] = {
    "B02": "B2",
    "B03": "B3",
    "B04": "B4",
    "B08": "B8",
    "B05": "B5",
    "B06": "B6",
    "B07": "B7",
    "B8A": "B8A",
    "B11": "B11",
    "B12": "B12",
}
#: Mask resolution (``R1`` 10 m, ``R2`` 20 m) and bit of each band in the SAT mask.
THEIA_SAT_BIT: dict[str, tuple[str, int]] = {
    "B02": ("R1", 0),
    "B03": ("R1", 1),
    "B04": ("R1", 2),
    "B08": ("R1", 3),
    "B05": ("R2", 0),
    "B06": ("R2", 1),
    "B07": ("R2", 2),
    "B8A": ("R2", 3),
    "B11": ("R2", 4),
    "B12": ("R2", 5),
}
#: nodata of the FRE / SRE reflectance files.
THEIA_NODATA = -10000
#: CLM bits masked by default: all of them (any cloud, thin cloud, cirrus or shadow).
DEFAULT_CLM_BITS: tuple[int, ...] = (0, 1, 2, 3, 4, 5, 6, 7)
#: Meaning of each CLM bit (Theia L2A product format).
CLM_BITS: dict[int, str] = {
    0: "all clouds except the thinnest, and all shadows",
    1: "all clouds except the thinnest",
    2: "clouds from mono-temporal thresholds",
    3: "clouds from multi-temporal thresholds",
    4: "thinnest clouds",
    5: "shadows of detected clouds",
    6: "shadows of clouds outside the image",
    7: "high clouds (1.38 um band)",
}

THEIA_NAME_RE = re.compile(
    r"^(?P<platform>SENTINEL2[A-D])_(?P<date>\d{8})-(?P<time>\d{6})-(?P<ms>\d{3})_L2A_"
    r"(?P<tile>T\d{2}[A-Z]{3})_(?P<nature>[A-Z])_V(?P<version>\d+-\d+)$"
)


@dataclass(frozen=True)
class TheiaProduct:
    """What the chain needs from one Theia L2A product.

    Attributes
    ----------
    path : the product folder.
    date : acquisition date (UTC), from the folder name.
    sensing_time : acquisition date and time (UTC, naive), from the folder name.
    tile : MGRS tile with its leading ``T``.
    platform : ``"SENTINEL2A"``, ``"SENTINEL2B"`` ...
    version : product format version, e.g. ``"2-2"``.
    band_files : chain band name (``"B02"``) -> ``_FRE_B2.tif`` file.
    mask_files : ``("CLM" | "EDG" | "SAT", "R1" | "R2")`` -> mask file.
    """

    path: Path
    date: dt.date
    sensing_time: dt.datetime
    tile: str
    platform: str
    version: str
    band_files: dict[str, Path] = field(default_factory=dict)
    mask_files: dict[tuple[str, str], Path] = field(default_factory=dict)

    @property
    def datestr(self) -> str:
        """Acquisition date as ``YYYYMMDD``."""
        return self.date.strftime("%Y%m%d")


def _parse_name(path: Path) -> re.Match | None:
    return THEIA_NAME_RE.match(path.name)


def _sensing(path: Path, m: re.Match) -> dt.datetime:
    try:
        t = dt.datetime.strptime(m["date"] + m["time"], "%Y%m%d%H%M%S")
    except ValueError:
        raise InputError(
            path,
            f"acquisition date {m['date']}-{m['time']} in the product name is not a real date",
            "keep Theia's product name SENTINEL2X_YYYYMMDD-HHMMSS-mmm_L2A_Txxxxx_C_Vx-x",
        ) from None
    return t + dt.timedelta(milliseconds=int(m["ms"]))


def find_theia_products(paths: str | os.PathLike | Iterable[str | os.PathLike]) -> list[Path]:
    """Find Theia L2A product folders (``SENTINEL2?_YYYYMMDD-HHMMSS-mmm_L2A_Txxxxx_?_Vx-x``).

    Parameters
    ----------
    paths : one path or several; each is a product folder itself or a folder searched
        recursively for product folders.

    Returns
    -------
    list of Path
        The product folders, without duplicates, sorted by acquisition time.

    Raises
    ------
    InputError
        a path does not exist or is not UTF-8, or no product was found. A zipped product
        (``<name>.zip`` holding the ``<name>/`` folder) is read in place through GDAL's
        ``/vsizip/``, unless its unzipped folder is there too.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    paths = [require_utf8_path(p, "products folder") for p in paths]
    found: dict[Path, dt.datetime] = {}
    zipped: list[Path] = []
    for p in paths:
        if not p.exists():
            raise InputError(
                p, "folder not found", "give a Theia L2A product folder or a folder holding them"
            )
        if not p.is_dir() and not (p.suffix.lower() == ".zip" and THEIA_NAME_RE.match(p.name[:-4])):
            raise InputError(
                p,
                "not a folder",
                "give a Theia L2A product folder or a folder holding them (unzip .zip downloads)",
            )
        candidates = [p, *sorted(p.rglob("SENTINEL2*"))] if p.is_dir() else [p]
        for q in candidates:
            stem = q.name[:-4] if q.name.lower().endswith(".zip") else q.name
            m = THEIA_NAME_RE.match(stem)
            if not m:
                continue
            if q.is_dir():
                found[q.resolve()] = _sensing(q, m)
            elif q.suffix.lower() == ".zip":
                zipped.append(q)
    for q in found:
        require_utf8_path(q, "Theia product")
    unzipped = {q.name for q in found}
    in_place = sorted({z.resolve() for z in zipped if z.name[:-4] not in unzipped})
    if in_place:
        log.info("%d zipped Theia product(s) read in place (GDAL /vsizip/)", len(in_place))
    for z in in_place:
        found[z] = _sensing(z, THEIA_NAME_RE.match(z.name[:-4]))
    if not found:
        where = ", ".join(str(p) for p in paths) or "<no path given>"
        raise InputError(
            where,
            "no Theia L2A product folder (SENTINEL2X_YYYYMMDD-HHMMSS-mmm_L2A_Txxxxx_C_Vx-x) found",
            "download Theia L2A products (unzipped) there, or fix the path",
        )
    return sorted(found, key=lambda q: (found[q], q.name))


def _check_bands(bands: Sequence[str]) -> tuple[str, ...]:
    bands = tuple(str(b).upper() for b in bands)
    if not bands:
        raise ConfigError("ingest.bands: at least one band is needed")
    for b in bands:
        if b not in THEIA_BAND_NAMES:
            raise ConfigError(
                f"ingest.bands: band {b!r} is not in Theia L2A products "
                f"(valid: {', '.join(THEIA_BAND_NAMES)})"
            )
    if len(set(bands)) != len(bands):
        raise ConfigError(f"ingest.bands: duplicate band in {list(bands)}")
    return bands


def is_zipped_theia(path: str | os.PathLike) -> bool:
    """Whether ``path`` names a zipped Theia L2A product (``SENTINEL2A_..._V2-2.zip``)."""
    name = Path(path).name
    return name.lower().endswith(".zip") and bool(THEIA_NAME_RE.match(name[:-4]))


def _one(path: Path, pattern: str, what: str, zipped: ZippedFolder | None = None, sub: str = "") -> Path:
    hits = sorted(zipped.glob(sub + pattern) if zipped else path.glob(pattern))
    if not hits:
        raise InputError(
            path,
            f"{what} not found (no file {pattern})",
            "the product is incomplete; download it again or remove it from the inputs",
        )
    if len(hits) > 1:
        raise InputError(
            path, f"several files for {what}: {[h.name for h in hits]}", "keep one file per band and mask"
        )
    return hits[0]


def read_theia_product(
    product_dir: str | os.PathLike, bands: Sequence[str] = SENTINEL2_BANDS
) -> TheiaProduct:
    """Parse a Theia product's name and locate its FRE bands and CLM / EDG / SAT masks.

    Parameters
    ----------
    product_dir : the product folder, or the zipped product (read in place through GDAL's
        ``/vsizip/``).
    bands : chain band names whose ``_FRE_`` files must be present (default all ten).

    Returns
    -------
    TheiaProduct

    Raises
    ------
    InputError
        the folder is missing, its name is not a Theia L2A name (date unparseable), or a band
        or mask file is missing (the message names the file pattern searched).
    ConfigError
        a band that Theia products do not have.
    """
    path = Path(product_dir)
    bands = _check_bands(bands)
    zipped = ZippedFolder(path, top=path.name[:-4]) if path.is_file() and is_zipped_theia(path) else None
    if zipped is None and not path.is_dir():
        raise InputError(path, "Theia product folder not found", "check the path of the product")
    m = _parse_name(Path(zipped.top) if zipped else path)
    if not m:
        raise InputError(
            path,
            "folder name is not a Theia L2A product name, so its date cannot be read",
            "keep Theia's name SENTINEL2X_YYYYMMDD-HHMMSS-mmm_L2A_Txxxxx_C_Vx-x",
        )
    sensing = _sensing(path, m)
    band_files = {
        b: _one(path, f"*_FRE_{THEIA_BAND_NAMES[b]}.tif", f"band {THEIA_BAND_NAMES[b]} (FRE)", zipped)
        for b in bands
    }
    resolutions = sorted({THEIA_SAT_BIT[b][0] for b in bands} | {"R1"})
    mask_files = {}
    masks = path / "MASKS"
    if not (zipped.folders("MASKS") if zipped else masks.is_dir()):
        raise InputError(
            path, "no MASKS folder (CLM, EDG and SAT masks)", "download the complete product again"
        )
    for kind in ("CLM", "EDG", "SAT"):
        for res in resolutions:
            mask_files[(kind, res)] = _one(
                masks, f"*_{kind}_{res}.tif", f"{kind} mask at {res}", zipped, "MASKS/"
            )
    return TheiaProduct(
        path=path,
        date=sensing.date(),
        sensing_time=sensing,
        tile=m["tile"],
        platform=m["platform"],
        version=m["version"],
        band_files=band_files,
        mask_files=mask_files,
    )


def _resampling(name: str) -> Resampling:
    return parse_resampling(name, ["nearest", "bilinear", "cubic"])


def _grid_reader(path: Path, grid: dict, resampling: Resampling, nodata: int | None) -> GridReader:
    """Band 1 of ``path`` read by windows on the 10 m ``grid``: as it is when on the grid, else
    warped (20 m files); ``nodata`` is excluded from the interpolation and written where
    nothing is known."""
    try:
        src = rasterio.open(path)
    except rasterio.errors.RasterioError as exc:
        raise unreadable(path, exc) from None
    if src.crs != grid["crs"]:
        src.close()
        raise InputError(
            path,
            f"CRS {src.crs} differs from the tile's {grid['crs']} ({grid['path']})",
            "all files and products of a tile must share its UTM projection",
        )
    on_grid = src.transform.almost_equals(grid["transform"]) and (src.height, src.width) == (
        grid["height"],
        grid["width"],
    )
    if not on_grid and abs(src.transform.a) <= abs(grid["transform"].a) * 1.01:
        src.close()
        raise InputError(
            path,
            f"grid {src.width}x{src.height} {tuple(src.transform)[:6]} differs from "
            f"{grid['path']} ({grid['width']}x{grid['height']} {tuple(grid['transform'])[:6]})",
            "give products of one tile on the same extent (clip them all alike)",
        )
    return GridReader(src, grid, resampling, src_nodata=nodata, nodata=nodata)


def _read_window(reader: GridReader, path: Path, window, dtype: str) -> np.ndarray:
    try:
        return reader.read(window, dtype)
    except rasterio.errors.RasterioError as exc:
        raise unreadable(path, exc) from None


def ingest_theia(
    products: Sequence[str | os.PathLike],
    out_raw: str | os.PathLike,
    out_mask: str | os.PathLike,
    out_dates: str | os.PathLike,
    *,
    bands: Sequence[str] = SENTINEL2_BANDS,
    clm_bits: Sequence[int] = DEFAULT_CLM_BITS,
    resampling: str = "bilinear",
    tile: str | None = None,
    block: int = 1024,
) -> None:
    """Stack Theia L2A products of one tile into ``raw.tif``, ``raw_mask.tif``, ``raw_dates.txt``.

    Parameters
    ----------
    products : product folders of one tile (any order; see :func:`find_theia_products`).
    out_raw : ``raw.tif``: int16 reflectance x10000 (Theia's FRE values as they are),
        :data:`~cropchain.sources.sentinel2.RAW_NODATA` (-32768) where FRE is nodata (-10000);
        ``n_dates * len(bands)`` bands, date-major, described ``YYYYMMDD_<band>`` with the
        chain's band names (``B02`` for Theia's ``B2``), on the 10 m grid.
    out_mask : ``raw_mask.tif``: uint8 [n_dates, H, W], 1 = masked (a bit of ``clm_bits`` set in
        CLM_R1, EDG_R1 set, EDG_R2 set when a 20 m band is ingested, the SAT bit of an ingested
        band set, or an ingested band nodata), 0 = clear.
    out_dates : ``raw_dates.txt``: one ``YYYYMMDD`` per line (dates from the product names).
    bands : chain band names in output order (default the ten 10 m and 20 m bands).
    clm_bits : CLM bits that mask a pixel (default all, :data:`CLM_BITS` gives their meaning).
    resampling : resampling of the 20 m FRE bands onto the 10 m grid (masks: always nearest).
    tile : expected tile; by default the tile of the first product.

    The 10 m grid is that of the first product's ``CLM_R1`` mask; every 10 m file must be on it
    and 20 m files must cover it.
    block : window size in px: one date and one window at a time, so memory is a few
        ``block`` x ``block`` arrays, whatever the tile size.

    Raises
    ------
    InputError
        no product; a product :func:`read_theia_product` rejects; products of another tile;
        two products of the same date (both named); a file on another grid or CRS; an
        unreadable file. Nothing is written then.
    ConfigError
        unknown band, CLM bit or resampling.
    """
    bands = _check_bands(bands)
    bits = sorted({int(b) for b in clm_bits})
    if any(b < 0 or b > 7 for b in bits):
        raise ConfigError(f"tiles.<tile>.clm_bits: CLM bits are 0-7, got {list(clm_bits)}")
    rs = _resampling(resampling)
    if not products:
        raise InputError(
            out_raw, "no Theia product given for this tile", "check the products folder of the tile"
        )
    prods = sorted(
        (read_theia_product(p, bands) for p in products), key=lambda p: (p.sensing_time, p.path.name)
    )
    expected = check_one_tile(prods, tile)
    check_one_per_date(
        prods, "acquisition", "keep one product per date (e.g. the latest version) and remove the other"
    )
    _write_theia_series(prods, (out_raw, out_mask, out_dates), bands, expected, rs, bits, block)


def _write_theia_series(
    prods: list[TheiaProduct],
    outs: tuple,
    bands: tuple[str, ...],
    expected: str,
    rs: Resampling,
    bits: list[int],
    block: int,
) -> None:
    """The writing part of :func:`ingest_theia`: products checked (one tile, one per date)."""
    clm_value = np.uint8(sum(1 << b for b in bits))
    base, grid = _reference_grid(prods[0].mask_files[("CLM", "R1")])
    log.info(
        "ingest %d Theia products of tile %s (%s .. %s), %d bands, grid %dx%d, CLM bits %s masked",
        len(prods),
        expected,
        prods[0].date,
        prods[-1].date,
        len(bands),
        grid["width"],
        grid["height"],
        bits,
    )
    windows = list(block_windows(grid["height"], grid["width"], block))
    masks = _mask_tests(bands, clm_value)
    datestrs = [p.datestr for p in prods]
    labels = [f"{p.datestr} {p.platform}" for p in prods]
    tags = product_tags(expected, datestrs, bands, ("CLM_BITS", ",".join(map(str, bits))), "theia")

    def write_date(raw, msk, d: int) -> int:
        return _write_theia_date(raw, msk, d, prods[d], bands, masks, grid, windows, rs)

    write_raw_series(
        outs, base, datestrs, bands, write_date, tile=expected, labels=labels, tags=tags, logger=log
    )


def _reference_grid(ref: Path) -> tuple[dict, dict]:
    """Profile and 10 m grid (crs, transform, width, height, path) of the mask file ``ref``."""
    try:
        with rasterio.open(ref) as src:
            base = src.profile
            grid = {
                "crs": src.crs,
                "transform": src.transform,
                "width": src.width,
                "height": src.height,
                "path": ref,
            }
    except rasterio.errors.RasterioError as exc:
        raise InputError(ref, f"cannot be read by GDAL ({exc})", "download the product again") from None
    if grid["crs"] is None:
        raise InputError(ref, "mask file has no CRS", "download the product again")
    return base, grid


def _mask_tests(bands: tuple[str, ...], clm_value: np.uint8) -> list[tuple[tuple[str, str], np.uint8 | None]]:
    """The mask files a date is masked by and the bits tested in each (None: any non-zero value):
    the ``clm_value`` bits of CLM_R1, EDG_R1, EDG_R2 when a 20 m band is ingested, and the SAT
    bits of the ingested bands at each resolution."""
    has_r2 = any(THEIA_SAT_BIT[b][0] == "R2" for b in bands)
    masks = [(("CLM", "R1"), clm_value), (("EDG", "R1"), None)] + ([(("EDG", "R2"), None)] if has_r2 else [])
    for res in ("R1", "R2"):
        sat_value = np.uint8(sum(1 << bit for b in bands for r, bit in [THEIA_SAT_BIT[b]] if r == res))
        if sat_value:
            masks.append((("SAT", res), sat_value))
    return masks


def _write_theia_date(
    raw, msk, d: int, p: TheiaProduct, bands: tuple[str, ...], masks: list, grid: dict, windows: list, rs
) -> int:
    """Write date ``d`` (product ``p``) window by window: the FRE bands as they are (nodata ->
    :data:`RAW_NODATA`) and the mask (``masks`` tests, or a band nodata). Returns the masked count."""
    n_bands = len(bands)
    with contextlib.ExitStack() as stack:
        mask_readers = [
            (
                p.mask_files[key],
                bits_value,
                stack.enter_context(_grid_reader(p.mask_files[key], grid, Resampling.nearest, None)),
            )
            for key, bits_value in masks
        ]
        readers = [
            stack.enter_context(_grid_reader(p.band_files[band], grid, rs, THEIA_NODATA)) for band in bands
        ]

        def write_window(win):
            mask = np.zeros((int(win.height), int(win.width)), dtype=bool)
            for path, bits_value, reader in mask_readers:  # CLM bits, EDG, SAT bits of the bands
                m = _read_window(reader, path, win, "uint8")
                mask |= (m & bits_value) != 0 if bits_value is not None else m != 0
            for b, (band, reader) in enumerate(zip(bands, readers)):
                fre = _read_window(reader, p.band_files[band], win, "int16")
                nodata = fre == THEIA_NODATA
                mask |= nodata
                fre[nodata] = RAW_NODATA
                raw.write(fre, d * n_bands + b + 1, window=win)
            return mask

        return write_windows(msk, d, windows, write_window)
