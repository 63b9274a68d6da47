"""Bayesian smoothing of class probabilities (Camara et al. 2024, sits_smooth) and uncertainty measures."""

from __future__ import annotations

import math

import numpy as np
import pytest
from rasterio.windows import Window

from cropchain.io.raster import block_windows
from cropchain.mapping.smoothing import (
    UNCERTAINTY_NODATA,
    bayes_smooth,
    entropy_uncertainty,
    expand_window,
    margin_uncertainty,
    smoothing_margin,
)


def parcels(seed: int = 0, h: int = 90, w: int = 110, k: int = 4, size: int = 15) -> np.ndarray:
    """Truth: rectangular parcels of ``size`` px, class 0..k-1."""
    rng = np.random.default_rng(seed)
    return np.kron(rng.integers(0, k, (h // size + 1, w // size + 1)), np.ones((size, size), int))[:h, :w]


def noisy_probabilities(truth: np.ndarray, k: int = 4, noise: float = 1.3, seed: int = 1) -> np.ndarray:
    """[K, H, W] float32 softmax of (true class score 1 + Gaussian noise): a classifier right about half
    of the time."""
    rng = np.random.default_rng(seed)
    scores = np.eye(k)[truth].transpose(2, 0, 1) + rng.normal(0, noise, (k, *truth.shape))
    e = np.exp(scores - scores.max(axis=0))
    return (e / e.sum(axis=0)).astype(np.float32)


def sits_reference(probs: np.ndarray, window_size: int, smoothness: float, fraction: float) -> np.ndarray:
    """Loop translation of sits' C++ bayes_smoother_fraction (mirror with the edge repeated, NA omitted,
    descending sort, ceil(fraction n), R's var) and of its R wrapper (clamp 1e-6, logit, inverse logit)."""
    k, h, w = probs.shape
    p = np.clip(probs.astype(float), 1e-6, 1 - 1e-6)
    logits = np.log(p / (p.sum(axis=0) - p))
    leg = window_size // 2

    def locus(size):
        return [
            leg - i - 1 if i < leg else i - leg if i < size + leg else 2 * size + leg - i - 1
            for i in range(size + 2 * leg)
        ]

    li, lj = locus(h), locus(w)
    res = np.empty_like(logits)
    for i in range(h):
        for j in range(w):
            for b in range(k):
                neigh = [
                    logits[b, li[wi + i], lj[wj + j]]
                    for wi in range(window_size)
                    for wj in range(window_size)
                ]
                neigh = sorted((v for v in neigh if not math.isnan(v)), reverse=True)
                high = neigh[: math.ceil(fraction * len(neigh))]
                s0 = float(np.var(high, ddof=1)) if len(high) > 1 else 0.0
                m0 = float(np.mean(high))
                wgt = s0 / (s0 + smoothness)
                res[b, i, j] = wgt * logits[b, i, j] + (1 - wgt) * m0
    out = np.exp(res) / (np.exp(res) + 1)
    return out / out.sum(axis=0)  # cropchain's normalisation


def test_matches_a_loop_translation_of_sits():
    truth = parcels(seed=2, h=17, w=13, size=5)
    probs = noisy_probabilities(truth)
    for window_size, smoothness, fraction in ((5, 20.0, 0.5), (3, 5.0, 1.0), (7, 50.0, 0.3)):
        ours = bayes_smooth(probs, window_size, smoothness, fraction)
        np.testing.assert_allclose(
            ours, sits_reference(probs, window_size, smoothness, fraction), rtol=1e-5, atol=1e-6
        )


def test_smoothing_a_noisy_map_increases_agreement_with_the_truth():
    truth = parcels()
    probs = noisy_probabilities(truth)
    before = (probs.argmax(axis=0) == truth).mean()
    after = (bayes_smooth(probs, 9, 20.0, 0.5).argmax(axis=0) == truth).mean()
    assert 0.4 < before < 0.6  # the noisy classifier (measured 0.47)
    assert after > 0.85 and after > before + 0.3, (before, after)  # measured 0.93

    # more smoothness, smoother map: fewer label changes between neighbours
    def changes(labels):
        return (labels[1:] != labels[:-1]).mean() + (labels[:, 1:] != labels[:, :-1]).mean()

    weak = bayes_smooth(probs, 9, 1.0, 0.5).argmax(axis=0)
    strong = bayes_smooth(probs, 9, 100.0, 0.5).argmax(axis=0)
    assert changes(strong) < changes(weak) < changes(probs.argmax(axis=0))


def test_windowed_smoothing_equals_whole_image_smoothing_exactly():
    truth = parcels(seed=4, h=70, w=61)
    probs = noisy_probabilities(truth, seed=5)
    probs[:, 30:34, 10:50] = 0.0  # a nodata band, crossing window edges
    probs[:, 0, 0] = 0.0
    whole = bayes_smooth(probs, 7, 20.0, 0.5)
    tiled = np.full_like(whole, np.nan)
    h, w = truth.shape
    for core in block_windows(h, w, 16):  # windows of 16 px, smaller than twice the margin at the edges
        read, margins = expand_window(core, h, w, 7)
        block = probs[:, read.row_off : read.row_off + read.height, read.col_off : read.col_off + read.width]
        r, c = int(core.row_off), int(core.col_off)
        tiled[:, r : r + core.height, c : c + core.width] = bayes_smooth(
            block, 7, 20.0, 0.5, margins=margins, chunk_rows=5
        )
    np.testing.assert_array_equal(tiled, whole)
    assert smoothing_margin(7) == 3
    assert expand_window(Window(16, 0, 16, 16), h, w, 7) == (Window(13, 0, 22, 19), (0, 3, 3, 3))


def test_properties_sum_to_one_uniform_field_unchanged_nodata_kept():
    truth = parcels(seed=6, h=40, w=40)
    probs = noisy_probabilities(truth)
    probs[:, 5:8, 5:8] = 0.0  # nodata
    out = bayes_smooth(probs, 9, [10.0, 20.0, 30.0, 40.0], 0.5)
    assert out.dtype == np.float32 and out.shape == probs.shape
    valid = probs.sum(axis=0) > 0
    np.testing.assert_allclose(out.sum(axis=0)[valid], 1.0, atol=1e-6)
    assert (out[:, ~valid] == 0).all()  # nodata stays nodata
    assert (out >= 0).all() and (out <= 1).all()
    uniform = np.broadcast_to(np.array([0.6, 0.25, 0.1, 0.05], np.float32)[:, None, None], (4, 20, 30)).copy()
    np.testing.assert_allclose(bayes_smooth(uniform, 5, 20.0, 0.5), uniform, rtol=1e-5)
    # the map's classes in the same order: permuting the classes permutes the output
    perm = [2, 0, 3, 1]
    np.testing.assert_allclose(
        bayes_smooth(probs[perm], 9, 20.0, 0.5), bayes_smooth(probs, 9, 20.0, 0.5)[perm], rtol=1e-6
    )


@pytest.mark.parametrize(
    "kwargs",
    [
        {"window_size": 4},
        {"window_size": 1},
        {"smoothness": 0.0},
        {"smoothness": [1.0, 2.0]},
        {"neigh_fraction": 0.0},
        {"neigh_fraction": 1.5},
    ],
)
def test_bad_parameters_are_refused(kwargs):
    probs = noisy_probabilities(parcels(h=10, w=10))
    with pytest.raises(ValueError):
        bayes_smooth(probs, **kwargs)


def test_uncertainty_margin_and_entropy():
    probs = np.zeros((3, 1, 5), np.float32)
    probs[:, 0, 0] = [0.5, 0.3, 0.2]  # margin 1 - 0.2
    probs[:, 0, 1] = [1.0, 0.0, 0.0]  # certain
    probs[:, 0, 2] = [1 / 3, 1 / 3, 1 / 3]  # uniform
    probs[:, 0, 3] = [45, 45, 10]  # uint8-style scores, a tie
    # pixel 4: nodata (all zero)
    margin = margin_uncertainty(probs)
    assert margin.dtype == np.uint8
    assert margin[0].tolist() == [80, 0, 100, 100, UNCERTAINTY_NODATA]
    entropy = entropy_uncertainty(probs)
    h0 = -(0.5 * math.log(0.5) + 0.3 * math.log(0.3) + 0.2 * math.log(0.2)) / math.log(3)
    h3 = -(2 * 0.45 * math.log(0.45) + 0.1 * math.log(0.1)) / math.log(3)
    assert entropy[0].tolist() == [round(100 * h0), 0, 100, round(100 * h3), UNCERTAINTY_NODATA]
