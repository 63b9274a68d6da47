"""Reference data fusion: several parcel sources -> one polygon layer per tile.

Each reference source (a land-parcel register, a field survey, EuroCrops, ...) is a
vector file whose class field is mapped onto the chain's nomenclature. The fusion
follows iota2's reference data preparation: geometries are repaired, reprojected to the
tile's CRS and clipped to the tile; where sources overlap, the source with the higher
priority keeps the overlap and lower-priority polygons lose it (so that no pixel gets two
labels); polygons smaller than the minimum mapping unit are dropped.

Within one source, polygons of *different* classes that overlap are contested: the
intersection is removed from every polygon involved (no class wins by the order in which
polygons are burnt), with a WARNING giving the area removed per class and the polygon ids
(feature numbers of the source file, 0-based). Overlapping polygons of the *same* class are
kept as they are (they give the same label).

Output: a GeoPackage layer ``reference`` with columns ``polygon_id`` (1..N), ``code``,
``name``, ``source``, ``area_m2`` and the geometry in the tile CRS.
"""

from __future__ import annotations

import logging
import os
import re
from dataclasses import dataclass
from pathlib import Path

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import shapely
from pyproj import CRS

from cropchain.errors import ConfigError, InputError
from cropchain.io.atomic import atomic_output, require_utf8_path
from cropchain.io.raster import open_raster
from cropchain.nomenclature import Nomenclature

log = logging.getLogger(__name__)

LAYER = "reference"
COLUMNS = ["polygon_id", "code", "name", "source", "area_m2", "geometry"]
_MAX_LISTED = 20


@dataclass
class ReferenceSource:
    """One reference vector file and how its class field maps onto the nomenclature.

    Attributes
    ----------
    name : short name of the source, written in the ``source`` column of the output.
    path : vector file readable by OGR (Shapefile, GeoPackage, GeoJSON, ...).
    field : attribute holding the source's class value.
    mapping : source value -> nomenclature code; ``None`` drops that value on purpose.
        Keys are compared as text, integers without decimals (``3``, ``3.0`` and ``"3"``
        are the same key).
    priority : where sources overlap, the higher priority keeps the overlap. Ties are
        broken by the order of the sources list (earlier wins).
    layer : layer to read in a multi-layer file (None: the first layer).
    """

    name: str
    path: str | os.PathLike
    field: str
    mapping: dict[str | int, int | None]
    priority: int = 0
    layer: str | None = None


def _key(value: object) -> str | None:
    """Normalise a source class value (or mapping key) to a comparable text key."""
    if value is None:
        return None
    if isinstance(value, float) and np.isnan(value):
        return None
    if isinstance(value, (bool, np.bool_)):
        return str(value)
    if isinstance(value, (int, np.integer)):
        return str(int(value))
    if isinstance(value, (float, np.floating)) and float(value).is_integer():
        return str(int(value))
    return str(value).strip()


def read_mapping_csv(path: str | os.PathLike, source_column: str, code_column: str) -> dict[str, int | None]:
    """Read a source-value -> nomenclature-code mapping from a CSV file.

    Parameters
    ----------
    path : CSV file, e.g. the ``nomenclature.csv`` shipped with a reference data set
        (columns ``EC_hcat_n,class_id``).
    source_column : column with the source class values (read as text).
    code_column : column with the nomenclature codes (integers); an empty cell maps the
        value to ``None`` (dropped on purpose by :func:`fuse_reference`).

    Returns
    -------
    dict
        source value (str) -> code (int) or None.

    Raises
    ------
    InputError
        missing file, missing column, non-integer code, a source value given twice with
        different codes.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(
            path, "mapping CSV not found", "check the `mapping` path of the reference source in the config"
        )
    try:
        df = pd.read_csv(
            path, dtype={source_column: str}, keep_default_na=False, na_values={code_column: [""]}
        )
    except (pd.errors.ParserError, UnicodeDecodeError, pd.errors.EmptyDataError) as exc:
        raise InputError(
            path, f"cannot be read as CSV ({exc})", "write a comma-separated file with a header line"
        ) from None
    missing = [c for c in (source_column, code_column) if c not in df.columns]
    if missing:
        raise InputError(
            path,
            f"missing column(s) {missing}; available: {list(df.columns)}",
            "set the source/code column names of the mapping to existing columns",
        )
    mapping: dict[str, int | None] = {}
    for value, code in zip(df[source_column], df[code_column]):
        key = _key(value)
        if code is None or (isinstance(code, float) and np.isnan(code)):
            parsed: int | None = None
        else:
            try:
                as_float = float(code)
            except (TypeError, ValueError):
                as_float = float("nan")
            if not as_float.is_integer():
                raise InputError(
                    path,
                    f"code {code!r} for {value!r} is not an integer",
                    "write integer class codes, or leave the cell empty to drop the value",
                )
            parsed = int(as_float)
        if key in mapping and mapping[key] != parsed:
            raise InputError(
                path,
                f"value {value!r} is mapped twice ({mapping[key]} and {parsed})",
                "keep one line per source value",
            )
        mapping[key] = parsed
    return mapping


def _listing(values: list) -> str:
    shown = ", ".join(repr(v) for v in values[:_MAX_LISTED])
    if len(values) > _MAX_LISTED:
        shown += f", ... ({len(values)} in all)"
    return shown


def _polygonal(geoms: np.ndarray) -> np.ndarray:
    """Keep only the polygonal parts of each geometry (lines/points from repairs dropped).

    Polygon and MultiPolygon pass through; a GeometryCollection becomes the union of its
    polygons; anything with no polygonal part becomes an empty polygon.
    """
    out = np.asarray(geoms, dtype=object).copy()
    types = shapely.get_type_id(out)
    # 3 = Polygon, 6 = MultiPolygon, 7 = GeometryCollection
    for i in np.flatnonzero(~np.isin(types, (3, 6))):
        if out[i] is None:
            out[i] = shapely.Polygon()
            continue
        parts = shapely.get_parts(out[i])
        polys = [p for p in parts if shapely.get_type_id(p) in (3, 6)]
        out[i] = shapely.union_all(polys) if polys else shapely.Polygon()
    return out


def _grid(grid_raster: str | os.PathLike) -> tuple[CRS, tuple[float, float, float, float]]:
    with open_raster(grid_raster, "grid raster") as ds:
        if ds.crs is None:
            raise InputError(
                grid_raster,
                "grid raster has no CRS",
                "use a georeferenced raster of the tile (e.g. a 10 m band)",
            )
        crs = CRS.from_user_input(ds.crs.to_wkt())
        bounds = tuple(ds.bounds)
    if not crs.is_projected:
        raise InputError(
            grid_raster,
            f"grid CRS {crs.name} is not projected: areas in m2 need a projected CRS",
            "use the tile's UTM grid",
        )
    return crs, bounds  # type: ignore[return-value]


_MOJIBAKE = re.compile("[\u00c2\u00c3][\u0080-\u00bf]")


def _sidecar(path: Path, suffix: str) -> Path | None:
    """The ``.dbf`` / ``.shx`` / ``.cpg`` beside a shapefile, in any letter case, or None."""
    for cand in (path.with_suffix(suffix), path.with_suffix(suffix.upper())):
        if cand.exists():
            return cand
    return None


def _check_shapefile(path: Path, name: str) -> None:
    """A shapefile needs its .shx (index) and .dbf (attributes) beside the .shp."""
    if path.suffix.lower() != ".shp":
        return
    for suffix, what in ((".dbf", "attribute table"), (".shx", "index")):
        if _sidecar(path, suffix) is None:
            raise InputError(
                path,
                f"reference source {name!r}: the shapefile has no {path.stem}{suffix} ({what})",
                f"copy {path.stem}{suffix} beside {path.name} (a shapefile is .shp + .shx + .dbf, "
                "with .prj and .cpg), or give a GeoPackage",
            )


def _encoding_hint(path: Path) -> str:
    cpg = _sidecar(path, ".cpg") if path.suffix.lower() == ".shp" else None
    if cpg is None:
        return "no .cpg file" if path.suffix.lower() == ".shp" else "the file's declared encoding"
    try:
        return f"{cpg.name} says {cpg.read_text(errors='replace').strip()!r}"
    except OSError:
        return f"{cpg.name} unreadable"


def _read_source(src: ReferenceSource, nomenclature: Nomenclature) -> gpd.GeoDataFrame:
    """Read one source, check field/mapping/nomenclature, map values to codes."""
    path, gdf = _open_source(src)
    return _map_codes(src, path, gdf, nomenclature)


def _open_source(src: ReferenceSource) -> tuple[Path, gpd.GeoDataFrame]:
    """The path and the features (``src.field`` and polygons) of one source, checked readable."""
    path = require_utf8_path(src.path, f"reference source {src.name!r}")
    if not path.exists():
        raise InputError(
            path,
            f"reference source {src.name!r} not found",
            "check `path` of this reference source in the config",
        )
    _check_shapefile(path, src.name)
    try:
        info = pyogrio.read_info(path, layer=src.layer)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise InputError(
            path,
            f"reference source {src.name!r} cannot be read by OGR ({exc})",
            "give a valid vector file (Shapefile, GeoPackage, GeoJSON)",
        ) from None
    if not info.get("crs"):
        raise InputError(
            path,
            f"reference source {src.name!r} has no CRS (no .prj / spatial reference)",
            f"assign one, e.g. ogr2ogr -a_srs EPSG:2154 fixed{path.suffix} {path.name}",
        )
    fields = list(info["fields"])
    if src.field not in fields:
        raise InputError(
            path,
            f"field {src.field!r} not found; available fields: {fields}",
            "set `field` of this reference source to one of them",
        )
    try:
        gdf = pyogrio.read_dataframe(path, layer=src.layer, columns=[src.field])
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError, pyogrio.errors.FieldError) as exc:
        raise InputError(
            path,
            f"reference source {src.name!r} cannot be read ({exc})",
            "repair the file, e.g. with ogr2ogr",
        ) from None
    except UnicodeDecodeError as exc:
        raise InputError(
            path,
            f"reference source {src.name!r}: the attributes are not in the encoding declared "
            f"({_encoding_hint(path)}; byte {exc.object[exc.start : exc.start + 1]!r} is not {exc.encoding})",
            f"write the real encoding in {path.stem}.cpg (e.g. LATIN1 or CP1252), or re-save the file as "
            f"UTF-8 (ogr2ogr -lco ENCODING=UTF-8 fixed.shp {path.name})",
        ) from None
    if len(gdf) == 0:
        raise InputError(
            path,
            f"reference source {src.name!r} has no feature"
            + (f" in layer {src.layer!r}" if src.layer else ""),
            "give the file holding the parcels (or its `layer`)",
        )
    _check_polygonal(gdf, path, src.name)
    return path, gdf


def _map_codes(
    src: ReferenceSource, path: Path, gdf: gpd.GeoDataFrame, nomenclature: Nomenclature
) -> gpd.GeoDataFrame:
    """Nomenclature codes of the features of ``gdf`` through the source's mapping (null: dropped)."""
    mapping = {_key(k): v for k, v in src.mapping.items()}
    keys = np.array([_key(v) for v in gdf[src.field].to_numpy(dtype=object)], dtype=object)
    present = pd.unique(keys)
    unknown = [k for k in present if k not in mapping]
    garbled = [k for k in unknown if k is not None and _MOJIBAKE.search(k)]
    if garbled:
        raise InputError(
            path,
            f"field {src.field!r} has value(s) that look like UTF-8 text read in another encoding "
            f"({_encoding_hint(path)}): {_listing(sorted(garbled))}",
            f"write UTF-8 in {path.stem}.cpg (the attributes are UTF-8), or re-save the file with its "
            "encoding declared",
        )
    if unknown:
        shown = ["<null>" if k is None else k for k in unknown]
        raise InputError(
            path,
            f"field {src.field!r} has value(s) absent from the mapping of source {src.name!r}: "
            f"{_listing(sorted(shown))}",
            "add them to `mapping` (value -> nomenclature code), or map them to null to drop them",
        )
    codes_known = set(nomenclature.codes)
    bad_codes = sorted(
        {mapping[k] for k in present if mapping[k] is not None and int(mapping[k]) not in codes_known}
    )
    if bad_codes:
        raise InputError(
            path,
            f"the mapping of source {src.name!r} gives code(s) {bad_codes} absent from the nomenclature "
            f"(codes {list(nomenclature.codes)})",
            "add these classes to the nomenclature CSV, or fix the mapping",
        )
    code = np.array([mapping[k] if mapping[k] is not None else -1 for k in keys], dtype=np.int64)
    keep = code >= 0
    if (~keep).any():
        log.info("%s: %d polygon(s) dropped on purpose (value mapped to null)", src.name, int((~keep).sum()))
    out = gpd.GeoDataFrame({"code": code[keep]}, geometry=gdf.geometry.to_numpy()[keep], crs=gdf.crs)
    out["source_index"] = np.flatnonzero(keep)
    return out


def _check_polygonal(gdf: gpd.GeoDataFrame, path: Path, name: str) -> None:
    """Stop on a source of lines or points (no parcel); warn and count non-polygons among polygons."""
    geoms = gdf.geometry.to_numpy()
    present = ~(shapely.is_missing(geoms) | shapely.is_empty(geoms))
    kinds = pd.Series(shapely.get_type_id(geoms[present]))
    # 3 Polygon, 6 MultiPolygon, 7 GeometryCollection (may hold polygons)
    polygonal = kinds.isin((3, 6, 7))
    if len(kinds) and not polygonal.any():
        names = sorted(set(shapely.get_type_id(geoms[present]).tolist()))
        found = ", ".join(
            {0: "Point", 1: "LineString", 2: "LinearRing", 4: "MultiPoint", 5: "MultiLineString"}.get(
                t, str(t)
            )
            for t in names
        )
        raise InputError(
            path,
            f"reference source {name!r} holds {found} geometries, not polygons: parcels need areas",
            "give the parcels as polygons (e.g. QGIS 'Lines to polygons', or ogr2ogr -nlt POLYGON on "
            "closed lines)",
        )
    if (~polygonal).any():
        ids = np.flatnonzero(present)[~polygonal.to_numpy()]
        log.warning(
            "%s: %d feature(s) are lines or points, not polygons, and are ignored (feature ids %s)",
            name,
            len(ids),
            _listing(ids.tolist()),
        )


def _repair(gdf: gpd.GeoDataFrame, name: str) -> gpd.GeoDataFrame:
    """Drop null/empty geometries, make invalid ones valid, keep polygonal parts only."""
    geoms = gdf.geometry.to_numpy()
    missing = shapely.is_missing(geoms) | shapely.is_empty(geoms)
    if missing.any():
        log.warning("%s: %d polygon(s) without geometry dropped", name, int(missing.sum()))
        gdf = gdf.loc[~missing]
        geoms = geoms[~missing]
    invalid = ~shapely.is_valid(geoms)
    if invalid.any():
        log.info("%s: %d invalid geometr(y/ies) repaired (make_valid)", name, int(invalid.sum()))
        geoms = geoms.copy()
        geoms[invalid] = shapely.make_valid(geoms[invalid])
    geoms = _polygonal(geoms)
    gdf = gdf.set_geometry(gpd.GeoSeries(geoms, index=gdf.index, crs=gdf.crs))
    lost = shapely.is_empty(geoms)
    if lost.any():
        log.warning(
            "%s: %d geometr(y/ies) with no polygonal part after repair dropped", name, int(lost.sum())
        )
    return gdf.loc[~lost]


def _drop_contested(gdf: gpd.GeoDataFrame, name: str) -> gpd.GeoDataFrame:
    """Remove, within one source, the areas claimed by polygons of different classes.

    Parameters
    ----------
    gdf : one source's polygons (columns ``code``, ``source_index``), projected CRS.
    name : the source's name, for the log.

    Returns
    -------
    geopandas.GeoDataFrame
        the same rows, where each polygon overlapping a polygon of another class loses the
        intersection (same-class overlaps untouched); polygons left empty are dropped.
        A WARNING logs the area removed per class (m2) and up to a few contested pairs of
        polygon ids (0-based feature numbers of the source file).
    """
    if len(gdf) < 2:
        return gdf
    geoms = gdf.geometry.to_numpy()
    codes = gdf["code"].to_numpy()
    tree = shapely.STRtree(geoms)
    left, right = tree.query(geoms, predicate="intersects")
    pairs = (left < right) & (codes[left] != codes[right])
    left, right = left[pairs], right[pairs]
    if not len(left):
        return gdf
    inter = _polygonal(shapely.intersection(geoms[left], geoms[right]))
    real = shapely.area(inter) > 0  # touching edges/corners are not contested
    left, right, inter = left[real], right[real], inter[real]
    if not len(left):
        return gdf
    new = geoms.copy()
    before = shapely.area(geoms)
    for i in np.unique(np.concatenate([left, right])):
        lost = shapely.union_all(inter[(left == i) | (right == i)])
        new[i] = _polygonal(np.array([shapely.difference(geoms[i], lost)], dtype=object))[0]
    removed = before - shapely.area(new)
    ids = gdf["source_index"].to_numpy()
    per_class = pd.Series(removed, index=codes).groupby(level=0).sum()
    per_class = per_class[per_class > 0]
    shown = ", ".join(f"{ids[a]}/{ids[b]}" for a, b in zip(left[:5], right[:5]))
    if len(left) > 5:
        shown += f", ... ({len(left)} pairs in all)"
    log.warning(
        "%s: %d pair(s) of overlapping polygons of different classes (polygon ids %s): the contested "
        "area is dropped from both; removed per class: %s",
        name,
        len(left),
        shown,
        ", ".join(f"code {c}: {a / 1e4:.2f} ha" for c, a in per_class.items()),
    )
    gdf = gdf.set_geometry(gpd.GeoSeries(new, index=gdf.index, crs=gdf.crs))
    empty = shapely.is_empty(new)
    if empty.any():
        log.warning("%s: %d polygon(s) entirely contested by other classes dropped", name, int(empty.sum()))
        lost = sorted(set(codes.tolist()) - set(codes[~empty].tolist()))
        if lost:
            log.warning("%s: class(es) %s lost every polygon to overlaps with other classes", name, lost)
    return gdf.loc[~empty]


def fuse_reference(
    sources: list[ReferenceSource],
    nomenclature: Nomenclature,
    grid_raster: str | os.PathLike,
    out_gpkg: str | os.PathLike,
    *,
    min_area_m2: float = 0.0,
) -> gpd.GeoDataFrame:
    """Fuse reference sources into one non-overlapping polygon layer on a tile.

    Follows iota2's reference preparation: per source, map the class field onto the
    nomenclature, repair invalid geometries (``shapely.make_valid``, polygonal parts
    kept), reproject to the grid raster's CRS and clip to its bounds; between sources,
    the higher ``priority`` keeps overlaps (lower-priority polygons get the difference
    with the union of all higher-priority polygons); within one source, the intersection
    of polygons of different classes is removed from all of them (contested area, logged
    as a WARNING with the area per class and the polygon ids) and same-class overlaps are
    kept as they are. Polygons smaller than ``min_area_m2`` after clipping and overlap
    removal are dropped (minimum mapping unit).

    Parameters
    ----------
    sources : reference sources, at least one; names must be unique.
    nomenclature : the chain's classes; every mapped code must belong to it.
    grid_raster : any raster on the tile grid (e.g. a 10 m band); its CRS (projected,
        metres) and bounds define the output CRS and the clipping box.
    out_gpkg : output GeoPackage, written atomically, layer ``reference``.
    min_area_m2 : minimum polygon area in square metres (0: keep all non-empty).

    Returns
    -------
    geopandas.GeoDataFrame
        columns ``polygon_id`` (int64, 1..N in source-list order then feature order),
        ``code`` (int64), ``name`` (str), ``source`` (str), ``area_m2`` (float64, m2 in
        the tile CRS), geometry (Polygon/MultiPolygon, tile CRS).

    Raises
    ------
    InputError
        a source is missing/unreadable, has no CRS, lacks ``field``, has values absent
        from its mapping, maps to codes absent from the nomenclature; the grid raster is
        missing or not in a projected CRS; no polygon remains on the tile.
    ConfigError
        no source, duplicate source names, negative ``min_area_m2``.
    """
    _check_sources(sources, min_area_m2)
    crs, bounds = _grid(grid_raster)

    # Read and check every source before any geometry work: bad input fails fast.
    read = [(i, src, _read_source(src, nomenclature)) for i, src in enumerate(sources)]
    prepared = {i: _on_tile(gdf, src.name, crs, bounds) for i, src, gdf in read}
    prepared = _resolve_priorities(sources, prepared, crs, min_area_m2)
    fused = _assemble(sources, prepared, nomenclature, crs, grid_raster)

    with atomic_output(out_gpkg) as tmp:
        pyogrio.write_dataframe(fused, tmp, layer=LAYER, driver="GPKG", promote_to_multi=True)

    counts = fused.groupby(["code", "name"]).size()
    for (code, name), n in counts.items():
        log.info(
            "class %d %s: %d polygon(s), %.1f ha",
            code,
            name,
            n,
            fused.loc[fused["code"] == code, "area_m2"].sum() / 1e4,
        )
    log.info("%d reference polygon(s) from %d source(s) written to %s", len(fused), len(sources), out_gpkg)
    return fused


def _check_sources(sources: list[ReferenceSource], min_area_m2: float) -> None:
    """ConfigError for no source, duplicate source names or a negative ``min_area_m2``."""
    if not sources:
        raise ConfigError("reference.sources: at least one reference source is needed")
    names = [s.name for s in sources]
    if len(set(names)) != len(names):
        raise ConfigError(f"reference.sources: source names must be unique, got {names}")
    if not min_area_m2 >= 0:
        raise ConfigError(f"reference.min_area_m2: must be >= 0 (m2), got {min_area_m2}")


def _on_tile(gdf: gpd.GeoDataFrame, name: str, crs: CRS, bounds: tuple) -> gpd.GeoDataFrame:
    """One source's polygons repaired, in the tile CRS, clipped to the tile, contested areas removed."""
    gdf = _repair(gdf, name)
    gdf = gdf.to_crs(crs)
    n_before = len(gdf)
    # A polygon mask (not a bbox tuple): exact intersection, valid output; GEOS's
    # clip_by_rect does not guarantee validity.
    gdf = gpd.clip(gdf, shapely.box(*bounds), keep_geom_type=True)
    gdf = gdf.set_geometry(gpd.GeoSeries(_polygonal(gdf.geometry.to_numpy()), index=gdf.index, crs=crs))
    gdf = gdf.loc[~gdf.geometry.is_empty].sort_values("source_index")
    if len(gdf) < n_before:
        log.info("%s: %d polygon(s) outside the tile dropped", name, n_before - len(gdf))
    return _drop_contested(gdf, name)


def _resolve_priorities(
    sources: list[ReferenceSource], prepared: dict[int, gpd.GeoDataFrame], crs: CRS, min_area_m2: float
) -> dict[int, gpd.GeoDataFrame]:
    """Overlaps between sources: higher priority first, ties -> earlier in the list wins; the
    polygons smaller than ``min_area_m2`` after the cuts are dropped."""
    prepared = dict(prepared)
    order = sorted(range(len(sources)), key=lambda i: (-sources[i].priority, i))
    higher: shapely.Geometry | None = None
    for i in order:
        src, gdf = sources[i], prepared[i]
        if higher is not None and len(gdf):
            gdf = _cut_by_higher(gdf, higher, src.name, crs)
        own = shapely.union_all(gdf.geometry.to_numpy()) if len(gdf) else None
        if own is not None:
            higher = own if higher is None else shapely.union_all([higher, own])
        area = gdf.geometry.area.to_numpy()
        small = area < min_area_m2
        if small.any():
            log.info("%s: %d polygon(s) smaller than %g m2 dropped", src.name, int(small.sum()), min_area_m2)
        prepared[i] = gdf.loc[~small]
    return prepared


def _cut_by_higher(gdf: gpd.GeoDataFrame, higher: shapely.Geometry, name: str, crs: CRS) -> gpd.GeoDataFrame:
    """``gdf`` minus the union ``higher`` of the higher-priority sources; fully covered polygons dropped."""
    shapely.prepare(higher)
    hits = shapely.intersects(gdf.geometry.to_numpy(), higher)
    if not hits.any():
        return gdf
    geoms = gdf.geometry.to_numpy().copy()
    geoms[hits] = _polygonal(shapely.difference(geoms[hits], higher))
    gdf = gdf.set_geometry(gpd.GeoSeries(geoms, index=gdf.index, crs=crs))
    covered = shapely.is_empty(geoms)
    log.info(
        "%s: %d polygon(s) overlap higher-priority sources (cut), %d fully covered (dropped)",
        name,
        int(hits.sum()),
        int(covered.sum()),
    )
    return gdf.loc[~covered]


def _assemble(
    sources: list[ReferenceSource],
    prepared: dict[int, gpd.GeoDataFrame],
    nomenclature: Nomenclature,
    crs: CRS,
    grid_raster: str | os.PathLike,
) -> gpd.GeoDataFrame:
    """The fused layer (:data:`COLUMNS`, ``polygon_id`` 1..N in source-list then feature order);
    InputError when no polygon is left on the tile."""
    parts = []
    for i, src in enumerate(sources):
        gdf = prepared[i]
        parts.append(
            gpd.GeoDataFrame(
                {
                    "code": gdf["code"].to_numpy(dtype=np.int64),
                    "name": [nomenclature.name_of(c) for c in gdf["code"]],
                    "source": src.name,
                    "area_m2": gdf.geometry.area.to_numpy(dtype=np.float64),
                },
                geometry=gdf.geometry.to_numpy(),
                crs=crs,
            )
        )
    fused = gpd.GeoDataFrame(pd.concat(parts, ignore_index=True), geometry="geometry", crs=crs)
    if fused.empty:
        raise InputError(
            grid_raster,
            f"no reference polygon left on this tile (sources: {[str(s.path) for s in sources]})",
            "check that the reference sources cover the tile and that their CRS is right",
        )
    fused.insert(0, "polygon_id", np.arange(1, len(fused) + 1, dtype=np.int64))
    return fused[COLUMNS]


def read_reference(
    reference_gpkg: str | os.PathLike, required: tuple[str, ...] = tuple(COLUMNS[:-1])
) -> gpd.GeoDataFrame:
    """The fused reference polygons of a tile (layer ``reference`` written by :func:`fuse_reference`),
    sorted by ``polygon_id``; the one reader of ``reference.gpkg`` (split, parcel datasets).

    Parameters
    ----------
    reference_gpkg : the tile's ``reference.gpkg``.
    required : the attribute columns the caller needs (all of ``COLUMNS`` by default).

    Raises
    ------
    InputError
        the file missing or unreadable, a required column missing, duplicate ``polygon_id`` values.
    """
    reference_gpkg = Path(reference_gpkg)
    if not reference_gpkg.is_file():
        raise InputError(
            reference_gpkg, "reference polygons not found", "run the reference fusion step of this tile first"
        )
    try:
        ref = pyogrio.read_dataframe(reference_gpkg, layer=LAYER)
    except (pyogrio.errors.DataSourceError, pyogrio.errors.DataLayerError) as exc:
        raise InputError(
            reference_gpkg, f"layer 'reference' cannot be read ({exc})", "rerun the reference fusion step"
        ) from None
    missing = [c for c in required if c not in ref.columns]
    if missing:
        raise InputError(
            reference_gpkg,
            f"missing column(s) {missing}",
            "rerun the reference fusion step (cropchain.reference.fusion)",
        )
    if ref["polygon_id"].duplicated().any():
        raise InputError(reference_gpkg, "duplicate polygon_id values", "rerun the reference fusion step")
    return ref.sort_values("polygon_id", kind="stable").reset_index(drop=True)
