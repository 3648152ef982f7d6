"""Editing along pullback directions (Park et al., NeurIPS 2023), ``x_space_guidance`` in the official code:

    x_{j+1} = x_j + γ·[ε(x_j + λ·v, t) − ε(x_j, t)],   j = 0..N−1            (official edit.py:1716-1734)

with a unit direction v in X at the editing time t (official: γ = 0.1, λ = 1, N = 16, v fixed), then
DDIM sampling continues from t to 0 with η = 1 ("performance boosting") below t_boost.

Beyond the official loop, :func:`reprojected_edit_steps` recomputes the local basis at every edited
point and re-projects the direction onto the new tangent space (v ← VᵀV v / ‖·‖), the seeds' steps 5-6.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

from jaxhspace.diffusion.asyrp import asyrp_reverse
from jaxhspace.diffusion.schedule import Schedule


def _check_direction(v):
    """Reject NaN and zero-norm directions (only for concrete values: under jit/vmap it is a no-op)."""
    v = jnp.asarray(v)
    if isinstance(v, jax.core.Tracer):
        return v
    norms = jnp.sqrt(jnp.sum(v.reshape(v.shape[0] if v.ndim == 4 else 1, -1) ** 2, axis=-1))
    if not bool(jnp.all(jnp.isfinite(v))):
        raise ValueError("direction v contains NaN or inf")
    if bool(jnp.any(norms == 0)):
        raise ValueError("direction v has zero norm; pass a unit singular vector (e.g. pullback(...).v[i])")
    return v


def edit_steps(eps_fn: Callable, x_t, t, v, gamma: float, n_steps: int, lam: float = 1.0,
               return_path: bool = False):
    """N steps of x ← x + γ[ε(x + λv, t) − ε(x, t)] with a fixed direction (one ``lax.scan``).

    Args:
      eps_fn: ``(x [B,H,W,C], t [B]) -> eps``.
      x_t: [B, H, W, C] images at timestep t.
      t: scalar timestep.
      v: [H, W, C] (same for every image) or [B, H, W, C] directions; official: unit norm.
      gamma: step size γ (official 0.1; γ = 0 leaves x_t unchanged exactly).
      n_steps: N (official 16).
      lam: λ, the probe length along v (official 1).
      return_path: also return the iterates [N, B, H, W, C].

    Returns:
      edited x_t [B, H, W, C] (and the path).
    """
    x_t = jnp.asarray(x_t)
    v = _check_direction(v)
    if n_steps < 0:
        raise ValueError(f"n_steps must be >= 0, got {n_steps}")
    tb = jnp.full((x_t.shape[0],), t)
    vb = jnp.broadcast_to(v, x_t.shape)

    def body(x, _):
        # One UNet call with batch 2B, as the official code (x and x + λv together).
        both = eps_fn(jnp.concatenate([x + lam * vb, x]), jnp.concatenate([tb, tb]))
        e_plus, e = jnp.split(both, 2)
        x = x + gamma * (e_plus - e)
        return x, x

    x, path = jax.lax.scan(body, x_t, None, length=n_steps)
    return (x, path) if return_path else x


def reprojected_edit_steps(eps_fn: Callable, basis_fn: Callable, x_t, t, v, gamma: float, n_steps: int,
                           lam: float = 1.0):
    """Like :func:`edit_steps` for one image, but before each step the direction is re-projected onto the
    tangent space at the current point: ``V = basis_fn(x) [k, H, W, C]`` (e.g. the top-k pullback v's),
    ``v ← Vᵀ(V v) / ‖Vᵀ(V v)‖`` with the sign kept so that ⟨v_new, v_old⟩ ≥ 0.

    Args:
      basis_fn: ``x [H, W, C] -> V [k, H, W, C]`` orthonormal rows (a Python function; it may run an SVD).
      x_t: [H, W, C]; v: [H, W, C] unit direction.

    Returns:
      (edited x_t [H, W, C], list of the directions used [N] of [H, W, C]).
    """
    x = jnp.asarray(x_t)
    v = _check_direction(jnp.asarray(v)[None])[0]
    used = []
    step = jax.jit(lambda x, v: edit_steps(eps_fn, x[None], t, v, gamma, 1, lam)[0])
    for _ in range(n_steps):
        V = jnp.asarray(basis_fn(x)).reshape(-1, v.size)
        p = V.T @ (V @ v.reshape(-1))
        norm = jnp.linalg.norm(p)
        if float(norm) == 0.0:
            raise ValueError("the direction is orthogonal to the new tangent space; use a larger basis k")
        p = (p / norm).reshape(v.shape)
        v = p * jnp.sign(jnp.vdot(p, v) + 1e-30)
        used.append(v)
        x = step(x, v)
    return x, used


def continue_sampling(eps_fn: Callable, x_t, timesteps, schedule: Schedule, t_boost: int = 0,
                      key=None):
    """DDIM from the edit time to x_0 along ``timesteps`` (descending, starting at the edit t), η = 1 below
    ``t_boost`` (official "performance boosting"; 0 disables it). [B, H, W, C] -> [B, H, W, C]."""

    def pair(x, t, edit):
        e = eps_fn(x, t)
        return e, e

    if t_boost > 0 and key is None:
        raise ValueError("t_boost > 0 adds noise: pass a PRNG key")
    return asyrp_reverse(pair, x_t, np.asarray(timesteps), schedule, t_edit=10 ** 9, t_boost=t_boost, key=key)
