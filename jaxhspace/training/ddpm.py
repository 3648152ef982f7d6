"""Train a small DDPM (ε-prediction, Ho et al. 2020 eq. 14) on SynthFaces, resumably, and export it in
diffusers folder format so that loading it exercises the same converter path as a real checkpoint.

Run: ``python -m jaxhspace.main --config configs/ddpm_synthfaces.py --workdir runs/ddpm_synthfaces``
(re-running the same command resumes from the newest orbax checkpoint in ``workdir/checkpoints``).
"""
from __future__ import annotations

import json
import os
import time

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax
from tqdm import tqdm

from jaxhspace.data import synthfaces
from jaxhspace.diffusion.schedule import Schedule, make_schedule
from jaxhspace.models.unet import UNet2DModel, UNetConfig
from jaxhspace.training.checkpointing import Checkpointer


@flax.struct.dataclass
class DDPMState:
    """Train state: ``step`` (int32 scalar), ``params``, ``ema_params``, ``opt_state``."""

    step: jax.Array
    params: dict
    ema_params: dict
    opt_state: optax.OptState


def make_optimizer(lr: float, warmup_steps: int, grad_clip: float) -> optax.GradientTransformation:
    """Adam with linear warm-up to ``lr`` and global-norm clipping (the usual DDPM recipe)."""
    sched = optax.linear_schedule(0.0, lr, max(1, warmup_steps))
    return optax.chain(optax.clip_by_global_norm(grad_clip), optax.adam(sched))


def ddpm_loss(model: UNet2DModel, params, schedule: Schedule, x0: jax.Array, key: jax.Array) -> jax.Array:
    """Simple DDPM loss E_{t,ε}‖ε − ε_θ(√ᾱ_t x0 + √(1−ᾱ_t) ε, t)‖² (Ho et al. eq. 14).

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
    pred = model.apply({"params": params}, x_t, t)
    return jnp.mean((pred - eps) ** 2)


def make_train_step(model: UNet2DModel, schedule: Schedule, optimizer, ema_decay: float, base_key: jax.Array):
    """Return a jitted ``step(state, x0) -> (state, loss)``; its randomness is ``fold_in(base_key, step)``
    so a resumed run is bit-identical to an uninterrupted one. The state buffers are donated."""

    def step(state: DDPMState, x0: jax.Array):
        key = jax.random.fold_in(base_key, state.step)
        loss, grads = jax.value_and_grad(lambda p: ddpm_loss(model, p, schedule, x0, key))(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, state.ema_params, params)
        return DDPMState(state.step + 1, params, ema, opt_state), loss

    return jax.jit(step, donate_argnums=(0,))


def batch_for_step(seed: int, step: int, batch_size: int, size: int) -> np.ndarray:
    """The SynthFaces batch of a given step: a pure function of (seed, step), so resume is exact. [B, S, S, 3]."""
    images, _ = synthfaces.generate(seed * 1_000_003 + step, batch_size, size=size)
    return images


def train_ddpm(config, workdir: str) -> dict:
    """Train (or resume) a DDPM on SynthFaces; export the EMA weights when ``config.total_steps`` is reached.

    Stops early (after saving) when ``config.max_minutes`` of wall time have passed, so a long run can be
    split across sessions; re-running resumes. Returns a dict of metrics (also in ``workdir/metrics.json``).
    """
    os.makedirs(workdir, exist_ok=True)
    ucfg = UNetConfig.from_dict(dict(config.unet))
    model = UNet2DModel(ucfg)
    schedule = make_schedule(config.beta_schedule, config.beta_start, config.beta_end, config.num_train_timesteps)
    size = int(config.image_size)
    key = jax.random.PRNGKey(config.seed)
    init_key, train_key = jax.random.split(key)
    dummy = jnp.zeros((1, size, size, ucfg.in_channels))
    params = model.init(init_key, dummy, jnp.zeros((1,), jnp.int32))["params"]
    optimizer = make_optimizer(config.lr, config.warmup_steps, config.grad_clip)
    state = DDPMState(jnp.array(0, jnp.int32), params, jax.tree.map(jnp.copy, params), optimizer.init(params))
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), every=config.checkpoint_every)
    state = ckpt.restore_or(state)
    start = int(state.step)
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(state.params))
    step_fn = make_train_step(model, schedule, optimizer, config.ema_decay, train_key)
    log_path = os.path.join(workdir, "train_log.jsonl")
    t0, losses = time.time(), []
    bar = tqdm(range(start, config.total_steps), initial=start, total=config.total_steps, desc="ddpm", mininterval=5)
    stopped_early = False
    for step in bar:
        x0 = jnp.asarray(batch_for_step(config.seed, step, config.batch_size, size))
        state, loss = step_fn(state, x0)
        losses.append(float(loss))
        done = step + 1
        if done % config.log_every == 0:
            rec = {"step": done, "loss": float(np.mean(losses[-config.log_every:])), "elapsed_s": time.time() - t0}
            bar.set_postfix(loss=f"{rec['loss']:.4f}")
            with open(log_path, "a") as f:
                f.write(json.dumps(rec) + "\n")
        ckpt.maybe_save(done, state)
        if config.max_minutes and time.time() - t0 > 60 * config.max_minutes and done < config.total_steps:
            ckpt.save(done, state)
            stopped_early = True
            break
    ckpt.close()
    metrics = {"steps_done": int(state.step), "total_steps": int(config.total_steps), "params": n_params,
               "wall_s_this_run": time.time() - t0, "final_loss": float(np.mean(losses[-50:])) if losses else None,
               "stopped_early": stopped_early}
    if int(state.step) >= config.total_steps and config.export_dir:
        from jaxhspace.checkpoints.unet import save_unet_diffusers

        save_unet_diffusers(config.export_dir, model, jax.device_get(state.ema_params), overwrite=True,
                            scheduler_config=scheduler_config(config))
        metrics["exported_to"] = config.export_dir
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    return metrics


def scheduler_config(config) -> dict:
    """diffusers ``DDIMScheduler`` config matching the training schedule (written beside the UNet)."""
    return {"_class_name": "DDIMScheduler", "beta_schedule": config.beta_schedule, "beta_start": config.beta_start,
            "beta_end": config.beta_end, "num_train_timesteps": config.num_train_timesteps, "clip_sample": False,
            "set_alpha_to_one": True, "steps_offset": 0, "prediction_type": "epsilon"}
