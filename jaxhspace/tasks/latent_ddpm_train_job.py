"""Job ``latent_ddpm_train``: train (or resume) the text-conditioned SynthFaces latent UNet and export the whole
diffusers pipeline folder.

The config (``configs/sd_synthfaces/unet.py``) is read here only; the loss, step, captions, text tower and pipeline
writer are :mod:`jaxhspace.training.latent_ddpm`, the resumable loop :func:`jaxhspace.training.loop.run_training`.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxhspace.data import synthfaces
from jaxhspace.diffusion.schedule import make_schedule
from jaxhspace.models.unet_condition import UNet2DConditionModel, UNetConditionConfig
from jaxhspace.tasks.common import RUN_BOOKKEEPING, run_settings
from jaxhspace.training import latent_ddpm as trainer
from jaxhspace.training.ddpm import DDPMState, make_optimizer
from jaxhspace.training.loop import run_training
from jaxhspace.training.run_config import result_fields
from jaxhspace.training.safety import check_export_dir, export_folder


def unet_config(config) -> UNetConditionConfig:
    """The :class:`UNetConditionConfig` of ``config.unet`` (diffusers field names)."""
    return UNetConditionConfig(**dict(config.unet))


def batch_captions(config, step: int, factors: dict) -> list[str]:
    """:func:`jaxhspace.training.latent_ddpm.batch_captions` with the config's seed and caption fields."""
    return trainer.batch_captions(config.seed, step, factors, config.caption_keep_prob, config.caption_full_prob,
                                  config.caption_dropout)


def _resolve(path: str) -> str:
    from jaxhspace.world import resolve_asset

    return resolve_asset(path)


def validate(config) -> None:
    """Config checks run before any work (ValueError naming the field); the input folders are checked when the job
    starts (:func:`check_inputs`: the shipped config's ``vae_path`` is the output of the VAE job, run first)."""
    unet_config(config)
    run_settings(config).validate()
    for field in ("caption_dropout", "caption_keep_prob", "caption_full_prob"):
        if not 0.0 <= float(config[field]) <= 1.0:
            raise ValueError(f"{field}={config[field]} must be in [0, 1]")
    if not 0.0 <= float(config.ema_decay) < 1.0:
        raise ValueError(f"ema_decay={config.ema_decay} must be in [0, 1)")


def check_inputs(config) -> None:
    """``config.vae_path`` and ``config.clip_path`` must be model folders (ValueError naming the field and the fix)."""
    for field in ("vae_path", "clip_path"):
        if not os.path.isfile(os.path.join(_resolve(config[field]), "config.json")):
            raise ValueError(f"{field}={config[field]!r} has no config.json: train the VAE first "
                             "(configs/sd_synthfaces/vae.py) or point it at a diffusers AutoencoderKL folder"
                             if field == "vae_path" else f"{field}={config[field]!r} is not a CLIP folder")


def run(config, workdir: str) -> dict:
    """Train (or resume) the text-conditioned latent UNet; at ``total_steps`` export the pipeline folder.

    Returns metrics (also in ``workdir/metrics.json``).
    """
    from jaxhspace.checkpoints.clip import save_text_encoder_from_clip
    from jaxhspace.checkpoints.vae import load_vae

    validate(config)
    check_inputs(config)
    export_dir = check_export_dir(config.get("export_dir"), workdir, trainer.WORKDIR_FILES + ("text_encoder",),
                                  bool(config.get("allow_asset_export", False)))
    vae_folder, clip_folder = _resolve(config.vae_path), _resolve(config.clip_path)
    vae, vae_params = load_vae(vae_folder)
    os.makedirs(workdir, exist_ok=True)
    text_folder = os.path.join(workdir, "text_encoder")
    if not os.path.isdir(text_folder):
        save_text_encoder_from_clip(text_folder, clip_folder)
    text = trainer.TextTower(text_folder, clip_folder)
    ucfg = unet_config(config)
    if ucfg.cross_attention_dim != text.model.config.hidden_size:
        raise ValueError(f"unet.cross_attention_dim={ucfg.cross_attention_dim} must equal the text tower's "
                         f"hidden_size={text.model.config.hidden_size}")
    unet = UNet2DConditionModel(ucfg)
    schedule = make_schedule(config.beta_schedule, config.beta_start, config.beta_end, config.num_train_timesteps)
    size, f = int(config.image_size), vae.config.downsample_factor
    init_key, train_key = jax.random.split(jax.random.PRNGKey(config.seed))
    dummy = jnp.zeros((1, size // f, size // f, ucfg.in_channels))
    params = unet.init(init_key, dummy, jnp.zeros((1,), jnp.int32),
                       encoder_hidden_states=jnp.zeros((1, 1, ucfg.cross_attention_dim)))["params"]
    optimizer = make_optimizer(config.lr, config.warmup_steps, config.grad_clip)
    state = DDPMState(jnp.array(0, jnp.int32), params, jax.tree.map(jnp.copy, params), optimizer.init(params))
    step_fn = trainer.make_latent_step(unet, vae, vae_params, float(vae.config.scaling_factor), text, schedule,
                                       optimizer, float(config.ema_decay), train_key)
    seed, batch_size = config.seed, config.batch_size

    def batch_fn(step):
        images, factors = synthfaces.generate(seed * 1_000_003 + step, batch_size, size=size)
        return jnp.asarray(images), jnp.asarray(text.ids(batch_captions(config, step, factors)))

    # warm-up then a constant lr: the weights up to any step do not depend on total_steps, so it may change on resume
    harmless = {"total_steps": "the learning rate does not depend on it"}
    res = run_training(run_settings(config), workdir, state, step_fn, batch_fn, "latent-ddpm",
                       result_fields(config, RUN_BOOKKEEPING), harmless)
    state = res.state
    metrics: dict[str, Any] = {"steps_done": int(state.step), "total_steps": int(config.total_steps),
                               "params": int(sum(np.prod(a.shape) for a in jax.tree.leaves(state.params))),
                               "wall_s_this_run": res.wall_s, "final_loss": res.final_loss,
                               "stopped_early": res.stopped_early}
    if int(state.step) >= config.total_steps and export_dir:
        ema = jax.device_get(state.ema_params)
        sched = trainer.scheduler_config(config.beta_schedule, config.beta_start, config.beta_end,
                                         config.num_train_timesteps)
        export_folder(export_dir, lambda p: trainer.write_pipeline(p, unet, ema, sched, text_folder, clip_folder,
                                                                   vae_folder),
                      job="latent_ddpm_train", extra={"steps": int(state.step)})
        metrics["exported_to"] = export_dir
    with open(os.path.join(workdir, "metrics.json"), "w") as fh:
        json.dump(metrics, fh, indent=2)
    return metrics
