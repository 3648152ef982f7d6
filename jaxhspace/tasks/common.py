"""Small pieces shared by jobs: timestep grids from a config, writing metrics, the training jobs' loop settings."""
from __future__ import annotations

import json
import os

import numpy as np

from jaxhspace.diffusion.schedule import asyrp_timesteps, ddim_timesteps


def sampling_grid(spacing: str, n: int, num_train_timesteps: int = 1000) -> np.ndarray:
    """Descending sampling grid: ``"asyrp"`` (official Asyrp ``linspace(0,1,n)*999``) or a diffusers DDIM
    spacing (``"leading" | "trailing" | "linspace"``). [n] int64."""
    if spacing == "asyrp":
        return asyrp_timesteps(n, num_train_timesteps - 1)[::-1].copy()
    return ddim_timesteps(n, num_train_timesteps, spacing)


def inversion_grid(spacing: str, n: int, num_train_timesteps: int = 1000) -> np.ndarray:
    """Ascending grid for DDIM inversion (the reverse of :func:`sampling_grid`). [n] int64."""
    return sampling_grid(spacing, n, num_train_timesteps)[::-1].copy()


def write_metrics(workdir: str, metrics: dict, name: str = "metrics.json") -> str:
    """Write ``metrics`` as JSON atomically into ``workdir``; returns the path. Adds ``precision`` (the matmul
    precision in effect, ``config.precision`` via ``jaxhspace.main``) if the job did not set it."""
    from jaxhspace.precision import current_matmul_precision

    metrics.setdefault("precision", current_matmul_precision())
    os.makedirs(workdir, exist_ok=True)
    path = os.path.join(workdir, name)
    with open(path + ".tmp", "w") as f:
        json.dump(metrics, f, indent=2, default=float)
    os.replace(path + ".tmp", path)
    return path


# Training jobs: config fields that do not change the trained weights (not compared on resume). The DDPM job compares
# ``precision`` (as it always did, so old checkpoints resume with the same verdicts); the VAE and latent-DDPM jobs
# ignore it (RUN_BOOKKEEPING).
BOOKKEEPING = ("task", "max_minutes", "export_dir", "allow_asset_export", "log_every", "checkpoint_every",
               "resume_policy", "max_loss_growth", "loss_window")
RUN_BOOKKEEPING = BOOKKEEPING + ("precision",)


def run_settings(config):
    """The training loop's :class:`~jaxhspace.training.loop.RunSettings` of a trainer's config (the fields of
    ``configs._common.add_run_fields``; absent optional ones keep the loop's defaults)."""
    from jaxhspace.training.loop import RunSettings

    return RunSettings(total_steps=config.total_steps, lr=config.lr, checkpoint_every=config.checkpoint_every,
                       log_every=config.log_every, max_minutes=config.get("max_minutes") or 0.0,
                       max_loss_growth=config.get("max_loss_growth", 100.0), loss_window=config.get("loss_window", 10),
                       resume_policy=config.get("resume_policy", "strict") or "strict")
