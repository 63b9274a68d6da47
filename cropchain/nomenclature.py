"""Nomenclature: the class codes, names and colors of a map.

The file is a CSV with columns ``code,name,color`` (comma, semicolon or tab separated) (color
as ``#RRGGBB``, ``#RGB`` or a named colour that matplotlib knows, e.g. ``purple`` or
``tab:green``); codes are integers 1..254 (0 and 255 stay free for nodata in uint8 maps).
"""

from __future__ import annotations

import csv
import logging
import os
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cropchain.errors import InputError

log = logging.getLogger(__name__)

NODATA_CLASS = 0


@dataclass(frozen=True)
class Nomenclature:
    """Ordered class list. ``codes[i]`` has name ``names[i]`` and RGB color ``colors[i]``."""

    codes: tuple[int, ...]
    names: tuple[str, ...]
    colors: tuple[tuple[int, int, int], ...]

    def name_of(self, code: int) -> str:
        return self.names[self.codes.index(int(code))]

    def color_table(self) -> dict[int, tuple[int, int, int, int]]:
        """GDAL color table (code -> RGBA); nodata (0) is transparent black."""
        table = {NODATA_CLASS: (0, 0, 0, 0)}
        for code, rgb in zip(self.codes, self.colors):
            table[code] = (*rgb, 255)
        return table

    def __len__(self) -> int:
        return len(self.codes)


def _parse_color(value: object, path: Path, line: int) -> tuple[int, int, int]:
    """RGB 0-255 of ``#RRGGBB``, ``RRGGBB``, ``#RGB`` or a matplotlib colour name (``purple``)."""
    from matplotlib.colors import to_rgb

    text = "" if value is None or (isinstance(value, float) and value != value) else str(value).strip()
    candidates = [text]
    if len(text) in (3, 6) and all(ch in "0123456789abcdefABCDEF" for ch in text):
        candidates.insert(0, "#" + text)  # hex without its '#'
    for c in candidates:
        try:
            rgb = to_rgb(c)
        except ValueError:
            continue
        return tuple(int(round(255 * x)) for x in rgb)  # type: ignore[return-value]
    raise InputError(
        path,
        f"line {line}: color {value!r} is neither #RRGGBB nor a known colour name",
        "write colors as #RRGGBB (e.g. #1f77b4) or a named colour (e.g. purple)",
    )


# 84 lines, of which 10 are the signature and docstring (shapes, units, errors): 74 of code
def read_nomenclature(path: str | os.PathLike) -> Nomenclature:
    """Read a nomenclature CSV (``code,name,color``).

    Raises
    ------
    InputError
        missing file, not UTF-8 / not CSV, missing columns, no class, a code that is not an
        integer, a code given twice (named, with its lines), out-of-range codes, a class
        without name, a colour that is neither hex nor a matplotlib colour name.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(
            path,
            "nomenclature file not found",
            "set `nomenclature` in the config to a CSV with code,name,color",
        )
    try:
        # separator sniffed: ',' as documented, ';' or tab as spreadsheets write them
        try:
            df = pd.read_csv(
                path, dtype=str, keep_default_na=False, skipinitialspace=True, sep=None, engine="python"
            )
        except csv.Error:
            df = pd.read_csv(path, dtype=str, keep_default_na=False, skipinitialspace=True)
    except UnicodeDecodeError as exc:
        raise InputError(
            path, f"not UTF-8 text ({exc.reason} at byte {exc.start})", "save the CSV as UTF-8"
        ) from None
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise InputError(
            path,
            f"cannot be read as CSV ({str(exc).strip()})",
            "write a comma-separated file with a header line code,name,color",
        ) from None
    df.columns = [str(c).strip() for c in df.columns]
    missing = {"code", "name", "color"} - set(df.columns)
    if missing:
        raise InputError(
            path,
            f"missing column(s) {sorted(missing)}; found {list(df.columns)}",
            "the nomenclature CSV needs a header line code,name,color",
        )
    if df.empty:
        raise InputError(path, "no class", "write one line per class: code,name,color")
    codes: list[int] = []
    for line, c in enumerate(df["code"], start=2):
        try:
            f = float(c)
        except (TypeError, ValueError):
            f = float("nan")
        if not f.is_integer():
            raise InputError(
                path, f"line {line}: code {c!r} is not an integer", "write integer class codes 1..254"
            )
        codes.append(int(f))
    seen: dict[int, int] = {}
    for line, c in enumerate(codes, start=2):
        if c in seen:
            raise InputError(
                path, f"code {c} is given twice (lines {seen[c]} and {line})", "give each class a unique code"
            )
        seen[c] = line
    bad = [c for c in codes if c < 1 or c > 254]
    if bad:
        raise InputError(
            path, f"class code(s) {bad} outside 1..254", "use codes 1..254: 0 and 255 are reserved for nodata"
        )
    names = [str(n).strip() for n in df["name"]]
    for line, n in enumerate(names, start=2):
        if not n:
            raise InputError(
                path, f"line {line}: class {codes[line - 2]} has no name", "give every class a name"
            )
    dup = sorted({n for n in names if names.count(n) > 1})
    if dup:
        log.warning(
            "%s: class name(s) %s given to several codes: the map legend cannot tell them apart", path, dup
        )
    return Nomenclature(
        codes=tuple(codes),
        names=tuple(names),
        colors=tuple(_parse_color(c, path, line) for line, c in enumerate(df["color"], start=2)),
    )


def as_nomenclature(nomenclature: Nomenclature | str | os.PathLike) -> Nomenclature:
    """``nomenclature`` itself, or the nomenclature CSV it names read by :func:`read_nomenclature`.

    Raises
    ------
    InputError
        as :func:`read_nomenclature`, for a path.
    """
    return nomenclature if isinstance(nomenclature, Nomenclature) else read_nomenclature(nomenclature)


def require_codes(
    nomenclature: Nomenclature,
    codes: Iterable[int],
    where: str | os.PathLike,
    fix: str,
    what: str = "class codes",
) -> None:
    """Check that every code of ``codes`` (ints) is a class of ``nomenclature``.

    Raises
    ------
    InputError
        naming ``where`` (the file or object the codes come from), the unknown codes, the
        nomenclature's codes and ``fix``.
    """
    unknown = sorted({int(c) for c in codes} - set(nomenclature.codes))
    if unknown:
        raise InputError(
            where, f"{what} {unknown} are not in the nomenclature {list(nomenclature.codes)}", fix
        )
