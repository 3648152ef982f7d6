"""Text-to-image with a latent pipeline: classifier-free-guided DDIM from noise or from an inverted latent, on the
scheduler grid diffusers' ``StableDiffusionPipeline`` uses (tests/test_latent_world.py checks the same sampler
against it to 1e-4).
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxhspace.diffusion.ddim import ddim_invert, ddim_sample
from jaxhspace.diffusion.guidance import PREDICTION_TYPES, guided_eps_fn
from jaxhspace.diffusion.schedule import Schedule, ddim_timesteps, diffusers_prev_timesteps, schedule_from_config
from jaxhspace.models.functional import conditional_model_fn


def pipeline_grid(pipe, n_steps: int) -> tuple[Schedule, np.ndarray, np.ndarray]:
    """``(schedule, timesteps [S] descending, prev_timesteps [S])`` of ``pipe``'s scheduler config for ``n_steps``
    (its ``timestep_spacing``, ``steps_offset`` and ``set_alpha_to_one``, as diffusers' ``DDIMScheduler``)."""
    sc = pipe.scheduler
    schedule = schedule_from_config(sc, PREDICTION_TYPES)
    T = schedule.num_train_timesteps
    ts = ddim_timesteps(int(n_steps), T, sc.get("timestep_spacing", "leading"), int(sc.get("steps_offset", 0)))
    return schedule, ts, diffusers_prev_timesteps(ts, T, bool(sc.get("set_alpha_to_one", True)))


def text_eps_fn(pipe, prompts: Sequence[str], guidance_scale: float, negative: str = "", unet_params=None):
    """CFG ``eps_fn(z [B, h, w, c], t [B]) -> ε`` for B prompts (or one, broadcast); ``unet_params`` overrides the
    pipeline's (e.g. a random init as a baseline)."""
    from jaxhspace.checkpoints.pipeline import encode_prompt

    schedule = schedule_from_config(pipe.scheduler, PREDICTION_TYPES)
    params = pipe.unet_params if unet_params is None else unet_params
    return guided_eps_fn(conditional_model_fn(pipe.unet, params), encode_prompt(pipe, list(prompts)),
                         encode_prompt(pipe, [negative]), float(guidance_scale), schedule, pipe.prediction_type)


def text_to_latents(pipe, prompts: Sequence[str], guidance_scale: float, n_steps: int, z_T: jax.Array,
                    unet_params=None, eta: float = 0.0, key: Optional[jax.Array] = None) -> jax.Array:
    """CFG DDIM from ``z_T [B, h, w, c]`` (scaled latents) with B prompts -> ``z_0 [B, h, w, c]``."""
    schedule, ts, prev = pipeline_grid(pipe, n_steps)
    f = text_eps_fn(pipe, prompts, guidance_scale, unet_params=unet_params)
    return ddim_sample(f, jnp.asarray(z_T), ts, schedule, eta=eta, key=key, prev_timesteps=prev)


def invert_with_prompt(pipe, z0: jax.Array, prompt: str, n_steps: int, guidance_scale: float = 1.0) -> jax.Array:
    """Deterministic DDIM inversion of scaled latents ``z0 [B, h, w, c]`` under ``prompt`` (guidance 1: the
    conditional branch only, the usual choice for inversion) up the pipeline's grid -> ``z_T``."""
    schedule, ts, _ = pipeline_grid(pipe, n_steps)
    f = text_eps_fn(pipe, [prompt], guidance_scale)
    return ddim_invert(f, jnp.asarray(z0), ts[::-1].copy(), schedule)
