"""Dates of the temporal step: parsing configured dates, the regular output grid of the gap
filling (iota2's temporal resolution) and days since an origin, the time axis of the
interpolation. Dates files are read by :func:`cropchain.io.raster.read_date_list`.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

import numpy as np

from cropchain.errors import ConfigError


def parse_date(value: dt.date | str, what: str) -> dt.date:
    """A date from a ``datetime.date`` or a ``YYYY-MM-DD`` / ``YYYYMMDD`` string; ``what`` names it
    in errors (:class:`ConfigError`)."""
    if isinstance(value, dt.datetime):
        return value.date()
    if isinstance(value, dt.date):
        return value
    text = str(value).strip()
    for fmt in ("%Y-%m-%d", "%Y%m%d"):
        try:
            return dt.datetime.strptime(text, fmt).date()
        except ValueError:
            continue
    raise ConfigError(f"gap filling {what} date {value!r} is not a date: write it as YYYY-MM-DD")


def output_date_grid(start: dt.date, end: dt.date, step_days: int) -> list[dt.date]:
    """Regular output date grid of the gap filling: ``start, start + step, ... <= end``.

    Parameters
    ----------
    start, end : first and last admissible date (``end`` is included when it falls on the grid).
    step_days : grid step in days (iota2's temporal resolution), >= 1.

    Returns
    -------
    list of :class:`datetime.date`, never empty.

    Raises
    ------
    ConfigError
        ``step_days < 1`` or ``end`` before ``start``.
    """
    if int(step_days) != step_days or step_days < 1:
        raise ConfigError(f"gap filling step of {step_days!r} days: it must be a whole number of days >= 1")
    if end < start:
        raise ConfigError(f"gap filling end date {end} is before the start date {start}: swap them")
    n = (end - start).days // int(step_days) + 1
    return [start + dt.timedelta(days=i * int(step_days)) for i in range(n)]


def days_since(dates: Sequence[dt.date], origin: dt.date) -> np.ndarray:
    """Days from ``origin`` to each of ``dates``: float64 ``[len(dates)]``."""
    return np.array([(d - origin).days for d in dates], dtype=np.float64)
