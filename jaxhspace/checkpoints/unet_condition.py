"""Load :class:`~jaxhspace.models.unet_condition.UNet2DConditionModel` (Stable Diffusion 1.x / 2.x) weights from a
diffusers folder: ``config.json`` (``"_class_name": "UNet2DConditionModel"``) + ``diffusion_pytorch_model.safetensors``
(or ``.bin``), or a pipeline folder holding them under ``unet/``.

``jaxhspace.checkpoints.load_unet(folder)`` dispatches here on ``_class_name``; :func:`load_unet_condition` is the
same loader called directly. The conversion is the shared rename (``jaxhspace.checkpoints.common``) with a strict
key and shape check: every missing, unexpected or mis-shaped key is listed in one ValueError.
"""
from __future__ import annotations

import os
from typing import Any, Optional

import jax
import jax.numpy as jnp
from flax import traverse_util

from jaxhspace.checkpoints.common import (
    find_weights_file, params_to_state_dict, read_json, read_state_dict, state_dict_to_params)
from jaxhspace.models.unet_condition import UNet2DConditionModel, UNetConditionConfig

CLASS_NAME = "UNet2DConditionModel"
LIST_NAMES = ("down_blocks", "up_blocks", "resnets", "attentions", "downsamplers", "upsamplers", "to_out",
              "transformer_blocks", "net")
WEIGHT_FILES = (
    "diffusion_pytorch_model.safetensors",
    "diffusion_pytorch_model.bin",
    "diffusion_pytorch_model.fp16.safetensors",
    "diffusion_pytorch_model.fp16.bin",
)


def param_shapes(model: UNet2DConditionModel) -> dict:
    """Param tree of ``model`` as ``jax.ShapeDtypeStruct`` leaves (nothing is computed or allocated)."""
    c = model.config
    f = 2 ** c.num_downsamples
    x = jax.ShapeDtypeStruct((1, f, f, c.in_channels), jnp.float32)
    t = jax.ShapeDtypeStruct((1,), jnp.float32)
    ctx = jax.ShapeDtypeStruct((1, 1, c.context_dim), jnp.float32)
    return jax.eval_shape(lambda x, t, ctx: model.init(jax.random.PRNGKey(0), x, t, ctx), x, t, ctx)["params"]


def state_dict_to_unet_condition_params(model: UNet2DConditionModel, state_dict: dict) -> dict:
    """diffusers state dict (NCHW/OIHW NumPy arrays) -> Flax params for ``model``.

    Raises:
      ValueError listing every missing key, unexpected key and shape mismatch.
    """
    return state_dict_to_params(param_shapes(model), state_dict, LIST_NAMES, what=CLASS_NAME)


def unet_condition_params_to_state_dict(params: dict) -> dict:
    """Flax params -> diffusers-layout NumPy state dict (inverse of :func:`state_dict_to_unet_condition_params`)."""
    return params_to_state_dict(params, LIST_NAMES)


def _model_folder(path: str) -> str:
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise ValueError(f"{path} is not a folder: pass a diffusers UNet2DConditionModel folder or an SD pipeline "
                         f"folder with a unet/ subfolder.")
    if not os.path.isfile(os.path.join(path, "config.json")) and os.path.isfile(os.path.join(path, "unet",
                                                                                               "config.json")):
        return os.path.join(path, "unet")
    return path


def load_unet_condition(path: str, dtype: Any = jnp.float32,
                        config: Optional[dict] = None) -> tuple[UNet2DConditionModel, dict]:
    """Load a Stable Diffusion UNet from a diffusers folder (or a pipeline folder's ``unet/``).

    Args:
      path: folder with ``config.json`` and ``diffusion_pytorch_model.safetensors`` (or ``.bin``, ``.fp16.*``).
      dtype: compute dtype of the returned model (float32 or bfloat16); params are always float32.
      config: the already-read ``config.json`` dict (``load_unet`` passes it), else read from ``path``.

    Returns:
      ``(model, params)``: ``model.apply({"params": params}, z, t, encoder_hidden_states=c)`` with z
      ``[B, H, W, 4]`` NHWC and c ``[B, 77, cross_attention_dim]``.

    Raises:
      ValueError for unsupported configs (naming the field), missing/corrupt files, and missing, unexpected or
      mis-shaped weights (all listed).
    """
    folder = _model_folder(path)
    cfg_dict = config if config is not None else read_json(os.path.join(folder, "config.json"))
    name = cfg_dict.get("_class_name", CLASS_NAME)
    if name != CLASS_NAME:
        raise ValueError(f"{folder}/config.json describes a {name!r}, not a {CLASS_NAME}; use load_unet instead")
    model = UNet2DConditionModel(UNetConditionConfig.from_dict(cfg_dict), dtype=dtype)
    state_dict = read_state_dict(find_weights_file(folder, WEIGHT_FILES))
    flat = traverse_util.flatten_dict(state_dict_to_unet_condition_params(model, state_dict))
    del state_dict  # SD-sized models: hold at most two copies of the weights at once
    params = {k: jnp.asarray(flat.pop(k)) for k in list(flat)}
    return model, traverse_util.unflatten_dict(params)


def save_unet_condition_diffusers(folder: str, model: UNet2DConditionModel, params: dict,
                                  overwrite: bool = False) -> None:
    """Write a folder ``diffusers.UNet2DConditionModel.from_pretrained`` loads (config.json + float32
    ``diffusion_pytorch_model.safetensors``), atomically."""
    import dataclasses

    import numpy as np

    from jaxhspace.checkpoints.common import atomic_directory, save_state_dict_safetensors, write_json

    state_dict = {k: np.asarray(v, np.float32)
                  for k, v in unet_condition_params_to_state_dict(jax.device_get(params)).items()}
    cfg = {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(model.config).items()}
    try:
        import diffusers
        version = diffusers.__version__
    except ImportError:  # pragma: no cover
        version = "0.30.0"
    with atomic_directory(os.fspath(folder), overwrite=overwrite) as tmp:
        write_json(os.path.join(tmp, "config.json"), {"_class_name": CLASS_NAME, "_diffusers_version": version, **cfg})
        save_state_dict_safetensors(os.path.join(tmp, "diffusion_pytorch_model.safetensors"), state_dict)
