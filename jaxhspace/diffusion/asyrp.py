"""The asymmetric reverse process of Asyrp (Kwon et al., 2023), official form.

One step (kwonminki/Asyrp_official@a6c82dc:utils/diffusion_utils.py:84-97)::

    P_t    = (x_t - sqrt(1 - a_t) eps_edit) / sqrt(a_t)        # x0 from the *edited* eps (h + Δh)
    c1     = eta * sqrt((1 - a_t / a_prev) * (1 - a_prev) / (1 - a_t))
    c2     = sqrt(1 - a_prev - c1^2)
    x_prev = sqrt(a_prev) P_t + c2 * eps + c1 * z                # direction and noise: *unedited* eps

P_t is never clamped. The sampler (``save_image``, kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:499-520)
walks the reversed grid and

* edits only where ``t >= t_edit`` (checked inside the UNet,
  kwonminki/Asyrp_official@a6c82dc:models/ddpm/diffusion.py:510; below it ε̃ = ε, so the step is plain DDIM);
* uses η = 1 ("quality boosting") where ``t < t_boost`` (strict), η = 0 (or ``eta``) elsewhere.

This module knows nothing of UNets: the model enters as
``eps_pair_fn(x [B,H,W,C], t [B] int32, edit [B] bool) -> (eps, eps_edit)``, where ``eps`` is ε(x_t | h)
and ``eps_edit`` is ε(x_t | h + Δh) decoded with the unedited skips (one encoder pass:
:func:`jaxhspace.models.functional.eps_pair`; :func:`jaxhspace.editing.asyrp_edit.eps_pair_fn` builds it from a Δh
source).
"""
from __future__ import annotations

from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxhspace.diffusion.ddim import _check_x, _prepare_noise, _step_core, _step_noise, run_steps
from jaxhspace.diffusion.schedule import Schedule, alpha_bar, sampling_pairs

EpsPairFn = Callable[[jax.Array, jax.Array, jax.Array], tuple[jax.Array, jax.Array]]


def asyrp_step(
    x_t: jax.Array,
    eps: jax.Array,
    eps_edit: jax.Array,
    a_t,
    a_prev,
    eta=0.0,
    noise: Optional[jax.Array] = None,
    return_pred_x0: bool = False,
):
    """One asymmetric reverse step: √ᾱ_prev·P_t(ε̃) + c2·ε + c1·z (official Asyrp formula).

    With ``eps_edit == eps`` this is bit-for-bit :func:`~jaxhspace.diffusion.ddim.ddim_step` (they
    share the implementation). Pass ``eps_edit`` for both ``eps`` and ``eps_edit`` for the symmetric
    variant (Haas et al.'s default: edited ε in both terms).

    Args:
      x_t: [B, H, W, C] sample at t.
      eps: [B, H, W, C] unedited ε(x_t | h); used for the direction term c2·ε.
      eps_edit: [B, H, W, C] edited ε̃ = ε(x_t | h + Δh); used for P_t only.
      a_t, a_prev: ᾱ_t, ᾱ_prev (scalars or [B] → [B, 1, 1, 1]); ᾱ_prev = 1 for the last step.
      eta: η (scalar or [B]); c1 = η√((1−ᾱ_t/ᾱ_prev)(1−ᾱ_prev)/(1−ᾱ_t)), c2 = √(1−ᾱ_prev−c1²).
      noise: z [B, H, W, C] ~ N(0, I); required unless ``eta`` is the Python number 0.
      return_pred_x0: also return the edited P_t (what the Asyrp losses use).

    Returns:
      x_prev [B, H, W, C] (and P_t [B, H, W, C] if ``return_pred_x0``).
    """
    x, x0 = _step_core(x_t, eps_edit, eps, a_t, a_prev, eta, noise)
    return (x, x0) if return_pred_x0 else x


def asyrp_gates(
    timesteps: Sequence[int] | np.ndarray, t_edit: int, t_boost: int, eta: float = 0.0, boost_eta: float = 1.0
) -> tuple[np.ndarray, np.ndarray]:
    """Per-step gates of the Asyrp sampler: ``edit = t >= t_edit``, ``eta_t = boost_eta if t < t_boost else eta``.

    Args:
      timesteps: [S] grid (any order; gates are elementwise).
      t_edit: edit where t >= t_edit (e.g. 500; > 999 disables editing).
      t_boost: η = ``boost_eta`` where t < t_boost (strict; e.g. 200; <= 0 disables boosting).

    Returns:
      (edit [S] bool, eta [S] float32) NumPy arrays.
    """
    ts = np.asarray(timesteps, dtype=np.int64).reshape(-1)
    edit = ts >= t_edit
    etas = np.where(ts < t_boost, boost_eta, eta).astype(np.float32)
    return edit, etas


def _asyrp_step_fn(static, consts, x, inp):
    eps_pair_fn, stochastic, symmetric = static
    key = consts
    i, t, a_t, a_prev, eta, edit, z = inp
    B = x.shape[0]
    tb = jnp.full((B,), t, jnp.int32)
    eb = jnp.full((B,), edit, jnp.bool_)
    eps, eps_edit = eps_pair_fn(x, tb, eb)
    # Below t_edit the official UNet returns ε̃ = ε; enforce it whatever eps_pair_fn does.
    eps_edit = jnp.where(edit, eps_edit, eps)
    eps_dir = eps_edit if symmetric else eps
    noise = _step_noise(key, z, i, x) if stochastic else None
    x_new, x0 = _step_core(x, eps_edit, eps_dir, a_t, a_prev, eta if stochastic else 0.0, noise)
    return x_new, {"x": x_new, "pred_x0": x0}


def asyrp_reverse(
    eps_pair_fn: EpsPairFn,
    x_T: jax.Array,
    timesteps: Sequence[int] | np.ndarray,
    schedule: Schedule,
    t_edit: int,
    t_boost: int,
    key: Optional[jax.Array] = None,
    eta: float = 0.0,
    boost_eta: float = 1.0,
    symmetric: bool = False,
    noise: Optional[jax.Array] = None,
    prev_timesteps: Optional[Sequence[int] | np.ndarray] = None,
    return_trajectory: bool = False,
    progress: bool = False,
):
    """Asyrp generation (official ``save_image`` loop) along a descending grid, one ``lax.scan``.

    Step i at t = timesteps[i] → t_prev (next grid point; −1, i.e. ᾱ = 1, after the last):
    ``eps, eps_edit = eps_pair_fn(x, t [B], edit [B])`` with ``edit = t >= t_edit``; ``eps_edit`` is
    replaced by ``eps`` where not editing; then :func:`asyrp_step` with η = ``boost_eta`` if
    ``t < t_boost`` else ``eta``. With the Asyrp grid use ``asyrp_timesteps(n)[::-1]``.

    Args:
      eps_pair_fn: ``(x [B,H,W,C], t [B] int32, edit [B] bool) -> (eps, eps_edit)``, static for jit.
      x_T: [B, H, W, C] latent (e.g. from :func:`~jaxhspace.diffusion.ddim.ddim_invert`).
      timesteps: [S] strictly descending.
      schedule: the Schedule.
      t_edit: edit where t >= t_edit (official 500: kwonminki/Asyrp_official@a6c82dc:README.md:100;
        > max t disables editing).
      t_boost: boosting (η = boost_eta) where t < t_boost (official 200: kwonminki/Asyrp_official@a6c82dc:README.md:101;
        0 disables it).
      key: PRNG key for stochastic steps; step i uses ``fold_in(key, i)`` — the same convention as
        :func:`~jaxhspace.diffusion.ddim.ddim_sample`, so without edits both give identical results.
      eta: η above t_boost (official: 0).
      boost_eta: η below t_boost (official: 1.0).
      symmetric: if True use ε̃ in both P_t and the direction term (Haas et al.'s default, plain DDIM
        on the edited ε) instead of Asyrp's asymmetric step. Noise is unchanged.
      noise: optional precomputed z [S, B, H, W, C] (overrides ``key``).
      prev_timesteps: optional [S] explicit previous timesteps.
      return_trajectory: also return ``{"x": [S,B,...], "pred_x0": [S,B,...] (edited P_t),
        "t": [S], "t_prev": [S], "edit": [S] bool, "eta": [S]}``.
      progress: Python loop with tqdm instead of the scan (same numbers).

    Returns:
      x_0 [B, H, W, C] (and the trajectory dict if requested).

    Differences from the official code: the official noise is ``torch.randn_like`` per step; here it
    is keyed per step index. The official unedited reference run (``save_x_origin``) uses η = 0
    everywhere unless ``--origin_process_addnoise``; reproduce it with ``t_edit > 999`` and
    ``t_boost = 0`` (or the same ``t_boost`` to boost it as well).
    """
    x_T = _check_x(x_T)
    ts, tps = sampling_pairs(timesteps)
    if prev_timesteps is not None:
        tps = np.asarray(prev_timesteps, dtype=np.int64).reshape(-1)
        if tps.shape != ts.shape:
            raise ValueError(f"prev_timesteps must have shape {ts.shape}, got {tps.shape}")
    S = ts.size
    edit, etas = asyrp_gates(ts, t_edit, t_boost, eta, boost_eta)
    stochastic = bool(np.any(etas != 0))
    key, z = _prepare_noise(stochastic, key, noise, S, x_T)
    per_step = (
        np.arange(S, dtype=np.int32),
        ts.astype(np.int32),
        alpha_bar(schedule, ts),
        alpha_bar(schedule, tps),
        jnp.asarray(etas, x_T.dtype),
        edit,
        z,
    )
    x, outs = run_steps(_asyrp_step_fn, (eps_pair_fn, stochastic, bool(symmetric)), key, x_T, per_step,
                        return_trajectory, progress, desc="asyrp")
    if not return_trajectory:
        return x
    return x, dict(outs, t=ts, t_prev=tps, edit=edit, eta=etas)

