"""Job ``vae_train``: train (or resume) the SynthFaces AutoencoderKL and export it as a diffusers folder.

The config (``configs/sd_synthfaces/vae.py``) is read here only; the loss, step, metrics and export writer are
:mod:`jaxhspace.training.vae`, the resumable loop :func:`jaxhspace.training.loop.run_training`.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxhspace.data import synthfaces
from jaxhspace.models.vae import AutoencoderKL, AutoencoderKLConfig
from jaxhspace.tasks.common import RUN_BOOKKEEPING, run_settings
from jaxhspace.training import vae as trainer
from jaxhspace.training.loop import run_training
from jaxhspace.training.run_config import result_fields
from jaxhspace.training.safety import check_export_dir, export_folder


def vae_config(config) -> AutoencoderKLConfig:
    """The :class:`AutoencoderKLConfig` of ``config.vae`` (diffusers field names)."""
    return AutoencoderKLConfig.from_dict(dict(config.vae))


def validate(config) -> None:
    """Config checks run before any work (ValueError naming the field)."""
    vae_config(config)
    run_settings(config).validate()
    if int(config.image_size) not in synthfaces.SIZES:
        raise ValueError(f"image_size={config.image_size} must be one of {synthfaces.SIZES} (SynthFaces sizes)")
    for name in ("kl_weight", "perceptual_weight"):
        if not float(config[name]) >= 0:
            raise ValueError(f"{name}={config[name]} must be >= 0")
    if config.perceptual_weight and int(config.image_size) != 32:
        raise ValueError("perceptual_weight > 0 needs image_size=32 (the probe reads 32x32 faces); set it to 0")


def run(config, workdir: str) -> dict:
    """Train (or resume) the VAE; at ``total_steps`` measure it and export to ``config.export_dir``.

    Returns metrics (also in ``workdir/metrics.json``): reconstruction MSE/PSNR and probe agreement on held-out
    faces, the latent ``scaling_factor``, the parameter count.
    """
    validate(config)
    export_dir = check_export_dir(config.get("export_dir"), workdir, trainer.WORKDIR_FILES,
                                  bool(config.get("allow_asset_export", False)))
    vae = AutoencoderKL(vae_config(config))
    size = int(config.image_size)
    init_key, train_key = jax.random.split(jax.random.PRNGKey(config.seed))
    params = vae.init(init_key, jnp.zeros((1, size, size, 3)))["params"]
    optimizer = trainer.make_vae_optimizer(config.lr, config.final_lr, config.warmup_steps, config.total_steps,
                                           config.grad_clip)
    state = trainer.VAEState(jnp.array(0, jnp.int32), params, optimizer.init(params))
    probe_fn = trainer.probe_feature_fn(config.get("probe_path", "")) if config.perceptual_weight else None
    step_fn = trainer.make_vae_step(vae, optimizer, train_key, probe_fn, float(config.kl_weight),
                                    float(config.perceptual_weight))
    seed, batch_size = config.seed, config.batch_size

    def batch_fn(step):
        return jnp.asarray(trainer.batch_for_step(seed, step, batch_size, size))

    res = run_training(run_settings(config), workdir, state, step_fn, batch_fn, "vae",
                       result_fields(config, RUN_BOOKKEEPING))
    state = res.state
    metrics: dict[str, Any] = {"steps_done": int(state.step), "total_steps": int(config.total_steps),
                               "params": int(sum(np.prod(a.shape) for a in jax.tree.leaves(state.params))),
                               "wall_s_this_run": res.wall_s, "final_loss": res.final_loss,
                               "stopped_early": res.stopped_early}
    if int(state.step) >= config.total_steps:
        eval_seed = int(config.get("eval_seed", 777))
        metrics["scaling_factor"] = trainer.latent_scaling_factor(vae, state.params, eval_seed, size=size)
        metrics["heldout"] = trainer.reconstruction_metrics(vae, state.params, eval_seed + 1, size=size)
        if export_dir:
            export_folder(export_dir,
                          lambda p: trainer.save_vae_diffusers(p, vae, state.params, metrics["scaling_factor"]),
                          job="vae_train", extra={"steps": int(state.step)})
            metrics["exported_to"] = export_dir
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    return metrics
