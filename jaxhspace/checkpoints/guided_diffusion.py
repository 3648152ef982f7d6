"""openai guided-diffusion ``UNetModel`` checkpoints (``.pt`` state dicts of ADM, iDDPM, P2-weighting models) ->
:class:`~jaxhspace.models.guided_unet.GuidedUNetModel` converted folders.

A ``.pt`` file holds only weights; the architecture comes from a preset (:data:`PRESETS`) or an ARCH.json with
guided-diffusion's ``create_model`` keywords and value formats (``"attention_resolutions": "16"`` as resolutions,
``"channel_mult": ""`` for the size default). Conversion is a rename (``input_blocks.1.0.in_layers.0.weight`` ->
``input_blocks_1_0/in_layers_0/scale``) plus layout changes (conv OIHW -> HWIO, Linear and the Conv1d(k=1) ``qkv`` /
``proj_out`` -> Dense kernels). Every missing, unexpected or mis-shaped key is listed (the official loaders use
``strict=False`` and hide them; we never do), with hints read off the file (class-conditional or not, learned
variance or not, base width).

The converted folder holds ``config.json`` (``"_class_name": "GuidedUNetModel"``, ``"_jaxhspace_format": "orbax"``
and the create_model keywords), an orbax ``params/`` folder, and ``scheduler_config.json`` (the linear 1e-4..0.02,
T = 1000 schedule all presets were trained with); ``jaxhspace.checkpoints.load_unet`` loads it.
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping, Optional

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxhspace.checkpoints.common import (
    atomic_directory, read_json, read_state_dict, restore_params, save_params, state_dict_to_params, write_json)
from jaxhspace.models.guided_unet import GuidedUNetConfig, GuidedUNetModel

CLASS_NAME = "GuidedUNetModel"
FORMAT_KEY = "_jaxhspace_format"
CONVERTED_FORMAT = "orbax"

_ASYRP = "kwonminki/Asyrp_official@a6c82dc"
_GD = "openai/guided-diffusion@22e0df8"
_FACES_128 = dict(  # AFHQ_DICT == METFACE_DICT == CELEBA_HQ_P2_DICT (iDDPM / P2 faces, 256 px)
    image_size=256, num_channels=128, num_res_blocks=1, channel_mult="", learn_sigma=True, class_cond=False,
    use_checkpoint=False, attention_resolutions="16", num_heads=4, num_head_channels=64, num_heads_upsample=-1,
    use_scale_shift_norm=True, dropout=0.0, resblock_updown=True, use_fp16=False, use_new_attention_order=False)

#: create_model keywords per official checkpoint, with where they come from.
PRESETS: dict[str, dict[str, Any]] = {
    "afhq_dog": dict(_FACES_128, _source=f"{_ASYRP}:models/improved_ddpm/script_util.py:5-22 (AFHQ_DICT), "
                                         "weights pretrained/afhq_dog_4m.pt (configs/paths_config.py:13)"),
    "ffhq": dict(_FACES_128, _source=f"{_ASYRP}:models/improved_ddpm/script_util.py:5-22,103-104 (FFHQ uses "
                                     "AFHQ_DICT), weights pretrained/ffhq_10m.pt (configs/paths_config.py:14)"),
    "metfaces_p2": dict(_FACES_128, _source=f"{_ASYRP}:models/guided_diffusion/script_util.py:10-27 (METFACE_DICT), "
                                            "weights pretrained/metface_p2.pt (configs/paths_config.py:18)"),
    "celeba_hq_p2": dict(_FACES_128, _source=f"{_ASYRP}:models/guided_diffusion/script_util.py:29-46 "
                                             "(CELEBA_HQ_P2_DICT); P2-weighting CelebA-HQ 256 (README.md:38)"),
    # Asyrp's IMAGENET_DICT (kwonminki/Asyrp_official@a6c82dc:models/improved_ddpm/script_util.py:25-42) says
    # class_cond=True, but the file it loads (…:configs/paths_config.py:16) is the unconditional model and its forward
    # never uses label_emb (…:models/improved_ddpm/unet.py:676-692, loaded with strict=False, so label_emb stays
    # random and unused): the file's own flags are guided-diffusion's.
    "imagenet256_uncond": dict(
        image_size=256, num_channels=256, num_res_blocks=2, channel_mult="", learn_sigma=True, class_cond=False,
        use_checkpoint=False, attention_resolutions="32,16,8", num_heads=4, num_head_channels=64,
        num_heads_upsample=-1, use_scale_shift_norm=True, dropout=0.0, resblock_updown=True, use_fp16=True,
        use_new_attention_order=False,
        _source=f"{_GD}:README.md:70 (256x256_diffusion_uncond.pt MODEL_FLAGS; num_heads: script_util.py:51 "
                "default, unused with num_head_channels 64)"),
}

#: The schedule every preset was trained with
#: (kwonminki/Asyrp_official@a6c82dc:configs/{afhq,ffhq,metface,celeba_p2,imagenet}.yml:27-32, `diffusion:`;
#: openai/guided-diffusion@22e0df8:README.md:70 ``--noise_schedule linear --diffusion_steps 1000``).
SCHEDULER_CONFIG = {"_class_name": "DDIMScheduler", "beta_schedule": "linear", "beta_start": 0.0001, "beta_end": 0.02,
                    "num_train_timesteps": 1000, "clip_sample": False, "set_alpha_to_one": True, "steps_offset": 0,
                    "prediction_type": "epsilon"}

_LIST_PART = re.compile(r"_(\d+)")


def preset_config(name: str) -> GuidedUNetConfig:
    """The :class:`GuidedUNetConfig` of a preset (see :data:`PRESETS`)."""
    if name not in PRESETS:
        raise ValueError(f"unknown preset {name!r}; presets: {sorted(PRESETS)} (or pass an ARCH.json)")
    return GuidedUNetConfig.from_dict(PRESETS[name])


def flax_path_to_key(path: tuple[str, ...]) -> str:
    """``('input_blocks_1_0', 'in_layers_0', 'scale')`` -> ``input_blocks.1.0.in_layers.0.weight``.

    Every ``_<digits>`` in a GuidedUNetModel module name is a list position (no torch name there has one)."""
    parts = [_LIST_PART.sub(r".\1", p) for p in path[:-1]]
    parts.append("weight" if path[-1] in ("kernel", "scale", "embedding") else path[-1])
    return ".".join(parts)


def param_shapes(model: GuidedUNetModel) -> dict:
    """Param tree of ``model`` as ``jax.ShapeDtypeStruct`` leaves (no computation)."""
    c = model.config
    f = 2 ** c.num_downsamples
    x = jnp.zeros((1, f, f, c.in_channels), jnp.float32)
    y = jnp.zeros((1,), jnp.int32) if c.class_cond else None
    return jax.eval_shape(model.init, jax.random.PRNGKey(0), x, jnp.zeros((1,), jnp.float32), y)["params"]


def count_params(model: GuidedUNetModel) -> int:
    """Number of parameters of ``model`` (from shapes only)."""
    return int(sum(np.prod(s.shape) for s in jax.tree.leaves(param_shapes(model))))


def _squeeze_conv1d(state_dict: Mapping[str, np.ndarray]) -> dict:
    """Conv1d(k=1) weights ``[O, I, 1]`` (attention ``qkv``/``proj_out``) -> ``[O, I]`` Linear layout."""
    return {k: (v[..., 0] if v.ndim == 3 and v.shape[-1] == 1 else v) for k, v in state_dict.items()}


def _hints(state_dict: Mapping[str, np.ndarray], c: GuidedUNetConfig) -> list[str]:
    """What the file says about its architecture, where it disagrees with ``c``."""
    out = []
    has_label = "label_emb.weight" in state_dict
    if has_label != c.class_cond:
        out.append(f"the file is {'class-conditional (label_emb.weight present)' if has_label else 'unconditional'}"
                   f" but the config has class_cond={c.class_cond}")
    w = state_dict.get("out.2.weight")
    if w is not None and np.ndim(w) == 4 and w.shape[0] != c.out_channels:
        out.append(f"the file outputs {w.shape[0]} channels (out.2.weight {tuple(w.shape)}): learn_sigma="
                   f"{w.shape[0] == 2 * c.in_channels}, config expects {c.out_channels}")
    w = state_dict.get("input_blocks.0.0.weight")
    if w is not None and np.ndim(w) == 4 and w.shape[0] != int(c.channel_mult_tuple[0] * c.num_channels):
        out.append(f"the file's first conv has {w.shape[0]} channels (num_channels * channel_mult[0]); the config "
                   f"gives {int(c.channel_mult_tuple[0] * c.num_channels)}")
    n_in = len({k.split(".")[1] for k in state_dict if k.startswith("input_blocks.")})
    n_out = len({k.split(".")[1] for k in state_dict if k.startswith("output_blocks.")})
    mults = c.channel_mult_tuple
    want_in, want_out = 1 + len(mults) * c.num_res_blocks + len(mults) - 1, len(mults) * (c.num_res_blocks + 1)
    if n_in and (n_in != want_in or n_out != want_out):
        out.append(f"the file has {n_in} input_blocks and {n_out} output_blocks; the config (num_res_blocks="
                   f"{c.num_res_blocks}, {len(mults)} levels) builds {want_in} and {want_out}")
    return out


def state_dict_to_guided_params(model: GuidedUNetModel, state_dict: Mapping[str, np.ndarray]) -> dict:
    """guided-diffusion state dict (NumPy, torch layout) -> Flax params for ``model``.

    Raises:
      ValueError listing every missing key, unexpected key and shape mismatch, plus architecture hints.
    """
    try:
        return state_dict_to_params(param_shapes(model), _squeeze_conv1d(state_dict), (), what=CLASS_NAME,
                                    key_fn=flax_path_to_key)
    except ValueError as e:
        hints = _hints(state_dict, model.config)
        msg = str(e) + ("\n  Hints from the file: " + "; ".join(hints) if hints else "")
        raise ValueError(msg + "\n  Pick the preset / ARCH.json this checkpoint was trained with "
                               f"(presets: {sorted(PRESETS)}).") from None


def _check_params(model: GuidedUNetModel, params: Mapping, where: str) -> None:
    ref = traverse_util.flatten_dict(param_shapes(model))
    got = traverse_util.flatten_dict(dict(params))
    missing = sorted("/".join(p) for p in ref if p not in got)
    unexpected = sorted("/".join(p) for p in got if p not in ref)
    bad = sorted(f"{'/'.join(p)}: {tuple(got[p].shape)} vs {tuple(ref[p].shape)}"
                 for p in ref if p in got and tuple(got[p].shape) != tuple(ref[p].shape))
    if missing or unexpected or bad:
        raise ValueError(f"params in {where} do not match its config.json: missing {missing[:20]}, unexpected "
                         f"{unexpected[:20]}, shape mismatches {bad[:20]}")


def save_guided_converted(folder: str, model: GuidedUNetModel, params: Mapping, overwrite: bool = False,
                          meta: Optional[dict] = None, scheduler_config: Optional[dict] = None) -> None:
    """Write ``config.json`` + orbax ``params/`` + ``scheduler_config.json`` atomically (see module docstring)."""
    _check_params(model, params, "the params to save")
    with atomic_directory(folder, overwrite=overwrite) as tmp:
        cfg = {"_class_name": CLASS_NAME, FORMAT_KEY: CONVERTED_FORMAT, **(meta or {}), **model.config.to_dict()}
        write_json(os.path.join(tmp, "config.json"), cfg)
        save_params(tmp, params)
        write_json(os.path.join(tmp, "scheduler_config.json"), scheduler_config or SCHEDULER_CONFIG)


def load_guided_unet(folder: str, dtype: Any = jnp.float32,
                     config: Optional[Mapping] = None) -> tuple[GuidedUNetModel, dict]:
    """Load a converted GuidedUNetModel folder (``load_unet`` dispatches here on ``_class_name``).

    Args:
      folder: the converted folder; dtype: compute dtype (params stay float32); config: its config.json dict
        if already read.

    Returns:
      ``(model, params)``; ``model.apply({"params": params}, x, t[, y])`` is the full output.
    """
    cfg = dict(config) if config is not None else read_json(os.path.join(folder, "config.json"))
    if cfg.get(FORMAT_KEY) != CONVERTED_FORMAT:
        raise ValueError(f"{folder}: a GuidedUNetModel folder must be converted first: python -m "
                         "checkpoints_convert.guided_diffusion SRC.pt DST --preset NAME")
    model = GuidedUNetModel(GuidedUNetConfig.from_dict(cfg), dtype=dtype)
    params = restore_params(folder)
    _check_params(model, params, folder)
    return model, jax.tree.map(lambda a: jnp.asarray(a, jnp.float32), params)


def convert_guided_diffusion(src: str, dst: str, preset: Optional[str] = None, arch: Optional[Mapping] = None,
                             overwrite: bool = False) -> dict:
    """Convert a guided-diffusion ``.pt`` state dict to a converted folder at ``dst``.

    Args:
      src: the ``.pt`` file (a flat state dict, read with ``torch.load(weights_only=True)``; float16 upcast).
      dst: destination folder (written atomically; must not exist unless ``overwrite``).
      preset: a name in :data:`PRESETS`, or
      arch: a dict of create_model keywords (exactly one of ``preset`` / ``arch``).

    Returns:
      ``{"params": count, "preset": ..., **config}``.

    Raises:
      ValueError: both or neither of preset/arch, unknown preset or keys, unreadable/truncated file, keys or
        shapes that do not match the architecture (all listed, with hints).
    """
    if (preset is None) == (arch is None):
        raise ValueError("give exactly one of preset (one of %s) or arch (an ARCH.json dict)" % sorted(PRESETS))
    if os.path.exists(dst) and not overwrite:
        raise ValueError(f"{dst} already exists; choose a new destination or pass overwrite=True")
    if preset is not None:
        config = preset_config(preset)
    else:
        assert arch is not None  # exactly one of preset / arch (checked above)
        config = GuidedUNetConfig.from_dict(dict(arch))
    model = GuidedUNetModel(config)
    state_dict = read_state_dict(src)  # before any long work: a truncated file fails here
    params = state_dict_to_guided_params(model, state_dict)
    meta = {"_converted_from": os.path.basename(src), "_preset": preset or "arch-json"}
    save_guided_converted(dst, model, params, overwrite=overwrite, meta=meta)
    n = int(sum(np.prod(np.shape(v)) for v in jax.tree.leaves(params)))
    return {"params": n, "preset": preset, **config.to_dict()}
