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
    "reference": {
        "sources": [{"name": "r", "path": "r.gpkg", "field": "f", "priority": 1, "mapping": {"a": 1}}]
    },
}


def test_shipped_configs_are_valid():
    for name in ("config.yaml", "t31tej.yaml"):
        cfg = load_config(ROOT / "config" / name)
        assert cfg["split"]["ratio"] == 0.66


def test_defaults_filled():
    cfg = validate_config(copy.deepcopy(MINIMAL))
    assert cfg["dates"]["step_days"] == 10
    assert cfg["split"] == {"ratio": 0.66, "runs": 2, "seed": 0}
    assert cfg["classify"] == {
        "window": 512,
        "overlap": 16,
        "probabilities": False,
        "uncertainty": ["margin"],
        "smoothing": {"architectures": [], "window_size": 9, "smoothness": 20, "neigh_fraction": 0.5},
    }
    assert cfg["gapfill"] == {
        "temporal": "interpolation",
        "backend": "numpy",
        "mode": "linear",
        "scl_kept_classes": [4, 5, 6, 7],
        "composite_day": 15,
        "max_gap_days": 60,
        "max_gap_share": 0.2,
        "max_unclear_share": 0.5,
    }
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
        (lambda c: c.update(classify={"uncertainty": ["variance"]}), "classify.uncertainty"),
        (lambda c: c.update(classify={"smoothing": {"window_size": 8}}), "classify.smoothing.window_size"),
        (
            lambda c: c.update(classify={"smoothing": {"architectures": ["fg_unet"]}}),
            "classify.smoothing.architectures",
        ),
        (lambda c: c.update(classify={"smoothing": {"smoothness": 0}}), "classify.smoothing.smoothness"),
    ],
)
def test_errors_name_the_key(mutate, message):
    cfg = copy.deepcopy(MINIMAL)
    mutate(cfg)
    with pytest.raises(ConfigError) as err:
        validate_config(cfg)
    assert message in str(err.value)


def test_smoothing_per_architecture():
    from cropchain.config import smoothing_of

    cfg = copy.deepcopy(MINIMAL)
    cfg["classify"] = {"smoothing": {"architectures": ["rf"], "smoothness": [10, 30]}}
    validate_config(cfg)
    assert smoothing_of(cfg, "rf") == {"window_size": 9, "smoothness": [10, 30], "neigh_fraction": 0.5}
    assert smoothing_of(cfg, "xgboost") is None
    cfg["classify"]["smoothing"]["architectures"] = "all"
    assert smoothing_of(validate_config(cfg), "xgboost")["window_size"] == 9


def _tile(**spec):
    cfg = copy.deepcopy(MINIMAL)
    cfg["tiles"] = {"T31TEJ": spec}
    return cfg


def test_tile_sources_valid():
    stack = _tile(
        source="stack",
        products="s",
        files="*_S2.tif",
        masks="*_mask.tif",
        date_pattern=r"_(?P<date>\d{4}-\d{2}-\d{2})_",
        date_format="%Y-%m-%d",
        scale=10000,
    )
    assert validate_config(stack)["tiles"]["T31TEJ"]["scale"] == 10000
    ndvi = _tile(source="stack_file", file="ndvi.tif", dates_file="dates.txt", bands=["NDVI"], nodata=-1)
    ndvi["ingest"] = {"bands": ["NDVI"]}
    ndvi["features"] = {"indices": []}
    assert validate_config(ndvi)["ingest"]["bands"] == ["NDVI"]
    theia = _tile(source="theia", products="t", clm_bits=[0, 7])
    theia["gapfill"] = {"temporal": "monthly_median", "composite_day": 1}
    cfg = validate_config(theia)
    assert cfg["gapfill"]["scl_kept_classes"] == [4, 5, 6, 7] and cfg["gapfill"]["composite_day"] == 1


@pytest.mark.parametrize(
    "cfg, message",
    [
        (_tile(source="stack"), "tiles.T31TEJ.products: required for source 'stack'"),
        (
            _tile(source="stack_file", file="a.tif"),
            "tiles.T31TEJ.dates_file: required for source 'stack_file'",
        ),
        (
            _tile(source="theia", products="t", masks="*_m.tif"),
            "tiles.T31TEJ.masks: not used by source 'theia'",
        ),
        (_tile(source="safe", products="p", bands=["B02"]), "tiles.T31TEJ.bands: not used by source 'safe'"),
        (_tile(source="stack", products="s", bands=["NDVI"]), "ingest.bands: ['B02', 'B03'"),
        (_tile(source="stack", products="s", date_pattern="(?P<date>"), "tiles.T31TEJ.date_pattern"),
        (_tile(source="theia", products="t", clm_bits=[8]), "tiles.T31TEJ.clm_bits.0"),
        (_tile(source="stack", products="s", scale=0), "tiles.T31TEJ.scale"),
        (
            dict(_tile(source="safe", products="p"), ingest={"bands": ["NDVI"]}),
            "ingest.bands: ['NDVI'] not Sentinel-2",
        ),
        (dict(_tile(source="safe", products="p"), gapfill={"temporal": "monthly"}), "gapfill.temporal"),
        (
            dict(_tile(source="safe", products="p"), gapfill={"scl_kept_classes": [12]}),
            "gapfill.scl_kept_classes",
        ),
    ],
)
def test_tile_source_errors_name_the_key(cfg, message):
    with pytest.raises(ConfigError) as err:
        validate_config(copy.deepcopy(cfg))
    assert message in str(err.value)
