"""Glue between Snakemake ``script:`` rules and cropchain functions.

Every script in ``scripts/`` is a few lines: read the ``snakemake`` object, call one
cropchain function. :func:`run_step` sets up the job's log file and turns a
:class:`~cropchain.errors.CropchainError` into one clear log line and exit status 1,
instead of a traceback.
"""

from __future__ import annotations

import ast
import errno
import hashlib
import logging
import os
import resource
import sys
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import cropchain
from cropchain.errors import CropchainError
from cropchain.log import configure
from cropchain.series.features import FeatureSpec

log = logging.getLogger("cropchain.workflow")


#: GDAL block cache of a job (MB). Dirty blocks of the files a job writes stay in the cache
#: until it is full, so a job's memory grows with the tile up to this bound (ingest at 5490 px:
#: 374 MB with 256 MB, 169 MB with 64 MB, and no slower)
GDAL_CACHE_MB = 64

#: rules whose GDAL block cache differs from :data:`GDAL_CACHE_MB` (MB): inference reads windows
#: of every band (360 bands x 512 px: 189 MB of int16 blocks), which GDAL decodes on the job's
#: threads only when they fit in the cache; the mosaic's and the vectorization's block-by-block
#: copies need a few blocks (peaks at 5490 px, 64 -> 16 MB: mosaic 268 -> 214 MB; vectorize 266 MB
#: with 16 MB)
GDAL_CACHE_MB_BY_RULE = {"classify": 256, "mosaic": 16, "vectorize": 16}


def gdal_cache_mb(rule: str) -> int:
    """GDAL block cache (MB) of a job of ``rule``."""
    return GDAL_CACHE_MB_BY_RULE.get(rule, GDAL_CACHE_MB)


#: environment variables naming the thread count of the libraries a job may load
THREAD_VARIABLES = (
    "OMP_NUM_THREADS",
    "OPENBLAS_NUM_THREADS",
    "MKL_NUM_THREADS",
    "BLIS_NUM_THREADS",
    "NUMEXPR_NUM_THREADS",
    "VECLIB_MAXIMUM_THREADS",
    "GDAL_NUM_THREADS",
)


def _module_files(name: str) -> list[Path]:
    """Source files of ``name`` under the cropchain package, sorted: a module (``cropchain.series.gapfill``),
    a subpackage (``cropchain.sources``: its modules, recursively) or a glob of modules
    (``cropchain.models.parcel.*``). Raises ValueError for a name that matches no file (a typo in a rule)."""
    root = Path(cropchain.__file__).parent
    parts = name.split(".")
    if parts[0] != "cropchain":
        raise ValueError(f"{name}: not a cropchain module")
    path = root.joinpath(*parts[1:])
    if parts[-1] == "*":
        files = sorted(path.parent.glob("*.py"))
    elif path.is_dir():
        files = sorted(path.rglob("*.py"))
    else:
        files = [path.with_suffix(".py")] if path.with_suffix(".py").is_file() else []
    if not files:
        raise ValueError(f"{name}: no such module in {root}")
    return files


def _imported_modules(path: Path) -> list[Path]:
    """cropchain modules that ``path`` imports (``from cropchain.x.y import z``, ``import cropchain.x``,
    at any depth in the file), read with :mod:`ast`: whatever a job's code imports is hashed with it,
    whichever subpackage it lives in (a helper split off a module, a bottom-layer function)."""
    root = Path(cropchain.__file__).parent
    found: set[Path] = set()
    for node in ast.walk(ast.parse(path.read_bytes(), filename=str(path))):
        if (
            isinstance(node, ast.ImportFrom)
            and not node.level
            and (node.module or "").startswith("cropchain")
        ):
            names = [node.module] + [f"{node.module}.{alias.name}" for alias in node.names]
        elif isinstance(node, ast.Import):
            names = [alias.name for alias in node.names if alias.name.startswith("cropchain.")]
        else:
            continue
        for name in names:
            parts = name.split(".")
            if parts[0] != "cropchain" or len(parts) == 1:
                continue  # ``import cropchain`` (the version, hashed anyway)
            target = root.joinpath(*parts[1:])
            target = target / "__init__.py" if target.is_dir() else target.with_suffix(".py")
            if target.is_file() and target != path:
                found.add(target)
    return sorted(found)


def code_hash(*names: str) -> str:
    """Hash (16 hex digits) of the cropchain source a rule's jobs run, for the rule's ``code`` param:
    editing that source reruns the rule's jobs (Snakemake's params rerun trigger).

    ``names`` are modules, subpackages or globs (:func:`_module_files`); every cropchain module they
    import is followed, transitively (:func:`_imported_modules`), so a rule names the modules its script
    calls and the hash covers all the cropchain code its jobs run. Modules loaded by name at run time
    (the architectures of the :mod:`cropchain.models` registry) are named by the rule.
    The files are read, never imported (importing cropchain.models.parcel would load PyTorch each time
    Snakemake parses the workflow), from the cropchain package Python imports: the Snakefile's folder
    comes first on ``sys.path``, so a checkout's workflow hashes that checkout's code.
    """
    files: list[Path] = []
    todo = [f for name in names for f in _module_files(name)]
    while todo:
        path = todo.pop(0)
        if path not in files:
            files.append(path)
            todo[:0] = _imported_modules(path)
    h = hashlib.sha256(cropchain.__version__.encode())
    for path in files:
        h.update(path.read_bytes())
    return h.hexdigest()[:16]


def pin_threads(threads: int) -> Any:
    """Pin the job's compute threads to ``threads`` (its Snakemake ``threads``).

    Sets the thread variables of :data:`THREAD_VARIABLES` (for what the job starts or loads
    later), limits the OpenMP and BLAS pools already loaded (threadpoolctl: OpenMP of
    scikit-learn and XGBoost, OpenBLAS of numpy) and PyTorch's intra-op pool when PyTorch is
    loaded. OpenMP threads wait passively (``OMP_WAIT_POLICY=PASSIVE``, set for every job by
    ``workflow/rules/common.smk`` before the OpenMP runtime loads): on a node shared with other
    jobs, busy-waiting threads steal the cores of the others (XGBoost beside another
    CPU-bound job: 135 s with the default policy, 46 s passive, issue 11).

    Returns the threadpoolctl limiter (keep it alive for the job's duration).
    """
    from threadpoolctl import threadpool_limits

    threads = max(1, int(threads))
    for name in THREAD_VARIABLES:
        os.environ[name] = str(threads)
    os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
    if "torch" in sys.modules:
        sys.modules["torch"].set_num_threads(threads)
    return threadpool_limits(limits=threads)


def feature_specs(gapfilled: Any, dates: Any, features: dict) -> list[FeatureSpec]:
    """The :class:`~cropchain.series.features.FeatureSpec` of each tile from a rule's inputs
    (``gapfilled``, ``dates``: one path or a list, same tile order) and its ``features`` param
    (``bands`` of one date, spectral ``indices``)."""
    gapfilled = [gapfilled] if isinstance(gapfilled, (str, os.PathLike)) else list(gapfilled)
    dates = [dates] if isinstance(dates, (str, os.PathLike)) else list(dates)
    return [
        FeatureSpec(g, d, tuple(features["bands"]), tuple(features["indices"]))
        for g, d in zip(gapfilled, dates, strict=True)
    ]


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
        return (
            f"{name}: permission denied ({exc.strerror}) -> give the user running the chain read access "
            "to the inputs and write access to the working directory"
        )
    if isinstance(exc, OSError) and exc.errno == errno.EROFS:
        return f"{name}: read-only file system -> run the chain in a writable working directory"
    if isinstance(exc, MemoryError):
        return (
            f"{name}: out of memory while writing this output -> run on a node with more memory (snakemake "
            "--set-resources RULE:mem_mb=N on a cluster), or lower classify.window in the config"
        )
    return None


def classify_job(smk: Any, features: Any) -> None:
    """Body of the classify rules (``classify``, ``classify_presto``): load the run's model, map the
    tile's ``features`` (a :class:`~cropchain.series.features.FeatureSpec` or any spec with ``.open()``)
    into the rule's outputs (classification, confidence, uncertainty, optional probabilities)
    and copy the validity raster beside them as a COG, as iota2 does."""
    from pathlib import Path

    from cropchain.io.products import write_cog
    from cropchain.learning.train import load_model
    from cropchain.mapping.classify import classify_tile
    from cropchain.nomenclature import read_nomenclature

    cfg = smk.params.classify
    model = load_model(Path(smk.input.model).parent, threads=smk.threads)
    classify_tile(
        features,
        smk.input.validity,
        model,
        read_nomenclature(smk.input.nomenclature),
        smk.output.classification,
        smk.output.confidence,
        window=cfg["window"],
        overlap=cfg["overlap"],
        out_probabilities=getattr(smk.output, "probabilities", None),
        out_uncertainty=smk.output.uncertainty,
        uncertainty=cfg["uncertainty"],
        smoothing=smk.params.smoothing,
    )
    write_cog(smk.input.validity, smk.output.validity, overview_resampling="nearest")


def run_step(snakemake: Any, step: Callable[[Any], None]) -> None:
    """Run ``step(snakemake)`` with logging to the rule's log file.

    Exits with status 1 and the error's message (file and fix) on a CropchainError, and on a
    full disk (``OSError`` ENOSPC, GDAL's "No space left on device"): the disk, its free space
    and the output being written are named instead of a traceback.
    """
    # GeoPackages record a last-change time; fixed here so that the same inputs give the same
    # bytes (reproducible products, as SOURCE_DATE_EPOCH does for builds)
    os.environ.setdefault("OGR_CURRENT_DATE", "2000-01-01T00:00:00Z")
    # GDAL's block cache defaults to 5 % of the node's RAM (12.8 GB on a 256 GB node): a job that
    # streams windows needs a few blocks per band, so the cache is bounded like the job's windows
    os.environ.setdefault("GDAL_CACHEMAX", str(gdal_cache_mb(str(getattr(snakemake, "rule", "")))))
    logfile = snakemake.log[0] if len(snakemake.log) else None
    configure(logfile)
    threads = int(
        getattr(snakemake, "threads", 1) or 1
    )  # a stand-in object (a script run by hand) may lack it
    limiter = pin_threads(threads)  # noqa: F841 (kept alive for the step)
    log.info(
        "cropchain %s, rule %s, wildcards %s, %d thread(s)",
        cropchain.__version__,
        snakemake.rule,
        dict(snakemake.wildcards),
        threads,
    )
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
    log.info(
        "rule %s done in %.1f s, peak RSS %.0f MB",
        snakemake.rule,
        time.perf_counter() - start,
        peak_rss_mb(),
    )


def peak_rss_mb() -> float:
    """Peak resident memory (MB) of this process: exact (the kernel's high-water mark of its
    address space, ``VmHWM`` of ``/proc/self/status``), where Snakemake's benchmark files sample
    memory every few tenths of a second and miss the peak of a short job. Elsewhere than Linux,
    ``getrusage``'s ``ru_maxrss`` (which also counts the process it was forked from)."""
    try:
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024  # kB
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, KB on Linux
