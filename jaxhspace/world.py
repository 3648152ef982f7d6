"""The embedded default world: where the shipped assets live and how a job picks its model.

A job's ``config.model_path`` may point at any diffusers UNet2DModel folder (or a converted one); empty
means the shipped SynthFaces DDPM under ``assets/ddpm_synthfaces``. The shipped assets are package data
(``jaxhspace.assets``: the checkout's top-level ``assets/``, carried by the wheel; see jaxhspace/resources.py).
If the DDPM is missing (an incomplete install or checkout), a randomly initialised tiny UNet is used and a
warning says what is missing and how to get it back.
"""
from __future__ import annotations

import os
import warnings

import jax
import jax.numpy as jnp

from jaxhspace.resources import assets_dir

ASSETS = assets_dir()  # the installed package data jaxhspace.assets (the checkout's assets/ when editable)
DEFAULT_DDPM = os.path.join(ASSETS, "ddpm_synthfaces")  # the editing world: 6000 steps; the editors were trained on it
SAMPLER_DDPM = os.path.join(ASSETS, "ddpm_synthfaces_refined")  # the same run after 3000 refine steps: the sampler
DEFAULT_CLIP = os.path.join(ASSETS, "clip_synthfaces")
DEFAULT_PROBE = os.path.join(ASSETS, "probe")
SD_SYNTHFACES = os.path.join(ASSETS, "sd_synthfaces")  # the text-conditioned latent pipeline


# How each shipped asset is rebuilt (README, "The embedded default world"): (command, where it writes the result).
REBUILD_COMMANDS = {
    "probe": ("python -m jaxhspace.data.probe --out assets/probe --steps 1500 --batch 64 --lr 0.002 --seed 0",
              "assets/probe"),
    "clip_synthfaces": ("python -m jaxhspace.main --config clip_synthfaces --workdir runs/clip_synthfaces",
                        "assets/clip_synthfaces"),
    "ddpm_synthfaces": ("python -m jaxhspace.main --config ddpm_synthfaces --workdir runs/ddpm_synthfaces "
                        "--config.total_steps=6000 --config.export_dir=assets/ddpm_synthfaces",
                        "assets/ddpm_synthfaces"),
    "ddpm_synthfaces_refined": ("python -m jaxhspace.main --config ddpm_synthfaces --workdir runs/ddpm_synthfaces",
                                "assets/ddpm_synthfaces_refined (run it after the ddpm_synthfaces command: it "
                                "resumes that workdir at step 6000)"),
    "sd_synthfaces": ("python -m jaxhspace.main --config sd_synthfaces/vae --workdir runs/sd_vae && python -m "
                      "jaxhspace.main --config sd_synthfaces/unet --workdir runs/sd_unet",
                      "runs/sd_unet/export (the VAE job's export runs/sd_vae/export is its vae_path)"),
    "editors/red_hair": ("python -m jaxhspace.main --config editor_red_hair --workdir runs/editor_red_hair",
                         "runs/editor_red_hair/editor"),
    "editors/glasses": ("python -m jaxhspace.main --config editor_glasses --workdir runs/editor_glasses",
                        "runs/editor_glasses/editor"),
}


def missing_asset_message(path: str) -> str:
    """What to tell a user whose shipped asset ``path`` (under :data:`ASSETS`, or ``assets/...``) is missing:
    which asset, and how to get it back (reinstall, or the command that rebuilds it)."""
    name = _asset_name(path)
    where = os.path.join(ASSETS, *name.split("/"))
    msg = (f"the shipped asset assets/{name} is missing (looked for {where}). Reinstall jaxhspace to get it back "
           "(`pip install --force-reinstall --no-deps jaxhspace`, or the same command with the wheel you installed; "
           f"in a git checkout, `git checkout -- assets/{name}`)")
    if name in REBUILD_COMMANDS:
        command, result = REBUILD_COMMANDS[name]
        msg += f", or rebuild it with `{command}` (it writes {result}; copy that folder to {where})"
    return msg + "."


def resolve_asset(path: str) -> str:
    """``path`` itself if it exists; else, for a relative ``assets/...`` path, the shipped copy in this
    checkout (so configs naming ``assets/editors/...`` work from any working directory)."""
    if os.path.exists(path) or os.path.isabs(path):
        return path
    parts = os.path.normpath(path).split(os.sep)
    if parts[0] == "assets":
        cand = os.path.join(ASSETS, *parts[1:])
        if os.path.exists(cand):
            return cand
    return path


def require_asset(path: str) -> str:
    """:func:`resolve_asset`, raising if ``path`` names a shipped asset (``assets/...``) that is missing.

    Raises:
      ValueError saying which shipped asset is missing and how to get it back (:func:`missing_asset_message`).
    """
    resolved = resolve_asset(path)
    if not os.path.exists(resolved) and _asset_name(resolved) in REBUILD_COMMANDS:
        raise ValueError(missing_asset_message(resolved))
    return resolved


def _asset_name(path: str) -> str:
    """``editors/glasses`` for ``assets/editors/glasses`` or ``<ASSETS>/editors/glasses``; else ``path``."""
    rel = portable_path(path)
    parts = os.path.normpath(rel).split(os.sep)
    return "/".join(parts[1:]) if parts[0] == "assets" and len(parts) > 1 else rel


def portable_path(path: str) -> str:
    """``path`` as recorded in metrics and editor metadata: shipped assets as ``assets/...`` (the form
    :func:`resolve_asset` reads back on any machine), anything else unchanged."""
    rel = os.path.relpath(os.path.abspath(path), ASSETS)
    return path if rel.startswith("..") else os.path.join("assets", rel)


TINY_RANDOM_UNET = dict(
    sample_size=32, in_channels=3, out_channels=3, block_out_channels=[32, 64, 64], layers_per_block=1,
    down_block_types=["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
    up_block_types=["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"], attention_head_dim=None,
    norm_num_groups=16, norm_eps=1e-6, flip_sin_to_cos=False, freq_shift=1, downsample_padding=0)


def load_model(model_path: str = "", seed: int = 0):
    """Return ``(model, params, schedule, source)`` for a job.

    Args:
      model_path: diffusers/converted UNet folder; "" = the shipped default (or, if it is missing, a random
        tiny UNet with a warning naming what is missing and how to get it).
      seed: init seed for the random fallback.

    Raises:
      ValueError naming ``config.model_path`` if a non-empty ``model_path`` is not an existing folder.
    """
    from jaxhspace.checkpoints import load_unet
    from jaxhspace.diffusion.schedule import make_schedule
    from jaxhspace.models.unet import UNet2DModel, UNetConfig

    model_path = resolve_asset(model_path)
    if model_path and os.path.isfile(model_path):  # jobs from get_task convert these first (checkpoints.auto_convert)
        from jaxhspace.checkpoints.auto_convert import converter_command
        raise ValueError(f"config.model_path={model_path!r} is a checkpoint file: run the job through "
                         "jaxhspace.main / jaxhspace.tasks.get_task (official .ckpt / .pt files are converted into the "
                         f"workdir), or convert it first: {converter_command(None, model_path)}")
    if model_path and not os.path.isdir(model_path):
        raise ValueError(
            f"config.model_path={model_path!r} is not an existing folder. Pass a diffusers UNet2DModel folder "
            "(config.json + diffusion_pytorch_model.safetensors/.bin, or a pipeline folder with unet/), e.g. a local "
            "copy of google/ddpm-ema-celebahq-256, with --config.model_path=/path/to/that/folder "
            "(or leave it empty for the shipped SynthFaces DDPM).")
    path = model_path or (DEFAULT_DDPM if os.path.isdir(DEFAULT_DDPM) else "")
    if path:
        model, params = load_unet(path)
        return model, params, load_schedule(path), portable_path(path)
    warnings.warn("Using a randomly initialised tiny UNet (samples will be noise): "
                  + missing_asset_message(DEFAULT_DDPM), stacklevel=2)
    model = UNet2DModel(UNetConfig.from_dict(TINY_RANDOM_UNET))
    params = model.init(jax.random.PRNGKey(seed), jnp.zeros((1, 32, 32, 3)), jnp.zeros((1,), jnp.int32))["params"]
    return model, params, make_schedule(), "random-init tiny UNet"


def load_schedule(model_path: str):
    """The noise schedule stored beside a model (``scheduler_config.json`` in the folder, its parent's
    ``scheduler/`` or the folder's parent); the DDPM default (linear 1e-4..0.02, T=1000) if none."""
    from jaxhspace.checkpoints.common import read_json
    from jaxhspace.diffusion.schedule import make_schedule, schedule_from_config

    folder = os.path.abspath(model_path)
    for cand in (os.path.join(folder, "scheduler_config.json"),
                 os.path.join(os.path.dirname(folder), "scheduler", "scheduler_config.json"),
                 os.path.join(os.path.dirname(folder), "scheduler_config.json")):
        if os.path.isfile(cand):
            return schedule_from_config(read_json(cand))
    warnings.warn(f"no scheduler_config.json in or beside {folder}: ASSUMING the default linear schedule (beta "
                  "1e-4..0.02, T=1000); if the model was trained with another one, put its scheduler_config.json "
                  "beside config.json.", UserWarning, stacklevel=2)
    return make_schedule()
