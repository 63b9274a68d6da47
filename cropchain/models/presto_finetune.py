"""``presto_finetune``: the pre-trained Presto encoder fine-tuned with a linear head.

The recipe of Presto's own evaluations (Tseng et al. 2023, arXiv 2304.14065, section 5,
"fine-tuning"): the encoder starts from the published weights and is trained with a linear
layer on its 128-d embedding, end to end, by cross-entropy. It is a pixel classifier of
:mod:`cropchain.models`: its features are the encoder's *inputs*, the monthly composites of
the tile's raw series, their clear-month flags and latitude / longitude
(:func:`cropchain.models.presto.input_names`), computed per window like the
embeddings of ``presto_rf`` (``PrestoSpec(inputs=True)``), so that the samples, training and
tiled inference rules are those of the other Presto architectures.

Training (:meth:`PrestoFinetune.fit`), bounded for a CPU:

- at most ``max_pixels_per_class`` learning pixels per class (a seeded draw; all of a class
  that has fewer), so a class weighs at most that many pixels and the cost is bounded;
- ``epochs`` passes over them in shuffled batches of ``batch_size`` pixels; AdamW with
  ``encoder_learning_rate`` for the encoder (small: the pre-trained weights move little) and
  ``learning_rate`` for the head, ``weight_decay``; no early stopping (the pixel table has no
  held-out polygons), the weights of the last epoch are kept;
- seeded (``torch.manual_seed``, NumPy draws); ``threads`` PyTorch CPU threads;
  ``device``: ``auto`` (a CUDA GPU when present, else the CPU), ``cpu`` or ``cuda[:N]``.

Saved by :func:`cropchain.learning.train.train_model` with joblib like the forests (the
encoder's fine-tuned weights included; the weights file is not needed to predict).
"""

from __future__ import annotations

import logging
import os
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from tqdm import tqdm

from cropchain.errors import ConfigError, InputError
from cropchain.models import register

log = logging.getLogger(__name__)

DEFAULTS: dict[str, Any] = {
    "epochs": 10,
    "batch_size": 256,
    "learning_rate": 1e-3,  # the linear head
    "encoder_learning_rate": 1e-4,  # the pre-trained encoder
    "weight_decay": 1e-4,
    "max_pixels_per_class": 2000,
    "device": "auto",
}


class PrestoFinetune:
    """Presto encoder + linear head trained end to end on pixels' encoder inputs.

    Parameters
    ----------
    weights : Presto's ``default_model.pt``; sha256 : its expected sha256 (None: the published
        file's, :data:`cropchain.models.presto.WEIGHTS_SHA256`).
    seed, threads : random seed and PyTorch CPU threads.
    **hyperparameters : :data:`DEFAULTS` overridden.

    Attributes (after :meth:`fit`)
    ------------------------------
    classes_ : int64 ``[K]`` class codes; feature_names : the :func:`input_names` it was fitted on;
    encoder : :class:`cropchain.models.presto.PrestoEncoder`; head : ``nn.Linear(128, K)``.

    Raises
    ------
    ConfigError
        unknown hyper-parameter, no weights path.
    """

    def __init__(
        self,
        *,
        weights: str | os.PathLike | None = None,
        sha256: str | None = None,
        seed: int = 0,
        threads: int = 1,
        **hyperparameters: Any,
    ) -> None:
        unknown = sorted(set(hyperparameters) - set(DEFAULTS))
        if unknown:
            raise ConfigError(
                f"architectures.presto_finetune: unknown hyper-parameter(s) {unknown}; "
                f"known: {', '.join(sorted(DEFAULTS))}"
            )
        if weights is None:
            raise ConfigError("architectures.presto_finetune needs the `presto` section (presto.weights)")
        self.weights, self.sha256 = str(weights), sha256
        self.hyperparameters = {**DEFAULTS, **hyperparameters}
        self.seed, self.threads = int(seed), int(threads)
        self.classes_ = np.empty(0, dtype=np.int64)
        self.feature_names: list[str] = []
        self.encoder: nn.Module | None = None
        self.head: nn.Linear | None = None
        self.curve: list[float] = []

    # --- helpers ------------------------------------------------------------------------
    def set_threads(self, threads: int) -> None:
        """PyTorch CPU threads (process-wide)."""
        self.threads = int(threads)
        torch.set_num_threads(max(1, self.threads))

    def _device(self) -> torch.device:
        from cropchain.models.device import resolve_device

        return resolve_device(self.hyperparameters["device"])

    def _inputs(self, X: np.ndarray) -> tuple[np.ndarray, ...]:
        from cropchain.models.presto import split_inputs

        if not self.feature_names:
            raise InputError(
                "features", "presto_finetune needs the names of its features", "set feature_names"
            )
        try:
            return split_inputs(X, self.feature_names)
        except ValueError as exc:
            raise InputError(
                "features", str(exc), "compute the samples with the presto_finetune samples rule"
            ) from None

    def _logits(
        self, series: np.ndarray, clear: np.ndarray, latlon: np.ndarray, months: np.ndarray
    ) -> torch.Tensor:
        """Head logits ``[n, K]`` of ``n`` pixels (each with at least one clear month)."""
        from cropchain.models.presto import encode

        return self.head(encode(self.encoder, series, clear, latlon, months))

    # --- training -----------------------------------------------------------------------
    def fit(self, X: np.ndarray, y: np.ndarray) -> PrestoFinetune:
        """Fine-tune the encoder and train the head on pixels.

        Parameters
        ----------
        X : float32 ``[N, M * 11 + 2]`` encoder inputs, columns ``feature_names``
            (:func:`cropchain.models.presto.input_names`: reflectance x10000, clear
            flags, latitude / longitude in degrees); rows without a clear month are skipped.
        y : int ``[N]`` class codes.

        Raises
        ------
        InputError
            features that are not the encoder inputs, or no pixel with a clear month.
        """
        from cropchain.models.presto import load_presto

        hp = self.hyperparameters
        self.set_threads(self.threads)
        rng = np.random.default_rng([self.seed, 2304_14065])
        torch.manual_seed(self.seed)
        series, clear, latlon, months = self._inputs(X)
        y = np.asarray(y, dtype=np.int64)
        usable = clear.any(axis=1)
        if not usable.any():
            raise InputError(
                "pixel table", "no learning pixel has a clear month", "check presto.months and dates.start"
            )
        self.classes_ = np.unique(y[usable])
        keep = self._draw(y, usable, int(hp["max_pixels_per_class"]), rng)
        target = np.searchsorted(self.classes_, y[keep])
        device = self._device()
        self.encoder = load_presto(self.weights, self.sha256).to(device)
        self.head = nn.Linear(self.encoder.norm.normalized_shape[0], len(self.classes_)).to(device)
        opt = torch.optim.AdamW(
            [
                {"params": self.encoder.parameters(), "lr": float(hp["encoder_learning_rate"])},
                {"params": self.head.parameters(), "lr": float(hp["learning_rate"])},
            ],
            weight_decay=float(hp["weight_decay"]),
        )
        batch = int(hp["batch_size"])
        log.info(
            "presto_finetune: %d pixels (%d classes, at most %d per class), %d epochs, on %s",
            keep.size,
            len(self.classes_),
            int(hp["max_pixels_per_class"]),
            int(hp["epochs"]),
            device,
        )
        self.curve = []
        for epoch in tqdm(range(int(hp["epochs"])), desc="fine-tune presto", unit="epoch", disable=None):
            self.encoder.train()
            self.head.train()
            order = rng.permutation(keep.size)
            losses = []
            for start in range(0, order.size, batch):
                idx = keep[order[start : start + batch]]
                logits = self._logits(series[idx], clear[idx], latlon[idx], months)
                loss = F.cross_entropy(
                    logits, torch.from_numpy(target[order[start : start + batch]]).to(device)
                )
                opt.zero_grad(set_to_none=True)
                loss.backward()
                opt.step()
                losses.append(float(loss.detach()))
            self.curve.append(float(np.mean(losses)))
            log.info("epoch %d: training loss %.4f", epoch + 1, self.curve[-1])
        self.encoder.eval()
        self.head.eval()
        return self

    @staticmethod
    def _draw(y: np.ndarray, usable: np.ndarray, cap: int, rng: np.random.Generator) -> np.ndarray:
        """Indices of at most ``cap`` usable pixels per class (seeded), sorted."""
        out = []
        for code in np.unique(y[usable]):
            idx = np.flatnonzero(usable & (y == code))
            out.append(idx if idx.size <= cap else rng.choice(idx, cap, replace=False))
        return np.sort(np.concatenate(out))

    # --- prediction ---------------------------------------------------------------------
    def predict_proba(self, X: np.ndarray) -> np.ndarray:
        """Class probabilities: float32 ``[N, F]`` encoder inputs -> float32 ``[N, K]``
        (``classes_`` order); uniform for pixels without a clear month. Runs on the ``device``
        hyper-parameter's device (``auto``: a CUDA GPU when present).

        Raises
        ------
        InputError
            features that are not the encoder inputs it was fitted on.
        """
        if self.encoder is None or self.head is None:
            raise RuntimeError("presto_finetune: not fitted")
        series, clear, latlon, months = self._inputs(X)
        device = self._device()  # a reloaded model comes back on the CPU
        self.encoder.to(device)
        self.head.to(device)
        out = np.full((len(series), len(self.classes_)), 1.0 / len(self.classes_), dtype=np.float32)
        todo = np.flatnonzero(clear.any(axis=1))
        batch = int(self.hyperparameters["batch_size"])
        self.encoder.eval()
        self.head.eval()
        with torch.inference_mode():
            for start in range(0, todo.size, batch):
                idx = todo[start : start + batch]
                proba = torch.softmax(self._logits(series[idx], clear[idx], latlon[idx], months), dim=1)
                out[idx] = proba.float().cpu().numpy()
        return out

    def predict(self, X: np.ndarray) -> np.ndarray:
        """Class codes ``[N]``."""
        return self.classes_[np.argmax(self.predict_proba(X), axis=1)]

    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        for key in ("encoder", "head"):  # pickled on the CPU, so a GPU-trained model loads anywhere
            if state[key] is not None:
                state[key] = state[key].to("cpu")
        return state


@register("presto_finetune")
def build(*, seed: int = 0, threads: int = 1, **hyperparameters: Any) -> PrestoFinetune:
    """Untrained :class:`PrestoFinetune` (``weights`` and ``sha256`` from the `presto` section)."""
    return PrestoFinetune(seed=seed, threads=threads, **hyperparameters)
