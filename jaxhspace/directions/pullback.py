"""Riemannian pullback directions (Park et al., NeurIPS 2023): the SVD of J = ∂h/∂x at (x_t, t).

Right singular vectors v_i live in X (the image space at time t), left ones u_i = J v_i / σ_i in H
(the mid-block output). The official code runs block subspace iteration on JᵀJ (k = 50, 10-50
iterations, k JVPs + k VJPs each; ``enkeejunior1/Diffusion-Pullback@859c012:src/utils/utils.py:165-249``)
and returns u from the pre-SVD iterate, so its (u, v) pairs carry random relative signs. Here ``jax.linearize``
evaluates the encoder once, ``jax.linear_transpose`` gives Jᵀ, thick-restart Lanczos bidiagonalisation (default;
randomized block Krylov and subspace iteration by name) replaces subspace iteration, and u = J v / σ is
sign-consistent with v.
"""
from __future__ import annotations

import functools

import jax.numpy as jnp

from jaxhspace.directions._solve import top_k_svd
from jaxhspace.geometry.operators import JacobianOperator
from jaxhspace.geometry.svd import SVDResult
from jaxhspace.models.functional import h_of_x


def _check_image(x_t, in_channels: int, name: str = "x_t"):
    x_t = jnp.asarray(x_t)
    if x_t.ndim != 3 or x_t.shape[-1] != in_channels:
        raise ValueError(f"{name} must be one image [H, W, {in_channels}] (NHWC without the batch axis), "
                         f"got shape {tuple(x_t.shape)}; use jax.vmap or a loop for a batch")
    if not bool(jnp.all(jnp.isfinite(x_t))):
        raise ValueError(f"{name} contains NaN or inf")
    return x_t


def _per_model(builder):
    """``builder(model)`` memoised on ``model`` (``==``/hash: equal UNet configs share one entry, a
    :class:`~jaxhspace.models.conditioning.Conditioned` is its own), so the function it returns is the same object
    on every call: a static argument that lets jitted programs keyed on it be compiled once per model and shapes.
    An unhashable model gets a fresh function (correct, but compiled again per call)."""
    cached = functools.lru_cache(maxsize=16)(builder)

    @functools.wraps(builder)
    def get(model):
        try:
            return cached(model)
        except TypeError:  # unhashable model
            return builder(model)

    return get


@_per_model
def _h_of_x_at(model):
    """``f((params, t), x [H, W, C]) -> h [h, w, Cmid]`` (:func:`h_of_x` with params and t as arguments)."""

    def f(args, x):
        params, t = args
        return h_of_x(model, params, t)(x)

    return f


def pullback_operator(model, params, x_t, t, chunk_size=None, compute_dtype=None) -> JacobianOperator:
    """J = ∂h/∂x at one image ``x_t [H, W, C]`` and scalar ``t``: a ``[h*w*Cmid, H*W*C]`` operator.

    ``params`` and ``t`` are arguments of the (cached) linearisation, not constants: operators at new images or
    timesteps of the same shapes re-use the compiled programs (see :class:`JacobianOperator`'s ``args``)."""
    x_t = _check_image(x_t, model.config.in_channels)
    return JacobianOperator(_h_of_x_at(model), x_t, args=(params, t), chunk_size=chunk_size,
                            compute_dtype=compute_dtype)


def pullback(model, params, x_t, t, k: int, key, method: str = "lanczos", chunk_size=None,
             compute_dtype=None, **svd_kwargs) -> SVDResult:
    """Top-k singular triplets of J = ∂h/∂x at (x_t, t).

    Args:
      model, params: the UNet2DModel and its params.
      x_t: [H, W, C] one noisy image at timestep t.
      t: scalar timestep (int or float; the official code passes float t).
      k: number of directions (official: 50 for transport/sampling, 2 in the editing script).
      key: PRNG key (or int seed) for the random start block.
      method: "lanczos" (thick-restart Lanczos bidiagonalisation, default), "krylov" (randomized block
        Krylov) or "subspace" (block power iteration).
      chunk_size, compute_dtype: passed to :class:`JacobianOperator` (memory bound, bf16 products).
      **svd_kwargs: tol, max_iters, block_size, ... of the SVD method.

    Returns:
      SVDResult with v [k, H, W, C] (unit directions in X), u [k, h, w, Cmid] (in H), s [k], and the
      number of JVPs/VJPs spent.

    Only the first call per model, image shape, k and solver settings compiles: (x_t, t), params and key are
    arguments of the compiled linearisation and solver, so calls at other images or timesteps re-use them.
    """
    op = pullback_operator(model, params, x_t, t, chunk_size, compute_dtype)
    return top_k_svd(op, k, key, method, **svd_kwargs)
