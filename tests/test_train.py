"""Training: learning rows only, codes as classes, model reload with its metadata."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from cropchain.errors import ConfigError, InputError
from cropchain.learning.train import load_model, train_model
from cropchain.models import available, get_model


def _pixels(tmp_path, n=600, seed=0):
    rng = np.random.default_rng(seed)
    codes = rng.choice([3, 6, 7], size=n)
    feats = {
        f"20180101_B0{i}": (codes * (i + 1) + rng.normal(0, 0.5, n)).astype(np.float32) for i in range(4)
    }
    df = pd.DataFrame(
        {
            "tile": "T",
            "polygon_id": np.arange(n) // 10,
            "code": codes.astype(np.int16),
            "split": np.where(np.arange(n) % 3 == 0, "validation", "learn"),
            "row": np.arange(n),
            "col": 0,
            "validity": 5,
            **feats,
        }
    )
    # a class present only in validation must never reach the model
    val = (df["split"] == "validation").to_numpy()
    df["code"] = np.where(val, np.where(codes == 7, 9, 3), codes).astype(np.int16)
    path = tmp_path / "pixels.parquet"
    df.to_parquet(path)
    return path, df


@pytest.mark.parametrize("arch", ["rf", "xgboost"])
def test_train_and_reload(tmp_path, arch):
    path, df = _pixels(tmp_path)
    meta = train_model(path, arch, {"n_estimators": 20}, tmp_path / arch, seed=1)
    assert meta["classes"] == [3, 6, 7]
    assert meta["feature_names"] == [c for c in df.columns if c.startswith("2018")]
    model = load_model(tmp_path / arch)
    assert list(model.classes_) == [3, 6, 7]
    X = df[meta["feature_names"]].to_numpy(np.float32)
    proba = model.predict_proba(X)
    assert proba.shape == (len(df), 3)
    np.testing.assert_allclose(proba.sum(axis=1), 1.0, rtol=1e-5)
    learn = (df["split"] == "learn").to_numpy()
    accuracy = np.mean(model.classes_[proba.argmax(1)][learn] == df["code"].to_numpy()[learn])
    assert accuracy > 0.9
    saved = json.loads((tmp_path / arch / "model.json").read_text())
    assert saved["n_learning_pixels"] == {str(k): v for k, v in meta["n_learning_pixels"].items()}


def test_same_seed_same_forest(tmp_path):
    path, df = _pixels(tmp_path)
    train_model(path, "rf", {"n_estimators": 10}, tmp_path / "a", seed=3)
    train_model(path, "rf", {"n_estimators": 10}, tmp_path / "b", seed=3)
    X = df.filter(like="2018").to_numpy(np.float32)
    np.testing.assert_array_equal(
        load_model(tmp_path / "a").predict_proba(X), load_model(tmp_path / "b").predict_proba(X)
    )


def test_registry_and_errors(tmp_path):
    assert {"rf", "xgboost"} <= set(available())
    assert get_model("rf", seed=0, max_depth=3).max_depth == 3
    with pytest.raises(ConfigError, match="unknown architecture"):
        get_model("svm")
    with pytest.raises(InputError, match="model not found"):
        load_model(tmp_path / "nothing")
    with pytest.raises(InputError, match="pixel table not found"):
        train_model(tmp_path / "none.parquet", "rf", {}, tmp_path / "m", seed=0)
