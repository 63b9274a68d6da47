"""Glue between Snakemake ``script:`` rules and cropchain functions.

Every script in ``scripts/`` is a few lines: read the ``snakemake`` object, call one
cropchain function. :func:`run_step` sets up the job's log file and turns a
:class:`~cropchain.errors.CropchainError` into one clear log line and exit status 1,
instead of a traceback.
"""

from __future__ import annotations

import errno
import logging
import os
import sys
import time
from collections.abc import Callable
from typing import Any

import cropchain
from cropchain.errors import CropchainError
from cropchain.log import configure

log = logging.getLogger("cropchain.workflow")


def _first_output(snakemake: Any) -> str | None:
    try:
        return str(snakemake.output[0]) if len(snakemake.output) else None
    except (AttributeError, TypeError, IndexError):
        return None


def _system_error_line(exc: BaseException, where: str | None) -> str | None:
    """One line for a fault of the machine rather than of cropchain: permissions, a read-only
    disk, memory. None for anything else (a bug: the traceback is kept)."""
    from cropchain.io.atomic import printable_path

    name = printable_path(getattr(exc, "filename", None) or where or ".")
    if isinstance(exc, PermissionError):
        return f"{name}: permission denied ({exc.strerror}) -> give the user running the chain read access to the inputs " \
               "and write access to the working directory"
    if isinstance(exc, OSError) and exc.errno == errno.EROFS:
        return f"{name}: read-only file system -> run the chain in a writable working directory"
    if isinstance(exc, MemoryError):
        return f"{name}: out of memory while writing this output -> run on a node with more memory (snakemake " \
               "--set-resources RULE:mem_mb=N on a cluster), or lower classify.window in the config"
    return None


def run_step(snakemake: Any, step: Callable[[Any], None]) -> None:
    """Run ``step(snakemake)`` with logging to the rule's log file.

    Exits with status 1 and the error's message (file and fix) on a CropchainError, and on a
    full disk (``OSError`` ENOSPC, GDAL's "No space left on device"): the disk, its free space
    and the output being written are named instead of a traceback.
    """
    # GeoPackages record a last-change time; fixed here so that the same inputs give the same
    # bytes (reproducible products, as SOURCE_DATE_EPOCH does for builds)
    os.environ.setdefault("OGR_CURRENT_DATE", "2000-01-01T00:00:00Z")
    logfile = snakemake.log[0] if len(snakemake.log) else None
    configure(logfile)
    log.info("cropchain %s, rule %s, wildcards %s", cropchain.__version__, snakemake.rule, dict(snakemake.wildcards))
    start = time.perf_counter()
    try:
        step(snakemake)
    except CropchainError as exc:
        # a path that is not UTF-8 (surrogate escapes) is printed with \xNN, never a second traceback
        msg = str(exc).encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
        log.error("%s", msg)
        print(f"cropchain error: {msg}", file=sys.stderr)
        sys.exit(1)
    except Exception as exc:
        from cropchain.io.atomic import disk_full_error, is_disk_full

        where = getattr(exc, "filename", None) or _first_output(snakemake)
        if is_disk_full(exc, where):
            err = disk_full_error(where or ".")
            log.error("%s (%s)", err, exc)
            print(f"cropchain error: {err}", file=sys.stderr)
            sys.exit(1)
        line = _system_error_line(exc, where)
        if line:
            log.error("%s", line)
            print(f"cropchain error: {line}", file=sys.stderr)
            sys.exit(1)
        log.exception("rule %s failed on an unexpected error (please report it)", snakemake.rule)
        raise
    log.info("rule %s done in %.1f s", snakemake.rule, time.perf_counter() - start)
