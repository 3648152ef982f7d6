"""DDIM: x0-prediction, the (η-)DDIM step, sampling and inversion with ``lax.scan``.

Pure, model-agnostic functions. A model enters only as ``eps_fn(x, t) -> eps`` with
``x`` [B, H, W, C] float32 (NHWC; any trailing shape works) and ``t`` [B] int32.

Update (DDIM paper eq. 12; Asyrp kwonminki/Asyrp_official@a6c82dc:utils/diffusion_utils.py:84-97)::

    P_t    = (x_t - sqrt(1 - a_t) eps) / sqrt(a_t)                            # predicted x0, never clamped
    sigma  = eta * sqrt((1 - a_t / a_prev) * (1 - a_prev) / (1 - a_t))          # = DDIM sigma_t(eta)
    x_prev = sqrt(a_prev) P_t + sqrt(1 - a_prev - sigma^2) eps + sigma z

with ``a = ᾱ`` (``ᾱ_{-1} = 1``). sigma is evaluated in the official Asyrp operation order (one square
root of a product); diffusers evaluates ``eta * sqrt((1-a_prev)/(1-a_t) * (1 - a_t/a_prev))`` — the
same number up to float32 rounding (~1e-7).

Differences from diffusers' ``DDIMScheduler`` (documented, tested in tests/test_ddim.py):

* the predicted x0 is **never clipped** (diffusers: ``clip_sample=True`` by default, and the
  google/ddpm-* configs keep it on); to compare, build the diffusers scheduler with ``clip_sample=False``.
* the previous timestep is the next grid point (:func:`~jaxhspace.diffusion.schedule.sampling_pairs`),
  not ``t - T // n``; they coincide for diffusers' default ``"leading"`` spacing. Pass
  ``prev_timesteps=diffusers_prev_timesteps(ts)`` to reproduce diffusers for other spacings.
* only ε-prediction; no thresholding.

Jitting: :func:`ddim_sample` / :func:`ddim_invert` compile their scan with ``eps_fn`` as a *static*
argument (cached on the function object's identity). Build ``eps_fn`` once, or call these functions
inside your own ``jax.jit`` with the model parameters as a traced argument (then ``eps_fn`` closes
over tracers, nothing is baked into the program as a constant, and the inner jit is simply inlined).
"""
from __future__ import annotations

from functools import partial
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxhspace.diffusion.schedule import (
    Schedule,
    alpha_bar,
    inversion_pairs,
    sampling_pairs,
)

EpsFn = Callable[[jax.Array, jax.Array], jax.Array]


# ----------------------------------------------------------------------------------------------
# Single-step primitives
# ----------------------------------------------------------------------------------------------
def _bcast(a, x: jax.Array) -> jax.Array:
    """Scalar stays scalar; a per-example [B] (or [B, ...]) coefficient gets trailing 1-axes to x.ndim."""
    a = jnp.asarray(a, dtype=x.dtype)
    if a.ndim == 0:
        return a
    if a.ndim > x.ndim:
        raise ValueError(f"coefficient of shape {a.shape} does not broadcast over x of shape {x.shape}")
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim))


def _is_static_zero(eta) -> bool:
    return isinstance(eta, (int, float, np.integer, np.floating)) and float(eta) == 0.0


def predict_x0(x_t: jax.Array, eps: jax.Array, a_t) -> jax.Array:
    """P_t(ε) = (x_t − √(1−ᾱ_t)·ε) / √ᾱ_t, the predicted clean image.

    Never clamped (as in Asyrp; unlike diffusers' ``clip_sample=True``, which clamps to [-1, 1]).

    Args:
      x_t: [B, ...] noisy sample.
      eps: [B, ...] predicted noise.
      a_t: ᾱ_t, a scalar or [B] (broadcast to [B, 1, 1, 1]).

    Returns:
      [B, ...] predicted x0.
    """
    a = _bcast(a_t, x_t)
    return (x_t - jnp.sqrt(1.0 - a) * eps) / jnp.sqrt(a)


def clipped_eps_fn(eps_fn: EpsFn, schedule: Schedule, clip_range: float = 1.0) -> EpsFn:
    """Wrap ``eps_fn`` so that the predicted x_0 is clipped to [-clip_range, clip_range] and ε re-derived
    from it: ε' = (x_t − √ᾱ_t·clip(P_t)) / √(1−ᾱ_t). Sampling with it equals diffusers' DDIMScheduler with
    ``clip_sample=True`` and ``step(..., use_clipped_model_output=True)`` (Ho et al.'s ``clip_denoised``).
    Not for inversion or Asyrp editing (the official codes never clip). ``(x [B,H,W,C], t [B]) -> [B,H,W,C]``."""
    ac = schedule.alphas_cumprod

    def f(x, t):
        e = eps_fn(x, t)
        a = _bcast(ac[t], x)
        x0 = jnp.clip((x - jnp.sqrt(1.0 - a) * e) / jnp.sqrt(a), -clip_range, clip_range)
        return (x - jnp.sqrt(a) * x0) / jnp.sqrt(1.0 - a)

    return f


def ddim_coefficients(a_t, a_prev, eta=0.0) -> tuple[jax.Array, jax.Array]:
    """DDIM coefficients ``(sigma, c_dir)`` for the step ᾱ_t → ᾱ_prev (official Asyrp form).

    ``sigma = eta·√((1 − a_t/a_prev)(1 − a_prev)/(1 − a_t))`` (the noise scale, "c1" in the official
    code) and ``c_dir = √(1 − a_prev − sigma²)`` ("c2"). Arguments broadcast against each other.
    The radicands are clamped at 0, so for an inversion-direction step (a_prev < a_t) sigma is 0
    and a rounding-negative ``1 − a_prev − sigma²`` gives 0 instead of NaN.
    """
    a_t = jnp.asarray(a_t)
    a_prev = jnp.asarray(a_prev)
    ratio = (1.0 - a_t / a_prev) * (1.0 - a_prev) / (1.0 - a_t)
    sigma = jnp.asarray(eta, a_t.dtype) * jnp.sqrt(jnp.maximum(ratio, 0.0))
    c_dir = jnp.sqrt(jnp.maximum((1.0 - a_prev) - sigma**2, 0.0))
    return sigma, c_dir


def _step_core(x_t, eps_x0, eps_dir, a_t, a_prev, eta, noise):
    """√a_prev·P_t(eps_x0) + c_dir·eps_dir + sigma·noise; shared by ddim_step and asyrp_step.

    Returns (x_prev, P_t). Coefficients are scalars or [B] (broadcast to x).
    """
    if noise is None and not _is_static_zero(eta):
        raise ValueError("eta > 0 needs `noise` (a standard normal array shaped like x_t)")
    at = _bcast(a_t, x_t)
    ap = _bcast(a_prev, x_t)
    et = _bcast(eta, x_t)
    x0 = (x_t - jnp.sqrt(1.0 - at) * eps_x0) / jnp.sqrt(at)
    sigma, c_dir = ddim_coefficients(at, ap, et)
    x = jnp.sqrt(ap) * x0 + c_dir * eps_dir
    if noise is not None:
        x = x + sigma * noise
    return x, x0


def ddim_step(
    x_t: jax.Array,
    eps: jax.Array,
    a_t,
    a_prev,
    eta=0.0,
    noise: Optional[jax.Array] = None,
    return_pred_x0: bool = False,
):
    """One DDIM update x_t → x_prev: √ᾱ_prev·P_t + √(1−ᾱ_prev−σ²)·ε + σ·z.

    σ = η√((1−ᾱ_prev)/(1−ᾱ_t))·√(1−ᾱ_t/ᾱ_prev), computed as in :func:`ddim_coefficients`.
    The same function run with ᾱ_prev < ᾱ_t (and η = 0) is the DDIM inversion step.

    Args:
      x_t: [B, H, W, C] sample at t.
      eps: [B, H, W, C] ε(x_t, t).
      a_t, a_prev: ᾱ_t and ᾱ_prev, scalars or [B] (→ [B, 1, 1, 1]); ᾱ_prev = 1 for the last step.
      eta: η (scalar or [B]); 0 = deterministic DDIM, 1 = DDPM-like.
      noise: z, [B, H, W, C] standard normal; required unless ``eta`` is the Python number 0.
      return_pred_x0: also return P_t.

    Returns:
      x_prev [B, H, W, C] (and P_t [B, H, W, C] if ``return_pred_x0``).

    Pure, jit-able, vmap-able (vmap over the batch axis with scalar ᾱ per example).
    """
    x, x0 = _step_core(x_t, eps, eps, a_t, a_prev, eta, noise)
    return (x, x0) if return_pred_x0 else x


# ----------------------------------------------------------------------------------------------
# Driver: one lax.scan (jit-compiled) or a Python loop with tqdm over the same jitted step
# ----------------------------------------------------------------------------------------------
def _step_noise(key, z, i, x):
    """Noise of step i: the precomputed z (already sliced), else N(0, I) from fold_in(key, i)."""
    if z is not None:
        return z.astype(x.dtype)
    if key is None:
        return None
    return jax.random.normal(jax.random.fold_in(key, i), x.shape, x.dtype)


@partial(jax.jit, static_argnums=(0, 1, 5))
def _scan(step_fn, static, consts, x, per_step, trajectory):
    def body(c, inp):
        c2, out = step_fn(static, consts, c, inp)
        return c2, (out if trajectory else None)

    return lax.scan(body, x, per_step)


@partial(jax.jit, static_argnums=(0, 1))
def _one_step(step_fn, static, consts, x, inp):
    return step_fn(static, consts, x, inp)


def run_steps(step_fn, static, consts, x, per_step, trajectory=False, progress=False, desc="ddim"):
    """Apply ``step_fn`` over the leading axis of ``per_step`` (internal driver, also used by asyrp).

    ``step_fn(static, consts, x, inp) -> (x_new, out)`` must be a module-level pure function;
    ``static`` is a hashable tuple (e.g. ``(eps_fn, flags)``). With ``progress=False`` the loop is one
    jit-compiled ``lax.scan``; with ``progress=True`` it is a Python loop over the *same* jitted step
    with a tqdm bar (same numbers; one dispatch per step).

    Returns:
      (x_final, outs) with outs the per-step outputs stacked on axis 0 (None unless ``trajectory``).
    """
    per_step = jax.tree_util.tree_map(jnp.asarray, per_step)
    n = jax.tree_util.tree_leaves(per_step)[0].shape[0]
    if not progress:
        return _scan(step_fn, static, consts, x, per_step, bool(trajectory))
    from tqdm.auto import tqdm

    outs = []
    for i in tqdm(range(n), desc=desc):
        inp = jax.tree_util.tree_map(lambda a: a[i], per_step)
        x, out = _one_step(step_fn, static, consts, x, inp)
        if trajectory:
            outs.append(out)
    if not trajectory or not outs:
        return x, None
    return x, jax.tree_util.tree_map(lambda *a: jnp.stack(a), *outs)


def _ddim_step_fn(static, consts, x, inp):
    eps_fn, stochastic = static
    key = consts
    i, t, a_t, a_prev, eta, z = inp
    tb = jnp.full((x.shape[0],), t, jnp.int32)
    eps = eps_fn(x, tb)
    noise = _step_noise(key, z, i, x) if stochastic else None
    x_new, x0 = _step_core(x, eps, eps, a_t, a_prev, eta if stochastic else 0.0, noise)
    return x_new, {"x": x_new, "pred_x0": x0}


def _check_x(x):
    x = jnp.asarray(x)
    if x.ndim < 2:
        raise ValueError(f"x must be batched, [B, H, W, C]; got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be a float array, got {x.dtype}")
    return x


def check_values(x, name: str, images: bool = False) -> None:
    """Host-side entry check of an input array (once per call, before any model evaluation): NaN / inf, and, with
    ``images=True``, images given as 0..255 pixel values instead of [-1, 1] (all values >= 0 and some above 1.5;
    latents and [-1, 1] images are never all non-negative with such a maximum).

    Costs one reduction and one transfer of two scalars; skipped for traced ``x`` (inside a caller's ``jit`` /
    ``vmap``), so nothing runs per step. Raises :class:`jaxhspace.errors.JaxhspaceError` naming ``name``.
    """
    if isinstance(x, jax.core.Tracer) or np.size(x) == 0:
        return
    with jax.ensure_compile_time_eval():  # a concrete x closed over inside a caller's jit: evaluated while tracing
        x = jnp.asarray(x)
        lo, hi = (float(v) for v in jax.device_get((jnp.min(x), jnp.max(x))))
    if not (np.isfinite(lo) and np.isfinite(hi)):
        from jaxhspace.errors import JaxhspaceError

        with jax.ensure_compile_time_eval():
            n = int(jnp.sum(~jnp.isfinite(x)))
        raise JaxhspaceError(f"{name} contains NaN or inf ({n} of {x.size} values); pass finite values (check the "
                             "images / latents it was computed from).")
    if images and lo >= 0.0 and hi > 1.5:
        from jaxhspace.errors import JaxhspaceError

        raise JaxhspaceError(f"{name} has values in [{lo:g}, {hi:g}]: it looks like 0..255 pixel values, but images "
                             "must lie in [-1, 1]; pass x / 127.5 - 1 (jaxhspace.data.images.load_images reads image "
                             "files in [-1, 1]).")


def check_timesteps(timesteps, schedule: Schedule, name: str = "timesteps", allow_final: bool = False) -> None:
    """Host-side check that model timesteps are finite and lie in [0, num_train_timesteps) (with ``allow_final``,
    -1 = ᾱ 1 is also allowed, as for a previous timestep). Raises :class:`jaxhspace.errors.JaxhspaceError`."""
    if isinstance(timesteps, jax.core.Tracer):
        return
    t = np.asarray(timesteps).reshape(-1)
    if t.size == 0:
        return
    T = int(schedule.num_train_timesteps)
    lo = -1 if allow_final else 0
    if not np.issubdtype(t.dtype, np.number) or np.issubdtype(t.dtype, np.complexfloating):
        bad = t[:3]
    else:
        t = t.astype(np.float64)
        bad = t[~np.isfinite(t) | (t < lo) | (t >= T)]
    if bad.size:
        from jaxhspace.errors import JaxhspaceError

        raise JaxhspaceError(
            f"{name} must be integers in [{lo}, {T}) (the schedule's num_train_timesteps = {T}"
            f"{'; -1 means ᾱ = 1' if allow_final else ''}); got {', '.join(str(v) for v in bad[:5])}"
            f"{' ...' if bad.size > 5 else ''}. Build grids with ddim_timesteps(n, num_train_timesteps={T}) or "
            f"asyrp_timesteps(n, t0={T - 1}).")


def _prepare_noise(stochastic, key, noise, n_steps, x):
    if not stochastic:
        return None, None
    if noise is not None:
        noise = jnp.asarray(noise, x.dtype)
        if noise.shape != (n_steps,) + x.shape:
            raise ValueError(f"noise must have shape [S, *x.shape] = {(n_steps,) + x.shape}, got {noise.shape}")
        return None, noise
    if key is None:
        raise ValueError("eta > 0 needs a PRNG `key` (or precomputed `noise` of shape [S, *x.shape])")
    return key, None


def ddim_sample(
    eps_fn: EpsFn,
    x_T: jax.Array,
    timesteps: Sequence[int] | np.ndarray,
    schedule: Schedule,
    eta: float = 0.0,
    key: Optional[jax.Array] = None,
    noise: Optional[jax.Array] = None,
    prev_timesteps: Optional[Sequence[int] | np.ndarray] = None,
    return_trajectory: bool = False,
    progress: bool = False,
):
    """DDIM sampling from x_T along a descending grid (one ``lax.scan``, jit-compiled).

    Step i evaluates ``eps_fn(x, t_i)`` with ``t_i`` broadcast to [B] (int32) and moves to
    ``prev_timesteps[i]`` (default: the next grid point, and -1, i.e. ᾱ = 1, after the last one —
    see :func:`~jaxhspace.diffusion.schedule.sampling_pairs`).

    Args:
      eps_fn: ``(x [B,H,W,C], t [B] int32) -> eps [B,H,W,C]``; static for jit (hash = identity).
      x_T: [B, H, W, C] starting noise (or an inverted latent).
      timesteps: [S] strictly descending ints, e.g. ``ddim_timesteps(50)`` or ``asyrp_timesteps(40)[::-1]``.
      schedule: the :class:`~jaxhspace.diffusion.schedule.Schedule`.
      eta: η (a Python float; 0 = deterministic).
      key: PRNG key for η > 0; step i uses ``jax.random.fold_in(key, i)`` (i = index in the grid),
        so results are deterministic for a key and identical between the scan and tqdm paths.
      noise: alternatively, precomputed z of shape [S, B, H, W, C] (e.g. to match diffusers'
        ``variance_noise``). Takes precedence over ``key``.
      prev_timesteps: [S] explicit previous timesteps (-1 = ᾱ 1), e.g. ``diffusers_prev_timesteps(ts)``.
      return_trajectory: also return ``{"x": [S,B,H,W,C] state after each step, "pred_x0": [S,B,H,W,C],
        "t": [S], "t_prev": [S]}``.
      progress: run a Python loop with a tqdm bar over the same jitted step instead of the scan.

    Returns:
      x_0 [B, H, W, C] (and the trajectory dict if requested).

    Raises:
      JaxhspaceError (a ValueError), before any model call: timesteps outside [0, num_train_timesteps) or not
      finite, NaN / inf in a concrete ``x_T`` (:func:`check_timesteps`, :func:`check_values`).
    """
    x_T = _check_x(x_T)
    check_timesteps(timesteps, schedule)
    if prev_timesteps is not None:
        check_timesteps(prev_timesteps, schedule, "prev_timesteps", allow_final=True)
    check_values(x_T, "x_T")
    if prev_timesteps is None:
        ts, tps = sampling_pairs(timesteps)
    else:
        ts, _ = sampling_pairs(timesteps)
        tps = np.asarray(prev_timesteps, dtype=np.int64).reshape(-1)
        if tps.shape != ts.shape:
            raise ValueError(f"prev_timesteps must have shape {ts.shape}, got {tps.shape}")
    S = ts.size
    stochastic = not _is_static_zero(eta)
    key, z = _prepare_noise(stochastic, key, noise, S, x_T)
    per_step = (
        np.arange(S, dtype=np.int32),
        ts.astype(np.int32),
        alpha_bar(schedule, ts),
        alpha_bar(schedule, tps),
        jnp.full((S,), eta, x_T.dtype),
        z,
    )
    x, outs = run_steps(_ddim_step_fn, (eps_fn, stochastic), key, x_T, per_step,
                        return_trajectory, progress, desc="ddim sample")
    if not return_trajectory:
        return x
    return x, dict(outs, t=ts, t_prev=tps)


def _invert_step_fn(static, consts, x, inp):
    (eps_fn,) = static
    t, a_t, a_next = inp
    tb = jnp.full((x.shape[0],), t, jnp.int32)
    eps = eps_fn(x, tb)
    x_new, x0 = _step_core(x, eps, eps, a_t, a_next, 0.0, None)
    return x_new, {"x": x_new, "pred_x0": x0}


def ddim_invert(
    eps_fn: EpsFn,
    x0: jax.Array,
    timesteps: Sequence[int] | np.ndarray,
    schedule: Schedule,
    return_trajectory: bool = False,
    progress: bool = False,
):
    """Deterministic DDIM inversion (η = 0): the DDIM update run forward along an ascending grid.

    Asyrp convention (kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:1034-1044): start from the clean image
    *as if it were x at t = seq[0]* and step over pairs (seq[k], seq[k+1]), k = 0..n−2:
    ``x_{seq[k+1]} = √ᾱ_{k+1}·P_{seq[k]}(ε) + √(1−ᾱ_{k+1})·ε`` with ε = eps_fn(x, seq[k]).
    For ``asyrp_timesteps(n)`` the first ε is evaluated at t = 0 on the clean image with
    ᾱ_0 = 0.9999 (not 1) and the result is the latent at t = 999. The matching reconstruction is
    ``ddim_sample(eps_fn, x_lat, seq[::-1], schedule)``: n steps 999 → ... → seq[0] → −1 (ᾱ = 1).
    (diffusers' DDIMInverseScheduler uses a different grid/offset convention; not reproduced here.)

    Args:
      eps_fn: ``(x [B,H,W,C], t [B] int32) -> eps``.
      x0: [B, H, W, C] clean images in [-1, 1].
      timesteps: [n] strictly ascending, >= 0 (e.g. ``asyrp_timesteps(40)``).
      schedule: the Schedule.
      return_trajectory: also return ``{"x": [n-1,B,...] after each step, "pred_x0": [n-1,B,...],
        "t": [n-1], "t_next": [n-1]}``.
      progress: Python loop with tqdm instead of the scan (same numbers).

    Returns:
      x_lat [B, H, W, C] at t = seq[-1] (x0 itself if n = 1), and the trajectory if requested.

    Raises:
      JaxhspaceError (a ValueError), before any model call: timesteps outside [0, num_train_timesteps), NaN / inf
      in a concrete ``x0``, or ``x0`` in 0..255 instead of [-1, 1] (:func:`check_values` with ``images=True``).
    """
    x0 = _check_x(x0)
    check_timesteps(timesteps, schedule)
    ts, tns = inversion_pairs(timesteps)
    check_values(x0, "x0", images=True)
    if ts.size == 0:
        return (x0, {"x": x0[None][:0], "pred_x0": x0[None][:0], "t": ts, "t_next": tns}) if return_trajectory else x0
    per_step = (ts.astype(np.int32), alpha_bar(schedule, ts), alpha_bar(schedule, tns))
    x, outs = run_steps(_invert_step_fn, (eps_fn,), None, x0, per_step, return_trajectory, progress,
                        desc="ddim invert")
    if not return_trajectory:
        return x
    return x, dict(outs, t=ts, t_next=tns)
