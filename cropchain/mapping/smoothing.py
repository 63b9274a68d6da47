"""Bayesian spatial smoothing of class probabilities, and uncertainty measures.

Smoothing follows Camara, G., Assunção, R., Carvalho, A., Simões, R., Souza, F., Carlos, F.,
Souza, A., Rorato, A., Dal'Asta, A. P. (2024), "Bayesian inference for post-processing of
remote-sensing image classification", Remote Sensing 16(23):4572, as implemented by sits'
``sits_smooth`` (C++ ``bayes_smoother_fraction``), pixel for pixel:

1. probabilities are clamped to ``[1e-6, 1 - 1e-6]`` and turned into logits
   ``x_k = log(p_k / (sum_c p_c - p_k))``;
2. for each pixel and class, the logits of the ``window_size x window_size`` neighbourhood
   (pixel included; mirrored at the image edges, the edge pixel repeated; nodata left out)
   are sorted and the highest ``ceil(neigh_fraction * n)`` kept; their mean ``m_k`` and
   variance ``s_k^2`` (``n - 1`` denominator) are the prior of the class's logit;
3. the posterior mean combines the pixel's logit (likelihood variance ``sigma_k^2``, the
   class's *smoothness*) with the prior: ``w = s_k^2 / (s_k^2 + sigma_k^2)``,
   ``x'_k = w x_k + (1 - w) m_k`` (larger smoothness -> smoother map);
4. back to probabilities ``p'_k = 1 / (1 + exp(-x'_k))``. cropchain then divides by the sum
   over classes so that every pixel's probabilities sum to 1 (sits leaves them unnormalised);
   the argmax is unchanged by this.

Every output pixel depends only on the input pixels within ``window_size // 2`` of it
(:func:`smoothing_margin`), so a tiled inference can smooth window by window: read each
window with that margin (:func:`expand_window`), smooth, keep the core; the result equals
the whole-image smoothing exactly (same arithmetic on the same values).

Uncertainty (sits' ``sits_uncertainty``: ``margin`` and ``entropy``), as uint8 0-100 with
255 = nodata: :func:`margin_uncertainty` ``100 (1 - (p1 - p2))`` with ``p1 >= p2`` the two
highest probabilities; :func:`entropy_uncertainty` ``100 H / log K`` with
``H = -sum_k p_k log p_k`` (Shannon entropy normalised by its maximum).
"""

from __future__ import annotations

import math
from collections.abc import Sequence

import numpy as np
from numpy.lib.stride_tricks import sliding_window_view
from rasterio.windows import Window

#: Probabilities are clamped to [EPS, 1 - EPS] before the logit (sits' values).
EPS = 1e-6
#: Uncertainty value of nodata pixels.
UNCERTAINTY_NODATA = 255


def smoothing_margin(window_size: int) -> int:
    """Pixels of context needed on each side of a block for exact smoothing: ``window_size // 2``."""
    _check_window_size(window_size)
    return window_size // 2


def _check_window_size(window_size: int) -> None:
    if int(window_size) != window_size or window_size < 3 or window_size % 2 == 0:
        raise ValueError(f"window_size must be an odd integer >= 3, not {window_size!r}")


def expand_window(
    core: Window, height: int, width: int, window_size: int
) -> tuple[Window, tuple[int, int, int, int]]:
    """Window to read around ``core`` for :func:`bayes_smooth`, and the margins to pass it.

    Parameters
    ----------
    core : window of the image whose smoothed values are wanted.
    height, width : size of the whole image (pixels).
    window_size : the smoothing window.

    Returns
    -------
    read : ``core`` grown by :func:`smoothing_margin` pixels on each side, clipped to the image.
    margins : ``(top, bottom, left, right)`` pixels of ``read`` outside ``core``.
    """
    m = smoothing_margin(window_size)
    r0, c0 = int(core.row_off), int(core.col_off)
    r1, c1 = r0 + int(core.height), c0 + int(core.width)
    rr0, cc0, rr1, cc1 = max(0, r0 - m), max(0, c0 - m), min(height, r1 + m), min(width, c1 + m)
    return Window(cc0, rr0, cc1 - cc0, rr1 - rr0), (r0 - rr0, rr1 - r1, c0 - cc0, cc1 - c1)


def _valid_pixels(probs: np.ndarray, valid: np.ndarray | None) -> np.ndarray:
    if valid is not None:
        if valid.shape != probs.shape[1:]:
            raise ValueError(f"valid {valid.shape} does not match probabilities {probs.shape}")
        return valid.astype(bool)
    return np.isfinite(probs).all(axis=0) & (probs.sum(axis=0) > 0)


def bayes_smooth(
    probs: np.ndarray,
    window_size: int = 9,
    smoothness: float | Sequence[float] = 20.0,
    neigh_fraction: float = 0.5,
    *,
    valid: np.ndarray | None = None,
    margins: tuple[int, int, int, int] = (0, 0, 0, 0),
    chunk_rows: int = 64,
) -> np.ndarray:
    """Bayesian smoothing of class probabilities (Camara et al. 2024; sits' ``sits_smooth``).

    Parameters
    ----------
    probs : ``[K, H, W]`` class probabilities (float, each pixel summing to about 1; any
        non-negative scores work, e.g. uint8 0-100: the logit uses ``p_k / (sum - p_k)``).
    window_size : odd side of the neighbourhood (sits' default 9).
    smoothness : prior-to-likelihood weight, the variance ``sigma_k^2`` of the logit of each
        class (scalar or ``[K]``, > 0; sits' default 20; sits allows 1-200).
    neigh_fraction : fraction of the neighbours with the highest probability of the class that
        form its prior, in (0, 1] (sits' default 0.5).
    valid : ``[H, W]`` bool, pixels with data; default: finite probabilities with a positive
        sum. Nodata pixels are left out of every neighbourhood and returned unchanged.
    margins : ``(top, bottom, left, right)`` context rows/columns of ``probs`` around the block
        to smooth (see :func:`expand_window`): they are read as neighbours but not returned.
        A side with fewer than :func:`smoothing_margin` pixels of context must be an image edge
        (it is mirrored there).
    chunk_rows : rows smoothed at a time (memory ~ ``chunk_rows x W x window_size^2 x 8 B x 4``).
        Neighbourhood logits are sorted in float32, means and variances summed in float64.

    Returns
    -------
    ``[K, H - top - bottom, W - left - right]`` float32 smoothed probabilities, summing to 1
    on valid pixels.

    Raises
    ------
    ValueError
        bad window size, smoothness <= 0 or of the wrong length, neigh_fraction outside (0, 1],
        margins larger than the block.
    """
    sigma2 = _check_smoothing(probs, window_size, smoothness, neigh_fraction, margins)
    k, h, w = probs.shape
    top, bottom, left, right = (int(m) for m in margins)
    ok = _valid_pixels(probs, valid)
    half = window_size // 2
    p = np.clip(probs.astype(np.float64), EPS, 1 - EPS)
    with np.errstate(divide="ignore", invalid="ignore"):
        logits = np.log(p / (p.sum(axis=0) - p))
    logits[:, ~ok] = np.nan
    oh, ow = h - top - bottom, w - left - right
    out = np.empty((k, oh, ow), dtype=np.float64)
    n_win = window_size * window_size
    # number of neighbours with data of each output pixel (the same for every class)
    count = sliding_window_view(
        np.pad(ok, half, mode="symmetric")[:, left : w - right + 2 * half], (window_size, window_size)
    ).sum(axis=(-2, -1))
    for c in range(k):
        # neighbourhoods in float32 (numpy sorts float32 several times faster); sums in float64
        padded = np.pad(
            logits[c].astype(np.float32), half, mode="symmetric"
        )  # the edge pixel repeated, as sits' mirror
        for r0 in range(top, h - bottom, chunk_rows):
            r1 = min(r0 + chunk_rows, h - bottom)
            neigh = sliding_window_view(
                padded[r0 : r1 + 2 * half, left : w - right + 2 * half], (window_size, window_size)
            )
            ordered = np.sort(neigh.reshape(-1, n_win), axis=-1)  # ascending, NaN (nodata) last
            m0, s0 = _neighbourhood_prior(ordered, count[r0:r1].reshape(-1), neigh_fraction)
            x0 = logits[c, r0:r1, left : w - right].reshape(-1)
            wgt = s0 / (s0 + sigma2[c])
            out[c, r0 - top : r1 - top] = (wgt * x0 + (1 - wgt) * m0).reshape(r1 - r0, ow)
    smoothed = 1.0 / (1.0 + np.exp(-out))
    smoothed /= smoothed.sum(axis=0, keepdims=True)
    core_ok = ok[top : h - bottom, left : w - right]
    smoothed[:, ~core_ok] = probs[:, top : h - bottom, left : w - right][:, ~core_ok]
    return smoothed.astype(np.float32)


def _check_smoothing(
    probs: np.ndarray,
    window_size: int,
    smoothness: float | Sequence[float],
    neigh_fraction: float,
    margins: tuple[int, int, int, int],
) -> np.ndarray:
    """Check :func:`bayes_smooth`'s arguments; the smoothness ``sigma_k^2`` as float64 ``[K]``."""
    _check_window_size(window_size)
    if probs.ndim != 3:
        raise ValueError(f"probabilities must be [K, H, W], not {probs.shape}")
    k, h, w = probs.shape
    sigma2 = (
        np.broadcast_to(np.asarray(smoothness, dtype=np.float64), (k,))
        if np.ndim(smoothness) == 0
        else np.asarray(smoothness, dtype=np.float64)
    )
    if sigma2.shape != (k,) or np.any(sigma2 <= 0):
        raise ValueError(f"smoothness must be > 0, a scalar or one value per class ({k})")
    if not 0 < neigh_fraction <= 1:
        raise ValueError("neigh_fraction must be in (0, 1]")
    top, bottom, left, right = (int(m) for m in margins)
    if min(margins) < 0 or top + bottom >= h or left + right >= w:
        raise ValueError(f"margins {margins} leave nothing of a {h} x {w} block")
    return sigma2


def _neighbourhood_prior(
    ordered: np.ndarray, n_valid: np.ndarray, neigh_fraction: float
) -> tuple[np.ndarray, np.ndarray]:
    """Mean and variance (float64 ``[n]``) of the prior of ``n`` pixels: over the highest
    ``ceil(neigh_fraction x n_valid)`` of the logits with data of each neighbourhood
    (``ordered``: float32 ``[n, window_size^2]``, ascending, NaN last; ``n_valid`` ``[n]``:
    how many are not NaN). NaN mean, 0 variance where no neighbour has data."""
    n_win = ordered.shape[1]
    n_full = math.ceil(neigh_fraction * n_win)  # neighbours kept where the whole window has data
    m0 = np.empty(len(ordered))
    s0 = np.empty(len(ordered))
    full = n_valid == n_win
    # whole windows with data (most pixels): the n_full highest are the last ones
    high = ordered[full, n_win - n_full :]
    mean = high.mean(axis=-1, dtype=np.float64)
    m0[full] = mean
    s0[full] = (
        np.square(high - mean.astype(np.float32)[:, None]).sum(axis=-1, dtype=np.float64) / (n_full - 1)
        if n_full > 1
        else 0.0
    )
    part = ~full & (n_valid > 0)
    if part.any():  # windows with nodata: the highest ceil(fraction n) of the n with data
        rank = np.arange(n_win)
        nv = n_valid[part, None]
        nh = np.ceil(neigh_fraction * nv)
        keep = (rank >= nv - nh) & (rank < nv)
        vals = np.where(keep, ordered[part], 0.0)
        m0[part] = vals.sum(axis=-1) / nh[:, 0]
        dev = np.where(keep, (vals - m0[part, None]) ** 2, 0.0).sum(axis=-1)
        s0[part] = np.where(nh[:, 0] > 1, dev / np.maximum(nh[:, 0] - 1, 1), 0.0)
    m0[n_valid == 0] = np.nan  # nodata surrounded by nodata: passed through below
    s0[n_valid == 0] = 0.0
    return m0, s0


def _normalised(probs: np.ndarray, valid: np.ndarray | None) -> tuple[np.ndarray, np.ndarray]:
    if probs.ndim != 3 or probs.shape[0] < 2:
        raise ValueError(f"probabilities must be [K >= 2, H, W], not {probs.shape}")
    ok = _valid_pixels(probs, valid)
    p = probs.astype(np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        p = p / p.sum(axis=0, keepdims=True)
    return np.where(ok, p, 0.0), ok


def _to_uint8(value: np.ndarray, ok: np.ndarray) -> np.ndarray:
    out = np.clip(np.rint(100 * value), 0, 100).astype(np.uint8)
    out[~ok] = UNCERTAINTY_NODATA
    return out


def margin_uncertainty(probs: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Margin uncertainty ``100 (1 - (p1 - p2))`` of each pixel (sits' ``margin``).

    Parameters
    ----------
    probs : ``[K, H, W]`` class probabilities or scores (normalised by their sum per pixel).
    valid : ``[H, W]`` pixels with data (default: finite, positive sum).

    Returns
    -------
    ``[H, W]`` uint8: 0 (one class certain) to 100 (two classes tied), 255 = nodata.
    """
    p, ok = _normalised(probs, valid)
    top2 = np.partition(p, -2, axis=0)[-2:]
    return _to_uint8(1.0 - (top2[1] - top2[0]), ok)


def entropy_uncertainty(probs: np.ndarray, valid: np.ndarray | None = None) -> np.ndarray:
    """Normalised Shannon entropy ``100 H / log K`` of each pixel (sits' ``entropy``, scaled to 0-100).

    ``probs`` and ``valid`` as in :func:`margin_uncertainty`. Returns ``[H, W]`` uint8: 0 (one
    class certain) to 100 (all classes equally likely), 255 = nodata.
    """
    p, ok = _normalised(probs, valid)
    with np.errstate(divide="ignore", invalid="ignore"):
        terms = np.where(p > 0, -p * np.log(p), 0.0)
    return _to_uint8(terms.sum(axis=0) / np.log(p.shape[0]), ok)
