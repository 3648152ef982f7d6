"""The pieces of the small DDPM (ε-prediction, Ho et al. 2020 eq. 14) trained on SynthFaces: the two-phase
learning rate, the (min-SNR weighted) loss, the jitted train step, the batch of a step and the exported scheduler
config. The job that trains and exports it in diffusers folder format (so that loading it exercises the same
converter path as a real checkpoint) is :mod:`jaxhspace.tasks.ddpm_train_job`:

``python -m jaxhspace.main --config configs/ddpm_synthfaces.py --workdir runs/ddpm_synthfaces``
(re-running the same command resumes from the newest orbax checkpoint in ``workdir/checkpoints``).
"""
from __future__ import annotations

from typing import cast

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxhspace.data import synthfaces
from jaxhspace.diffusion.schedule import Schedule
from jaxhspace.models.unet import UNet2DModel

# what the job writes into its workdir (an export_dir inside the workdir must avoid these)
WORKDIR_FILES = ("checkpoints", "train_log.jsonl", "metrics.json", "run_config.json")


@flax.struct.dataclass
class DDPMState:
    """Train state: ``step`` (int32 scalar), ``params``, ``ema_params``, ``opt_state``."""

    step: jax.Array
    params: dict
    ema_params: dict
    opt_state: optax.OptState


def lr_schedule(lr: float, warmup_steps: int, refine_from_step: int | None = None, total_steps: int | None = None,
                refine_final_lr: float | None = None) -> optax.Schedule:
    """Linear warm-up to ``lr`` over ``warmup_steps``, then constant; with ``refine_from_step`` a cosine decay
    from ``lr`` there to ``refine_final_lr`` at ``total_steps``."""
    warm = optax.linear_schedule(0.0, lr, max(1, warmup_steps))
    if refine_from_step is None:
        return warm
    if total_steps is None or refine_final_lr is None:
        raise ValueError(f"lr_schedule: refine_from_step={refine_from_step} needs total_steps and refine_final_lr, got "
                         f"{total_steps} and {refine_final_lr}")
    n = max(1, int(total_steps) - int(refine_from_step))
    decay = optax.cosine_decay_schedule(lr, n, alpha=float(refine_final_lr) / lr)
    return optax.join_schedules([warm, optax.constant_schedule(lr), decay],
                                [max(1, warmup_steps), int(refine_from_step)])


def make_optimizer(lr: float, warmup_steps: int, grad_clip: float, refine_from_step: int | None = None,
                   total_steps: int | None = None, refine_final_lr: float | None = None
                   ) -> optax.GradientTransformation:
    """Adam on :func:`lr_schedule` with global-norm clipping (the usual DDPM recipe). The optimizer state has
    the same structure with or without a refine phase, so a plain-recipe checkpoint resumes into one."""
    sched = lr_schedule(lr, warmup_steps, refine_from_step, total_steps, refine_final_lr)
    return optax.chain(optax.clip_by_global_norm(grad_clip), optax.adam(sched))


def min_snr_weight(alphas_cumprod: jax.Array, gamma: float | jax.Array) -> jax.Array:
    """Min-SNR-γ loss weight for ε-prediction, min(SNR_t, γ)/SNR_t with SNR_t = ᾱ_t/(1−ᾱ_t)
    (Hang et al. 2023, "Efficient Diffusion Training via Min-SNR Weighting Strategy", ε-prediction form).
    It is 1 at low SNR (large t) and shrinks the easy high-SNR (small t) terms. ``alphas_cumprod``: [B]."""
    snr = alphas_cumprod / (1.0 - alphas_cumprod)
    return jnp.minimum(snr, gamma) / snr


def ddpm_loss(model: UNet2DModel, params, schedule: Schedule, x0: jax.Array, key: jax.Array,
              min_snr_gamma: jax.Array | float = 0.0) -> jax.Array:
    """Simple DDPM loss E_{t,ε}‖ε − ε_θ(√ᾱ_t x0 + √(1−ᾱ_t) ε, t)‖² (Ho et al. eq. 14), optionally
    min-SNR-γ weighted per sample (:func:`min_snr_weight`; ``min_snr_gamma`` ≤ 0 = uniform).

    Args:
      x0: [B, H, W, C] clean images in [-1, 1].
      key: PRNG key for t ~ U{0..T-1} and ε ~ N(0, I).
    """
    kt, ke = jax.random.split(key)
    b = x0.shape[0]
    t = jax.random.randint(kt, (b,), 0, schedule.alphas_cumprod.shape[0])
    eps = jax.random.normal(ke, x0.shape, x0.dtype)
    a = schedule.alphas_cumprod[t][:, None, None, None]
    x_t = jnp.sqrt(a) * x0 + jnp.sqrt(1.0 - a) * eps
    pred = cast(jax.Array, model.apply({"params": params}, x_t, t))
    per_sample = jnp.mean((pred - eps) ** 2, axis=(1, 2, 3))
    w = min_snr_weight(a[:, 0, 0, 0], jnp.maximum(min_snr_gamma, 1e-6))
    return jnp.mean(jnp.where(min_snr_gamma > 0, w, 1.0) * per_sample)


def make_train_step(model: UNet2DModel, schedule: Schedule, optimizer, ema_decay: float, base_key: jax.Array,
                    refine_from_step: int | None = None, refine_min_snr_gamma: float = 0.0,
                    refine_ema_decay: float | None = None):
    """Return a jitted ``step(state, x0) -> (state, loss)``; its randomness is ``fold_in(base_key, step)``
    so a resumed run is bit-identical to an uninterrupted one. The state buffers are donated.

    From ``refine_from_step`` on (if given) the loss is min-SNR-``refine_min_snr_gamma`` weighted and the EMA
    decay is ``refine_ema_decay``; both switch on the traced step, so one compiled step serves both phases."""
    refine_at = jnp.iinfo(jnp.int32).max if refine_from_step is None else int(refine_from_step)
    refine_ema = ema_decay if refine_ema_decay is None else float(refine_ema_decay)

    def step(state: DDPMState, x0: jax.Array):
        key = jax.random.fold_in(base_key, state.step)
        refining = state.step >= refine_at
        gamma = jnp.where(refining, float(refine_min_snr_gamma), 0.0)
        decay = jnp.where(refining, refine_ema, ema_decay)
        loss, grads = jax.value_and_grad(lambda p: ddpm_loss(model, p, schedule, x0, key, gamma))(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = jax.tree.map(lambda e, p: decay * e + (1.0 - decay) * p, state.ema_params, params)
        return DDPMState(state.step + 1, params, ema, opt_state), loss

    return jax.jit(step, donate_argnums=(0,))


def batch_for_step(seed: int, step: int, batch_size: int, size: int) -> np.ndarray:
    """The SynthFaces batch of a given step: a pure function of (seed, step), so resume is exact. [B, S, S, 3]."""
    images, _ = synthfaces.generate(seed * 1_000_003 + step, batch_size, size=size)
    return images


def harmless_changes(total_steps: int, refine_from_step: int | None, resume_from: int | None) -> dict:
    """The changes a resume at ``resume_from`` may make without mixing runs (``{field: reason}`` for
    :func:`jaxhspace.training.run_config.check_resume`): ``total_steps`` (larger than ``resume_from``) while the
    checkpoint is not past ``refine_from_step``, since the learning rate depends on ``total_steps`` only in the refine
    phase (so a 6000-step run extends into the 9000-step recipe)."""
    if resume_from is not None and total_steps > resume_from and (
            refine_from_step is None or resume_from <= refine_from_step):
        return {"total_steps": "the learning rate up to the checkpoint does not depend on it"}
    return {}


def scheduler_config(beta_schedule: str, beta_start: float, beta_end: float, num_train_timesteps: int) -> dict:
    """diffusers ``DDIMScheduler`` config matching the training schedule (written beside the UNet)."""
    return {"_class_name": "DDIMScheduler", "beta_schedule": beta_schedule, "beta_start": beta_start,
            "beta_end": beta_end, "num_train_timesteps": num_train_timesteps, "clip_sample": False,
            "set_alpha_to_one": True, "steps_offset": 0, "prediction_type": "epsilon"}
