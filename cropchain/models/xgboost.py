"""Gradient-boosted trees (XGBoost, Chen & Guestrin 2016) as a pixel classifier.

XGBoost needs labels 0..K-1; :class:`XGBoostPixelClassifier` maps the nomenclature
codes to that range and back, so that ``classes_`` are codes like every other model.
"""

from __future__ import annotations

import numpy as np
from xgboost import XGBClassifier

from cropchain.models import register

DEFAULTS = {
    "n_estimators": 200,
    "max_depth": 6,
    "learning_rate": 0.1,
    "subsample": 0.8,
    "colsample_bytree": 0.8,
    "tree_method": "hist",
}


class XGBoostPixelClassifier:
    """``XGBClassifier`` whose ``classes_`` are nomenclature codes.

    ``fit(X [N,F] float32, y [N] int codes)``; ``predict_proba(X) -> [N,K] float32``.
    """

    def __init__(self, *, seed: int = 0, threads: int = 1, **hyperparameters) -> None:
        self.params = {**DEFAULTS, **hyperparameters}
        self.booster = XGBClassifier(random_state=seed, n_jobs=threads, **self.params)
        self.classes_: np.ndarray = np.empty(0, dtype=np.int64)

    def fit(
        self, X: np.ndarray, y: np.ndarray, sample_weight: np.ndarray | None = None
    ) -> XGBoostPixelClassifier:
        self.classes_, encoded = np.unique(np.asarray(y), return_inverse=True)
        self.booster.fit(X, encoded, sample_weight=sample_weight)
        return self

    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        proba = self.booster.predict_proba(X).astype(np.float32, copy=False)
        if proba.ndim == 1 or proba.shape[1] == 1:  # a single class was learnt
            return np.ones((X.shape[0], 1), dtype=np.float32)
        return proba

    def predict(self, X: np.ndarray) -> np.ndarray:
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def set_threads(self, threads: int) -> None:
        self.booster.set_params(n_jobs=threads)


@register("xgboost")
def build(*, seed: int = 0, threads: int = 1, **hyperparameters) -> XGBoostPixelClassifier:
    """Untrained XGBoost pixel classifier; defaults: 200 trees of depth 6, learning rate 0.1, hist."""
    return XGBoostPixelClassifier(seed=seed, threads=threads, **hyperparameters)
