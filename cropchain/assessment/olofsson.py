"""Accuracy assessment and area estimation of a class map (Olofsson et al. 2014).

Follows Olofsson, P., Foody, G. M., Herold, M., Stehman, S. V., Woodcock, C. E., Wulder, M. A.
(2014), "Good practices for estimating area and assessing accuracy of land change", Remote
Sensing of Environment 148:42-57 (equation numbers below are the paper's), with the
estimators of Olofsson et al. (2013, RSE 129:122-131) for stratified random sampling where the
strata are the map classes.

Two steps, each a rule of ``workflow/rules/assessment.smk``:

1. **Sampling design** (:func:`design_sample`): the mapped area proportion ``W_i`` of each
   class is counted by streaming windows of the classification raster
   (:func:`class_pixel_counts`); the sample size follows eq. 13 from target user's accuracies
   and a target standard error of the overall accuracy (:func:`sample_size`); it is allocated
   to the strata proportionally, equally, or as the paper recommends (a minimum per rare
   class, the rest proportional; :func:`allocate`); a stratified random sample of pixel
   centres is drawn without replacement (seeded, streaming: :func:`stratified_sample`) and
   written as a GeoPackage with an empty ``reference`` column for photo-interpretation.
2. **Estimation** (:func:`assess_map`): from a labelled sample (any vector file of points, in
   any CRS), the map class under each point is read and :func:`estimate` gives the error
   matrix in area proportions (eq. 4: ``p_ij = W_i n_ij / n_i.``), the overall, user's and
   producer's accuracies (eqs. 1-3) with 95% confidence intervals (eqs. 5-7), and the
   error-adjusted area of each class (eq. 9 with the standard error of eq. 10, 95% interval
   ``1.96 x SE``, eq. 11) beside the mapped (pixel-counting) area.

Conventions: error matrices here have **rows = map class, columns = reference class**, as in
the paper (the evaluation reports of :mod:`cropchain.assessment.evaluate` use the transpose). Areas are in
hectares; accuracies are fractions 0-1; every ``ci95`` is the half-width of the 95% interval
(estimate +- ci95).
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import geopandas as gpd
import numpy as np
import pandas as pd
import rasterio
import shapely
from rasterio.features import rasterize

from cropchain.errors import ConfigError, InputError
from cropchain.io.atomic import atomic_output, write_text_atomic
from cropchain.io.raster import block_windows, open_raster
from cropchain.nomenclature import NODATA_CLASS, Nomenclature, read_nomenclature, require_codes
from cropchain.reference.split import VALIDATION, read_split

log = logging.getLogger(__name__)

#: Two-sided 95% normal quantile used by the paper for every confidence interval.
Z95 = 1.96
#: Allocation methods of :func:`allocate`.
ALLOCATIONS = ("proportional", "equal", "recommended")
#: Rows of the classification read at a time when streaming (whole rows: the sampling order is row-major).
STRIPE_ROWS = 256


# --------------------------------------------------------------------------------------
# Mapped areas
# --------------------------------------------------------------------------------------


def _map_nodata(src: rasterio.DatasetReader) -> int:
    return NODATA_CLASS if src.nodata is None else int(src.nodata)


def _stripes(height: int, rows: int = STRIPE_ROWS):
    for r0 in range(0, height, rows):
        yield r0, min(rows, height - r0)


def class_pixel_counts(classification: str | os.PathLike) -> tuple[dict[int, int], float]:
    """Number of pixels of each class of a map, counted by streaming stripes of rows.

    Parameters
    ----------
    classification : single-band integer class map (class codes, nodata excluded; nodata 0
        when the file has no nodata tag) in a projected CRS with metre units.

    Returns
    -------
    counts : class code -> number of pixels (classes with no pixel are absent).
    pixel_area_ha : area of one pixel in hectares (from the geotransform).

    Memory is one stripe of ``STRIPE_ROWS`` x width pixels, never the whole tile.

    Raises
    ------
    InputError
        missing/unreadable file, more than one band, or a geographic CRS (degrees).
    """
    path = Path(classification)
    with open_raster(path, "classification") as src:
        if src.count != 1:
            raise InputError(
                path, f"{src.count} bands, a class map has one", "give the *_classification.tif of a run"
            )
        if src.crs is None or not src.crs.is_projected:
            raise InputError(
                path,
                f"CRS {src.crs} is not projected (pixel areas need metres)",
                "reproject the map to a projected CRS (e.g. the tile's UTM zone)",
            )
        nodata = _map_nodata(src)
        total = np.zeros(256 if src.dtypes[0] == "uint8" else 65536, dtype=np.int64)
        for r0, h in _stripes(src.height):
            block = src.read(1, window=rasterio.windows.Window(0, r0, src.width, h))
            if block.min() < 0 or block.max() >= total.size:
                raise InputError(
                    path, f"class codes outside 0..{total.size - 1}", "give a uint8/uint16 class map"
                )
            total += np.bincount(block.ravel(), minlength=total.size)[: total.size]
        area_ha = abs(src.transform.a * src.transform.e - src.transform.b * src.transform.d) / 1e4
    counts = {int(c): int(n) for c, n in enumerate(total) if n and c != nodata}
    return counts, float(area_ha)


# --------------------------------------------------------------------------------------
# Sampling design
# --------------------------------------------------------------------------------------


def sample_size(weights: Sequence[float], users_accuracy: Sequence[float], target_se: float) -> float:
    """Sample size of stratified random sampling for a target precision of overall accuracy.

    Olofsson et al. (2014) eq. 13 (Cochran 1977, eq. 5.25):
    ``n = (sum_i W_i S_i / S(O))**2`` with ``S_i = sqrt(U_i (1 - U_i))``.

    Parameters
    ----------
    weights : ``[K]`` mapped area proportions ``W_i`` of the strata (summing to 1).
    users_accuracy : ``[K]`` expected (target) user's accuracies ``U_i``, fractions 0-1.
    target_se : target standard error ``S(O)`` of the overall accuracy (e.g. 0.01).

    Returns
    -------
    The sample size as a float (round it up). With the paper's example (W = 0.02, 0.015,
    0.32, 0.645; U = 0.70, 0.60, 0.90, 0.95; S(O) = 0.01) it is 640.6, about 641.

    Raises
    ------
    ValueError
        on shapes that differ, a user's accuracy outside [0, 1] or a target_se <= 0.
    """
    w = np.asarray(weights, dtype=float)
    u = np.asarray(users_accuracy, dtype=float)
    if w.shape != u.shape:
        raise ValueError(f"weights {w.shape} and users_accuracy {u.shape} differ in shape")
    if np.any((u < 0) | (u > 1)):
        raise ValueError("user's accuracies must be fractions in [0, 1]")
    if not target_se > 0:
        raise ValueError("target_se must be > 0")
    return float((np.sum(w * np.sqrt(u * (1 - u))) / target_se) ** 2)


def _round_preserving_sum(x: np.ndarray, total: int) -> np.ndarray:
    """Largest-remainder rounding of non-negative ``x`` to integers summing to ``total``."""
    base = np.floor(x).astype(np.int64)
    rest = int(total - base.sum())
    if rest > 0:
        order = np.argsort(-(x - base), kind="stable")
        base[order[:rest]] += 1
    return base


def allocate(
    n: int,
    weights: Sequence[float],
    method: str = "recommended",
    *,
    min_per_class: int = 50,
    available: Sequence[int] | None = None,
) -> np.ndarray:
    """Allocate a total sample size to the strata (map classes).

    Parameters
    ----------
    n : total sample size.
    weights : ``[K]`` mapped area proportions ``W_i``.
    method :
        ``proportional``: ``n_i ~ n W_i``; ``equal``: ``n / K`` each; ``recommended``: the
        compromise Olofsson et al. (2014, section 5.1.2) recommend for rare classes: every
        class whose proportional share is below ``min_per_class`` gets ``min_per_class`` (they
        suggest 50-100), the rest of ``n`` is shared proportionally among the other classes.
        When ``n`` cannot give every class the minimum, the minimum becomes ``n // K``.
    min_per_class : the minimum of ``recommended`` (ignored by the other methods).
    available : optional ``[K]`` number of pixels of each stratum: no stratum gets more
        points than pixels (the surplus goes to the others, proportionally).

    Returns
    -------
    ``[K]`` int64 sample sizes ``n_i`` summing to ``n`` (or to ``sum(available)`` if smaller).

    Raises
    ------
    ValueError
        unknown method, negative n or weights.
    """
    w = np.asarray(weights, dtype=float)
    if method not in ALLOCATIONS:
        raise ValueError(f"allocation {method!r} is not one of {ALLOCATIONS}")
    if n < 0 or np.any(w < 0) or w.sum() <= 0:
        raise ValueError("n and the weights must be non-negative, with weights summing to > 0")
    cap = (
        np.full(w.shape, int(n), dtype=np.int64)
        if available is None
        else np.asarray(available, dtype=np.int64)
    )
    n = int(min(n, cap.sum()))
    k = len(w)
    if method == "equal":
        share = np.full(k, n / k)
    elif method == "proportional":
        share = n * w / w.sum()
    else:
        floor = min(int(min_per_class), n // k)  # a minimum that every class can have
        fixed = np.zeros(k, dtype=bool)
        while True:  # classes whose proportional share of what is left is below the minimum get the minimum
            left = n - floor * fixed.sum()
            free_w = np.where(fixed, 0.0, w)
            share = np.where(fixed, float(floor), left * free_w / max(free_w.sum(), 1e-300))
            newly = ~fixed & (share < floor)
            if not newly.any():
                break
            fixed |= newly
    alloc = _round_preserving_sum(share, n)
    # respect the pixels available, handing the surplus to the strata that still have room
    for _ in range(k):
        over = alloc > cap
        if not over.any():
            break
        surplus = int((alloc[over] - cap[over]).sum())
        alloc[over] = cap[over]
        room = alloc < cap
        if not room.any():
            break
        share = np.where(room, np.maximum(w, 1e-12), 0.0)
        alloc += _round_preserving_sum(share / share.sum() * surplus, surplus)
    return alloc


def stratified_sample(
    classification: str | os.PathLike,
    allocation: Mapping[int, int],
    seed: int,
    counts: Mapping[int, int] | None = None,
) -> pd.DataFrame:
    """Stratified random sample of pixels of a class map, without replacement within each class.

    Every pixel of stratum ``h`` has the same inclusion probability ``n_h / N_h``. The ranks
    of the chosen pixels in the row-major order of each class are drawn first (numpy
    ``Generator(PCG64(seed)).choice``), then one pass over stripes of rows locates them, so
    memory is one stripe, never the tile.

    Parameters
    ----------
    classification : class map (see :func:`class_pixel_counts`).
    allocation : class code -> number of points ``n_h`` (at most the class's pixel count).
    seed : seed of the draw (same seed and map -> same points).
    counts : pixel counts from :func:`class_pixel_counts` (counted again when None).

    Returns
    -------
    DataFrame with one row per point, sorted by stratum then row-major position: ``stratum``
    (class code), ``row``, ``col`` (pixel indices), ``x``, ``y`` (pixel centre, map CRS).

    Raises
    ------
    InputError
        a stratum asked for more points than it has pixels.
    """
    path = Path(classification)
    if counts is None:
        counts, _ = class_pixel_counts(path)
    rng = np.random.Generator(np.random.PCG64(seed))
    wanted: dict[int, np.ndarray] = {}
    for code in sorted(allocation):
        n_h, big_n = int(allocation[code]), int(counts.get(code, 0))
        if n_h > big_n:
            raise InputError(
                path,
                f"class {code} has {big_n} pixels, {n_h} sample points were asked",
                "lower the sample size or the allocation of this class",
            )
        if n_h > 0:
            wanted[code] = np.sort(rng.choice(big_n, size=n_h, replace=False))
    found: dict[int, list[np.ndarray]] = {code: [] for code in wanted}
    seen = dict.fromkeys(wanted, 0)
    with open_raster(path, "classification") as src:
        transform = src.transform
        for r0, h in _stripes(src.height):
            block = src.read(1, window=rasterio.windows.Window(0, r0, src.width, h))
            flat = block.ravel()
            for code, ranks in wanted.items():
                where = np.flatnonzero(flat == code)
                lo, hi = seen[code], seen[code] + where.size
                sel = ranks[(ranks >= lo) & (ranks < hi)]
                if sel.size:
                    found[code].append(where[sel - lo] + r0 * src.width)
                seen[code] = hi
    rows = []
    for code, parts in found.items():
        flat_index = np.concatenate(parts) if parts else np.empty(0, np.int64)
        rows.append(
            pd.DataFrame({"stratum": code, "row": flat_index // src.width, "col": flat_index % src.width})
        )
    df = pd.concat(rows, ignore_index=True) if rows else pd.DataFrame(columns=["stratum", "row", "col"])
    xs, ys = rasterio.transform.xy(transform, df["row"].to_numpy(), df["col"].to_numpy(), offset="center")
    df["x"], df["y"] = np.asarray(xs, dtype=float), np.asarray(ys, dtype=float)
    return df


def _users_accuracy_per_class(
    codes: Sequence[int], users_accuracy: float | Mapping[Any, float]
) -> np.ndarray:
    if isinstance(users_accuracy, Mapping):
        per = {int(k): float(v) for k, v in users_accuracy.items() if str(k) != "default"}
        default = users_accuracy.get("default")
        missing = [c for c in codes if c not in per and default is None]
        if missing:
            raise ConfigError(
                f"assessment.users_accuracy: no value for the mapped class(es) {missing} "
                "(give one per class code, or a `default`)"
            )
        return np.array([per.get(c, default) for c in codes], dtype=float)
    return np.full(len(codes), float(users_accuracy))


def _mapped_class_counts(path: Path, nom: Nomenclature) -> tuple[dict[int, int], float]:
    """:func:`class_pixel_counts` of a map, checked: some pixel classified, every code in ``nom``."""
    counts, pixel_ha = class_pixel_counts(path)
    if not counts:
        raise InputError(
            path, "no classified pixel (the whole map is nodata)", "check the classification step"
        )
    require_codes(nom, counts, path, "use the nomenclature the map was made with")
    return counts, pixel_ha


def _write_sample_points(
    path: Path,
    points: pd.DataFrame,
    nom: Nomenclature,
    reference_field: str,
    out_sample: str | os.PathLike,
) -> None:
    """Write the drawn ``points`` (:func:`stratified_sample`) as the ``sample`` layer of a GeoPackage.

    Columns ``id``, ``stratum``, ``map_class``, ``row``, ``col`` and an empty Int32
    ``reference_field``; point geometries in the CRS of the map ``path``.
    """
    with rasterio.open(path) as src:
        crs = src.crs
    gdf = gpd.GeoDataFrame(
        {
            "id": np.arange(1, len(points) + 1, dtype=np.int32),
            "stratum": points["stratum"].astype(np.int32),
            "map_class": [nom.name_of(c) for c in points["stratum"]],
            "row": points["row"].astype(np.int32),
            "col": points["col"].astype(np.int32),
            reference_field: pd.array([None] * len(points), dtype="Int32"),
        },
        geometry=gpd.points_from_xy(points["x"], points["y"]),
        crs=crs,
    )
    with atomic_output(out_sample) as tmp:
        gdf.to_file(tmp, driver="GPKG", layer="sample", engine="pyogrio")


# 87 lines, of which 41 are the signature and docstring (shapes, units, errors): 46 of code
def design_sample(
    classification: str | os.PathLike,
    nomenclature: Nomenclature | str | os.PathLike,
    out_sample: str | os.PathLike,
    out_design: str | os.PathLike | None = None,
    *,
    users_accuracy: float | Mapping[Any, float] = 0.8,
    target_se: float = 0.01,
    allocation: str = "recommended",
    min_per_class: int = 50,
    n_total: int | None = None,
    seed: int = 0,
    reference_field: str = "reference",
) -> dict[str, Any]:
    """Sampling design of an accuracy assessment: sample size, allocation, stratified random points.

    Parameters
    ----------
    classification : class map (uint8 codes, nodata 0), projected CRS.
    nomenclature : the map's nomenclature (class names for the points).
    out_sample : GeoPackage written atomically: one point per sample unit (pixel centre, map
        CRS) with columns ``id``, ``stratum`` (map class code), ``map_class`` (name), ``row``,
        ``col`` and ``reference_field`` (empty: integer class codes to fill in by
        photo-interpretation).
    out_design : optional JSON with the design (counts, weights, n, allocation, settings).
    users_accuracy : expected user's accuracy of every class, or a mapping code -> value
        (with an optional ``default`` key) for eq. 13.
    target_se : target standard error of the overall accuracy (eq. 13).
    allocation, min_per_class : see :func:`allocate`.
    n_total : sample size; None: from eq. 13 (rounded up).
    seed : seed of the random draw.

    Returns
    -------
    The design dict (also written to ``out_design``).

    Raises
    ------
    InputError
        unreadable or empty map; ConfigError: a user's accuracy missing for a mapped class.
    """
    nom = nomenclature if isinstance(nomenclature, Nomenclature) else read_nomenclature(nomenclature)
    path = Path(classification)
    counts, pixel_ha = _mapped_class_counts(path, nom)
    codes = sorted(counts)
    pixels = np.array([counts[c] for c in codes], dtype=np.int64)
    weights = pixels / pixels.sum()
    ua = _users_accuracy_per_class(codes, users_accuracy)
    n_eq13 = sample_size(weights, ua, target_se)
    n = int(math.ceil(n_eq13 - 1e-9)) if n_total is None else int(n_total)
    alloc = allocate(n, weights, allocation, min_per_class=min_per_class, available=pixels)
    points = stratified_sample(path, dict(zip(codes, alloc.tolist())), seed, counts)
    _write_sample_points(path, points, nom, reference_field, out_sample)
    design = {
        "classification": str(path),
        "pixel_area_ha": pixel_ha,
        "classes": {
            str(c): {
                "name": nom.name_of(c),
                "pixels": int(p),
                "mapped_ha": float(p * pixel_ha),
                "weight": float(w),
                "users_accuracy": float(u),
                "n": int(a),
            }
            for c, p, w, u, a in zip(codes, pixels, weights, ua, alloc)
        },
        "target_se": float(target_se),
        "n_eq13": n_eq13,
        "n": int(alloc.sum()),
        "allocation": allocation,
        "min_per_class": int(min_per_class),
        "seed": int(seed),
        "reference_field": reference_field,
        "sample": str(out_sample),
    }
    if out_design is not None:
        write_text_atomic(out_design, json.dumps(design, indent=2) + "\n")
    log.info(
        "%s: sample of %d points (eq. 13 gives %.1f), %s allocation %s",
        path.name,
        design["n"],
        n_eq13,
        allocation,
        {c: int(a) for c, a in zip(codes, alloc)},
    )
    return design


# --------------------------------------------------------------------------------------
# Estimation
# --------------------------------------------------------------------------------------


def _none_if_nan(x: float) -> float | None:
    return None if x is None or not math.isfinite(x) else float(x)


def _stat(value: float, var: float) -> dict[str, float | None]:
    """``{value, se, ci95}`` of an estimate and its variance (None where undefined)."""
    se = math.sqrt(var) if var is not None and math.isfinite(var) else float("nan")
    return {"value": _none_if_nan(value), "se": _none_if_nan(se), "ci95": _none_if_nan(Z95 * se)}


def _producers_variance(
    big_n: np.ndarray, frac: np.ndarray, ni: np.ndarray, ua: np.ndarray, pa: np.ndarray, dof: np.ndarray
) -> np.ndarray:
    """Variance of the producer's accuracies, Olofsson et al. 2014 eq. 7 (see :func:`estimate`).

    ``big_n [K]`` mapped pixels, ``frac [K, K]`` ``n_ij / n_i.``, ``ni [K]`` points per
    stratum, ``ua``, ``pa`` ``[K]`` accuracies, ``dof [K]`` ``n_i. - 1`` (NaN below 2 points).
    Returns ``[K]`` float64, NaN where undefined (no estimated pixel, or a sampled stratum
    with fewer than 2 points).
    """
    k = len(big_n)
    sampled = ni > 0
    n_hat = (big_n[:, None] * frac).sum(axis=0)  # estimated pixels of each reference class
    v_pa = np.full(k, np.nan)
    with np.errstate(divide="ignore", invalid="ignore"):
        for j in range(k):
            if n_hat[j] <= 0 or not np.all(ni[sampled] > 1):
                continue
            first = big_n[j] ** 2 * (1 - pa[j]) ** 2 * ua[j] * (1 - ua[j]) / dof[j] if ni[j] > 0 else 0.0
            others = sum(
                big_n[i] ** 2 * frac[i, j] * (1 - frac[i, j]) / dof[i]
                for i in range(k)
                if i != j and ni[i] > 0
            )
            v_pa[j] = (first + pa[j] ** 2 * others) / n_hat[j] ** 2
    return v_pa


# 106 lines, of which 47 are the signature and docstring (shapes, units, errors): 59 of code
def estimate(
    counts: np.ndarray | Sequence[Sequence[int]],
    mapped_pixels: Sequence[float],
    pixel_area_ha: float = 1.0,
    codes: Sequence[int] | None = None,
    names: Sequence[str] | None = None,
) -> dict[str, Any]:
    """Accuracies and error-adjusted areas from the sample error matrix of a stratified random sample.

    The strata are the map classes (Olofsson et al. 2014, section 4.3 and 5.3; Olofsson et
    al. 2013). With ``W_i`` the mapped area proportion of class ``i``, ``n_ij`` the sample
    count (map ``i``, reference ``j``) and ``n_i.`` its row total:

    - eq. 4: ``p_ij = W_i n_ij / n_i.`` (error matrix in area proportions);
    - eqs. 1-3: ``O = sum_j p_jj``, ``U_i = p_ii / p_i.``, ``P_j = p_jj / p_.j``;
    - eq. 5: ``V(O) = sum_i W_i^2 U_i (1 - U_i) / (n_i. - 1)``;
    - eq. 6: ``V(U_i) = U_i (1 - U_i) / (n_i. - 1)``;
    - eq. 7: ``V(P_j) = 1/N.j^2 [N_j.^2 (1-P_j)^2 U_j (1-U_j)/(n_j.-1)
      + P_j^2 sum_{i!=j} N_i.^2 n_ij/n_i. (1 - n_ij/n_i.)/(n_i.-1)]`` with ``N_i.`` the mapped
      pixels and ``N.j = sum_i N_i. n_ij / n_i.`` the estimated pixels of class ``j``;
    - eq. 9-10: ``p.j = sum_i p_ij``, ``S(p.j) = sqrt(sum_i W_i^2 (n_ij/n_i.)(1 - n_ij/n_i.)/(n_i. - 1))``;
    - eq. 11: area ``A_j = A p.j`` and its 95% interval ``A_j +- 1.96 A S(p.j)``.

    Parameters
    ----------
    counts : ``[K, K]`` sample counts, rows = map class, columns = reference class.
    mapped_pixels : ``[K]`` mapped pixels ``N_i.`` of each class (any area unit works:
        areas come out in that unit times ``pixel_area_ha``).
    pixel_area_ha : area of one pixel (hectares); 1 gives areas in pixels.
    codes, names : class codes and names, in matrix order (default 1..K and their str).

    Returns
    -------
    dict with ``codes``, ``names``, ``n`` (points), ``n_per_stratum``, ``error_matrix_counts``
    and ``error_matrix_proportions`` (``[K][K]``, rows = map, columns = reference),
    ``overall_accuracy`` ``{value, se, ci95}``, ``users_accuracy`` and ``producers_accuracy``
    (code -> ``{value, se, ci95}``), ``areas`` (code -> ``{name, mapped_ha, estimated_ha,
    se_ha, ci95_ha, estimated_proportion}``), ``unsampled_strata`` (mapped classes with no
    point: their area is missing from every column, the estimates are biased) and
    ``strata_below_2`` (strata with fewer than 2 points: variances undefined, intervals None).
    Undefined values (0/0) are None.

    Raises
    ------
    ValueError
        on a non-square matrix or a length mismatch.
    """
    n = np.asarray(counts, dtype=float)
    big_n = np.asarray(mapped_pixels, dtype=float)
    k = len(big_n)
    if n.shape != (k, k):
        raise ValueError(f"error matrix {n.shape} does not match {k} mapped classes")
    codes = list(range(1, k + 1)) if codes is None else [int(c) for c in codes]
    names = [str(c) for c in codes] if names is None else [str(s) for s in names]
    w = big_n / big_n.sum()
    ni = n.sum(axis=1)
    with np.errstate(divide="ignore", invalid="ignore"):
        frac = np.where(ni[:, None] > 0, n / ni[:, None], 0.0)  # n_ij / n_i.
        p = w[:, None] * frac
        ua = np.where(ni > 0, np.diag(frac), np.nan)
        p_col = p.sum(axis=0)
        pa = np.where(p_col > 0, np.diag(p) / p_col, np.nan)
        oa = float(np.trace(p))
        dof = np.where(ni > 1, ni - 1, np.nan)  # variance terms of strata with < 2 points are undefined
        sampled = ni > 0
        v_ua = ua * (1 - ua) / dof
        v_oa = float(np.nansum(w**2 * ua * (1 - ua) / dof)) if np.all(ni[sampled] > 1) else np.nan
        cell = np.where(sampled[:, None], (w**2)[:, None] * frac * (1 - frac) / dof[:, None], 0.0)
        v_p = cell.sum(axis=0) if np.all(ni[sampled] > 1) else np.full(k, np.nan)
        v_pa = _producers_variance(big_n, frac, ni, ua, pa, dof)
    total_ha = big_n.sum() * pixel_area_ha
    unsampled = [codes[i] for i in range(k) if ni[i] == 0 and big_n[i] > 0]
    below_2 = [codes[i] for i in range(k) if 0 < ni[i] < 2]
    if unsampled:
        log.warning(
            "strata %s are mapped but have no sample point: their area is left out of every estimate",
            unsampled,
        )
    if below_2:
        log.warning("strata %s have fewer than 2 sample points: standard errors are undefined", below_2)
    return {
        "codes": codes,
        "names": names,
        "n": int(n.sum()),
        "n_per_stratum": {c: int(x) for c, x in zip(codes, ni)},
        "error_matrix": {"rows": "map", "columns": "reference"},
        "error_matrix_counts": n.astype(np.int64).tolist(),
        "error_matrix_proportions": p.tolist(),
        "overall_accuracy": _stat(oa, v_oa),
        "users_accuracy": {c: _stat(ua[i], v_ua[i]) for i, c in enumerate(codes)},
        "producers_accuracy": {c: _stat(pa[i], v_pa[i]) for i, c in enumerate(codes)},
        "areas": {
            c: {
                "name": names[i],
                "mapped_ha": float(big_n[i] * pixel_area_ha),
                "estimated_ha": float(p_col[i] * total_ha),
                "se_ha": _none_if_nan(math.sqrt(v_p[i]) * total_ha),
                "ci95_ha": _none_if_nan(Z95 * math.sqrt(v_p[i]) * total_ha),
                "estimated_proportion": float(p_col[i]),
            }
            for i, c in enumerate(codes)
        },
        "total_ha": float(total_ha),
        "unsampled_strata": unsampled,
        "strata_below_2": below_2,
    }


def read_labelled_sample(
    path: str | os.PathLike, crs: Any, reference_field: str = "reference"
) -> gpd.GeoDataFrame:
    """Read a labelled sample (points) from any vector file OGR reads, reprojected to ``crs``.

    Rows whose ``reference_field`` is empty are dropped (not yet interpreted), with a log line.
    Polygons are reduced to a representative point.

    Raises
    ------
    InputError
        missing/unreadable file, no CRS, no ``reference_field`` column, no labelled row,
        or labels that are not integer class codes.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(
            path, "labelled sample not found", "set assessment.samples to the photo-interpreted sample file"
        )
    try:
        gdf = gpd.read_file(path, engine="pyogrio")
    except Exception as exc:  # pyogrio's DataSourceError and friends
        raise InputError(
            path,
            f"cannot be read as a vector file ({exc})",
            "give a GeoPackage, Shapefile or GeoJSON of points",
        ) from None
    if reference_field not in gdf.columns:
        raise InputError(
            path,
            f"no column {reference_field!r} (columns: {', '.join(map(str, gdf.columns))})",
            "set assessment.reference_field to the column holding the reference class codes",
        )
    if gdf.crs is None:
        raise InputError(path, "no CRS", "write the sample with its coordinate reference system")
    labelled = gdf[gdf[reference_field].notna() & gdf.geometry.notna() & ~gdf.geometry.is_empty]
    if len(labelled) < len(gdf):
        log.info(
            "%s: %d of %d points have no reference label yet and are left out",
            path,
            len(gdf) - len(labelled),
            len(gdf),
        )
    if labelled.empty:
        raise InputError(
            path, f"no point has a {reference_field!r} label", "photo-interpret the sample first"
        )
    ref = pd.to_numeric(labelled[reference_field], errors="coerce")
    if ref.isna().any() or (ref != ref.round()).any():
        bad = labelled.loc[ref.isna() | (ref != ref.round()), reference_field].unique()[:5]
        raise InputError(
            path,
            f"{reference_field} values {list(bad)} are not integer class codes",
            "label with the nomenclature's codes",
        )
    labelled = labelled.assign(**{reference_field: ref.astype(int)})
    if not labelled.geom_type.isin(["Point"]).all():
        labelled = labelled.set_geometry(labelled.geometry.representative_point())
    return labelled.to_crs(crs)


def assess_map(
    classification: str | os.PathLike,
    samples: str | os.PathLike,
    nomenclature: Nomenclature | str | os.PathLike,
    *,
    reference_field: str = "reference",
) -> dict[str, Any]:
    """Accuracy and area estimates of a class map from a labelled stratified random sample.

    The map class at each point is read from ``classification`` (nearest pixel, the points
    reprojected to the map's CRS); points outside the map or on nodata are left out and
    counted. Mapped areas are counted by streaming the map (:func:`class_pixel_counts`).
    The sample is treated as a stratified random sample with the map classes as strata
    (:func:`design_sample` draws one): for any other sample (e.g. validation parcels) the
    estimates are only a test of the mechanics.

    Returns
    -------
    The dict of :func:`estimate` (classes: the nomenclature's codes that are mapped or
    referenced, in nomenclature order) plus ``classification``, ``samples``, ``pixel_area_ha``
    and ``n_outside`` (points off the map or on nodata).

    Raises
    ------
    InputError
        unreadable inputs, reference codes not in the nomenclature, no point on the map.
    """
    nom = nomenclature if isinstance(nomenclature, Nomenclature) else read_nomenclature(nomenclature)
    path = Path(classification)
    counts, pixel_ha = class_pixel_counts(path)
    with open_raster(path, "classification") as src:
        crs, nodata = src.crs, _map_nodata(src)
        gdf = read_labelled_sample(samples, crs, reference_field)
        xy = np.column_stack([gdf.geometry.x.to_numpy(), gdf.geometry.y.to_numpy()])
        rows, cols = rasterio.transform.rowcol(src.transform, xy[:, 0], xy[:, 1])
        rows, cols = np.asarray(rows), np.asarray(cols)
        inside = (rows >= 0) & (rows < src.height) & (cols >= 0) & (cols < src.width)
        mapped = np.full(len(gdf), nodata, dtype=np.int64)
        if inside.any():
            mapped[inside] = [int(v[0]) for v in src.sample(xy[inside])]
    ref = gdf[reference_field].to_numpy()
    require_codes(nom, ref.tolist(), samples, "label with the nomenclature's codes", "reference codes")
    keep = mapped != nodata
    n_outside = int((~keep).sum())
    if n_outside:
        log.warning(
            "%s: %d labelled points fall outside %s or on nodata and are left out",
            samples,
            n_outside,
            path.name,
        )
    if not keep.any():
        raise InputError(
            samples,
            f"no labelled point falls on a classified pixel of {path}",
            "check the sample's CRS and extent",
        )
    codes = [c for c in nom.codes if c in counts or c in set(ref[keep].tolist())]
    index = {c: i for i, c in enumerate(codes)}
    matrix = np.zeros((len(codes), len(codes)), dtype=np.int64)
    np.add.at(matrix, ([index[c] for c in mapped[keep]], [index[c] for c in ref[keep]]), 1)
    result = estimate(
        matrix, [counts.get(c, 0) for c in codes], pixel_ha, codes, [nom.name_of(c) for c in codes]
    )
    result.update(classification=str(path), samples=str(samples), pixel_area_ha=pixel_ha, n_outside=n_outside)
    oa = result["overall_accuracy"]
    log.info("%s: overall accuracy %s +- %s on %d points", path.name, oa["value"], oa["ci95"], result["n"])
    return result


def validation_sample(
    split_gpkg: str | os.PathLike,
    classification: str | os.PathLike,
    out: str | os.PathLike,
    *,
    reference_field: str = "reference",
) -> int:
    """Labelled points from a run's validation parcels: the centre of every pixel they cover.

    For a test of the mechanics of :func:`assess_map` on the chain's own reference: the
    points are **not** a probability sample (parcels were chosen by the reference, not drawn
    from the map's strata), so the areas estimated from them are not design-unbiased.

    Parameters
    ----------
    split_gpkg : the run's split (``runs/{run}/tiles/{tile}/split.gpkg``, columns code, split).
    classification : the map whose grid gives the pixels (read by windows of 1024 px).
    out : GeoPackage written atomically: points (map CRS) with ``reference_field`` = parcel code.

    Returns
    -------
    The number of points written.

    Raises
    ------
    InputError
        missing/unreadable split, no validation polygon, no validation pixel on the map grid.
    """
    gdf = read_split(split_gpkg, VALIDATION)
    if gdf.empty:
        raise InputError(split_gpkg, "no polygon with split == 'validation'", "check the split ratio")
    xs, ys, codes = [], [], []
    with open_raster(classification, "classification") as src:
        gdf = gdf.to_crs(src.crs)
        geoms, values = gdf.geometry.to_numpy(), gdf["code"].astype(int).to_numpy()
        tree = gdf.sindex
        for win in block_windows(src.height, src.width, 1024):
            idx = tree.query(shapely.box(*rasterio.windows.bounds(win, src.transform)))
            if idx.size == 0:
                continue
            ref = rasterize(
                zip(geoms[idx], values[idx]),
                out_shape=(int(win.height), int(win.width)),
                transform=src.window_transform(win),
                fill=0,
                dtype="int32",
            )
            rows, cols = np.nonzero(ref)
            x, y = rasterio.transform.xy(src.window_transform(win), rows, cols, offset="center")
            xs.append(np.asarray(x, float)), ys.append(np.asarray(y, float)), codes.append(ref[rows, cols])
        crs = src.crs
    if not codes or sum(len(c) for c in codes) == 0:
        raise InputError(
            split_gpkg,
            f"no validation pixel on the grid of {classification}",
            "check that the split is of this tile",
        )
    points = gpd.GeoDataFrame(
        {reference_field: np.concatenate(codes).astype(np.int32)},
        geometry=gpd.points_from_xy(np.concatenate(xs), np.concatenate(ys)),
        crs=crs,
    )
    with atomic_output(out) as tmp:
        points.to_file(tmp, driver="GPKG", layer="validation", engine="pyogrio")
    log.info("%s: %d labelled points from the validation parcels of %s", out, len(points), split_gpkg)
    return len(points)


def write_assessment(
    result: Mapping[str, Any], out_json: str | os.PathLike, out_csv: str | os.PathLike | None = None
) -> None:
    """Write an assessment as JSON (:func:`cropchain.metrics.json_ready`) and, optionally, a CSV
    table with one row per class: mapped_ha, estimated_ha, ci95_ha, user's and producer's
    accuracies with their ci95. Both written atomically."""
    from cropchain.metrics import json_ready

    write_text_atomic(out_json, json.dumps(json_ready(dict(result)), indent=2) + "\n")
    if out_csv is not None:
        rows = []
        for code in result["codes"]:
            a, u, p = (
                result["areas"][code],
                result["users_accuracy"][code],
                result["producers_accuracy"][code],
            )
            rows.append(
                {
                    "code": code,
                    "name": a["name"],
                    "mapped_ha": a["mapped_ha"],
                    "estimated_ha": a["estimated_ha"],
                    "ci95_ha": a["ci95_ha"],
                    "users_accuracy": u["value"],
                    "users_ci95": u["ci95"],
                    "producers_accuracy": p["value"],
                    "producers_ci95": p["ci95"],
                }
            )
        with atomic_output(out_csv) as tmp:
            pd.DataFrame(rows).to_csv(tmp, index=False, float_format="%.6g")


# the keys of each class in the `areas` of a map's accuracy report (rule evaluate)
REPORT_AREA_FIELDS = ("name", "mapped_ha", "estimated_ha", "ci95_ha")
AREAS_DEFINITION = (
    "Olofsson et al. 2014 stratified estimator (strata = map classes), error-adjusted area "
    "and its 95% CI half-width (1.96 SE), mapped = pixel counting"
)


def read_assessment(path: str | os.PathLike) -> dict[str, Any]:
    """Read an assessment JSON (:func:`write_assessment`), checked for its ``areas``, ``users_accuracy``
    and ``producers_accuracy`` (codes as string keys).

    Raises
    ------
    InputError
        unreadable file, not JSON, or one of those keys missing.
    """
    try:
        assessment = json.loads(Path(path).read_text(encoding="utf-8"))
        assessment["areas"], assessment["users_accuracy"], assessment["producers_accuracy"]  # noqa: B018
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(
            path, f"not an assessment JSON ({exc!r})", "rerun the assessment_estimate step"
        ) from None
    return assessment


def report_areas(assessment: Mapping[str, Any]) -> dict[str, Any]:
    """The area keys of a map's accuracy report (:func:`cropchain.assessment.evaluate.evaluate_map`'s dict,
    rule evaluate with ``assessment.samples``), from its assessment (:func:`read_assessment`).

    Returns
    -------
    ``{"areas": {code: {name, mapped_ha, estimated_ha, ci95_ha}}, "areas_definition": str}``: the
    values of the assessment's ``areas`` (hectares; ``mapped_ha`` counts the map's pixels,
    ``estimated_ha`` is the error-adjusted area of eq. 11 and ``ci95_ha`` the half-width of its 95%
    interval, None where undefined), codes and class order as in the assessment; the definition names
    the estimator and the labelled sample.

    Raises
    ------
    InputError
        an assessment without the ``samples`` it was estimated from.
    """
    if "samples" not in assessment:
        raise InputError(
            assessment.get("classification", "assessment"),
            "the assessment does not name its labelled sample",
            "write it with assess_map (rule assessment_estimate)",
        )
    return {
        "areas": {code: {k: a[k] for k in REPORT_AREA_FIELDS} for code, a in assessment["areas"].items()},
        "areas_definition": f"{AREAS_DEFINITION}; sample: {assessment['samples']}",
    }
