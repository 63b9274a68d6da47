"""Presto embeddings as features computed per window (cropchain.learning.presto_features), the presto_*
architectures in the registry and the configuration; on a synthetic SAFE series ingested like a tile."""

from __future__ import annotations

import copy
import datetime as dt
from pathlib import Path

import numpy as np
import pytest
import rasterio
from conftest import SHARED
from rasterio.windows import Window
from test_config import MINIMAL

from cropchain.config import validate_config
from cropchain.demo import generate_demo_products
from cropchain.errors import ConfigError, InputError
from cropchain.io.raster import read_dates
from cropchain.learning.presto_features import EMBEDDING_NAMES, PrestoSpec
from cropchain.models import PRESTO_ARCHS, get_model, kind
from cropchain.series.composite import (
    clear_months,
    month_grid,
    monthly_composite_tile,
)
from cropchain.series.features import FEATURES_NODATA, open_features
from cropchain.sources.sentinel2 import find_safe_products, ingest_safe, scl_masked_for_kept

WEIGHTS = SHARED / "models" / "presto" / "default_model.pt"
BANDS = ["B02", "B03", "B04", "B08", "B05", "B06", "B07", "B8A", "B11", "B12"]  # cropchain's ingest order


@pytest.fixture(autouse=True, scope="module")
def one_thread(torch_one_thread):
    """PyTorch on one thread (conftest)."""


@pytest.fixture(scope="module")
def weights() -> Path:
    if not WEIGHTS.is_file():
        pytest.skip(f"Presto weights not found at {WEIGHTS} (../shared is absent on this machine)")
    return WEIGHTS


@pytest.fixture(scope="module")
def tile(tmp_path_factory) -> Path:
    """A 24 x 20 px demo tile ingested from SAFE products: 9 dates over 2021, none in May and
    June, every band Presto reads, clouds masked by the scene classification."""
    d = tmp_path_factory.mktemp("presto_tile")
    dates = [
        dt.date(2021, m, day)
        for m, day in ((1, 10), (1, 30), (2, 14), (3, 21), (4, 5), (7, 9), (8, 18), (10, 2), (11, 26))
    ]
    generate_demo_products(d / "safe", "T31TXA", seed=3, width=24, height=20, dates=dates)
    ingest_safe(
        find_safe_products(d / "safe"),
        d / "raw.tif",
        d / "raw_mask.tif",
        d / "raw_dates.txt",
        bands=BANDS,
        scl_masked_classes=scl_masked_for_kept([4, 5, 6, 7]),
    )
    return d


def spec_of(tile: Path, weights: Path, **kw) -> PrestoSpec:
    return PrestoSpec(
        tile / "raw.tif", tile / "raw_mask.tif", tile / "raw_dates.txt", weights, None, "2021-01-20", **kw
    )


def test_embeddings_are_those_of_the_monthly_median_composites(tile: Path, weights: Path, tmp_path: Path):
    """Per window, the features are Presto's embeddings of the monthly_median step's composites
    of the raw series (computed here by that step over the same 12 months), months without a
    clear observation masked, latitude / longitude of the tile grid."""
    from cropchain.models.presto import embed_composites, load_presto

    monthly_composite_tile(
        tile / "raw.tif",
        tile / "raw_mask.tif",
        tile / "raw_dates.txt",
        tmp_path / "gapfilled.tif",
        tmp_path / "dates.txt",
        tmp_path / "validity.tif",
        start="2021-01-20",
        end="2021-12-31",
    )
    months = read_dates(tmp_path / "dates.txt")
    assert len(months) == 12
    with rasterio.open(tmp_path / "gapfilled.tif") as src, rasterio.open(tile / "raw_mask.tif") as msk:
        composites = src.read().reshape(12, len(BANDS), src.height, src.width)
        transform, crs = src.transform, src.crs
        raw_dates = [dt.datetime.strptime(d, "%Y%m%d").date() for d in read_dates(tile / "raw_dates.txt")]
        clear = clear_months(msk.read() == 0, raw_dates, month_grid("2021-01-20", "2021-12-31"))
    assert not clear[4:6].any() and clear.any(axis=0).all()  # May and June masked everywhere
    want = embed_composites(composites, clear, BANDS, months, transform, crs, load_presto(weights))

    with open_features(spec_of(tile, weights)) as f:
        assert f.descriptions == EMBEDDING_NAMES and f.count == 128
        assert (f.height, f.width, f.transform, f.crs) == (20, 24, transform, crs)
        got = f.read()
        np.testing.assert_allclose(got, want, atol=1e-5)
        # a sub-window, some of its pixels and a few bands: the same values
        win = Window(5, 3, 11, 9)
        np.testing.assert_allclose(f.read(window=win), want[:, 3:12, 5:16], atol=1e-5)
        rows, cols = np.array([0, 4, 8]), np.array([10, 0, 6])
        np.testing.assert_allclose(f.read_pixels(win, rows, cols), want[:, 3 + rows, 5 + cols], atol=1e-5)
        np.testing.assert_allclose(f.read([1, 128], window=win), want[[0, 127], 3:12, 5:16], atol=1e-5)
    assert (
        np.isfinite(got).all() and got.std(axis=(1, 2)).max() > 0.01
    )  # every pixel has clear months; not constant


def test_pixels_without_a_clear_month_are_nodata(tile: Path, weights: Path, tmp_path: Path):
    """A pixel masked at every date gets -9999 in every embedding; its neighbours do not change."""
    with rasterio.open(tile / "raw_mask.tif") as src:
        profile, mask = src.profile, src.read()
    mask[:, 2, 3] = 1
    for name in ("raw.tif", "raw_dates.txt"):
        (tmp_path / name).symlink_to(tile / name)
    with rasterio.open(tmp_path / "raw_mask.tif", "w", **profile) as dst:
        dst.write(mask)
    with spec_of(tmp_path, weights).open() as f, spec_of(tile, weights).open() as g:
        got, ref = f.read(), g.read()
    assert (got[:, 2, 3] == FEATURES_NODATA).all()
    keep = np.ones((20, 24), bool)
    keep[2, 3] = False
    np.testing.assert_allclose(got[:, keep], ref[:, keep], atol=1e-5)


def test_bad_inputs_stop_with_the_file_and_the_fix(tile: Path, weights: Path, tmp_path: Path):
    with pytest.raises(InputError, match=r"missing\.pt: Presto weights not found"):
        spec_of(tile, tmp_path / "missing.pt").open()
    with pytest.raises(InputError, match=r"sha256 .* differs"):
        PrestoSpec(
            tile / "raw.tif", tile / "raw_mask.tif", tile / "raw_dates.txt", weights, "0" * 64, "2021-01-20"
        ).open()
    with pytest.raises(ConfigError, match="presto.months"):
        spec_of(tile, weights, months=25).open()
    with pytest.raises(
        InputError, match=r"raw_dates\.txt: no acquisition date in the Presto months 2023-01 \.\. 2023-12"
    ):
        PrestoSpec(
            tile / "raw.tif", tile / "raw_mask.tif", tile / "raw_dates.txt", weights, None, "2023-01-01"
        ).open()
    d = tmp_path / "four_bands"
    generate_demo_products(d / "safe", "T31TXA", seed=3, width=16, height=16, dates=[dt.date(2021, 3, 1)])
    ingest_safe(
        find_safe_products(d / "safe"),
        d / "raw.tif",
        d / "raw_mask.tif",
        d / "raw_dates.txt",
        bands=["B02", "B03", "B04", "B08"],
    )
    with pytest.raises(
        InputError,
        match=r"raw\.tif: Presto reads the bands .*ingest the missing band\(s\) B05, B06, B07, B8A, B11, B12",
    ):
        spec_of(d, weights).open()


def test_presto_heads_are_pixel_classifiers_of_the_registry():
    assert set(PRESTO_ARCHS) == {"presto_rf", "presto_xgboost", "presto_finetune"}
    assert kind("presto_rf") == kind("presto_xgboost") == kind("presto_finetune") == "pixel"
    rng = np.random.default_rng(0)
    X = rng.normal(size=(60, 128)).astype(np.float32)
    y = np.repeat([3, 7], 30)
    X[y == 7, 0] += 3
    for arch in ("presto_rf", "presto_xgboost"):  # presto_finetune: test_presto_finetune_learns_and_reloads
        model = get_model(arch, seed=0, n_estimators=10).fit(X, y)
        assert list(model.classes_) == [3, 7] and model.predict_proba(X).shape == (60, 2)
        assert (model.predict(X) == y).mean() > 0.9


def test_presto_architecture_without_the_presto_section_is_a_config_error():
    cfg = {**copy.deepcopy(MINIMAL), "architectures": {"rf": {}, "presto_xgboost": {}}}
    with pytest.raises(
        ConfigError,
        match=r"architectures\.presto_xgboost: .*add a section `presto: \{weights: .*default_model\.pt",
    ):
        validate_config(cfg)
    cfg = {**copy.deepcopy(MINIMAL), "architectures": {"presto_rf": {}}, "presto": {"weights": "w.pt"}}
    out = validate_config(cfg)
    assert out["presto"] == {
        "weights": "w.pt",
        "sha256": "559c9d76f525bdf2dd3774da8b1e7f1510769b73baacac12e9e4d8d5c67fbe65",
        "batch_size": 256,
        "months": 12,
        "device": "auto",
    }
    with pytest.raises(ConfigError, match="presto"):
        validate_config({**copy.deepcopy(MINIMAL), "presto": {"weights": "w.pt", "device": "gpu"}})


def test_device_auto_is_the_cpu_without_a_gpu():
    import torch

    from cropchain.models.presto import resolve_device

    assert resolve_device("cpu") == torch.device("cpu")
    assert resolve_device("auto") == torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if not torch.cuda.is_available():
        with pytest.raises(ConfigError, match="no CUDA GPU"):
            resolve_device("cuda")
    with pytest.raises(ConfigError, match="not a device"):
        resolve_device("tpu")


def test_encoder_inputs_give_the_embeddings_back(tile: Path, weights: Path):
    """With inputs=True the features are what the encoder reads (composites, clear months,
    latitude / longitude): run through the published encoder they give the embeddings of
    the default features, pixel for pixel."""
    from cropchain.models.presto import embed_series, input_names, load_presto, split_inputs

    with spec_of(tile, weights, inputs=True).open() as f, spec_of(tile, weights).open() as g:
        assert f.encoder is None and f.count == 12 * 11 + 2 == len(f.descriptions)
        assert f.descriptions == input_names(g.months)
        assert f.descriptions[:2] == ("presto_t00_m01_B02", "presto_t00_m01_B03")
        assert f.descriptions[10:12] == ("presto_t00_m01_clear", "presto_t01_m02_B02")
        inputs, want = f.read(), g.read()
    X = inputs.reshape(f.count, -1).T
    series, clear, latlon, months = split_inputs(X, f.descriptions)
    assert months.tolist() == list(range(12)) and not clear[:, 4:6].any()  # May, June: no image
    assert series.min() >= 0 and (series > 0).any() and 43 < latlon[:, 0].mean() < 50
    got = embed_series(series, clear, latlon, [m for m in g.months], load_presto(weights))
    np.testing.assert_allclose(got.T.reshape(want.shape), want, atol=1e-5)
    with pytest.raises(ValueError, match="not the Presto encoder inputs"):
        split_inputs(X[:, 1:], f.descriptions[1:])


def test_presto_finetune_learns_and_reloads(tile: Path, weights: Path, tmp_path: Path):
    """presto_finetune trains the encoder and a linear head on the encoder inputs; joblib gives
    the same probabilities back; encoder_learning_rate 0 leaves the published encoder as is."""
    import joblib
    import torch

    from cropchain.models.presto import load_presto

    with spec_of(tile, weights, inputs=True).open() as f:
        X, names = f.read().reshape(f.count, -1).T.copy(), list(f.descriptions)
    b04, b08 = names.index("presto_t06_m07_B04"), names.index("presto_t06_m07_B08")
    ndvi = (X[:, b08] - X[:, b04]) / (X[:, b08] + X[:, b04])
    y = np.where(ndvi > np.median(ndvi), 7, 3)  # July vegetation: a class the series shows
    small = {"epochs": 4, "batch_size": 64, "learning_rate": 1e-2, "max_pixels_per_class": 150}
    model = get_model("presto_finetune", seed=0, weights=weights, **small)
    model.feature_names = names
    model.fit(X, y)
    assert model.classes_.tolist() == [3, 7] and len(model.curve) == 4 and model.curve[-1] < model.curve[0]
    proba = model.predict_proba(X)
    assert proba.shape == (480, 2) and np.allclose(proba.sum(axis=1), 1, atol=1e-5)
    assert (model.predict(X) == y).mean() > 0.9
    published = load_presto(weights).state_dict()
    assert not all(
        torch.equal(v, model.encoder.state_dict()[k]) for k, v in published.items() if v.is_floating_point()
    )
    joblib.dump(model, tmp_path / "model.joblib")
    np.testing.assert_array_equal(joblib.load(tmp_path / "model.joblib").predict_proba(X), proba)
    frozen = get_model("presto_finetune", seed=0, weights=weights, **{**small, "encoder_learning_rate": 0})
    frozen.feature_names = names
    frozen.fit(X, y)
    assert all(torch.equal(v, frozen.encoder.state_dict()[k]) for k, v in published.items())
    # the spectral features are not its inputs; no weights is a configuration error
    with pytest.raises(InputError, match="not the Presto encoder inputs"):
        model.feature_names = names[1:]
        model.predict_proba(X[:, 1:])
    with pytest.raises(ConfigError, match="presto_finetune needs the `presto` section"):
        get_model("presto_finetune")
    with pytest.raises(ConfigError, match=r"unknown hyper-parameter\(s\) \['trees'\]"):
        get_model("presto_finetune", weights=weights, trees=3)
