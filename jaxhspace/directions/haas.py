"""Haas et al. (FG 2024) h-space directions: the SVD of J = ∂ε/∂h (skips and temb fixed).

The official code runs power iteration on JJᵀ in ε-space with sequential deflation, k = 3, and returns
the h-space right singular vectors Jᵀu/σ (``renhaa/semantic-diffusion@91f0a15:editing/jacobian.py:18-90``).
Here the same matrix-free engine as the pullback gives all k at once; ``v`` (input side) lives in H and is what
gets added as Δh.

Official edit (``get_direction`` / ``power_direction_overview`` with ``global_at_idx`` and ``apply_svals``,
renhaa/semantic-diffusion@91f0a15:editing/direction_plotter.py:113-121): the vector v_k of ONE timestep t_J is
repeated at every step, and step t is multiplied by THAT step's σ_k(t), i.e. Δh_t = scale·σ_k(t)·v_k(t_J), with
σ_k(t) from the SVD at every step of the unedited trajectory
(``renhaa/semantic-diffusion@91f0a15:editing/jacobian.py:199-223``).
:func:`haas_trajectory_svd` computes those σ_k(t) and :func:`haas_schedule_delta` builds the per-step Δh table;
a constant Δh = scale·σ_k(t_J)·v_k(t_J) is the non-official ``sigma_schedule="constant"`` of the haas job.
"""
from __future__ import annotations

import functools

import jax
import jax.numpy as jnp
import numpy as np

from jaxhspace.directions._solve import top_k_svd
from jaxhspace.directions.pullback import _check_image, _per_model
from jaxhspace.geometry.operators import JacobianOperator
from jaxhspace.diffusion.ddim import ddim_step
from jaxhspace.diffusion.schedule import alpha_bar
from jaxhspace.geometry.svd import SVDResult
from jaxhspace.models.functional import encode_fn, eps_fn, eps_of_h


@_per_model
def _haas_fns(model):
    """Per-model functions with params and the point as arguments (compiled once per model and shapes):
    ``encode(params, x [1,H,W,C], t) -> (h, skips, temb)`` (jitted), ``f((params, skips, temb), h) -> ε`` (the
    operator's function) and ``eps(params, x [B,H,W,C], t [B]) -> ε`` (jitted)."""

    def encode(params, x, t):
        return encode_fn(model, params)(x, jnp.full((1,), t))

    def f(args, h):
        params, skips, temb = args
        return eps_of_h(model, params, skips, temb)(h)

    return jax.jit(encode), f, jax.jit(lambda params, x, t: eps_fn(model, params)(x, t))


def haas_operator(model, params, x_t, t, chunk_size=None, compute_dtype=None) -> JacobianOperator:
    """J = ∂ε/∂h at the h of one image ``x_t [H, W, C]``, scalar ``t``: ``[H*W*C, h*w*Cmid]``.

    ``params``, the skips and temb are arguments of the (cached) linearisation, not constants: operators at new
    images or timesteps of the same shapes re-use the compiled programs (:class:`JacobianOperator`'s ``args``)."""
    x_t = _check_image(x_t, model.config.in_channels)
    encode, f, _ = _haas_fns(model)
    h, skips, temb = encode(params, x_t[None], t)
    return JacobianOperator(f, h[0], args=(params, skips, temb), chunk_size=chunk_size, compute_dtype=compute_dtype)


def haas_jacobian(model, params, x_t, t, k: int, key, method: str = "lanczos", chunk_size=None,
                  compute_dtype=None, **svd_kwargs) -> SVDResult:
    """Top-k singular triplets of J = ∂ε/∂h at (x_t, t).

    Args:
      x_t: [H, W, C] one noisy image; t: scalar timestep; k: number of directions (official: 3).
      Other args as :func:`jaxhspace.directions.pullback.pullback`.

    Returns:
      SVDResult with v [k, h, w, Cmid] (unit Δh directions in H), u [k, H, W, C] (ε-space), s [k].

    As for :func:`~jaxhspace.directions.pullback.pullback`, only the first call per model, shapes, k and solver
    settings compiles; later points (images, timesteps) re-use the compiled encoder, linearisation and solver.
    """
    op = haas_operator(model, params, x_t, t, chunk_size, compute_dtype)
    return top_k_svd(op, k, key, method, **svd_kwargs)


def haas_trajectory_svd(model, params, schedule, x_T, timesteps, k: int, key, method: str = "lanczos",
                        chunk_size=None, compute_dtype=None, batch_steps: int = 1,
                        **svd_kwargs) -> tuple[np.ndarray, np.ndarray]:
    """Top-k SVD of J = ∂ε/∂h at every step of the unedited DDIM (η = 0) trajectory from ``x_T``.

    The official ``calc_power_dirs`` walks the reverse process from x_T and takes the SVD at each of its
    timesteps (``renhaa/semantic-diffusion@91f0a15:editing/jacobian.py:199-223``; its η = 1 walk draws fresh
    noise, here the walk is deterministic).
    Step i is at t = timesteps[i] and moves to timesteps[i + 1] (ᾱ = 1 after the last).

    Args:
      x_T: [H, W, C] one latent (e.g. the DDIM inversion of a face); timesteps: [S] strictly descending ints.
      k: singular triplets per step (small k: one cheap solve per step; all steps share one compiled solver).
        Other args as :func:`haas_jacobian` (step i uses ``fold_in(key, i)``).
      batch_steps: SVDs solved together (``method="lanczos"`` only): the trajectory is walked first, then
        ``batch_steps`` steps at a time go through one batched Lanczos loop
        (:func:`~jaxhspace.geometry.lanczos.lanczos_svd_batch_of`: one batched product per block step for all of
        them). Same start vectors and results as one by one, to float32 round-off; memory grows with
        ``batch_steps`` (one linearisation of the decoder per step). For accelerators: a group runs until its
        slowest SVD converges, the others' products masked, so on one CPU core it was slower (shipped DDPM, 20
        steps, k = 3, tol 1e-3: 10.0 s one by one, 10.2 / 11.4 / 12.5 s with 5 / 10 / 20 at a time).

    Returns:
      ``(s [S, k], v [S, k, h, w, Cmid])``: σ_k(t) and the unit h-space right singular vectors at every step.
    """
    ts = np.asarray(timesteps, np.int64).reshape(-1)
    if ts.size == 0 or np.any(np.diff(ts) >= 0):
        raise ValueError(f"timesteps must be a non-empty strictly descending list, got {ts.tolist()}")
    if int(batch_steps) > 1:  # checked before the walk
        from jaxhspace.geometry.lanczos import solver_options

        if method != "lanczos":
            raise ValueError(f"batch_steps > 1 needs method='lanczos' (the batched loop), got {method!r}")
        if compute_dtype is not None:
            raise ValueError("batch_steps > 1 does not take compute_dtype; use batch_steps=1 for reduced-precision "
                             "products")
        opts = tuple(sorted(solver_options("haas_trajectory_svd", **svd_kwargs).items()))
    eps = _haas_fns(model)[2]
    x = jnp.asarray(x_T, jnp.float32)[None]
    points = []  # x_t [1, H, W, C] at each step of the walk
    for i, t in enumerate(ts):
        points.append(x)
        a_prev = alpha_bar(schedule, int(ts[i + 1])) if i + 1 < ts.size else 1.0
        x = ddim_step(x, eps(params, x, jnp.full((1,), int(t))), alpha_bar(schedule, int(t)), a_prev)
    if int(batch_steps) > 1:
        return _trajectory_svd_batched(model, params, points, ts, k, key, int(batch_steps), chunk_size, opts)
    ss, vs = [], []
    for i, t in enumerate(ts):
        res = haas_jacobian(model, params, points[i][0], int(t), k, jax.random.fold_in(key, i), method, chunk_size,
                            compute_dtype, **svd_kwargs)
        ss.append(np.asarray(res.s))
        vs.append(np.asarray(res.v))
    return np.stack(ss), np.stack(vs)


@_per_model
def _haas_batch_solver(model):
    """``solve(params, hs [B, h, w, C], skips, temb, keys [B], k=, opts=)``: top-k SVDs of ∂ε/∂h at B points (their
    skips / temb stacked on a leading axis) in one batched Lanczos loop; compiled once per model and shapes."""
    from jaxhspace.geometry.lanczos import lanczos_svd_batch_of

    f = _haas_fns(model)[1]

    @functools.partial(jax.jit, static_argnames=("k", "opts", "chunk_size"))
    def solve(params, hs, skips, temb, keys, *, k, opts, chunk_size):
        return lanczos_svd_batch_of(lambda h, a: f((params, a[0], a[1]), h), hs, k, keys, args=(skips, temb),
                                    chunk_size=chunk_size, **dict(opts))

    return solve


def _trajectory_svd_batched(model, params, points, ts, k, key, batch, chunk_size, opts):
    """:func:`haas_trajectory_svd` with ``batch_steps > 1`` on the walked ``points``: ``batch`` steps at a time (the
    last group padded by repeating its last step, so every group has one compiled shape); ``opts``: the solver's
    keywords as sorted pairs."""
    encode = _haas_fns(model)[0]
    enc = [encode(params, x, int(t)) for x, t in zip(points, ts)]  # (h, skips, temb) per step
    solve = _haas_batch_solver(model)
    ss, vs = [], []
    for g in range(0, ts.size, batch):
        idx = [min(i, ts.size - 1) for i in range(g, g + batch)]
        hs = jnp.stack([enc[i][0][0] for i in idx])
        skips = jax.tree.map(lambda *a: jnp.stack(a), *[enc[i][1] for i in idx])
        temb = jnp.stack([enc[i][2] for i in idx])
        keys = jnp.stack([jax.random.fold_in(key, i) for i in idx])
        res = solve(params, hs, skips, temb, keys, k=k, opts=opts, chunk_size=chunk_size)
        if bool(jnp.any(res.nan)):
            raise FloatingPointError("the Jacobian operator returned NaN or inf during the batched Lanczos "
                                     f"iteration at timesteps {[int(ts[i]) for i in idx]}")
        n = min(batch, ts.size - g)
        ss.append(np.asarray(res.s)[:n])
        vs.append(np.asarray(res.v)[:n])
    return np.concatenate(ss), np.concatenate(vs)


def haas_schedule_delta(s, v, timesteps, t_index: int, directions, sigma_schedule: str = "per_step"):
    """Δh tables of the official Haas edit: row t = σ_d(t)·v_d(t_J) (``"per_step"``), or σ_d(t_J)·v_d(t_J) at
    every step (``"constant"``, not the official scaling).

    Args:
      s: [S, k] σ along the grid; v: [S, k, h, w, C] unit vectors (only row ``t_index`` is used);
      timesteps: [S] the grid; t_index: the row of t_J; directions: the d's to build.

    Returns:
      a stacked :class:`~jaxhspace.editing.asyrp_edit.TableDelta` (leading axis = ``len(directions)``), table
      ``[D, S, h, w, C]``, for ``asyrp_edit(..., stacked=True)``.
    """
    from jaxhspace.editing.asyrp_edit import TableDelta

    s, v = np.asarray(s, np.float32), np.asarray(v, np.float32)
    if sigma_schedule not in ("per_step", "constant"):
        raise ValueError(f"sigma_schedule must be 'per_step' (official) or 'constant', got {sigma_schedule!r}")
    sig = s if sigma_schedule == "per_step" else np.broadcast_to(s[t_index], s.shape)  # [S, k]
    table = np.stack([sig[:, d, None, None, None] * v[t_index, d][None] for d in directions])  # [D, S, h, w, C]
    return TableDelta(jnp.asarray(table), tuple(int(t) for t in np.asarray(timesteps).reshape(-1)))
