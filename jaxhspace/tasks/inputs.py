"""Inputs shared by the editing jobs: the model's world (pixel or latent), test faces (or the user's images) and
their noisy x_t at an edit time.

A job sees one :class:`World`: ``model, params, schedule`` act on x (pixels for a ``UNet2DModel`` DDPM; VAE latents
for a latent pipeline, whose text-conditional UNet is wrapped with the fixed prompt embedding by
:class:`~jaxhspace.models.conditioning.Conditioned`), ``to_x`` maps images to x and ``to_images`` maps x back, so the
same job code runs Park, Haas, PCA and Asyrp edits on both families.

A VE-SDE score model (NCSN++, ``google/ncsnpp-*``: a fourier-embedding ``UNet2DModel`` beside a
``ScoreSdeVeScheduler`` config) is a World of ``kind="ve"``: x lives in [0, 1], t is the noise level σ, ``schedule``
is the scheduler config dict, and :func:`noise_to_sigma` / :func:`ve_continue_sampling` replace DDIM inversion and
DDIM sampling (see :mod:`jaxhspace.diffusion.ve_sde`).
"""
from __future__ import annotations

import dataclasses
import os
from typing import Any, Mapping, Optional

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
      kind: "ddpm" (ε model, integer timesteps) or "ve" (NCSN++ score model: x in [0, 1], t = σ, ``schedule`` the
        ``ScoreSdeVeScheduler`` config dict).
    """

    model: Any
    params: Any
    schedule: Any
    source: str
    image_size: int
    pipeline: Optional[Any] = None
    prompt: str = ""
    kind: str = "ddpm"

    @property
    def is_latent(self) -> bool:
        return self.pipeline is not None

    def to_x(self, images):
        """Images ``[N, S, S, 3]`` in [-1, 1] -> the model's x (the images themselves, or scaled VAE latents).
        NaN / inf or 0..255 images raise a JaxhspaceError first (:func:`~jaxhspace.diffusion.ddim.check_values`)."""
        from jaxhspace.diffusion.ddim import check_values

        check_values(images, "images", images=True)
        if self.kind == "ve":  # google/ncsnpp-* data live in [0, 1] (score_sde centered=False)
            return (jnp.asarray(images) + 1.0) / 2.0
        if self.pipeline is None:
            return jnp.asarray(images)
        from jaxhspace.checkpoints.pipeline import images_to_latents
        return images_to_latents(self.pipeline, images)

    def to_images(self, x) -> np.ndarray:
        """The model's x ``[..., h, w, c]`` -> images ``[..., S, S, 3]`` (decoded by the VAE in a latent world)."""
        if self.kind == "ve":  # ScoreSdeVePipeline clamps x_mean to [0, 1]
            return np.clip(np.asarray(x), 0.0, 1.0) * 2.0 - 1.0
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
    A VE-SDE model (:func:`ve_scheduler_config` finds one, pipeline folder or not) gives a ``kind="ve"`` World.
    """
    from jaxhspace.world import load_model

    from jaxhspace.world import resolve_asset

    path = config.model_path
    if path and os.path.isfile(os.path.join(resolve_asset(path), "model_index.json")):
        path = resolve_asset(path)  # a shipped pipeline (assets/sd_synthfaces) from any working directory
    family = config.get("model_family", "any")
    if family == "latent" and not (path and os.path.isfile(os.path.join(path, "model_index.json"))):
        raise ValueError(
            f"config.model_path={path!r}: this job needs a local diffusers pipeline folder (model_index.json, unet/, "
            "vae/ or vqvae/, scheduler/, and text_encoder/ + tokenizer/ for Stable Diffusion), e.g. "
            "--config.model_path=/data/stable-diffusion-v1-5. Nothing is downloaded.")
    ve = ve_scheduler_config(path) if family != "latent" else None
    if ve is not None:
        from jaxhspace.checkpoints import load_unet
        from jaxhspace.world import portable_path, resolve_asset

        model, params = load_unet(resolve_asset(path))
        size = int(config.get("image_size", 0) or image_size(model))
        return World(model, params, ve, portable_path(resolve_asset(path)), size, kind="ve")
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


def load_faces(config: Mapping, size: int) -> np.ndarray:
    """The faces every job reads: ``config.image_paths`` (files or folders; centre-cropped and resized to ``size``)
    if given, else ``config.num_images`` SynthFaces test faces of seed ``config.data_seed``. [N, size, size, 3] in
    [-1, 1]. ``config`` is a ConfigDict or any mapping with those fields."""
    if config.get("image_paths"):
        return load_images(list(config["image_paths"]), int(size))
    return synthfaces.generate(int(config["data_seed"]), int(config["num_images"]), size=int(size))[0]


def test_images(config, model) -> np.ndarray:
    """:func:`load_faces` at the size of ``model`` (a :class:`World` or a UNet; :func:`image_size`)."""
    return load_faces(config, image_size(model))


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


VE_SCHEDULER = "ScoreSdeVeScheduler"


def ve_scheduler_config(path: str) -> Optional[dict]:
    """The ``ScoreSdeVeScheduler`` config of a VE-SDE (NCSN++) model folder, or None for any other model.

    ``path`` is a UNet folder or a pipeline folder with ``unet/``; the scheduler config is looked up where
    :func:`jaxhspace.world.load_schedule` looks (the folder, its parent's ``scheduler/``, its parent). The model is VE
    if that config's ``_class_name`` is ``ScoreSdeVeScheduler`` or the UNet's ``time_embedding_type`` is
    ``"fourier"``; a fourier UNet without a scheduler config gets diffusers' ScoreSdeVeScheduler defaults (with a
    warning: google/ncsnpp-ffhq-256 needs its own sigma_max = 348).

    Raises:
      ValueError: a fourier UNet beside a scheduler config of another class.
    """
    import warnings

    from jaxhspace.checkpoints.common import read_json
    from jaxhspace.world import resolve_asset

    path = resolve_asset(path) if path else path
    if not path or not os.path.isdir(path):
        return None
    folder = os.path.abspath(path)
    if not os.path.isfile(os.path.join(folder, "config.json")) and os.path.isfile(
            os.path.join(folder, "unet", "config.json")):
        folder = os.path.join(folder, "unet")
    unet_cfg = read_json(os.path.join(folder, "config.json")) if os.path.isfile(
        os.path.join(folder, "config.json")) else {}
    sched = None
    for cand in (os.path.join(folder, "scheduler_config.json"),
                 os.path.join(os.path.dirname(folder), "scheduler", "scheduler_config.json"),
                 os.path.join(os.path.dirname(folder), "scheduler_config.json")):
        if os.path.isfile(cand):
            sched = read_json(cand)
            break
    fourier = unet_cfg.get("time_embedding_type") == "fourier"
    cls = (sched or {}).get("_class_name")
    if cls != VE_SCHEDULER and not fourier:
        return None
    if sched is None:
        warnings.warn(f"{folder}: a fourier-embedding (VE-SDE / NCSN++) UNet without scheduler_config.json: ASSUMING "
                      "diffusers' ScoreSdeVeScheduler defaults (sigma_min 0.01, sigma_max 1348, snr 0.15); put the "
                      "model's scheduler_config.json beside config.json (google/ncsnpp-ffhq-256 has sigma_max 348).",
                      UserWarning, stacklevel=2)
        return {"_class_name": VE_SCHEDULER}
    if cls != VE_SCHEDULER:
        raise ValueError(f"{folder}: the UNet uses time_embedding_type='fourier' (a VE-SDE score model such as "
                         f"NCSN++) but its scheduler config is a {cls!r}; put the model's ScoreSdeVeScheduler "
                         "scheduler_config.json beside it.")
    return dict(sched)


def noise_to_sigma(world: World, x0, n_steps: int, sigma_edit: float, key):
    """VE "noise to the edit level": ``x_σ = x0 + σ z`` with z ~ N(0, I) from ``key`` (the forward process
    itself, as score-SDE / SDEdit editing does; no inversion), σ the step of the ``n_steps``-step
    :func:`~jaxhspace.diffusion.ve_sde.ve_schedule_from_config` grid nearest ``sigma_edit`` (in log σ).

    Args:
      world: a ``kind="ve"`` World; x0: ``[N, H, W, C]`` x in [0, 1] (``world.to_x(images)``).

    Returns:
      ``(x_σ [N,H,W,C], σ (float), start (that step's index), the VESchedule)``; continue with
      :func:`ve_continue_sampling` ``(..., schedule, start, ...)``.
    """
    from jaxhspace.diffusion.ve_sde import add_noise, ve_schedule_from_config

    if world.kind != "ve":
        raise ValueError(f"noise_to_sigma needs a VE-SDE world (kind='ve'), got kind={world.kind!r}")
    if not (np.isfinite(sigma_edit) and sigma_edit > 0):
        raise ValueError(f"config.edit_sigma must be a finite noise level > 0, got {sigma_edit!r}")
    schedule = ve_schedule_from_config(world.schedule, n_steps)
    start = int(np.argmin(np.abs(np.log(schedule.sigmas) - np.log(sigma_edit))))
    sigma = float(schedule.sigmas[start])
    x0 = jnp.asarray(x0)
    return add_noise(x0, sigma, jax.random.normal(key, x0.shape, x0.dtype)), sigma, start, schedule


def ve_continue_sampling(model, params, x_groups, schedule, start: int, key, snr: float = 0.15,
                         correct_steps: int = 1):
    """VE "continue sampling from σ": predictor-corrector :func:`~jaxhspace.diffusion.ve_sde.ve_sample` from step
    ``start`` to the end, on each group ``x_groups[g] [N, H, W, C]`` with the same ``key`` (``lax.map``), so image n
    sees the same noise in every group (an edit and its unedited reconstruction differ only by the edit).

    Returns x_mean of the last step ``[G, N, H, W, C]`` (x in [0, 1] up to clipping; ``World.to_images`` clips).
    """
    from jaxhspace.diffusion.ve_sde import ve_sample
    from jaxhspace.models.functional import eps_fn

    x_groups = jnp.asarray(x_groups)
    if x_groups.ndim != 5:
        raise ValueError(f"x_groups must be [G, N, H, W, C], got shape {x_groups.shape}")

    def run(p, xg):  # params traced (not baked into the program as constants)
        score = eps_fn(model, p)
        return jax.lax.map(lambda x: ve_sample(score, x, schedule, key, snr, correct_steps, start)[1], xg)

    return jax.jit(run)(params, x_groups)
