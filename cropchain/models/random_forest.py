"""Random Forest pixel classifier (Breiman 2001), iota2's default learner.

iota2-like defaults: 100 trees, maximum depth 25 (OTB's ``-classifier.rf.max 25``),
scikit-learn's ``RandomForestClassifier`` underneath.
"""

from __future__ import annotations

from sklearn.ensemble import RandomForestClassifier

from cropchain.models import register

DEFAULTS = {"n_estimators": 100, "max_depth": 25, "min_samples_leaf": 1, "max_features": "sqrt"}


@register("rf")
def build(*, seed: int = 0, threads: int = 1, **hyperparameters) -> RandomForestClassifier:
    """Untrained ``RandomForestClassifier`` with iota2-like defaults overridden by ``hyperparameters``.

    ``classes_`` after fitting are the nomenclature codes themselves.
    """
    params = {**DEFAULTS, **hyperparameters}
    return RandomForestClassifier(random_state=seed, n_jobs=threads, **params)
