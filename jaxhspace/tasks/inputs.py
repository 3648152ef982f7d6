"""Inputs shared by the editing jobs: the model's world (pixel or latent), test faces (or the user's images) and
their noisy x_t at an edit time.

A job sees one :class:`World`: ``model, params, schedule`` act on x (pixels for a ``UNet2DModel`` DDPM; VAE latents
for a latent pipeline, whose text-conditional UNet is wrapped with the fixed prompt embedding by
:class:`~jaxhspace.models.conditioning.Conditioned`), ``to_x`` maps images to x and ``to_images`` maps x back, so the
same job code runs Park, Haas, PCA and Asyrp edits on both families.
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxhspace.data import synthfaces
from jaxhspace.data.images import load_images
from jaxhspace.diffusion.ddim import ddim_invert
from jaxhspace.diffusion.schedule import asyrp_timesteps
from jaxhspace.models.functional import eps_fn


@dataclasses.dataclass(frozen=True, eq=False)
class World:
    """What a job edits: ``model``/``params``/``schedule`` over x, and the image <-> x maps.

    Attributes:
      model, params, schedule, source: as :func:`jaxhspace.world.load_model` returns them (for a latent pipeline
        the UNet, wrapped with the prompt's embedding if it is text-conditional).
      image_size: side of the images the job reads and writes (pixels).
      pipeline: the :class:`~jaxhspace.checkpoints.pipeline.Pipeline` of a latent world, else None.
      prompt: the fixed prompt inside every model call of a text-conditional world ("" = unconditional branch).
    """

    model: Any
    params: Any
    schedule: Any
    source: str
    image_size: int
    pipeline: Optional[Any] = None
    prompt: str = ""

    @property
    def is_latent(self) -> bool:
        return self.pipeline is not None

    def to_x(self, images):
        """Images ``[N, S, S, 3]`` in [-1, 1] -> the model's x (the images themselves, or scaled VAE latents)."""
        if self.pipeline is None:
            return jnp.asarray(images)
        from jaxhspace.checkpoints.pipeline import images_to_latents
        return images_to_latents(self.pipeline, images)

    def to_images(self, x) -> np.ndarray:
        """The model's x ``[..., h, w, c]`` -> images ``[..., S, S, 3]`` (decoded by the VAE in a latent world)."""
        if self.pipeline is None:
            return np.asarray(x)
        from jaxhspace.checkpoints.pipeline import latents_to_images
        x = jnp.asarray(x)
        flat = x.reshape((-1,) + x.shape[-3:])
        img = np.asarray(latents_to_images(self.pipeline, flat))
        return img.reshape(x.shape[:-3] + img.shape[-3:])


def _epsilon_converter(schedule, prediction_type: str):
    from jaxhspace.diffusion.guidance import output_to_epsilon

    def f(out, x, t):
        return output_to_epsilon(out, x, t, schedule, prediction_type)

    return f


def load_world(config) -> World:
    """The job's :class:`World` from ``config.model_path`` (+ ``config.prompt`` for text-conditional pipelines).

    A folder with ``model_index.json`` is a latent pipeline (Stable Diffusion 1.x/2.x, the LDM); anything else goes
    through :func:`jaxhspace.world.load_model` (a UNet folder, converted folder, or "" for the shipped DDPM).
    ``config.model_family == "latent"`` (the ``configs/sd`` and ``configs/ldm`` jobs) requires a pipeline folder.
    """
    from jaxhspace.world import load_model

    path = config.model_path
    family = config.get("model_family", "any")
    if family == "latent" and not (path and os.path.isfile(os.path.join(path, "model_index.json"))):
        raise ValueError(
            f"config.model_path={path!r}: this job needs a local diffusers pipeline folder (model_index.json, unet/, "
            "vae/ or vqvae/, scheduler/, and text_encoder/ + tokenizer/ for Stable Diffusion), e.g. "
            "--config.model_path=/data/stable-diffusion-v1-5. Nothing is downloaded.")
    if path and os.path.isfile(os.path.join(path, "model_index.json")):
        from jaxhspace.checkpoints.pipeline import encode_prompt, load_pipeline
        from jaxhspace.diffusion.guidance import PREDICTION_TYPES
        from jaxhspace.diffusion.schedule import schedule_from_config
        from jaxhspace.models.conditioning import Conditioned

        pipe = load_pipeline(path)
        schedule = schedule_from_config(pipe.scheduler, PREDICTION_TYPES)
        prompt = str(config.get("prompt", ""))
        model = pipe.unet
        if pipe.text_encoder is not None or pipe.prediction_type != "epsilon":
            context = encode_prompt(pipe, [prompt]) if pipe.text_encoder is not None else None
            to_eps = None if pipe.prediction_type == "epsilon" else _epsilon_converter(schedule, pipe.prediction_type)
            model = Conditioned(model, context, to_epsilon=to_eps)
        s = pipe.unet.config.sample_size or 64
        size = (s if isinstance(s, int) else s[0]) * pipe.vae_downsample_factor
        return World(model, pipe.unet_params, schedule, path, int(config.get("image_size", 0) or size), pipe, prompt)
    model, params, schedule, source = load_model(path, config.seed)
    return World(model, params, schedule, source, image_size(model))


def image_size(model) -> int:
    """Image side a job uses: a :class:`World`'s ``image_size``, else the UNet's ``sample_size`` (default 32)."""
    if isinstance(model, World):
        return model.image_size
    s = model.config.sample_size or 32
    return s if isinstance(s, int) else s[0]


def test_images(config, model) -> np.ndarray:
    """``config.image_paths`` if given, else ``config.num_images`` SynthFaces test faces (seed
    ``config.data_seed``). [N, S, S, 3] in [-1, 1]; ``model`` is a :class:`World` or a UNet."""
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
