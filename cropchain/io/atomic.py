"""Write outputs under a temporary name, rename when complete.

A killed or failed job never leaves a file that looks complete: the final path only
appears through :func:`os.replace`, which is atomic on POSIX file systems.
"""

from __future__ import annotations

import contextlib
import errno
import glob
import os
import shutil
import uuid
from collections.abc import Iterator
from pathlib import Path

from cropchain.errors import DiskFullError, InputError

#: below this many free bytes, a failed write is taken as a full disk even when GDAL's error
#: does not say "No space left on device" (libtiff reports a mere "Write error").
_NEARLY_FULL = 64 * 2**20


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
    propagates; ``path`` is left untouched. Parent directories are created. A write that
    failed on a full disk becomes a :class:`~cropchain.errors.DiskFullError` naming the disk,
    its free space and how much of the output had been written.

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
    except BaseException as exc:
        written = _size(tmp)
        if tmp.is_dir():
            shutil.rmtree(tmp, ignore_errors=True)
        elif tmp.exists():
            tmp.unlink()
        if not isinstance(exc, DiskFullError) and is_disk_full(exc, path.parent):
            raise disk_full_error(path, written) from None
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


def _size(path: Path) -> int:
    """Bytes of a file, or of every file under a directory (0 if absent)."""
    try:
        if path.is_dir():
            return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
        return path.stat().st_size if path.exists() else 0
    except OSError:
        return 0


def _mount_point(path: Path) -> Path:
    """The mount point of the file system holding ``path`` (or its nearest existing parent)."""
    p = path.resolve()
    while not p.exists() and p != p.parent:
        p = p.parent
    while not os.path.ismount(p) and p != p.parent:
        p = p.parent
    return p


def _human(n: float) -> str:
    for unit in ("B", "KB", "MB", "GB", "TB"):
        if abs(n) < 1024 or unit == "TB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    return f"{n:.1f} TB"


def is_disk_full(exc: BaseException, where: str | os.PathLike | None = None) -> bool:
    """Whether ``exc`` is a write that failed because the disk of ``where`` is full.

    True for ``OSError`` ENOSPC / EDQUOT, for any error whose message says "No space left on
    device" or "Disk quota exceeded" (GDAL, libtiff), and for a GDAL/rasterio I/O error while
    the disk of ``where`` has less than 64 MB free.
    """
    if isinstance(exc, OSError) and exc.errno in (errno.ENOSPC, errno.EDQUOT):
        return True
    text = str(exc)
    if "No space left on device" in text or "Disk quota exceeded" in text:
        return True
    if where is not None and type(exc).__module__.startswith(("rasterio", "pyogrio", "fiona")):
        try:
            return shutil.disk_usage(_mount_point(Path(where))).free < _NEARLY_FULL
        except OSError:
            return False
    return False


def disk_full_error(path: str | os.PathLike, written: int | None = None) -> DiskFullError:
    """A :class:`DiskFullError` for a write of ``path``: the disk, its size and free space, and
    (when known) how much of the output had been written when it filled."""
    path = Path(path)
    mount = _mount_point(path.parent if path.suffix else path)
    try:
        usage = shutil.disk_usage(mount)
        space = f"{_human(usage.free)} free of {_human(usage.total)}"
    except OSError:
        space = "free space unknown"
    wrote = (
        f"; the job had written {_human(written)} of this output when the disk filled, it needs more"
        if written
        else ""
    )
    return DiskFullError(
        f"{path}: no space left on device (disk {mount}, {space}){wrote} -> free space on {mount} "
        "(old results/, .snakemake/ caches, temporary files) or run the chain in a working directory "
        "on a larger disk, then rerun: nothing partial was kept"
    )


def printable_path(path: str | os.PathLike) -> str:
    """``path`` as text that can always be printed: bytes that are not UTF-8 as ``\\xNN``."""
    return os.fsencode(path).decode("utf-8", "backslashreplace")


def require_utf8_path(path: str | os.PathLike, what: str = "file") -> Path:
    """``Path(path)``, or an InputError when a file or folder name in it is not valid UTF-8.

    GDAL, OGR and Snakemake take paths as UTF-8 text: a name written in Latin-1 (``café`` as
    byte 0xE9) cannot be passed to them, and fails deep inside them.
    """
    try:
        os.fsencode(path).decode("utf-8")
    except UnicodeDecodeError:
        bad = Path(path)
        for part in Path(path).parts:
            try:
                os.fsencode(part).decode("utf-8")
            except UnicodeDecodeError:
                bad = part
                break
        raise InputError(
            printable_path(path),
            f"{what}: the name '{printable_path(bad)}' is not valid UTF-8",
            "rename it in UTF-8 (e.g. convmv -f latin1 -t utf8 --notest -r on the folder)",
        ) from None
    return Path(path)


def write_text_atomic(path: str | os.PathLike, text: str) -> None:
    """Write ``text`` to ``path`` through a temporary file (UTF-8)."""
    with atomic_output(path) as tmp:
        tmp.write_text(text, encoding="utf-8")
