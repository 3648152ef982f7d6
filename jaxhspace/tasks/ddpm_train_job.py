"""Job ``ddpm_train``: train (or resume) the small SynthFaces DDPM and export its EMA weights in diffusers format.

The config (``configs/ddpm_synthfaces.py``) is read here only; the pieces (optimizer, loss, step, batches) are
:mod:`jaxhspace.training.ddpm`, the resumable loop :func:`jaxhspace.training.loop.run_training`.
"""
from __future__ import annotations

import json
import os
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np

from jaxhspace.diffusion.schedule import make_schedule
from jaxhspace.models.unet import UNet2DModel, UNetConfig
from jaxhspace.tasks.common import BOOKKEEPING, run_settings
from jaxhspace.training import ddpm
from jaxhspace.training.loop import latest_step, run_training
from jaxhspace.training.run_config import result_fields
from jaxhspace.training.safety import check_export_dir, export_folder

def validate(config) -> None:
    """Checks run before any work: the loop settings (a JaxhspaceError naming the field)."""
    run_settings(config).validate()


def run(config, workdir: str) -> dict:
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
    settings = run_settings(config).validate()
    export_dir = check_export_dir(config.get("export_dir"), workdir, ddpm.WORKDIR_FILES,
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
    optimizer = ddpm.make_optimizer(config.lr, config.warmup_steps, config.grad_clip, refine_from, config.total_steps,
                                    config.get("refine_final_lr", config.lr))
    state = ddpm.DDPMState(jnp.array(0, jnp.int32), params, jax.tree.map(jnp.copy, params), optimizer.init(params))
    step_fn = ddpm.make_train_step(model, schedule, optimizer, config.ema_decay, train_key, refine_from,
                                   config.get("refine_min_snr_gamma", 0.0), config.get("refine_ema_decay"))
    seed, batch_size = config.seed, config.batch_size
    res = run_training(settings, workdir, state, step_fn,
                       lambda step: jnp.asarray(ddpm.batch_for_step(seed, step, batch_size, size)),
                       "ddpm", result_fields(config, BOOKKEEPING),
                       ddpm.harmless_changes(config.total_steps, refine_from, resume_from))
    state, stopped_early = res.state, res.stopped_early
    n_params = sum(int(np.prod(a.shape)) for a in jax.tree.leaves(state.params))
    metrics: dict[str, Any]
    metrics = {"steps_done": int(state.step), "total_steps": int(config.total_steps), "params": n_params,
               "wall_s_this_run": res.wall_s, "final_loss": res.final_loss,
               "stopped_early": stopped_early}
    if int(state.step) >= config.total_steps and export_dir:
        from jaxhspace.checkpoints.unet import save_unet_diffusers

        ema = jax.device_get(state.ema_params)
        sched = ddpm.scheduler_config(config.beta_schedule, config.beta_start, config.beta_end,
                                      config.num_train_timesteps)
        export_folder(export_dir, lambda p: save_unet_diffusers(p, model, ema, scheduler_config=sched),
                      job="ddpm_train", extra={"steps": int(state.step)})
        metrics["exported_to"] = export_dir
    with open(os.path.join(workdir, "metrics.json"), "w") as f:
        json.dump(metrics, f, indent=2)
    return metrics
