"""Small pieces shared by jobs: timestep grids from a config, writing metrics."""
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
