"""Haas et al. (FG 2024) h-space directions: the SVD of J = ∂ε/∂h (skips and temb fixed).

The official code runs power iteration on JJᵀ in ε-space with sequential deflation, k = 3, and returns
the h-space right singular vectors Jᵀu/σ (``shared/reference/haas_official.md`` §2). Here the same
matrix-free engine as the pullback gives all k at once; ``v`` (input side) lives in H and is what gets
added as Δh (scaled by σ_k(t), as Haas' ``apply_svals``).
"""
from __future__ import annotations

import jax.numpy as jnp

from jaxhspace.directions._solve import top_k_svd
from jaxhspace.directions.pullback import _check_image
from jaxhspace.geometry.operators import JacobianOperator
from jaxhspace.geometry.svd import SVDResult
from jaxhspace.models.functional import encode_fn, eps_of_h


def haas_operator(model, params, x_t, t, chunk_size=None, compute_dtype=None) -> JacobianOperator:
    """J = ∂ε/∂h at the h of one image ``x_t [H, W, C]``, scalar ``t``: ``[H*W*C, h*w*Cmid]``."""
    x_t = _check_image(x_t, model.config.in_channels)
    h, skips, temb = encode_fn(model, params)(x_t[None], jnp.full((1,), t))
    return JacobianOperator(eps_of_h(model, params, skips, temb), h[0], chunk_size=chunk_size,
                            compute_dtype=compute_dtype)


def haas_jacobian(model, params, x_t, t, k: int, key, method: str = "lanczos", chunk_size=None,
                  compute_dtype=None, **svd_kwargs) -> SVDResult:
    """Top-k singular triplets of J = ∂ε/∂h at (x_t, t).

    Args:
      x_t: [H, W, C] one noisy image; t: scalar timestep; k: number of directions (official: 3).
      Other args as :func:`jaxhspace.directions.pullback.pullback`.

    Returns:
      SVDResult with v [k, h, w, Cmid] (unit Δh directions in H), u [k, H, W, C] (ε-space), s [k].
    """
    op = haas_operator(model, params, x_t, t, chunk_size, compute_dtype)
    return top_k_svd(op, k, key, method, **svd_kwargs)
