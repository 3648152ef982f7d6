"""Job ``invert_reconstruct``: DDIM-invert images to x_T and sample them back, for several step counts.

Reports the reconstruction error per n (the DDIM paper's Table 2 trend: error shrinks as n grows) and
writes a grid: rows = images; columns = input, then the reconstruction for each n.
"""
from __future__ import annotations

import os
import time

import jax
import numpy as np
from tqdm import tqdm

from jaxhspace.data.images import save_grid
from jaxhspace.diffusion.ddim import ddim_invert, ddim_sample
from jaxhspace.models.functional import eps_fn
from jaxhspace.tasks.common import inversion_grid, sampling_grid, write_metrics
from jaxhspace.tasks.inputs import image_size, load_faces
from jaxhspace.world import load_model


def run(config, workdir: str) -> dict:
    """Invert ``config.num_images`` SynthFaces test faces (or ``config.image_paths``) and reconstruct them
    with each n in ``config.n_steps_list``; MSE and max-abs error per n go to metrics.json."""
    model, params, schedule, source = load_model(config.model_path, config.seed)
    x0 = jax.numpy.asarray(load_faces(config, image_size(model)))
    f = eps_fn(model, params)
    rows, table = [np.asarray(x0)], []
    for n in tqdm(list(config.n_steps_list), desc="invert+reconstruct"):
        t0 = time.time()
        x_lat = ddim_invert(f, x0, inversion_grid(config.spacing, n, schedule.num_train_timesteps), schedule)
        rec = ddim_sample(f, x_lat, sampling_grid(config.spacing, n, schedule.num_train_timesteps), schedule)
        rec = np.asarray(jax.device_get(rec))
        err = rec - np.asarray(x0)
        table.append({"n": int(n), "mse": float(np.mean(err ** 2)), "max_abs": float(np.max(np.abs(err))),
                      "latent_std": float(np.std(np.asarray(x_lat))), "wall_s": time.time() - t0})
        rows.append(rec)
    grid = save_grid(os.path.join(workdir, "reconstructions.png"), np.stack(rows, axis=1), upscale=config.upscale)
    metrics = {"task": "invert_reconstruct", "model": source, "spacing": config.spacing, "table": table,
               "grid": grid}
    write_metrics(workdir, metrics)
    return metrics
