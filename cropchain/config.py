"""Configuration: one YAML file validated against ``cropchain/schemas/config.schema.yaml``.

:func:`validate_config` fills defaults and raises :class:`ConfigError` naming the key
(``split.ratio``, ``tiles.T31TEJ.source`` ...) and, for a misspelled key, the closest
valid one.
"""

from __future__ import annotations

import copy
import difflib
import os
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
        if spec["source"] == "safe" and "products" not in spec:
            raise ConfigError(f"tiles.{tile}.products: required for source 'safe' (a folder holding the *.SAFE products)")
        if spec["source"] == "demo" and not config.get("demo"):
            raise ConfigError(f"tiles.{tile}.source: 'demo' needs a top-level 'demo:' section")
    if config["dates"]["start"] > config["dates"]["end"]:
        raise ConfigError("dates.start: after dates.end")
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
