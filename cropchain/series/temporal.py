"""The chain's temporal step (rule ``gapfill``): the configuration's ``gapfill.temporal`` chooses
between gap filling onto the regular date grid (:func:`cropchain.series.gapfill.gapfill_tile`,
the default) and monthly median composites
(:func:`cropchain.series.composite.monthly_composite_tile`).
"""

from __future__ import annotations

import os
from collections.abc import Mapping

from cropchain.series.composite import monthly_composite_tile
from cropchain.series.gapfill import gapfill_tile

#: configuration keys of the coverage checks, passed on when given.
COVERAGE_KEYS = ("max_gap_days", "max_gap_share", "max_unclear_share")


def fill_series(
    raw: str | os.PathLike,
    mask: str | os.PathLike,
    raw_dates: str | os.PathLike,
    out_gapfilled: str | os.PathLike,
    out_dates: str | os.PathLike,
    out_validity: str | os.PathLike,
    *,
    dates: Mapping,
    gapfill: Mapping,
    threads: int = 1,
) -> None:
    """Write a tile's ``gapfilled.tif``, ``dates.txt`` and ``validity.tif`` from its raw series.

    Parameters
    ----------
    raw, mask, raw_dates : the ingest's ``raw.tif``, ``raw_mask.tif``, ``raw_dates.txt``.
    out_gapfilled, out_dates, out_validity : the products written (see
        :func:`cropchain.series.gapfill.gapfill_tile`).
    dates : the configuration's ``dates`` section (``start``, ``end``, ``step_days``).
    gapfill : the configuration's ``gapfill`` section: ``temporal`` (``monthly_median`` or gap
        filling), ``composite_day`` for composites, ``mode`` and ``backend`` for gap filling, and
        the coverage checks ``max_gap_days``, ``max_gap_share``, ``max_unclear_share`` when given.
    threads : windows gap-filled in parallel (gap filling only).

    Raises
    ------
    InputError, ConfigError, CropchainError
        as :func:`cropchain.series.gapfill.gapfill_tile` and
        :func:`cropchain.series.composite.monthly_composite_tile`.
    """
    files = (raw, mask, raw_dates, out_gapfilled, out_dates, out_validity)
    coverage = {k: gapfill[k] for k in COVERAGE_KEYS if k in gapfill}
    if gapfill["temporal"] == "monthly_median":
        monthly_composite_tile(
            *files, start=dates["start"], end=dates["end"], day=gapfill["composite_day"], **coverage
        )
    else:
        gapfill_tile(
            *files,
            start=dates["start"],
            end=dates["end"],
            step_days=dates["step_days"],
            mode=gapfill["mode"],
            backend=gapfill["backend"],
            threads=threads,
            **coverage,
        )
