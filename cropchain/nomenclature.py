"""Nomenclature: the class codes, names and colors of a map.

The file is a CSV with columns ``code,name,color`` (color as ``#RRGGBB``); codes are
integers 1..254 (0 and 255 stay free for nodata in uint8 maps).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pandas as pd

from cropchain.errors import InputError

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


def _parse_color(value: str, path: Path) -> tuple[int, int, int]:
    v = str(value).strip().lstrip("#")
    if len(v) != 6:
        raise InputError(path, f"color {value!r} is not #RRGGBB", "write colors as #RRGGBB, e.g. #1f77b4")
    return tuple(int(v[i : i + 2], 16) for i in (0, 2, 4))  # type: ignore[return-value]


def read_nomenclature(path: str | os.PathLike) -> Nomenclature:
    """Read a nomenclature CSV (``code,name,color``).

    Raises
    ------
    InputError
        missing file, missing columns, duplicate or out-of-range codes, bad colors.
    """
    path = Path(path)
    if not path.exists():
        raise InputError(path, "nomenclature file not found", "set `nomenclature` in the config to a CSV with code,name,color")
    df = pd.read_csv(path)
    missing = {"code", "name", "color"} - set(df.columns)
    if missing:
        raise InputError(path, f"missing column(s) {sorted(missing)}", "the nomenclature CSV needs columns code,name,color")
    codes = [int(c) for c in df["code"]]
    if len(set(codes)) != len(codes):
        raise InputError(path, "duplicate class codes", "give each class a unique code")
    if any(c < 1 or c > 254 for c in codes):
        raise InputError(path, "class codes must be in 1..254", "0 and 255 are reserved for nodata")
    return Nomenclature(
        codes=tuple(codes),
        names=tuple(str(n) for n in df["name"]),
        colors=tuple(_parse_color(c, path) for c in df["color"]),
    )
