"""Configuration: one YAML file validated against ``cropchain/schemas/config.schema.yaml``.

:func:`validate_config` fills defaults and raises :class:`ConfigError` naming the key
(``split.ratio``, ``tiles.T31TEJ.source`` ...) and, for a misspelled key, the closest
valid one.
"""

from __future__ import annotations

import copy
import datetime as dt
import difflib
import os
import re
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import yaml

from cropchain.errors import ConfigError

SCHEMA_FILE = "config.schema.yaml"


def load_schema() -> dict:
    """The JSON Schema of the configuration, as a dict."""
    text = resources.files("cropchain").joinpath("schemas", SCHEMA_FILE).read_text()
    return yaml.safe_load(text)


def _with_defaults(validator_class):
    validate_properties = validator_class.VALIDATORS["properties"]

    def set_defaults(validator, properties, instance, schema):
        if isinstance(instance, dict):
            for name, sub in properties.items():
                if "default" in sub and name not in instance and sub["default"] is not None:
                    instance[name] = copy.deepcopy(sub["default"])
        yield from validate_properties(validator, properties, instance, schema)

    return jsonschema.validators.extend(validator_class, {"properties": set_defaults})


_Validator = _with_defaults(jsonschema.Draft202012Validator)


def _describe(error: jsonschema.ValidationError) -> str:
    path = ".".join(str(p) for p in error.absolute_path) or "<top level>"
    if error.validator == "additionalProperties":
        allowed = list(error.schema.get("properties", {}))
        extra = sorted(set(error.instance) - set(allowed))
        hints = []
        for key in extra:
            close = difflib.get_close_matches(key, allowed, n=1)
            hints.append(
                f"unknown key '{path + '.' if path != '<top level>' else ''}{key}'"
                + (f" (did you mean '{close[0]}'?)" if close else f" (valid keys: {', '.join(allowed)})")
            )
        return "; ".join(hints)
    if error.validator == "required":
        return f"{path}: {error.message}"
    if error.validator == "oneOf" and error.schema.get("oneOf"):
        return f"{path}: give exactly one of 'mapping' or 'mapping_csv'"
    return f"{path}: {error.message}"


#: Sentinel-2 L2A bands that the product sources (safe, demo, theia) can ingest.
SENTINEL2_BANDS = ("B02", "B03", "B04", "B05", "B06", "B07", "B08", "B8A", "B11", "B12")

#: Keys of a tile allowed by each source (besides ``source``), and those required.
TILE_SOURCE_KEYS: dict[str, frozenset[str]] = {
    "safe": frozenset({"products"}),
    "demo": frozenset(),
    "theia": frozenset({"products", "clm_bits"}),
    "stack": frozenset(
        {"products", "files", "masks", "date_pattern", "date_format", "bands", "nodata", "scale", "offset"}
    ),
    "stack_file": frozenset({"file", "dates_file", "mask_file", "bands", "nodata", "scale", "offset"}),
}
TILE_SOURCE_REQUIRED: dict[str, tuple[str, ...]] = {
    "safe": ("products",),
    "theia": ("products",),
    "stack": ("products",),
    "stack_file": ("file", "dates_file"),
}
_REQUIRED_HINT = {
    "products": {
        "safe": "a folder holding the *.SAFE products",
        "theia": "a folder holding the Theia product folders",
        "stack": "the folder of the per-date GeoTIFFs",
    },
    "file": {"stack_file": "the multi-band GeoTIFF"},
    "dates_file": {"stack_file": "one YYYYMMDD per line, in band order"},
}


def _check_tile_source(tile: str, spec: dict[str, Any], config: dict[str, Any]) -> None:
    """Source-specific checks of ``tiles.<tile>`` (keys allowed and required, bands, patterns)."""
    source = spec["source"]
    allowed = TILE_SOURCE_KEYS[source]
    for key in spec:
        if key != "source" and key not in allowed:
            users = [s for s, keys in TILE_SOURCE_KEYS.items() if key in keys]
            raise ConfigError(
                f"tiles.{tile}.{key}: not used by source '{source}' (only by {', '.join(users)}); "
                f"keys of source '{source}': {', '.join(sorted(allowed)) or 'none'}"
            )
    for key in TILE_SOURCE_REQUIRED.get(source, ()):
        if key not in spec:
            raise ConfigError(
                f"tiles.{tile}.{key}: required for source '{source}' ({_REQUIRED_HINT[key][source]})"
            )
    if source == "demo" and not config.get("demo"):
        raise ConfigError(f"tiles.{tile}.source: 'demo' needs a top-level 'demo:' section")
    bands = list(config["ingest"]["bands"])
    if source in ("safe", "demo", "theia"):
        wrong = [b for b in bands if b not in SENTINEL2_BANDS]
        if wrong:
            raise ConfigError(
                f"ingest.bands: {wrong} not Sentinel-2 L2A band(s), which tile {tile} (source "
                f"'{source}') needs: choose among {', '.join(SENTINEL2_BANDS)}"
            )
    else:
        file_bands = spec.get("bands", bands)
        missing = [b for b in bands if b not in file_bands]
        if missing:
            raise ConfigError(
                f"ingest.bands: {missing} not among the bands of tile {tile} "
                f"(tiles.{tile}.bands: {list(file_bands)}); name the files' bands there, in order"
            )
    if "date_pattern" in spec:
        try:
            re.compile(spec["date_pattern"])
        except re.error as exc:
            raise ConfigError(f"tiles.{tile}.date_pattern: not a regular expression ({exc})") from None


def _calendar_date(value: Any, key: str) -> str:
    """``YYYY-MM-DD`` text of a config date (a YAML date or text); ConfigError naming ``key`` if
    impossible."""
    if isinstance(value, dt.datetime):
        value = value.date()
    if isinstance(value, dt.date):
        return value.isoformat()
    text = str(value).strip()
    try:
        return (
            dt.date.fromisoformat(text).isoformat()
            if len(text) == 10
            else dt.datetime.strptime(text, "%Y%m%d").date().isoformat()
        )
    except ValueError as exc:
        raise ConfigError(
            f"{key}: {value!r} is not a calendar date ({exc}): write a real date as YYYY-MM-DD"
        ) from None


def _normalise_dates(config: dict[str, Any]) -> None:
    """Dates of the config as ``YYYY-MM-DD`` text, impossible ones (2018-02-30) named by key."""
    dates = config.get("dates")
    if isinstance(dates, dict):
        for key in ("start", "end"):
            if key in dates and dates[key] is not None and isinstance(dates[key], (str, dt.date)):
                if isinstance(dates[key], dt.date) or re.fullmatch(r"\s*\d{4}-?\d{2}-?\d{2}\s*", dates[key]):
                    dates[key] = _calendar_date(dates[key], f"dates.{key}")
    variants = (
        ((config.get("delineation") or {}).get("variants") or {})
        if isinstance(config.get("delineation"), dict)
        else {}
    )
    if isinstance(variants, dict):
        for name, spec in variants.items():
            if isinstance(spec, dict) and isinstance(spec.get("date"), (str, dt.date)):
                value = spec["date"]
                if isinstance(value, dt.date) or re.fullmatch(r"\s*\d{4}-?\d{2}-?\d{2}\s*", value):
                    iso = _calendar_date(value, f"delineation.variants.{name}.date")
                    spec["date"] = iso if isinstance(value, dt.date) else value


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate ``config`` (in place, defaults filled) and return it.

    Dates (``dates.start``, ``dates.end``) may be YAML dates or text; they are stored as
    ``YYYY-MM-DD`` text.

    Raises
    ------
    ConfigError
        the first violations, the first line naming its key path, e.g.
        ``unknown key 'splt' (did you mean 'split'?)``; an impossible date (``2018-02-30``)
        with its key.
    """
    if not isinstance(config, dict):
        raise ConfigError(
            f"<top level>: the configuration must be a mapping of keys, got {type(config).__name__}"
        )
    _normalise_dates(config)
    validator = _Validator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        lines = [_describe(e) for e in errors[:5]]
        more = f" ({len(errors)} errors in all)" if len(errors) > 5 else ""
        raise ConfigError(lines[0] + "".join(f"\n  also: {line}" for line in lines[1:]) + more)
    for tile, spec in config["tiles"].items():
        _check_tile_source(tile, spec, config)
    if config["dates"]["start"] > config["dates"]["end"]:
        raise ConfigError(
            f"dates.start: {config['dates']['start']} is after dates.end {config['dates']['end']}: swap them"
        )
    from cropchain.models import PRESTO_ARCHS

    presto_archs = [a for a in config.get("architectures") or {} if a in PRESTO_ARCHS]
    if presto_archs and not config.get("presto"):
        raise ConfigError(
            f"architectures.{presto_archs[0]}: a Presto architecture needs the encoder's weights; add a "
            "section `presto: {weights: <path of default_model.pt>}` (download it from "
            "https://github.com/nasaharvest/presto/raw/main/data/default_model.pt, MIT licence; "
            "README, 'Presto')"
        )
    _check_smoothing(config)
    return config


def _check_smoothing(config: dict[str, Any]) -> None:
    smoothing = config["classify"]["smoothing"]
    if smoothing["window_size"] % 2 == 0:
        raise ConfigError(
            f"classify.smoothing.window_size: {smoothing['window_size']} must be odd "
            "(a window centred on the pixel)"
        )
    archs = smoothing["architectures"]
    unknown = [] if archs == "all" else [a for a in archs if a not in config["architectures"]]
    if unknown:
        raise ConfigError(
            f"classify.smoothing.architectures: {unknown} are not in `architectures` "
            f"{list(config['architectures'])}"
        )


def smoothing_of(config: dict[str, Any], architecture: str) -> dict[str, Any] | None:
    """The smoothing parameters (window_size, smoothness, neigh_fraction) of an architecture's
    inference, None when its probabilities are not smoothed (config ``classify.smoothing``)."""
    smoothing = config["classify"]["smoothing"]
    archs = smoothing["architectures"]
    if archs != "all" and architecture not in archs:
        return None
    return {k: v for k, v in smoothing.items() if k != "architectures"}


class _TextDateLoader(yaml.SafeLoader):
    """YAML loader that keeps dates as text, so that an impossible date is reported with its key."""


_TextDateLoader.add_constructor("tag:yaml.org,2002:timestamp", yaml.SafeLoader.construct_yaml_str)


def read_yaml(path: str | os.PathLike, what: str = "configuration file") -> Any:
    """Parse a YAML file; a syntax error becomes a ConfigError naming the file, line and column."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: {what} not found") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{path}: {what} is not UTF-8 text (byte {exc.start}): save it as UTF-8") from None
    try:
        return yaml.load(text, Loader=_TextDateLoader)  # noqa: S506 (a SafeLoader subclass)
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        where = f", line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = " ".join(str(x) for x in (exc.context, exc.problem) if x)
        raise ConfigError(
            f"{path}{where}: YAML syntax error ({problem}): fix the indentation / quoting there "
            "(no tabs; quote values holding ': ' or '#')"
        ) from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a YAML configuration file."""
    return validate_config(read_yaml(path) or {})


def main(argv: list[str] | None = None) -> int:
    """``python -m cropchain.config FILE``: check a configuration file; one line per problem, status 1 if any.

    Snakemake reads ``--configfile`` itself and reports a YAML syntax error without its line:
    this check names the file, the line and the key.
    """
    import sys

    args = sys.argv[1:] if argv is None else argv
    if len(args) != 1:
        print("usage: python -m cropchain.config CONFIG.yaml", file=sys.stderr)
        return 2
    try:
        load_config(args[0])
    except ConfigError as exc:
        print(f"cropchain error: {exc}", file=sys.stderr)
        return 1
    print(f"{args[0]}: valid")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
