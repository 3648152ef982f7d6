"""Load diffusers ``AutoencoderKL`` / ``VQModel`` folders into :mod:`jaxhspace.models.vae`.

A folder holds ``config.json`` (``_class_name`` ``AutoencoderKL`` or ``VQModel``) and
``diffusion_pytorch_model.safetensors`` (or ``.bin``, fp16 variants), e.g. the ``vae/`` or ``vqvae/`` subfolder of a
diffusers pipeline. Old checkpoints' attention names ``query/key/value/proj_attn`` are renamed to
``to_q/to_k/to_v/to_out.0`` (as diffusers does on load). Keys and shapes are checked strictly: every missing,
unexpected or mis-shaped tensor is listed in one error.
"""
from __future__ import annotations

import os
from typing import Any

import jax
import jax.numpy as jnp

from jaxhspace.checkpoints.common import (
    find_weights_file, params_to_state_dict, read_json, read_state_dict, state_dict_to_params)
from jaxhspace.checkpoints.unet import WEIGHT_FILES, rename_legacy_attention_keys
from jaxhspace.models.vae import AutoencoderKL, AutoencoderKLConfig, VQModel, VQModelConfig, vae_param_shapes

LIST_NAMES = ("down_blocks", "up_blocks", "resnets", "attentions", "downsamplers", "upsamplers", "to_out")
# name -> (Flax module, its config dataclass with a ``from_dict`` classmethod)
VAE_CLASSES: dict[str, tuple[type, Any]] = {"AutoencoderKL": (AutoencoderKL, AutoencoderKLConfig),
                                            "VQModel": (VQModel, VQModelConfig)}


def vae_from_config(cfg: dict, dtype: Any = jnp.float32):
    """Build the (uninitialised) Flax autoencoder named by ``cfg['_class_name']``; ValueError otherwise."""
    name = cfg.get("_class_name")
    if name not in VAE_CLASSES:
        raise ValueError(f"config _class_name={name!r} is not a supported autoencoder; supported: "
                         f"{sorted(VAE_CLASSES)}")
    module, config_cls = VAE_CLASSES[name]
    return module(config_cls.from_dict(cfg), dtype=dtype)


def state_dict_to_vae_params(vae, state_dict: dict) -> dict:
    """diffusers state dict (NumPy, torch layout) -> Flax params for ``vae``; ValueError listing every missing,
    unexpected and mis-shaped key."""
    return state_dict_to_params(vae_param_shapes(vae), rename_legacy_attention_keys(state_dict), LIST_NAMES,
                                what=type(vae).__name__)


def vae_params_to_state_dict(params: dict) -> dict:
    """Flax params -> diffusers-layout NumPy state dict (``to_q``/``to_out.0`` names)."""
    return params_to_state_dict(params, LIST_NAMES)


def load_vae(path, dtype: Any = jnp.float32):
    """Load a diffusers ``AutoencoderKL`` or ``VQModel`` folder.

    Args:
      path: folder with ``config.json`` + ``diffusion_pytorch_model.safetensors`` (or ``.bin``), or a pipeline
        folder with one ``vae/`` or ``vqvae/`` subfolder.
      dtype: compute dtype of the returned module; params are float32.

    Returns:
      ``(vae, params)``. ``vae.apply({"params": params}, x, method=vae.encode)`` with ``x [B, H, W, 3]`` in [-1, 1]
      gives a ``DiagonalGaussian(mean, logvar)`` (AutoencoderKL) or pre-quantisation latents (VQModel);
      ``method=vae.decode`` maps unscaled latents to images (a VQModel quantises first).

    Raises:
      ValueError for a missing folder/config/weights file, an unsupported ``_class_name`` or config value, and
      missing, unexpected or mis-shaped weights (all listed).
    """
    folder = os.fspath(path)
    if not os.path.isdir(folder):
        raise ValueError(f"{folder} is not a folder: pass a diffusers AutoencoderKL/VQModel folder "
                         "(config.json + diffusion_pytorch_model.safetensors), e.g. a pipeline's vae/ subfolder.")
    if not os.path.isfile(os.path.join(folder, "config.json")):  # a pipeline root: use its vae/ or vqvae/
        subs = [s for s in ("vae", "vqvae") if os.path.isfile(os.path.join(folder, s, "config.json"))]
        if len(subs) == 1:
            folder = os.path.join(folder, subs[0])
    cfg = read_json(os.path.join(folder, "config.json"))
    vae = vae_from_config(cfg, dtype)
    state_dict = read_state_dict(find_weights_file(folder, WEIGHT_FILES))
    params = jax.tree_util.tree_map(jnp.asarray, state_dict_to_vae_params(vae, state_dict))
    return vae, params


__all__ = ["load_vae", "vae_from_config", "state_dict_to_vae_params", "vae_params_to_state_dict", "VAE_CLASSES"]
