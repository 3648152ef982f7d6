"""Inputs shared by the editing jobs: test faces (or the user's images) and their noisy x_t at an edit time."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np

from jaxhspace.data import synthfaces
from jaxhspace.data.images import load_images
from jaxhspace.diffusion.ddim import ddim_invert
from jaxhspace.diffusion.schedule import asyrp_timesteps
from jaxhspace.models.functional import eps_fn


def image_size(model) -> int:
    s = model.config.sample_size or 32
    return s if isinstance(s, int) else s[0]


def test_images(config, model) -> np.ndarray:
    """``config.image_paths`` if given, else ``config.num_images`` SynthFaces test faces (seed
    ``config.data_seed``). [N, S, S, 3] in [-1, 1]."""
    size = image_size(model)
    if config.get("image_paths"):
        return load_images(list(config.image_paths), size)
    return synthfaces.generate(config.data_seed, config.num_images, size=size)[0]


def invert_to(model, params, schedule, x0, n_steps: int, t_edit: int):
    """DDIM-invert ``x0 [N,H,W,C]`` on the Asyrp grid (n_steps points) and return
    ``(x_t at the grid point nearest t_edit [N,H,W,C], that t, the descending grid from it to 0)``.

    Park et al. invert to x_T and sample back down to the edit time; stopping the (deterministic)
    inversion at the edit time reaches the same point up to the inversion error, at lower cost.
    """
    grid = asyrp_timesteps(n_steps, schedule.num_train_timesteps - 1)
    i = int(np.argmin(np.abs(grid - t_edit)))
    x_t = ddim_invert(eps_fn(model, params), jnp.asarray(x0), grid[: i + 1], schedule)
    return x_t, int(grid[i]), grid[: i + 1][::-1].copy()
