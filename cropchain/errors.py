"""Errors a user can act on.

Every error raised for bad input names the offending file (or config key) and says
what to do. Scripts run by Snakemake catch :class:`CropchainError` and print only its
message, never a traceback from deep inside GDAL.
"""

from __future__ import annotations


class CropchainError(Exception):
    """Base class of all errors cropchain raises on purpose."""


class InputError(CropchainError):
    """An input product, raster or vector file is missing, malformed or inconsistent.

    The message names the file and the fix.
    """

    def __init__(self, path: object, problem: str, fix: str | None = None) -> None:
        self.path = str(path)
        self.problem = problem
        self.fix = fix
        msg = f"{self.path}: {problem}"
        if fix:
            msg += f" -> {fix}"
        super().__init__(msg)


class ConfigError(CropchainError):
    """The configuration is invalid; the message names the key path (e.g. ``split.ratio``)."""


class DiskFullError(CropchainError):
    """A disk filled while a job wrote its outputs; the message names the disk, its free space
    and what the job had written."""
