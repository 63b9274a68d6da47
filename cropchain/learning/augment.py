"""Dihedral augmentation of image patches: random 90-degree rotations and flips.

One draw per patch from the dihedral group of the square (4 rotations x 2 mirrors), the same
for a patch and its label or mask, as in the training of the parcel networks
(:mod:`cropchain.parcels.train`) and of the field delineation model
(:mod:`cropchain.delineation.fields`).
"""

from __future__ import annotations

import numpy as np


def random_dihedral(x: np.ndarray, m: np.ndarray, rng: np.random.Generator) -> tuple[np.ndarray, np.ndarray]:
    """Apply one random element of the dihedral group to the last two axes of ``x`` and ``m``.

    Parameters
    ----------
    x : patch ``[..., S, S]`` (any dtype; e.g. ``[C, S, S]`` or ``[T, C, S, S]``).
    m : its label or mask ``[..., S, S]``, transformed the same way.
    rng : two integers are drawn, in this order: the number of quarter turns (0-3, counter-
        clockwise as :func:`numpy.rot90`), then whether to mirror the last axis.

    Returns
    -------
    ``(x, m)`` transformed, as views of the inputs (not contiguous in general).
    """
    k, flip = int(rng.integers(4)), bool(rng.integers(2))
    x, m = np.rot90(x, k, axes=(-2, -1)), np.rot90(m, k, axes=(-2, -1))
    if flip:
        x, m = x[..., ::-1], m[..., ::-1]
    return x, m


def random_dihedral_batch(
    x: np.ndarray, m: np.ndarray, rng: np.random.Generator
) -> tuple[np.ndarray, np.ndarray]:
    """:func:`random_dihedral` drawn for each sample of a batch ``x [B, ..., S, S]``, ``m [B, ..., S, S]``.

    Returns new arrays of the input shapes and dtypes; the inputs are not modified.
    """
    x, m = x.copy(), m.copy()
    for i in range(len(x)):
        x[i], m[i] = random_dihedral(x[i], m[i], rng)
    return x, m
