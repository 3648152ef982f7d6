"""Load and save :class:`~jaxhspace.models.unet.UNet2DModel` checkpoints.

Two folder formats:
  * diffusers: ``config.json`` + ``diffusion_pytorch_model.safetensors`` (or ``.bin``), possibly in a
    ``unet/`` subfolder of a pipeline folder;
  * converted: ``config.json`` with ``"_jaxhspace_format": "orbax"`` + an orbax ``params/`` folder
    (written by :func:`save_unet_converted`, e.g. via ``python -m checkpoints_convert.diffusers_unet``).
"""
from __future__ import annotations

import importlib
import os
import re
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxhspace.checkpoints.common import (
    atomic_directory, find_weights_file, params_to_state_dict, read_json, read_state_dict, restore_params,
    save_params, save_state_dict_safetensors, state_dict_to_params, write_json)
from jaxhspace.models.unet import UNet2DModel, UNetConfig

FORMAT_KEY = "_jaxhspace_format"
CONVERTED_FORMAT = "orbax"
LIST_NAMES = ("down_blocks", "up_blocks", "resnets", "attentions", "downsamplers", "upsamplers", "to_out")
WEIGHT_FILES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.fp16.bin",
)
_OLD_ATTN_KEY = re.compile(r"^(.*\.attentions\.\d+)\.(query|key|value|proj_attn)\.(weight|bias)$")
_NEW_ATTN_NAME = {"query": "to_q", "key": "to_k", "value": "to_v", "proj_attn": "to_out.0"}
# config.json "_class_name" -> "module:function(folder, dtype=..., config=...)" loading that family (imported lazily);
# "UNet2DModel" (and a missing _class_name) is loaded by load_unet itself.
FAMILY_LOADERS = {
    "UNet2DConditionModel": "jaxhspace.checkpoints.unet_condition:load_unet_condition",
    "GuidedUNetModel": "jaxhspace.checkpoints.guided_diffusion:load_guided_unet",
}


def _model_folder(path: str) -> str:
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise ValueError(f"{path} is not a folder: pass a diffusers UNet2DModel folder or a converted folder.")
    if (not os.path.isfile(os.path.join(path, "config.json"))
            and os.path.isfile(os.path.join(path, "unet", "config.json"))):
        return os.path.join(path, "unet")
    return path


def param_shapes(model: UNet2DModel) -> dict:
    """Param tree of ``model`` as ``jax.ShapeDtypeStruct`` leaves (no computation)."""
    f = 2 ** model.config.num_downsamples
    x = jnp.zeros((1, f, f, model.config.in_channels), jnp.float32)
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), x, jnp.zeros((1,), jnp.float32))["params"]


def rename_legacy_attention_keys(state_dict: dict) -> dict:
    """Map old attention names ``query/key/value/proj_attn`` to ``to_q/to_k/to_v/to_out.0`` (as diffusers does)."""
    out = {}
    for k, v in state_dict.items():
        m = _OLD_ATTN_KEY.match(k)
        new = f"{m.group(1)}.{_NEW_ATTN_NAME[m.group(2)]}.{m.group(3)}" if m else k
        if new in out or (m and new in state_dict):
            raise ValueError(f"checkpoint has both the old attention key {k} and the new key {new}")
        out[new] = v
    return out


def state_dict_to_unet_params(model: UNet2DModel, state_dict: dict) -> dict:
    """Diffusers state dict (NCHW/OIHW NumPy arrays) -> Flax params for ``model``; ValueError on any mismatch."""
    return state_dict_to_params(param_shapes(model), rename_legacy_attention_keys(state_dict), LIST_NAMES,
                                what="UNet2DModel")


def unet_params_to_state_dict(params: dict) -> dict:
    """Flax params -> diffusers-layout NumPy state dict (``to_q``/``to_out.0`` names)."""
    return params_to_state_dict(params, LIST_NAMES)


def _check_converted_params(model: UNet2DModel, params: dict, folder: str) -> None:
    ref = traverse_util.flatten_dict(param_shapes(model))
    got = traverse_util.flatten_dict(params)
    missing = sorted("/".join(p) for p in ref if p not in got)
    unexpected = sorted("/".join(p) for p in got if p not in ref)
    mismatched = sorted(f"{'/'.join(p)}: {tuple(got[p].shape)} vs {tuple(ref[p].shape)}"
                        for p in ref if p in got and tuple(got[p].shape) != tuple(ref[p].shape))
    if missing or unexpected or mismatched:
        raise ValueError(f"converted params in {folder} do not match its config.json: missing {missing[:20]}, "
                         f"unexpected {unexpected[:20]}, shape mismatches {mismatched[:20]}")


def load_unet(path: str, dtype: Any = jnp.float32) -> tuple[UNet2DModel, dict]:
    """Load a UNet2DModel from a diffusers folder (or its ``unet/`` subfolder) or a converted folder.

    Args:
      path: folder with ``config.json`` and weights (see module docstring).
      dtype: compute dtype of the returned model; params are always float32.

    Returns:
      ``(model, params)``: use ``model.apply({"params": params}, x, t)`` with x ``[B,H,W,C]`` NHWC.

    Raises:
      ValueError for unsupported configs, missing/corrupt files, and missing, unexpected or
      mis-shaped weights (all listed).
    """
    folder = _model_folder(path)
    cfg_dict = read_json(os.path.join(folder, "config.json"))
    class_name = cfg_dict.get("_class_name", "UNet2DModel")
    if class_name in FAMILY_LOADERS:
        module, fn = FAMILY_LOADERS[class_name].split(":")
        return getattr(importlib.import_module(module), fn)(folder, dtype=dtype, config=cfg_dict)
    if class_name != "UNet2DModel":
        raise ValueError(f"{folder}/config.json has _class_name {class_name!r}; load_unet supports "
                         f"{sorted(['UNet2DModel', *FAMILY_LOADERS])}")
    model = UNet2DModel(UNetConfig.from_dict(cfg_dict), dtype=dtype)
    if cfg_dict.get(FORMAT_KEY) == CONVERTED_FORMAT:
        params = restore_params(folder)
        _check_converted_params(model, params, folder)
        params = jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)
    else:
        state_dict = read_state_dict(find_weights_file(folder, WEIGHT_FILES))
        params = jax.tree.map(jnp.asarray, state_dict_to_unet_params(model, state_dict))
    return model, params


def save_unet_converted(folder: str, model: UNet2DModel, params: dict, overwrite: bool = False) -> None:
    """Write ``config.json`` (with ``"_jaxhspace_format": "orbax"``) + orbax ``params/``, atomically."""
    _check_converted_params(model, params, "the params to save")
    with atomic_directory(folder, overwrite=overwrite) as tmp:
        cfg = {"_class_name": "UNet2DModel", FORMAT_KEY: CONVERTED_FORMAT, **model.config.to_dict()}
        write_json(os.path.join(tmp, "config.json"), cfg)
        save_params(tmp, params)


def save_unet_diffusers(folder: str, model: UNet2DModel, params: dict, dtype: Any = np.float32,
                        overwrite: bool = False, scheduler_config: dict | None = None) -> None:
    """Write a folder loadable by ``diffusers.UNet2DModel.from_pretrained`` (config.json +
    ``diffusion_pytorch_model.safetensors`` in ``dtype``: float32 or float16), atomically.

    ``scheduler_config`` (optional dict) is written as ``scheduler_config.json`` in the same
    atomic step, so ``DDIMScheduler.from_pretrained(folder)`` reproduces the training schedule."""
    dtype = np.dtype(dtype)
    if dtype not in (np.float32, np.float16):
        raise ValueError(f"save_unet_diffusers: dtype {dtype} not supported; use float32 or float16")
    state_dict = {k: v.astype(dtype) for k, v in unet_params_to_state_dict(params).items()}
    try:
        import diffusers
        version = diffusers.__version__
    except ImportError:
        version = "0.30.0"
    with atomic_directory(folder, overwrite=overwrite) as tmp:
        cfg = {"_class_name": "UNet2DModel", "_diffusers_version": version, **model.config.to_dict()}
        write_json(os.path.join(tmp, "config.json"), cfg)
        save_state_dict_safetensors(os.path.join(tmp, "diffusion_pytorch_model.safetensors"), state_dict)
        if scheduler_config is not None:
            write_json(os.path.join(tmp, "scheduler_config.json"),
                       {"_diffusers_version": version, **scheduler_config})
