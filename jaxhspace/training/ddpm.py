"""Train a small DDPM (ε-prediction, Ho et al. 2020 eq. 14) on SynthFaces, resumably, and export it in
diffusers folder format so that loading it exercises the same converter path as a real checkpoint.

Run: ``python -m jaxhspace.main --config configs/ddpm_synthfaces.py --workdir runs/ddpm_synthfaces``
(re-running the same command resumes from the newest orbax checkpoint in ``workdir/checkpoints``).
"""
from __future__ import annotations

import json
import os
from typing import Any, cast

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxhspace.data import synthfaces
from jaxhspace.diffusion.schedule import Schedule, make_schedule
from jaxhspace.models.unet import UNet2DModel, UNetConfig
from jaxhspace.training.loop import latest_step, run_training
from jaxhspace.training.safety import check_export_dir, export_folder

# what the job writes into its workdir (an export_dir inside the workdir must avoid these)
WORKDIR_FILES = ("checkpoints", "train_log.jsonl", "metrics.json", "run_config.json")
# config fields that do not change the trained weights (not compared on resume)
BOOKKEEPING = ("task", "max_minutes", "export_dir", "allow_asset_export", "log_every", "checkpoint_every",
               "resume_policy", "max_loss_growth", "loss_window")


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


def train_ddpm(config, workdir: str) -> dict:
    """Train (or resume) a DDPM on SynthFaces; export the EMA weights when ``config.total_steps`` is reached.

    Stops early (after saving) when ``config.max_minutes`` of wall time have passed, so a long run can be
    split across sessions; re-running resumes. On SIGINT / SIGTERM the step in flight finishes, the state is
    saved and :class:`jaxhspace.errors.TrainingInterrupted` is raised; the last step is always saved.
    ``config.export_dir`` ('' = none; ``{workdir}`` expands) is checked before training (see
    :func:`jaxhspace.training.safety.check_export_dir`). A resume with changed result-affecting config fields is
    refused unless ``config.resume_policy="allow"`` (:func:`jaxhspace.training.run_config.check_resume`); a
    diverging loss stops the run (:class:`jaxhspace.training.safety.LossGuard`, ``config.max_loss_growth``).
    Returns a dict of metrics (also in ``workdir/metrics.json``).
    """
    export_dir = check_export_dir(config.get("export_dir"), workdir, WORKDIR_FILES,
                                  bool(config.get("allow_asset_export", False)))
    resume_from = latest_step(workdir)
    ucfg = UNetConfig.from_dict(dict(config.unet))
    model = UNet2DModel(ucfg)
    schedule = make_schedule(config.beta_schedule, config.beta_start, config.beta_end, config.num_train_timesteps)
    size = int(config.image_size)
    key = jax.random.PRNGKey(config.seed)
    init_key, train_key = jax.random.split(key)
    dummy = jnp.zeros((1, size, size, ucfg.in_channels))
    params = model.init(init_key, dummy, jnp.zeros((1,), jnp.int32))["params"]
    refine_from = config.get("refine_from_step")
    optimizer = make_optimizer(config.lr, config.warmup_steps, config.grad_clip, refine_from, config.total_steps,
                               config.get("refine_final_lr", config.lr))
    state = DDPMState(jnp.array(0, jnp.int32), params, jax.tree.map(jnp.copy, params), optimizer.init(params))
    step_fn = make_train_step(model, schedule, optimizer, config.ema_decay, train_key, refine_from,
                              config.get("refine_min_snr_gamma", 0.0), config.get("refine_ema_decay"))
    res = run_training(config, workdir, state, step_fn,
                       lambda step: jnp.asarray(batch_for_step(config.seed, step, config.batch_size, size)),
                       "ddpm", BOOKKEEPING, _harmless_changes(config, resume_from))
    state, stopped_early = res.state, res.stopped_early
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(state.params))
    metrics: dict[str, Any]
    metrics = {"steps_done": int(state.step), "total_steps": int(config.total_steps), "params": n_params,
               "wall_s_this_run": res.wall_s, "final_loss": res.final_loss,
               "stopped_early": stopped_early}
    if int(state.step) >= config.total_steps and export_dir:
        from jaxhspace.checkpoints.unet import save_unet_diffusers

        ema, sched = jax.device_get(state.ema_params), scheduler_config(config)
        export_folder(export_dir, lambda p: save_unet_diffusers(p, model, ema, scheduler_config=sched),
                      job="ddpm_train", extra={"steps": int(state.step)})
        metrics["exported_to"] = export_dir
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    return metrics


def _harmless_changes(config, resume_from: int | None) -> dict:
    """Config changes a resume at ``resume_from`` may make without mixing runs: ``total_steps`` (larger than
    ``resume_from``) while the checkpoint is not past ``refine_from_step``, since the learning rate depends on
    ``total_steps`` only in the refine phase (so a 6000-step run extends into the 9000-step recipe)."""
    refine_from = config.get("refine_from_step")
    if resume_from is not None and config.total_steps > resume_from and (
            refine_from is None or resume_from <= refine_from):
        return {"total_steps": "the learning rate up to the checkpoint does not depend on it"}
    return {}


def scheduler_config(config) -> dict:
    """diffusers ``DDIMScheduler`` config matching the training schedule (written beside the UNet)."""
    return {"_class_name": "DDIMScheduler", "beta_schedule": config.beta_schedule, "beta_start": config.beta_start,
            "beta_end": config.beta_end, "num_train_timesteps": config.num_train_timesteps, "clip_sample": False,
            "set_alpha_to_one": True, "steps_offset": 0, "prediction_type": "epsilon"}
