"""Learning/validation split by polygon on the real T31TEJ reference."""

from __future__ import annotations

import logging

import geopandas as gpd
import numpy as np
import pandas as pd
import pyogrio
import pytest

from cropchain.errors import ConfigError, InputError
from cropchain.nomenclature import read_nomenclature
from cropchain.reference.fusion import ReferenceSource, fuse_reference, read_mapping_csv
from cropchain.reference.split import n_learning, split_polygons


@pytest.fixture(scope="module")
def reference_gpkg(tmp_path_factory, t31tej):
    tmp = tmp_path_factory.mktemp("split_ref")
    ref = t31tej / "reference_data"
    mapping = read_mapping_csv(ref / "nomenclature.csv", "EC_hcat_n", "class_id")
    nom_csv = tmp / "nomenclature.csv"
    pd.DataFrame(
        {"code": list(mapping.values()), "name": list(mapping), "color": ["#336699"] * len(mapping)}
    ).to_csv(nom_csv, index=False)
    grid = next(t31tej.glob("eodata/**/*_B02_10m.jp2"))
    out = tmp / "reference.gpkg"
    fuse_reference(
        [ReferenceSource("eurocrops", ref / "france_data_2018.shp", "EC_hcat_n", mapping)],
        read_nomenclature(nom_csv),
        grid,
        out,
    )
    return out


def test_n_learning():
    assert n_learning(1, 0.66) == 1
    assert n_learning(2, 0.66) == 1
    assert n_learning(2, 0.99) == 1  # validation keeps one polygon
    assert n_learning(2, 0.01) == 1  # learning keeps one polygon
    assert n_learning(62, 0.66) == 41
    assert n_learning(14, 0.66) == 9
    assert n_learning(10, 0.25) == 3  # 2.5 rounds half up


@pytest.mark.parametrize("seed,run", [(0, 0), (0, 1), (7, 3), (12345, 9)])
def test_split_invariants(tmp_path, reference_gpkg, seed, run):
    ref = gpd.read_file(reference_gpkg, layer="reference")
    out = tmp_path / "split.gpkg"
    split = split_polygons(reference_gpkg, out, ratio=0.66, seed=seed, run=run, tile="T31TEJ")
    # Every polygon assigned exactly once, to one of the two sets.
    assert sorted(split["polygon_id"]) == sorted(ref["polygon_id"])
    assert not split["polygon_id"].duplicated().any()
    assert set(split["split"]) == {"learn", "validation"}
    learn = set(split.loc[split["split"] == "learn", "polygon_id"])
    valid = set(split.loc[split["split"] == "validation", "polygon_id"])
    assert not learn & valid and len(learn) + len(valid) == len(ref)
    # Per class: learn fraction = round(0.66 n), both sets non-empty when n >= 2.
    for _code, group in split.groupby("code"):
        n = len(group)
        n_learn = int((group["split"] == "learn").sum())
        assert n_learn == n_learning(n, 0.66)
        if n >= 2:
            assert 1 <= n_learn <= n - 1
            assert abs(n_learn / n - 0.66) <= 0.5 / n + 1e-9 or n_learn in (1, n - 1)
    # Attributes carried over, and the file holds the same table.
    merged = split.merge(ref, on="polygon_id", suffixes=("", "_ref"))
    assert (merged["code"] == merged["code_ref"]).all() and (merged["name"] == merged["name_ref"]).all()
    np.testing.assert_allclose(merged["area_m2"], merged["area_m2_ref"])
    assert pyogrio.list_layers(out)[:, 0].tolist() == ["split"]
    back = gpd.read_file(out, layer="split")
    assert back[["polygon_id", "code", "split"]].equals(split[["polygon_id", "code", "split"]])
    assert back.crs.to_epsg() == 32631


def test_reproducible_and_differs_by_run_and_tile(tmp_path, reference_gpkg):
    def draw(run, tile="T31TEJ", name="s"):
        s = split_polygons(reference_gpkg, tmp_path / f"{name}.gpkg", seed=42, run=run, tile=tile)
        return dict(zip(s["polygon_id"], s["split"]))

    a = draw(0, name="a")
    assert draw(0, name="b") == a
    b = draw(1)
    assert b != a
    # The 62 vineyards alone give C(62, 41) possible splits: runs really redraw.
    assert sum(a[k] != b[k] for k in a) >= 10
    assert draw(0, tile="T31TEK") != a


def test_single_polygon_class_warned(tmp_path, reference_gpkg, caplog):
    with caplog.at_level(logging.INFO, logger="cropchain.reference.split"):
        split = split_polygons(reference_gpkg, tmp_path / "s.gpkg", seed=1, run=0, tile="T31TEJ")
    cereals = split[split["name"] == "unspecified_season_unspecified_cereals"]
    assert len(cereals) == 1 and cereals["split"].iloc[0] == "learn"
    warnings = [r for r in caplog.records if r.levelno == logging.WARNING]
    assert len(warnings) == 1
    assert "class 5 unspecified_season_unspecified_cereals has a single polygon" in warnings[0].getMessage()


@pytest.mark.parametrize("ratio", [0.0, 1.0, 1.5, -0.2, "0.5"])
def test_bad_ratio(tmp_path, reference_gpkg, ratio):
    with pytest.raises(ConfigError, match="split.ratio"):
        split_polygons(reference_gpkg, tmp_path / "s.gpkg", ratio=ratio, seed=0, run=0, tile="T31TEJ")
    assert not (tmp_path / "s.gpkg").exists()


def test_bad_reference(tmp_path):
    with pytest.raises(InputError, match="not found") as err:
        split_polygons(tmp_path / "missing.gpkg", tmp_path / "s.gpkg", seed=0, run=0, tile="T")
    assert err.value.path == str(tmp_path / "missing.gpkg")
    junk = tmp_path / "junk.gpkg"
    junk.write_text("junk")
    with pytest.raises(InputError, match="cannot be read"):
        split_polygons(junk, tmp_path / "s.gpkg", seed=0, run=0, tile="T")
    assert not (tmp_path / "s.gpkg").exists()
