"""Write outputs under a temporary name, rename when complete.

A killed or failed job never leaves a file that looks complete: the final path only
appears through :func:`os.replace`, which is atomic on POSIX file systems.
"""

from __future__ import annotations

import contextlib
import glob
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path


def temporary_path(path: str | os.PathLike) -> Path:
    """Return a unique hidden sibling of ``path`` with the same suffix.

    The suffix is kept so that GDAL/OGR pick the right driver from the name.
    """
    path = Path(path)
    return path.with_name(f".{path.stem}.tmp-{uuid.uuid4().hex[:8]}{path.suffix}")


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Delete the temporaries a killed writer of ``path`` left behind; return them.

    Only one job writes a given output at a time (Snakemake guarantees it), so any
    temporary sibling of ``path`` that exists when a new write starts is garbage.
    """
    path = Path(path)
    stale = list(path.parent.glob(f".{glob.escape(path.stem)}.tmp-*{glob.escape(path.suffix)}"))
    for p in stale:
        if p.is_dir():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    return stale


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike) -> Iterator[Path]:
    """Context manager yielding a temporary path that is renamed to ``path`` on success.

    On any exception the temporary file (or directory) is removed and the exception
    propagates; ``path`` is left untouched. Parent directories are created.

    Example::

        with atomic_output("results/x.tif") as tmp:
            with rasterio.open(tmp, "w", **profile) as dst:
                ...
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    remove_stale_temporaries(path)
    tmp = temporary_path(path)
    try:
        yield tmp
        if not tmp.exists():
            raise FileNotFoundError(f"{tmp}: nothing was written for {path}")
        os.replace(tmp, path)
    except BaseException:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        raise


@contextlib.contextmanager
def scratch_path(path: str | os.PathLike) -> Iterator[Path]:
    """A hidden intermediate sibling of ``path`` (e.g. a tiled GeoTIFF later copied into a
    COG under ``path``), always removed on exit. Its name differs from the temporaries of
    :func:`atomic_output`, so that writing ``path`` atomically inside the block keeps it; the
    scratch files a killed job left are removed when the next one starts."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    for stale in path.parent.glob(f".{glob.escape(path.stem)}.scratch-*{glob.escape(path.suffix)}"):
        stale.unlink(missing_ok=True)
    tmp = path.with_name(f".{path.stem}.scratch-{uuid.uuid4().hex[:8]}{path.suffix}")
    try:
        yield tmp
    finally:
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        else:
            tmp.unlink(missing_ok=True)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file (UTF-8)."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
