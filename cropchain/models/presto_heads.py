"""Heads on Presto embeddings: a Random Forest (``presto_rf``) or gradient boosting
(``presto_xgboost``) trained on the 128-d embeddings of the learning pixels.

WorldCereal's recipe (a gradient-boosting head on frozen Presto embeddings, Tseng et al.
2023, arXiv 2304.14065, section 5): the encoder is not trained; its embeddings are computed
per window from monthly composites of the tile's raw series
(:class:`cropchain.learning.presto_features.PrestoFeatures`) for the samples and for the map, and the
head is an ordinary pixel classifier fitted by :func:`cropchain.learning.train.train_model` on the
pixel table whose feature columns are ``presto_000`` ... ``presto_127``. The heads are the
``rf`` and ``xgboost`` models with the same defaults (this module imports no PyTorch).
"""

from __future__ import annotations

from typing import Any

from cropchain.models import random_forest, register, xgboost


@register("presto_rf")
def build_rf(*, seed: int = 0, threads: int = 1, **hyperparameters: Any):
    """Untrained Random Forest head (``rf``'s defaults: 100 trees, depth 25) for embeddings."""
    return random_forest.build(seed=seed, threads=threads, **hyperparameters)


@register("presto_xgboost")
def build_xgboost(*, seed: int = 0, threads: int = 1, **hyperparameters: Any):
    """Untrained gradient-boosting head (``xgboost``'s defaults: 200 trees of depth 6) for embeddings."""
    return xgboost.build(seed=seed, threads=threads, **hyperparameters)
