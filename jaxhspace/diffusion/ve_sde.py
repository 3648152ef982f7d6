"""VE-SDE sampling for NCSN++ (Song et al., ICLR 2021), equivalent to diffusers' ``ScoreSdeVeScheduler`` as
``ScoreSdeVePipeline`` drives it, and the bridge from the score model to the ε-based h-space methods.

Conventions (diffusers 0.42 ``schedulers/scheduling_sde_ve.py``, ``pipelines/deprecated/score_sde_ve``):

* forward process ``x_σ = x_0 + σ z``, z ~ N(0, I); ``google/ncsnpp-*`` data live in **[0, 1]** (score_sde
  ``centered=False``; the pipeline returns ``clamp(x_mean, 0, 1)``), not jaxhspace's usual [-1, 1];
* the UNet is called with the noise level itself, ``s = model(x, σ)`` (``time_embedding_type="fourier"``, output
  already divided by σ), and ``s`` approximates the score ∇ₓ log p_σ(x) ≈ −z/σ. Hence

      ε(x, σ) = −σ · s(x, σ)        (the noise the DDPM-style methods predict; :func:`eps_fn_from_score`)

  and the h-space is the mid-block output of ``model.encode(x, σ)``: Park's J = ∂h/∂x at noise level σ is
  ``jaxhspace.directions.pullback.pullback(model, params, x_σ, σ, k, key)`` (t is σ for these models).

Sampling (predictor-corrector, "PC sampler", Song et al. Alg. 2/3 as diffusers implements them), step i of N:

* t_i = ``linspace(1, sampling_eps, N)[i]``; the model sees σ_i = σ_min (σ_max/σ_min)^{t_i};
* corrector (Langevin, ``step_correct``), ``correct_steps`` times: s = model(x, σ_i),
  ε_step = 2 (snr · mean_b‖z_b‖ / mean_b‖s_b‖)² (one scalar for the whole batch, as diffusers), x ← x + ε_step s +
  √(2 ε_step) z;
* predictor (reverse diffusion, ``step_pred``): j = ⌊t_i (N−1)⌋, g² = σ_d[j]² − σ_d[j−1]² (σ_d[−1] = 0) with the
  discrete grid σ_d = exp(linspace(log σ_min, log σ_max, N)); x_mean = x + g² s; x ← x_mean + g z.

The sampler returns x_mean of the last step (the pipeline then clamps to [0, 1]). Noise is drawn from explicit
keys: step i, corrector j uses ``normal(fold_in(fold_in(key, i), j))`` and the predictor j = ``correct_steps``
(:func:`step_noise`), so a run is reproducible and the same z can be fed to diffusers.
"""
from __future__ import annotations

import math
from functools import partial
from typing import Callable, NamedTuple

import jax
import jax.numpy as jnp
import numpy as np
from jax import lax

ScoreFn = Callable[[jax.Array, jax.Array], jax.Array]


class VESchedule(NamedTuple):
    """Per-step constants of diffusers' ``ScoreSdeVeScheduler`` after ``set_timesteps(N)`` + ``set_sigmas(N)``.

    timesteps ``[N]`` continuous t (1 → sampling_eps); sigmas ``[N]`` σ_i fed to the model; step_sigmas ``[N]``
    and adjacent_sigmas ``[N]`` the discrete σ_d[j], σ_d[j−1] of the predictor; sigma_max the initial noise std.
    Arrays are float32 NumPy.
    """

    timesteps: np.ndarray
    sigmas: np.ndarray
    step_sigmas: np.ndarray
    adjacent_sigmas: np.ndarray
    sigma_max: float


def _linspace32(start: float, end: float, n: int) -> np.ndarray:
    """float32 linspace in torch's formula (start + i·step for the first half, end − (n−1−i)·step after)."""
    start32, end32 = np.float32(start), np.float32(end)
    if n == 1:
        return np.array([start32], np.float32)
    step = np.float32((end32 - start32) / np.float32(n - 1))
    i = np.arange(n)
    first = start32 + step * i.astype(np.float32)
    second = end32 - step * (n - 1 - i).astype(np.float32)
    return np.where(i < n // 2, first, second).astype(np.float32)


def ve_schedule(num_inference_steps: int, sigma_min: float = 0.01, sigma_max: float = 1348.0,
                sampling_eps: float = 1e-5) -> VESchedule:
    """The σ schedule of ``ScoreSdeVeScheduler(sigma_min, sigma_max, sampling_eps)`` for N steps (geometric in σ).

    Defaults are diffusers'; ``google/ncsnpp-ffhq-256`` uses σ_max = 348 (read it from its
    ``scheduler_config.json`` with :func:`ve_schedule_from_config`).
    """
    n = int(num_inference_steps)
    if n < 1:
        raise ValueError(f"num_inference_steps must be >= 1, got {num_inference_steps}")
    if not 0 < sigma_min < sigma_max:
        raise ValueError(f"need 0 < sigma_min < sigma_max, got sigma_min={sigma_min}, sigma_max={sigma_max}")
    if not 0 < sampling_eps < 1:
        raise ValueError(f"sampling_eps must be in (0, 1), got {sampling_eps}")
    t = _linspace32(1.0, sampling_eps, n)
    ratio = np.float32(sigma_max / sigma_min)
    sigmas = (np.float32(sigma_min) * ratio ** t).astype(np.float32)
    discrete = np.exp(_linspace32(math.log(sigma_min), math.log(sigma_max), n)).astype(np.float32)
    j = (t * np.float32(n - 1)).astype(np.int64)  # diffusers: (timestep * (len(timesteps) - 1)).long()
    adjacent = np.where(j == 0, np.float32(0), discrete[np.maximum(j - 1, 0)]).astype(np.float32)
    return VESchedule(t, sigmas, discrete[j], adjacent, float(sigma_max))


def ve_schedule_from_config(config: dict, num_inference_steps: int) -> VESchedule:
    """:func:`ve_schedule` from a diffusers ``scheduler_config.json`` dict (``sigma_min``, ``sigma_max``,
    ``sampling_eps``; missing keys take diffusers' defaults)."""
    cls = config.get("_class_name", "ScoreSdeVeScheduler")
    if cls != "ScoreSdeVeScheduler":
        raise ValueError(f"scheduler config is a {cls}, not a ScoreSdeVeScheduler (NCSN++ / VE-SDE)")
    return ve_schedule(num_inference_steps, config.get("sigma_min", 0.01), config.get("sigma_max", 1348.0),
                       config.get("sampling_eps", 1e-5))


def add_noise(x0: jax.Array, sigma, noise: jax.Array) -> jax.Array:
    """VE forward process ``x_σ = x0 + σ z``; sigma a scalar or ``[B]``. Shapes ``[B, H, W, C]``."""
    return x0 + _bcast(sigma, x0) * noise


def _bcast(a, x):
    a = jnp.asarray(a, x.dtype)
    return a.reshape(a.shape + (1,) * (x.ndim - a.ndim)) if a.ndim else a


def eps_from_score(score: jax.Array, sigma) -> jax.Array:
    """ε = −σ·score (σ a scalar or ``[B]``): the noise of ``x_σ = x_0 + σ ε`` the score model implies."""
    return -_bcast(sigma, score) * score


def eps_fn_from_score(score_fn: ScoreFn) -> Callable[[jax.Array, jax.Array], jax.Array]:
    """An ``eps_fn(x [B,H,W,C], sigma [B]) -> ε`` for the ε-based h-space code (pullback edits, Haas, Asyrp-style
    Δh) from a score model ``score_fn(x, sigma)`` (e.g. ``jaxhspace.models.functional.eps_fn(model, params)``,
    whose output for NCSN++ is the score). Its "t" is the noise level σ, never an integer timestep."""

    def f(x, sigma):
        return eps_from_score(score_fn(x, sigma), sigma)

    return f


def predictor_step(score: jax.Array, x: jax.Array, step_sigma, adjacent_sigma,
                   noise: jax.Array) -> tuple[jax.Array, jax.Array]:
    """Reverse-diffusion predictor (diffusers ``step_pred``): returns ``(x_prev, x_prev_mean)``, all ``[B,H,W,C]``.

    g = √(σ_d[j]² − σ_d[j−1]²); x_mean = x + g²·score; x_prev = x_mean + g·noise.
    """
    g = jnp.sqrt(jnp.asarray(step_sigma, x.dtype) ** 2 - jnp.asarray(adjacent_sigma, x.dtype) ** 2)
    x_mean = x + g ** 2 * score
    return x_mean + g * noise, x_mean


def corrector_step(score: jax.Array, x: jax.Array, noise: jax.Array, snr: float) -> jax.Array:
    """Langevin corrector (diffusers ``step_correct``): one step size for the whole batch,
    ε = 2 (snr · mean_b‖noise_b‖ / mean_b‖score_b‖)², x + ε·score + √(2ε)·noise. Shapes ``[B,H,W,C]``."""
    b = x.shape[0]
    grad_norm = jnp.mean(jnp.linalg.norm(score.reshape(b, -1), axis=-1))
    noise_norm = jnp.mean(jnp.linalg.norm(noise.reshape(b, -1), axis=-1))
    step = (snr * noise_norm / grad_norm) ** 2 * 2
    return x + step * score + jnp.sqrt(step * 2) * noise


def step_noise(key: jax.Array, i, j, shape, dtype=jnp.float32) -> jax.Array:
    """The z the sampler uses at step ``i``: corrector ``j < correct_steps``, predictor ``j = correct_steps``."""
    return jax.random.normal(jax.random.fold_in(jax.random.fold_in(key, i), j), shape, dtype)


def init_sample(key: jax.Array, shape, schedule: VESchedule, dtype=jnp.float32) -> jax.Array:
    """Initial noise ``σ_max · N(0, I)`` of ``shape`` ``[B, H, W, C]`` (diffusers: ``init_noise_sigma = sigma_max``)."""
    return jax.random.normal(key, shape, dtype) * schedule.sigma_max


@partial(jax.jit, static_argnames=("score_fn", "correct_steps"))
def _run(score_fn, x, key, idx, sigmas, step_sigmas, adjacent, snr, correct_steps):
    def body(carry, inp):
        x, _ = carry
        i, sigma, s_step, s_adj = inp
        sb = jnp.full((x.shape[0],), sigma, x.dtype)
        for j in range(correct_steps):
            x = corrector_step(score_fn(x, sb), x, step_noise(key, i, j, x.shape, x.dtype), snr)
        x, x_mean = predictor_step(score_fn(x, sb), x, s_step, s_adj,
                                   step_noise(key, i, correct_steps, x.shape, x.dtype))
        return (x, x_mean), None

    (x, x_mean), _ = lax.scan(body, (x, x), (idx, sigmas, step_sigmas, adjacent))
    return x, x_mean


def ve_sample(score_fn: ScoreFn, x: jax.Array, schedule: VESchedule, key: jax.Array, snr: float = 0.15,
              correct_steps: int = 1, start: int = 0) -> tuple[jax.Array, jax.Array]:
    """Predictor-corrector VE-SDE sampling as ``ScoreSdeVePipeline`` (one ``lax.scan``, jit-compiled).

    Args:
      score_fn: ``(x [B,H,W,C], sigma [B] float32) -> score [B,H,W,C]``, e.g.
        ``jaxhspace.models.functional.eps_fn(model, params)`` for an NCSN++ UNet; static for jit (hash = identity,
        so build it once).
      x: ``[B, H, W, C]`` the state before step ``start`` (``init_sample`` for ``start=0``, or an edited x_σ).
      schedule: :func:`ve_schedule` / :func:`ve_schedule_from_config`.
      key: PRNG key; step i uses :func:`step_noise` ``(key, i, ·)`` with i the index in the full schedule.
      snr: corrector signal-to-noise ratio (``ScoreSdeVeScheduler.config.snr``; diffusers' default 0.15).
      correct_steps: corrector steps per step (``config.correct_steps``; 0 = predictor only).
      start: first step to run (continue sampling an edit made at σ = ``schedule.sigmas[start]``).

    Returns:
      ``(x, x_mean)`` after the last step, ``[B, H, W, C]``; diffusers' image is ``clip(x_mean, 0, 1)``.

    Jitting: as :func:`jaxhspace.diffusion.ddim.ddim_sample`, the params ``score_fn`` closes over become constants
    of the compiled scan; for a full-size model call ``ve_sample`` inside your own ``jax.jit`` with the params as a
    traced argument (the inner jit is then inlined).
    """
    x = jnp.asarray(x)
    if x.ndim != 4 or not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be a float [B, H, W, C] array, got shape {x.shape} dtype {x.dtype}")
    n = len(schedule.sigmas)
    if not 0 <= start < n:
        raise ValueError(f"start must be in [0, {n}), got {start}")
    if correct_steps < 0:
        raise ValueError(f"correct_steps must be >= 0, got {correct_steps}")
    sl = slice(start, n)
    return _run(score_fn, x, key, jnp.arange(start, n, dtype=jnp.int32), jnp.asarray(schedule.sigmas[sl]),
                jnp.asarray(schedule.step_sigmas[sl]), jnp.asarray(schedule.adjacent_sigmas[sl]),
                jnp.float32(snr), int(correct_steps))
