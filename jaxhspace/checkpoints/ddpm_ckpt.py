"""Ho et al.'s DDPM checkpoints (the SDEdit / DiffusionCLIP / Asyrp ``.ckpt`` files, pesser ``pytorch_diffusion`` key
format) -> a diffusers-format ``UNet2DModel`` folder that :func:`jaxhspace.checkpoints.load_unet` and
``diffusers.UNet2DModel.from_pretrained`` both load.

The architecture is ``DDPM`` in kwonminki/Asyrp_official@a6c82dc:models/ddpm/diffusion.py:327-431 (same as SDEdit's
and DiffusionCLIP's ``models/diffusion.py``). It is the family of ``google/ddpm-ema-celebahq-256``; the mapping onto
diffusers' ``UNet2DModel`` config (checked against the official forward in ``tests/test_ddpm_ckpt.py``; the numbers
in brackets are lines of kwonminki/Asyrp_official@a6c82dc:models/ddpm/diffusion.py):

===========================================  ==========================================================
official (line of that file)                 UNetConfig
===========================================  ==========================================================
``ch * ch_mult[i]`` per level (369-370)      ``block_out_channels``; ``ch_mult[0]`` must be 1 (conv_in has ``ch``
                                             outputs and the sinusoid has ``ch`` dims, diffusers uses
                                             ``block_out_channels[0]`` for both)
``num_res_blocks`` down, ``+1`` up (371/406)  ``layers_per_block`` (diffusers' up blocks have ``layers + 1``)
``curr_res in attn_resolutions`` (377/414)   ``AttnDownBlock2D`` / ``AttnUpBlock2D`` at that level, one head
                                             (``attention_head_dim=None``), scale ``C**-0.5`` (213)
``Normalize``: GroupNorm(32, eps 1e-6) (69)  ``norm_num_groups=32``, ``norm_eps=1e-6``
``get_timestep_embedding``: [sin, cos],      ``flip_sin_to_cos=False``, ``freq_shift=1``
frequencies ``/(half_dim - 1)`` (52-57)
``temb.dense`` ch -> 4ch -> 4ch (348-353)     ``time_embedding.linear_1/2`` (time_embed_dim = 4 * ch)
``Downsample``: pad (0,1,0,1), 3x3 s2 (105)  ``downsample_padding=0``
``Upsample``: nearest x2, 3x3 conv (84-87)   ``Upsample2D(use_conv=True)``
``nin_shortcut`` 1x1 when in != out (145)    ``conv_shortcut`` (1x1)
``norm_out``, swish, ``conv_out`` (425-430)  ``conv_norm_out``, SiLU, ``conv_out``
===========================================  ==========================================================

``resamp_with_conv=False`` (average-pool / conv-less resampling) has no ``UNet2DModel`` counterpart and is rejected. The
official loader calls ``load_state_dict(..., strict=False)`` (kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:124),
which hides missing or extra keys; here every missing, unexpected or mis-shaped key is an error, listed in the original
names.
"""
from __future__ import annotations

import dataclasses
import os
import re
from typing import Any, Mapping

import numpy as np

from jaxhspace.checkpoints.common import (
    atomic_directory, flax_path_to_torch_key, read_json, read_state_dict, save_state_dict_safetensors, write_json)
from jaxhspace.checkpoints.unet import LIST_NAMES, param_shapes, state_dict_to_unet_params
from jaxhspace.models.unet import UNet2DModel, UNetConfig

# The official configs' `model:` section and `data.image_size` (identical in the three files):
# kwonminki/Asyrp_official@a6c82dc:configs/celeba.yml:4,15-25, …:configs/bedroom.yml:4,15-25,
# …:configs/church.yml:4,15-25 (in_channels 3, out_ch 3, ch 128, ch_mult [1,1,2,2,4,4], num_res_blocks 2,
# attn_resolutions [16], dropout 0.0, resamp_with_conv True, image_size 256). Their `diffusion:` section
# (kwonminki/Asyrp_official@a6c82dc:configs/celeba.yml:27-31 etc.: linear betas 1e-4 .. 0.02, 1000 steps) becomes
# scheduler_config.json.
_CELEBA_FAMILY = dict(in_channels=3, out_ch=3, ch=128, ch_mult=(1, 1, 2, 2, 4, 4), num_res_blocks=2,
                      attn_resolutions=(16,), dropout=0.0, resamp_with_conv=True, image_size=256)
PRESETS: dict[str, dict] = {
    "celeba_hq": dict(_CELEBA_FAMILY),       # configs/celeba.yml (SDEdit celeba_hq.ckpt)
    "bedroom": dict(_CELEBA_FAMILY),         # configs/bedroom.yml (SDEdit bedroom.ckpt)
    "church_outdoor": dict(_CELEBA_FAMILY),  # configs/church.yml (SDEdit church_outdoor.ckpt)
}
# The official configs' `diffusion:` section (kwonminki/Asyrp_official@a6c82dc:configs/celeba.yml:27-31,
# …:configs/bedroom.yml:27-31, …:configs/church.yml:27-31); DDIM with
# ᾱ_prev = 1 at the last step (Asyrp's generation ends at ᾱ = 1) and no x0 clipping (Asyrp never clips).
SCHEDULER_CONFIG = {"_class_name": "DDIMScheduler", "beta_schedule": "linear", "beta_start": 0.0001,
                    "beta_end": 0.02, "num_train_timesteps": 1000, "clip_sample": False, "set_alpha_to_one": True,
                    "steps_offset": 0, "prediction_type": "epsilon"}

ARCH_KEYS = ("ch", "out_ch", "ch_mult", "num_res_blocks", "attn_resolutions", "dropout", "in_channels",
             "resamp_with_conv", "image_size")
# Other keys of the official `model:` section that do not change the network (accepted and ignored).
IGNORED_MODEL_KEYS = ("type", "var_type", "ema_rate", "ema")
_HO_ANCHORS = ("temb.dense.0.weight", "conv_in.weight", "mid.block_1.conv1.weight", "conv_out.weight")


@dataclasses.dataclass(frozen=True)
class HoArch:
    """The official config's ``model:`` keys plus ``data.image_size``
    (kwonminki/Asyrp_official@a6c82dc:models/ddpm/diffusion.py:331-337).

    Attributes:
      ch: base width (128 in the official configs); ``ch * m`` must be a multiple of 32 (GroupNorm(32)).
      out_ch, in_channels: image channels (3).
      ch_mult: per-level width multipliers; ``ch_mult[0]`` must be 1.
      num_res_blocks: resnets per down level (the up levels have one more).
      attn_resolutions: spatial sizes with self-attention (16 -> the 16x16 level of a 256 image).
      dropout: training only (inference applies none).
      resamp_with_conv: must be True.
      image_size: training resolution; fixes which level the attention resolutions refer to.
    """

    ch: int
    out_ch: int
    ch_mult: tuple[int, ...]
    num_res_blocks: int
    attn_resolutions: tuple[int, ...]
    dropout: float
    in_channels: int
    resamp_with_conv: bool
    image_size: int

    def __post_init__(self):
        object.__setattr__(self, "ch_mult", tuple(self.ch_mult))
        object.__setattr__(self, "attn_resolutions", tuple(self.attn_resolutions))
        bad = []
        for name in ("ch", "out_ch", "num_res_blocks", "in_channels", "image_size"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                bad.append(f"{name}={v!r} must be a positive int")
        if not self.ch_mult or any(isinstance(m, bool) or not isinstance(m, int) or m < 1 for m in self.ch_mult):
            bad.append(f"ch_mult={self.ch_mult!r} must be a non-empty list of positive ints")
        if any(isinstance(r, bool) or not isinstance(r, int) for r in self.attn_resolutions):
            bad.append(f"attn_resolutions={self.attn_resolutions!r} must be a list of ints")
        if not isinstance(self.dropout, (int, float)) or not 0 <= self.dropout < 1:
            bad.append(f"dropout={self.dropout!r} must be in [0, 1)")
        if bad:
            raise ValueError("DDPM arch: " + "; ".join(bad))
        if self.resamp_with_conv is not True:
            raise ValueError("DDPM arch: resamp_with_conv=False (average-pool down / conv-less up sampling) is not "
                             "supported: diffusers' UNet2DModel always resamples with a conv")
        if self.ch_mult[0] != 1:
            raise ValueError(f"DDPM arch: ch_mult[0]={self.ch_mult[0]} is not supported (must be 1): conv_in and the "
                             "timestep sinusoid have `ch` channels in the official model but block_out_channels[0] "
                             "in diffusers' UNet2DModel")
        widths = [self.ch * m for m in self.ch_mult]
        if any(w % 32 for w in widths):
            raise ValueError(f"DDPM arch: every level width ch*ch_mult = {widths} must be a multiple of 32 "
                             "(the official Normalize is GroupNorm(32))")
        f = 2 ** (len(self.ch_mult) - 1)
        if self.image_size % f:
            raise ValueError(f"DDPM arch: image_size={self.image_size} must be divisible by 2**{len(self.ch_mult) - 1}"
                             f" = {f} ({len(self.ch_mult)} levels)")
        unused = sorted(set(self.attn_resolutions) - set(self.level_resolutions))
        if unused:
            raise ValueError(f"DDPM arch: attn_resolutions {unused} match no level resolution "
                             f"{list(self.level_resolutions)} of image_size={self.image_size}; check image_size")

    @property
    def level_resolutions(self) -> tuple[int, ...]:
        """Spatial size at each level (``curr_res`` of the official constructor)."""
        return tuple(self.image_size // 2 ** i for i in range(len(self.ch_mult)))

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "HoArch":
        """From an ``ARCH.json`` dict (the official ``model:`` keys + ``image_size``); raises on missing / unknown
        keys (the official ``type``, ``var_type``, ``ema_rate``, ``ema`` are accepted and ignored)."""
        if not isinstance(d, Mapping):
            raise ValueError(f"DDPM arch must be a JSON object, got {type(d).__name__}")
        missing = [k for k in ARCH_KEYS if k not in d]
        unknown = sorted(k for k in d if k not in ARCH_KEYS and k not in IGNORED_MODEL_KEYS)
        if missing or unknown:
            raise ValueError(f"DDPM arch: missing keys {missing}, unknown keys {unknown}; expected {list(ARCH_KEYS)} "
                             f"(the official config's model: section plus data.image_size)")
        return cls(**{k: d[k] for k in ARCH_KEYS})

    def to_dict(self) -> dict:
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}


def preset_arch(name: str) -> HoArch:
    """The :class:`HoArch` of a preset (``celeba_hq``, ``bedroom``, ``church_outdoor``)."""
    if name not in PRESETS:
        raise ValueError(f"unknown DDPM preset {name!r}; choose one of {sorted(PRESETS)} or pass an ARCH.json")
    return HoArch.from_dict(PRESETS[name])


def unet_config(arch: HoArch) -> UNetConfig:
    """The diffusers ``UNet2DModel`` config computing the same function as the official model (table above)."""
    attn = [r in arch.attn_resolutions for r in arch.level_resolutions]
    return UNetConfig(
        sample_size=arch.image_size, in_channels=arch.in_channels, out_channels=arch.out_ch,
        center_input_sample=False, time_embedding_type="positional", flip_sin_to_cos=False, freq_shift=1,
        down_block_types=tuple("AttnDownBlock2D" if a else "DownBlock2D" for a in attn),
        up_block_types=tuple("AttnUpBlock2D" if a else "UpBlock2D" for a in reversed(attn)),
        block_out_channels=tuple(arch.ch * m for m in arch.ch_mult), layers_per_block=arch.num_res_blocks,
        mid_block_scale_factor=1, downsample_padding=0, dropout=float(arch.dropout), act_fn="silu",
        attention_head_dim=None, norm_num_groups=32, norm_eps=1e-6, resnet_time_scale_shift="default",
        add_attention=True)


# ----------------------------------------------------------------------------------------------
# The rename table: diffusers key -> official key
# ----------------------------------------------------------------------------------------------
_RESNET = {"norm1": "norm1", "conv1": "conv1", "time_emb_proj": "temb_proj", "norm2": "norm2", "conv2": "conv2",
           "conv_shortcut": "nin_shortcut"}
_ATTN = {"group_norm": "norm", "to_q": "q", "to_k": "k", "to_v": "v", "to_out.0": "proj_out"}
_TOP = {"time_embedding.linear_1": "temb.dense.0", "time_embedding.linear_2": "temb.dense.1", "conv_in": "conv_in",
        "conv_norm_out": "norm_out", "conv_out": "conv_out"}
_BLOCK_KEY = re.compile(r"^(down_blocks|up_blocks)\.(\d+)\.(resnets|attentions|downsamplers|upsamplers)\.(\d+)\."
                        r"(.+)\.(weight|bias)$")
_MID_KEY = re.compile(r"^mid_block\.(resnets|attentions)\.(\d+)\.(.+)\.(weight|bias)$")
_TOP_KEY = re.compile(r"^(.+)\.(weight|bias)$")


def _module_name(kind: str, name: str) -> str:
    table = _RESNET if kind == "resnets" else _ATTN
    if name not in table:
        raise KeyError(name)
    return table[name]


def diffusers_to_ho_key(key: str, num_levels: int) -> str:
    """Official key of one diffusers ``UNet2DModel`` key (``num_levels = len(ch_mult)``).

    ``down_blocks.L`` is ``down.L``; ``up_blocks.i`` is ``up.(num_levels - 1 - i)`` (the official ``self.up`` is
    indexed by level, kwonminki/Asyrp_official@a6c82dc:models/ddpm/diffusion.py:422); the mid block's
    ``resnets.0 / attentions.0 / resnets.1`` are ``mid.block_1 / attn_1 / block_2``.
    """
    m = _BLOCK_KEY.match(key)
    if m:
        side, i, kind, j, name, leaf = m.groups()
        level = int(i) if side == "down_blocks" else num_levels - 1 - int(i)
        prefix = f"{'down' if side == 'down_blocks' else 'up'}.{level}"
        if kind in ("downsamplers", "upsamplers") and j == "0" and name == "conv":
            return f"{prefix}.{'downsample' if kind == 'downsamplers' else 'upsample'}.conv.{leaf}"
        if kind in ("resnets", "attentions"):
            return f"{prefix}.{'block' if kind == 'resnets' else 'attn'}.{j}.{_module_name(kind, name)}.{leaf}"
        raise KeyError(key)
    m = _MID_KEY.match(key)
    if m:
        kind, j, name, leaf = m.groups()
        mid = {("resnets", "0"): "block_1", ("resnets", "1"): "block_2", ("attentions", "0"): "attn_1"}[(kind, j)]
        return f"mid.{mid}.{_module_name(kind, name)}.{leaf}"
    m = _TOP_KEY.match(key)
    if m and m.group(1) in _TOP:
        return f"{_TOP[m.group(1)]}.{m.group(2)}"
    raise KeyError(key)


def _torch_shape(path: tuple[str, ...], shape: tuple[int, ...]) -> tuple[int, ...]:
    if path[-1] == "kernel" and len(shape) == 4:  # HWIO -> OIHW
        return (shape[3], shape[2], shape[0], shape[1])
    if path[-1] == "kernel" and len(shape) == 2:
        return (shape[1], shape[0])
    return tuple(shape)


def rename_table(model: UNet2DModel) -> dict[str, tuple[str, tuple[int, ...], tuple[int, ...]]]:
    """``{official key: (diffusers key, official shape, diffusers shape)}`` for every parameter of ``model``.

    The official attention ``q / k / v / proj_out`` are 1x1 convs ``[C, C, 1, 1]``; diffusers' are Linear ``[C, C]``.
    """
    from flax import traverse_util

    n = len(model.config.block_out_channels)
    table = {}
    for path, ref in traverse_util.flatten_dict(param_shapes(model)).items():
        dk = flax_path_to_torch_key(path, LIST_NAMES)
        hk = diffusers_to_ho_key(dk, n)
        shape = _torch_shape(path, tuple(ref.shape))
        official = shape + (1, 1) if re.search(r"\.(q|k|v|proj_out)\.weight$", hk) else shape
        table[hk] = (dk, official, shape)
    return table


# ----------------------------------------------------------------------------------------------
# Reading, checking, converting
# ----------------------------------------------------------------------------------------------
def _guess_format(keys) -> str:
    keys = list(keys)
    if any(k.startswith(("input_blocks.", "middle_block.", "output_blocks.", "time_embed.")) for k in keys):
        return ("it looks like an openai guided-diffusion / iDDPM UNetModel checkpoint (input_blocks, middle_block, "
                "output_blocks): use python -m checkpoints_convert.guided_diffusion")
    if any(k.startswith(("down_blocks.", "mid_block.", "up_blocks.")) for k in keys):
        return ("it looks like a diffusers state dict: put it in a diffusers folder with its config.json and load "
                "it with load_unet (or python -m checkpoints_convert.diffusers_unet)")
    if any(k.startswith(("in_layers.", "conv1.", "temb_proj.")) for k in keys) and len(keys) < 20:
        return "it looks like an Asyrp editor: use python -m checkpoints_convert.asyrp_editor"
    return "not a known UNet format"


def read_ddpm_state_dict(path: str) -> dict[str, np.ndarray]:
    """Read an official DDPM ``.ckpt`` (a torch-saved flat state dict; ``.safetensors`` also accepted).

    A ``module.`` prefix on every key (``torch.nn.DataParallel``) is stripped. Returns NumPy arrays (float32).

    Raises:
      ValueError: file missing, truncated / corrupt, not a flat state dict, or not Ho's DDPM format (with a guess
        of what it is).
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path} not found: pass the official .ckpt (e.g. SDEdit's celeba_hq.ckpt)")
    sd = read_state_dict(path)
    if sd and all(k.startswith("module.") for k in sd):
        sd = {k[len("module."):]: v for k, v in sd.items()}
    if not any(k in sd for k in _HO_ANCHORS):
        raise ValueError(f"{path} is not a Ho et al. DDPM checkpoint (none of {list(_HO_ANCHORS)} present; "
                         f"first keys {sorted(sd)[:6]}): {_guess_format(sd)}")
    return sd


def infer_arch_summary(state_dict: Mapping[str, Any]) -> str:
    """What the file itself says about its architecture (ch, ch_mult, num_res_blocks, attention levels, channels),
    for error messages. ``image_size`` cannot be read from the weights."""
    try:
        ch = int(np.shape(state_dict["conv_in.weight"])[0])
        levels = sorted({int(m.group(1)) for k in state_dict for m in [re.match(r"^down\.(\d+)\.", k)] if m})
        mult = [int(np.shape(state_dict[f"down.{i}.block.0.conv1.weight"])[0]) // ch for i in levels]
        nrb = len({k.split(".")[3] for k in state_dict if re.match(r"^down\.0\.block\.\d+\.", k)})
        attn = [i for i in levels if f"down.{i}.attn.0.q.weight" in state_dict]
        return (f"the file has ch={ch}, ch_mult={mult}, num_res_blocks={nrb}, attention at levels {attn} "
                f"(level i has size image_size/2**i), in_channels={np.shape(state_dict['conv_in.weight'])[1]}, "
                f"out_ch={np.shape(state_dict['conv_out.weight'])[0]}")
    except (KeyError, IndexError, ValueError, ZeroDivisionError):
        return "its architecture could not be read from the keys"


def ho_state_dict_to_diffusers(model: UNet2DModel, state_dict: Mapping[str, Any], what: str = "checkpoint"
                               ) -> dict[str, np.ndarray]:
    """Rename an official DDPM state dict (official layout, NumPy) to diffusers names and layout for ``model``.

    Raises:
      ValueError listing every missing key, unexpected key and shape mismatch (official names and shapes) at once,
      plus the architecture the file itself has.
    """
    table = rename_table(model)
    missing = sorted(k for k in table if k not in state_dict)
    unexpected = sorted(k for k in state_dict if k not in table)
    mismatched = sorted(f"{k}: file {tuple(np.shape(state_dict[k]))} vs arch {table[k][1]}" for k in table
                        if k in state_dict and tuple(np.shape(state_dict[k])) != table[k][1])
    if missing or unexpected or mismatched:
        lines = [f"{what} does not match the DDPM architecture:"]
        for name, items in (("missing keys", missing), ("unexpected keys", unexpected),
                            ("shape mismatches", mismatched)):
            if items:
                lines.append(f"  {name} ({len(items)}): " + ", ".join(items[:30]) + (" ..." if len(items) > 30 else ""))
        lines.append(f"  {infer_arch_summary(state_dict)}; pick the matching --preset or write an ARCH.json.")
        raise ValueError("\n".join(lines))
    return {dk: np.asarray(state_dict[hk], np.float32).reshape(shape) for hk, (dk, _, shape) in table.items()}


def convert_ddpm_ckpt(src: str, dst: str, arch: HoArch, overwrite: bool = False) -> dict:
    """Convert an official DDPM ``.ckpt`` to a diffusers-format folder (atomic write).

    ``dst`` gets ``config.json`` (``UNet2DModel``, with ``_jaxhspace_source`` recording the file and arch),
    ``diffusion_pytorch_model.safetensors`` (float32) and ``scheduler_config.json`` (the official linear schedule).

    Args:
      src: the ``.ckpt``.
      dst: destination folder (must not exist unless ``overwrite``).
      arch: :class:`HoArch` (e.g. :func:`preset_arch`).

    Returns:
      summary dict: ``params`` (count), ``config`` (the UNetConfig dict), ``hspace`` (h, w, C at image_size).

    Raises:
      ValueError (before anything is written): unreadable file, another format, arch / file mismatch (listed).
    """
    if os.path.exists(dst) and not overwrite:
        raise ValueError(f"{os.path.abspath(dst)} already exists; choose a new destination or pass overwrite=True")
    model = UNet2DModel(unet_config(arch))
    sd = ho_state_dict_to_diffusers(model, read_ddpm_state_dict(src), what=os.path.basename(src))
    state_dict_to_unet_params(model, sd)  # the converted dict must also load into our UNet (it does by construction)
    try:
        import diffusers
        version = diffusers.__version__
    except ImportError:
        version = "0.30.0"
    cfg = {"_class_name": "UNet2DModel", "_diffusers_version": version, **model.config.to_dict(),
           "_jaxhspace_source": {"format": "ho_ddpm_ckpt", "file": os.path.abspath(src), "arch": arch.to_dict()}}
    with atomic_directory(dst, overwrite=overwrite) as tmp:
        write_json(os.path.join(tmp, "config.json"), cfg)
        save_state_dict_safetensors(os.path.join(tmp, "diffusion_pytorch_model.safetensors"), sd)
        write_json(os.path.join(tmp, "scheduler_config.json"), {"_diffusers_version": version, **SCHEDULER_CONFIG})
    return {"params": int(sum(v.size for v in sd.values())), "config": model.config.to_dict(),
            "hspace": model.hspace_shape(arch.image_size, arch.image_size)}


def load_arch_json(path: str) -> HoArch:
    """:class:`HoArch` from an ``ARCH.json`` file."""
    return HoArch.from_dict(read_json(path))


__all__ = ["HoArch", "PRESETS", "SCHEDULER_CONFIG", "preset_arch", "load_arch_json", "unet_config", "rename_table",
           "diffusers_to_ho_key", "read_ddpm_state_dict", "ho_state_dict_to_diffusers", "convert_ddpm_ckpt"]
