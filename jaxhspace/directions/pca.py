"""PCA of h over samples at one timestep (Haas et al., ``editing/pca.py`` ``get_PCs_indv``), and
supervised mean-difference directions (``editing/anycost.py``).

Centred data, float64, and the N×N Gram matrix X Xᵀ when N < D (the official ``SVDViaKernelMatrix``);
the scale of component i is its standard deviation σ_i/√(N−1); edits add Δh_t = scale·std_t(i)·u_t(i).
Signs: the first entry of each component is made positive, as the official code does.
"""
from __future__ import annotations

import dataclasses

import jax
import jax.numpy as jnp
import numpy as np

from jaxhspace.models.functional import encode_fn


@dataclasses.dataclass
class PCAResult:
    """components [k, *shape] (orthonormal), std [k] (σ_i/√(N−1)), mean [*shape], explained_variance_ratio [k]."""

    components: np.ndarray
    std: np.ndarray
    mean: np.ndarray
    explained_variance_ratio: np.ndarray


def pca(data, k: int) -> PCAResult:
    """Top-k principal components of ``data [N, *shape]`` (N samples), Gram trick when N < D.

    Raises:
      ValueError: fewer than 2 samples, k outside [1, min(N-1, D)], or NaN in the data.
    """
    X = np.asarray(data, dtype=np.float64)
    if X.ndim < 2 or X.shape[0] < 2:
        raise ValueError(f"pca needs data [N, ...] with N >= 2 samples, got shape {X.shape}")
    n, shape = X.shape[0], X.shape[1:]
    X = X.reshape(n, -1)
    d = X.shape[1]
    if not np.all(np.isfinite(X)):
        raise ValueError("pca: data contains NaN or inf")
    if not 1 <= k <= min(n - 1, d):
        raise ValueError(f"k={k} must be in [1, min(N-1, D)] = [1, {min(n - 1, d)}] for N={n} samples of D={d}")
    mean = X.mean(0)
    Xc = X - mean
    if n < d:
        evals, evecs = np.linalg.eigh(Xc @ Xc.T)               # Gram: Xc Xcᵀ = W Λ Wᵀ
        order = np.argsort(evals)[::-1][:k]
        s = np.sqrt(np.maximum(evals[order], 0.0))
        comps = (evecs[:, order].T @ Xc) / s[:, None]         # U = Λ^{-1/2} Wᵀ Xc
    else:
        _, s, vt = np.linalg.svd(Xc, full_matrices=False)
        s, comps = s[:k], vt[:k]
    comps = comps * np.where(comps[:, :1] < 0, -1.0, 1.0)     # official sign rule: first entry positive
    total = float(np.sum(Xc ** 2))
    return PCAResult(components=comps.reshape((k,) + shape).astype(np.float32),
                     std=(s / np.sqrt(n - 1)).astype(np.float32),
                     mean=mean.reshape(shape).astype(np.float32),
                     explained_variance_ratio=(s ** 2 / total).astype(np.float32))


def collect_h(model, params, xs_t, t, batch_size: int = 64) -> np.ndarray:
    """Mid-block outputs h [N, h, w, Cmid] of images ``xs_t [N, H, W, C]`` at scalar timestep ``t``."""
    enc = jax.jit(encode_fn(model, params))
    xs_t = jnp.asarray(xs_t)
    out = []
    for i in range(0, xs_t.shape[0], batch_size):
        xb = xs_t[i:i + batch_size]
        out.append(np.asarray(enc(xb, jnp.full((xb.shape[0],), t))[0]))
    return np.concatenate(out)


def pca_h(model, params, xs_t, t, k: int, batch_size: int = 64) -> PCAResult:
    """PCA of h over samples ``xs_t [N, H, W, C]`` at one timestep ``t`` (Haas ``get_PCs_indv``, one t)."""
    return pca(collect_h(model, params, xs_t, t, batch_size), k)


def mean_difference(h_pos, h_neg) -> np.ndarray:
    """Supervised direction: mean of positives minus mean of negatives, ``[N, ...], [M, ...] -> [...]``.

    Not normalised (as the official ``anycost.py``); apply it over the whole trajectory with a scale.
    """
    h_pos, h_neg = np.asarray(h_pos, np.float64), np.asarray(h_neg, np.float64)
    if h_pos.shape[1:] != h_neg.shape[1:] or h_pos.shape[0] < 1 or h_neg.shape[0] < 1:
        raise ValueError(f"mean_difference needs non-empty [N, ...] arrays of one shape, "
                         f"got {h_pos.shape}, {h_neg.shape}")
    return (h_pos.mean(0) - h_neg.mean(0)).astype(np.float32)
