"""Training of pixel classifiers on the learning pixels of a run.

Reads ``runs/{run}/pixels.parquet`` (see :mod:`cropchain.learning.samples`), keeps the rows of
the learning split only (validation polygons never reach a model), fits the
architecture built by :func:`cropchain.models.get_model`, and saves beside the
weights the metadata needed to reload and explain the model (BreizhCrops/utae-paps
style): ``model.joblib``, ``model.json`` (architecture, hyper-parameters, class codes,
feature names, seed, versions) and ``metrics.json``.
"""

from __future__ import annotations

import json
import logging
import os
import time
from pathlib import Path
from typing import Any

import joblib
import numpy as np
import pyarrow.parquet as pq

import cropchain
from cropchain.errors import ConfigError, InputError
from cropchain.io.atomic import atomic_output, write_text_atomic
from cropchain.models import get_model, is_network

log = logging.getLogger(__name__)

#: columns of the pixel table that are not features
META_COLUMNS = ("tile", "polygon_id", "code", "split", "row", "col", "validity")


def feature_columns(columns: list[str]) -> list[str]:
    """The feature columns of a pixel table, in file order (all but :data:`META_COLUMNS`)."""
    return [c for c in columns if c not in META_COLUMNS]


def load_learning_pixels(pixels: str | os.PathLike) -> tuple[np.ndarray, np.ndarray, list[str]]:
    """Read the learning pixels of a pixel table.

    Returns
    -------
    X : float32 ``[N, F]`` features (reflectance 0-1, indices), y : int64 ``[N]`` class codes,
    feature_names : the ``F`` column names.

    Raises
    ------
    InputError
        missing file, or no learning pixel at all.
    """
    pixels = Path(pixels)
    if not pixels.exists():
        raise InputError(pixels, "pixel table not found", "run the samples step first")
    table = pq.read_table(pixels)
    names = feature_columns(table.column_names)
    split = table.column("split").to_numpy(zero_copy_only=False).astype(str)
    learn = split == "learn"
    if not learn.any():
        raise InputError(
            pixels, "no learning pixel", "check the reference polygons cover the tiles and the split ratio"
        )
    X = np.stack([table.column(n).to_numpy()[learn] for n in names], axis=1).astype(np.float32, copy=False)
    y = table.column("code").to_numpy()[learn].astype(np.int64)
    return X, y, names


def train_model(
    pixels: str | os.PathLike,
    architecture: str,
    hyperparameters: dict[str, Any],
    out_dir: str | os.PathLike,
    *,
    seed: int,
    threads: int = 1,
) -> dict[str, Any]:
    """Fit ``architecture`` on the learning pixels and save it under ``out_dir``.

    Parameters
    ----------
    pixels : Parquet pixel table of the run (learning and validation rows).
    architecture : registry name (``"rf"``, ``"xgboost"``).
    hyperparameters : passed to the model constructor (config ``architectures.<name>``).
    out_dir : folder receiving ``model.joblib``, ``model.json`` and ``metrics.json``.
    seed : random seed of the run (model randomness).
    threads : CPU threads the learner may use.

    Returns
    -------
    The metadata written to ``model.json``.
    """
    out_dir = Path(out_dir)
    if is_network(architecture):
        raise ConfigError(
            f"architectures.{architecture}: a network is trained on patches by "
            "cropchain.learning.train_network.train_network"
        )
    X, y, names = load_learning_pixels(pixels)
    codes, counts = np.unique(y, return_counts=True)
    log.info(
        "training %s on %d learning pixels, %d features, classes %s",
        architecture,
        len(y),
        len(names),
        dict(zip(codes.tolist(), counts.tolist())),
    )
    model = get_model(architecture, seed=seed, threads=threads, **hyperparameters)
    model.feature_names = list(names)  # before fit: presto_finetune reads its inputs' layout from them
    start = time.perf_counter()
    model.fit(X, y)
    elapsed = time.perf_counter() - start
    train_oa = float(np.mean(model.classes_[np.argmax(model.predict_proba(X), axis=1)] == y))
    log.info("trained %s in %.1f s (resubstitution accuracy %.3f)", architecture, elapsed, train_oa)

    meta = {
        "architecture": architecture,
        "kind": "pixel",
        "model_file": "model.joblib",
        "hyperparameters": hyperparameters,
        "seed": seed,
        "classes": [int(c) for c in model.classes_],
        "feature_names": list(names),
        "n_learning_pixels": {int(c): int(n) for c, n in zip(codes, counts)},
        "cropchain_version": cropchain.__version__,
        "library_versions": _library_versions(),
    }
    metrics = {
        "training_time_s": round(elapsed, 3),
        "resubstitution_overall_accuracy": train_oa,
        "n_learning_pixels": int(len(y)),
    }
    with atomic_output(out_dir / "model.joblib") as tmp:
        joblib.dump(model, tmp)
    write_text_atomic(out_dir / "model.json", json.dumps(meta, indent=2))
    write_text_atomic(out_dir / "metrics.json", json.dumps(metrics, indent=2))
    return meta


def load_model(model_dir: str | os.PathLike, *, threads: int = 1) -> Any:
    """Reload a model saved by :func:`train_model` or :func:`cropchain.learning.train_network.train_network`,
    with ``threads`` CPU threads for prediction.

    Dispatches on ``model.json``: a network (``"kind": "network"``) is read from
    ``model.pt`` (:meth:`cropchain.models.networks.NetworkClassifier.load`), a pixel
    classifier from ``model.joblib``. A folder without ``model.json`` is read as a pixel
    classifier (models of cropchain 0.1).

    Raises
    ------
    InputError
        missing or unreadable model files.
    """
    model_dir = Path(model_dir)
    meta_path = model_dir / "model.json"
    meta: dict[str, Any] = {}
    if meta_path.exists():
        try:
            meta = json.loads(meta_path.read_text())
        except (OSError, json.JSONDecodeError) as exc:
            raise InputError(meta_path, f"unreadable model metadata ({exc})", "retrain the model") from None
    if meta.get("kind") == "network":
        from cropchain.models.networks import NetworkClassifier

        return NetworkClassifier.load(model_dir, threads=threads)
    path = model_dir / meta.get("model_file", "model.joblib")
    if not path.exists():
        raise InputError(path, "model not found", "run the training step for this architecture and run")
    model = joblib.load(path)
    if hasattr(model, "set_threads"):
        model.set_threads(threads)
    elif hasattr(model, "n_jobs"):
        model.n_jobs = threads
    return model


def _library_versions() -> dict[str, str]:
    import sklearn
    import xgboost

    return {"numpy": np.__version__, "scikit-learn": sklearn.__version__, "xgboost": xgboost.__version__}
