"""Configuration: one YAML file validated against ``cropchain/schemas/config.schema.yaml``.

:func:`validate_config` fills defaults and raises :class:`ConfigError` naming the key
(``split.ratio``, ``tiles.T31TEJ.source`` ...) and, for a misspelled key, the closest
valid one.
"""

from __future__ import annotations

import copy
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
            hints.append(f"unknown key '{path + '.' if path != '<top level>' else ''}{key}'"
                         + (f" (did you mean '{close[0]}'?)" if close else f" (valid keys: {', '.join(allowed)})"))
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
    "stack": frozenset({"products", "files", "masks", "date_pattern", "date_format", "bands", "nodata", "scale", "offset"}),
    "stack_file": frozenset({"file", "dates_file", "mask_file", "bands", "nodata", "scale", "offset"}),
}
TILE_SOURCE_REQUIRED: dict[str, tuple[str, ...]] = {
    "safe": ("products",),
    "theia": ("products",),
    "stack": ("products",),
    "stack_file": ("file", "dates_file"),
}
_REQUIRED_HINT = {
    "products": {"safe": "a folder holding the *.SAFE products", "theia": "a folder holding the Theia product folders",
                 "stack": "the folder of the per-date GeoTIFFs"},
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
            raise ConfigError(f"tiles.{tile}.{key}: not used by source '{source}' (only by {', '.join(users)}); "
                              f"keys of source '{source}': {', '.join(sorted(allowed)) or 'none'}")
    for key in TILE_SOURCE_REQUIRED.get(source, ()):
        if key not in spec:
            raise ConfigError(f"tiles.{tile}.{key}: required for source '{source}' ({_REQUIRED_HINT[key][source]})")
    if source == "demo" and not config.get("demo"):
        raise ConfigError(f"tiles.{tile}.source: 'demo' needs a top-level 'demo:' section")
    bands = list(config["ingest"]["bands"])
    if source in ("safe", "demo", "theia"):
        wrong = [b for b in bands if b not in SENTINEL2_BANDS]
        if wrong:
            raise ConfigError(f"ingest.bands: {wrong} not Sentinel-2 L2A band(s), which tile {tile} (source "
                              f"'{source}') needs: choose among {', '.join(SENTINEL2_BANDS)}")
    else:
        file_bands = spec.get("bands", bands)
        missing = [b for b in bands if b not in file_bands]
        if missing:
            raise ConfigError(f"ingest.bands: {missing} not among the bands of tile {tile} "
                              f"(tiles.{tile}.bands: {list(file_bands)}); name the files' bands there, in order")
    if "date_pattern" in spec:
        try:
            re.compile(spec["date_pattern"])
        except re.error as exc:
            raise ConfigError(f"tiles.{tile}.date_pattern: not a regular expression ({exc})") from None


def validate_config(config: dict[str, Any]) -> dict[str, Any]:
    """Validate ``config`` (in place, defaults filled) and return it.

    Raises
    ------
    ConfigError
        the first violations, each naming its key path, e.g.
        ``unknown key 'splt' (did you mean 'split'?)``.
    """
    validator = _Validator(load_schema())
    errors = sorted(validator.iter_errors(config), key=lambda e: (len(e.absolute_path), str(e.absolute_path)))
    if errors:
        lines = [_describe(e) for e in errors[:5]]
        raise ConfigError("invalid configuration:\n  " + "\n  ".join(lines))
    for tile, spec in config["tiles"].items():
        _check_tile_source(tile, spec, config)
    if config["dates"]["start"] > config["dates"]["end"]:
        raise ConfigError("dates.start: after dates.end")
    from cropchain.models import PRESTO_ARCHS

    presto_archs = [a for a in config.get("architectures") or {} if a in PRESTO_ARCHS]
    if presto_archs and not config.get("presto"):
        raise ConfigError(f"architectures.{presto_archs[0]}: a Presto architecture needs the encoder's weights; add a section "
                          "`presto: {weights: <path of default_model.pt>}` (download it from "
                          "https://github.com/nasaharvest/presto/raw/main/data/default_model.pt, MIT licence; README, 'Presto')")
    return config


def load_config(path: str | os.PathLike) -> dict[str, Any]:
    """Read and validate a YAML configuration file."""
    path = Path(path)
    try:
        data = yaml.safe_load(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: configuration file not found") from None
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path}: not valid YAML ({exc})") from None
    return validate_config(data or {})
