"""Configuration schema: defaults, errors naming the key, shipped configs valid."""

from __future__ import annotations

import copy

import pytest

from conftest import ROOT
from cropchain.config import load_config, validate_config
from cropchain.errors import ConfigError

MINIMAL = {
    "nomenclature": "n.csv",
    "tiles": {"T31TEJ": {"source": "safe", "products": "p"}},
    "dates": {"start": "2018-01-01", "end": "2018-12-31"},
    "reference": {"sources": [{"name": "r", "path": "r.gpkg", "field": "f", "priority": 1, "mapping": {"a": 1}}]},
}


def test_shipped_configs_are_valid():
    for name in ("config.yaml", "t31tej.yaml"):
        cfg = load_config(ROOT / "config" / name)
        assert cfg["split"]["ratio"] == 0.66


def test_defaults_filled():
    cfg = validate_config(copy.deepcopy(MINIMAL))
    assert cfg["dates"]["step_days"] == 10
    assert cfg["split"] == {"ratio": 0.66, "runs": 2, "seed": 0}
    assert cfg["classify"] == {"window": 512, "overlap": 16}
    assert cfg["gapfill"] == {"backend": "numpy", "mode": "linear"}
    assert set(cfg["architectures"]) == {"rf", "xgboost"}


@pytest.mark.parametrize(
    "mutate, message",
    [
        (lambda c: c.update(splt={}), "unknown key 'splt' (did you mean 'split'?)"),
        (lambda c: c.update(split={"ratoi": 0.5}), "unknown key 'split.ratoi' (did you mean 'ratio'?)"),
        (lambda c: c.update(split={"ratio": 1.5}), "split.ratio"),
        (lambda c: c["tiles"]["T31TEJ"].update(source="sentinel"), "tiles.T31TEJ.source"),
        (lambda c: c["tiles"]["T31TEJ"].pop("products"), "tiles.T31TEJ.products"),
        (lambda c: c.update(architectures={"randomforest": {}}), "architectures"),
        (lambda c: c["reference"]["sources"][0].pop("mapping"), "mapping"),
        (lambda c: c.pop("dates"), "'dates' is a required property"),
    ],
)
def test_errors_name_the_key(mutate, message):
    cfg = copy.deepcopy(MINIMAL)
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert message in str(err.value)
