"""Benchmark cropchain's gap filling against xarray's ``interpolate_na`` + ``ffill`` / ``bfill``.

Not a test: run it by hand, e.g.::

    python benchmarks/bench_gapfill.py --dates 30 --bands 10 --size 500 --gaps 0.3

A synthetic cube (T dates x B bands x size x size pixels, int16 reflectance x10000) gets a
cloud mask per date (every band of a date shares it, as ``raw_mask.tif``) with a fraction
``--gaps`` of random masked pixels. The same gap filling at the input dates (linear in time,
first / last valid value copied at the ends, OTB's semantics) is computed by

* ``cropchain.series.gapfill.gapfill_series(mode="linear")`` on the int16 cube and the mask, and
* ``xarray.DataArray.interpolate_na(dim="time", method="linear").ffill("time").bfill("time")``
  on a float32 cube with NaN at masked values (xarray's ffill / bfill need ``bottleneck``);

the script checks they agree and prints throughput (pixel-dates per second), the speed ratio
and the peak memory of each call traced by :mod:`tracemalloc` (numpy buffers included;
a separate, untimed run, as tracing slows Python loops).
It also times cropchain onto a regular 10-day grid and the spline mode (natural cubic / Akima
splines, grouped by validity pattern) on random gaps and on spatially coherent cloud-like
gaps, where far fewer validity patterns occur.
"""

from __future__ import annotations

import argparse
import sys
import time
import tracemalloc
from collections.abc import Callable

import numpy as np

from cropchain.series.gapfill import gapfill_series


def measure(fn: Callable[[], object], repeat: int = 1, memory: bool = True) -> tuple[object, float, float]:
    """(result, best seconds of ``repeat`` untraced runs, peak traced MiB of one more run or NaN).

    Timing runs are untraced: tracemalloc slows xarray's per-series Python loop several-fold.
    The memory run traces every allocation (numpy buffers included) with :mod:`tracemalloc`.
    """
    best = float("inf")
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        result = fn()
        best = min(best, time.perf_counter() - t0)
    peak = float("nan")
    if memory:
        del result
        tracemalloc.start()
        result = fn()
        peak = tracemalloc.get_traced_memory()[1] / 2**20
        tracemalloc.stop()
    return result, best, peak


def make_cube(n_dates: int, n_bands: int, size: int, gaps: float, seed: int):
    rng = np.random.default_rng(seed)
    days = np.sort(rng.choice(np.arange(0, 5 * n_dates + 30), size=n_dates, replace=False)).astype(np.float64)
    # smooth-ish reflectance curves plus noise, int16 x10000
    phase = rng.random((1, n_bands, size, size), dtype=np.float32) * 2 * np.pi
    t = (days / days[-1] * 2 * np.pi).astype(np.float32)[:, None, None, None]
    cube = (3000 + 2000 * np.sin(t + phase)).astype(np.int16)
    cube += rng.integers(-200, 200, size=cube.shape, dtype=np.int16)
    valid = rng.random((n_dates, size, size), dtype=np.float32) >= gaps
    return days, cube, valid


def cloud_mask(n_dates: int, size: int, gaps: float, seed: int) -> np.ndarray:
    """Spatially coherent masks: thresholded smooth noise, about ``gaps`` masked per date."""
    from scipy.ndimage import gaussian_filter

    rng = np.random.default_rng(seed + 1)
    valid = np.empty((n_dates, size, size), dtype=bool)
    for i in range(n_dates):
        field = gaussian_filter(rng.standard_normal((size, size)).astype(np.float32), sigma=size / 25)
        valid[i] = field >= np.quantile(field, gaps)
    return valid


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--dates", type=int, default=30, help="number of dates (default 30)")
    parser.add_argument("--bands", type=int, default=10, help="bands per date (default 10)")
    parser.add_argument("--size", type=int, default=500, help="image side in pixels (default 500)")
    parser.add_argument(
        "--gaps", type=float, default=0.3, help="fraction of masked pixel-dates (default 0.3)"
    )
    parser.add_argument(
        "--spline-pixels",
        type=int,
        default=20000,
        help="pixels timed in spline mode with random gaps (default 20000; one scipy "
        "spline per distinct validity pattern, nearly one per pixel there)",
    )
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument(
        "--repeat", type=int, default=3, help="best of N timings for the fast rows (default 3)"
    )
    parser.add_argument("--no-memory", action="store_true", help="skip the traced memory runs")
    parser.add_argument("--skip-xarray", action="store_true", help="time cropchain only")
    args = parser.parse_args(argv)

    days, cube, valid = make_cube(args.dates, args.bands, args.size, args.gaps, args.seed)
    n_dates, n_bands, n_pix = args.dates, args.bands, args.size**2
    values = cube.reshape(n_dates, n_bands, n_pix)
    valid2 = valid.reshape(n_dates, n_pix)
    work = n_pix * n_bands * n_dates  # pixel-dates (one series per pixel and band)
    grid = np.arange(days[0], days[-1] + 1, 10.0)
    print(
        f"cube: {n_dates} dates x {n_bands} bands x {args.size}x{args.size} px "
        f"({cube.nbytes / 2**20:.0f} MiB int16), {100 * (1 - valid.mean()):.1f}% masked, "
        f"{int((~valid2.any(axis=0)).sum())} pixels never clear"
    )

    rows: list[tuple[str, float, float, float]] = []
    mem = not args.no_memory
    ours, sec, peak = measure(
        lambda: gapfill_series(values, valid2, days, days, mode="linear"), args.repeat, mem
    )
    rows.append(("cropchain linear (input dates)", sec, work / sec, peak))
    _, sec, peak = measure(
        lambda: gapfill_series(values, valid2, days, grid, mode="linear"), args.repeat, mem
    )
    rows.append(
        (f"cropchain linear -> {grid.size}-date 10-day grid", sec, n_pix * n_bands * grid.size / sec, peak)
    )

    ratio = None
    if not args.skip_xarray:
        try:
            import bottleneck  # noqa: F401  (xarray's ffill / bfill need it)
            import pandas as pd
            import xarray as xr
        except ImportError as exc:
            print(f"xarray comparison skipped: {exc} (pip install xarray bottleneck)", file=sys.stderr)
        else:
            data = np.where(valid[:, None], cube, np.float32(np.nan)).astype(np.float32)
            times = pd.Timestamp("2018-01-01") + pd.to_timedelta(days, unit="D")
            da = xr.DataArray(data, dims=("time", "band", "y", "x"), coords={"time": times})
            filled, sec, peak = measure(
                lambda: da.interpolate_na(dim="time", method="linear").ffill("time").bfill("time").values,
                1,
                mem,
            )
            rows.append(("xarray interpolate_na+ffill+bfill", sec, work / sec, peak))
            ratio = rows[0][2] / rows[-1][2]
            theirs = filled.reshape(n_dates, n_bands, n_pix)
            same_nan = np.array_equal(np.isnan(theirs), np.isnan(ours))
            diff = float(np.nanmax(np.abs(theirs - ours)))
            print(
                f"agreement: max |cropchain - xarray| = {diff:.2e} (reflectance x10000), "
                f"NaN at the same places: {same_nan}"
            )
            del data, da, filled, theirs

    m = min(args.spline_pixels, n_pix)
    sub_v, sub_m = np.ascontiguousarray(values[:, :, :m]), np.ascontiguousarray(valid2[:, :m])
    patterns = len(np.unique(np.packbits(sub_m, axis=0), axis=1)[0]) if m else 0
    _, sec, peak = measure(lambda: gapfill_series(sub_v, sub_m, days, days, mode="spline"), 1, mem)
    rows.append(
        (
            f"cropchain spline, random gaps ({m} px, {patterns} patterns)",
            sec,
            m * n_bands * n_dates / sec,
            peak,
        )
    )
    clouds = cloud_mask(n_dates, args.size, args.gaps, args.seed).reshape(n_dates, n_pix)
    patterns = len(np.unique(np.packbits(clouds, axis=0), axis=1)[0])
    _, sec, peak = measure(lambda: gapfill_series(values, clouds, days, days, mode="spline"), 1, mem)
    rows.append(
        (f"cropchain spline, cloud-like gaps ({n_pix} px, {patterns} patterns)", sec, work / sec, peak)
    )
    _, sec, peak = measure(
        lambda: gapfill_series(values, clouds, days, days, mode="linear"), args.repeat, mem
    )
    rows.append(("cropchain linear, cloud-like gaps", sec, work / sec, peak))

    width = max(len(r[0]) for r in rows)
    print(f"\n{'method':<{width}}  {'seconds':>8}  {'Mpx-dates/s':>11}  {'peak MiB':>8}")
    for name, sec, rate, peak in rows:
        print(f"{name:<{width}}  {sec:8.2f}  {rate / 1e6:11.2f}  {peak:8.0f}")
    if ratio is not None:
        print(f"\ncropchain linear / xarray throughput: {ratio:.1f}x (target >= 5x)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
