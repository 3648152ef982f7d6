"""Official checkpoints as ``config.model_path``: a job pointed at an SDEdit / DiffusionCLIP ``.ckpt`` (Ho et al.'s
DDPM) or a guided-diffusion / iDDPM / P2 ``.pt`` converts it on the fly into ``{workdir}/converted/`` and runs on the
converted folder.

Every job goes through :func:`jaxhspace.tasks.get_task`, which wraps its ``run`` with :func:`with_model_conversion`;
that wrapper calls :func:`resolve_model_path` before the job loads anything. The conversion reuses the converters'
library functions (:func:`jaxhspace.checkpoints.ddpm_ckpt.convert_ddpm_ckpt`,
:func:`jaxhspace.checkpoints.guided_diffusion.convert_guided_diffusion`), so the folder is exactly what
``python -m checkpoints_convert.ddpm_ckpt`` / ``guided_diffusion`` write.

Config fields (all optional; ``configs/celebahq256/*`` and the dataset config sets carry them):

* ``model_format``: ``"auto"`` (default: a file is inspected, a folder is used as it is), ``"diffusers"`` (a folder),
  ``"ddpm_ckpt"`` or ``"guided_diffusion"`` (a file in that format).
* ``model_preset``: the converter's ``--preset``; ``""`` infers it: the presets whose parameter names and shapes
  equal the file's (every preset of a format that builds the same network gives the same folder; the file name
  picks among them, e.g. ``afhq_dog_4m.pt`` -> ``afhq_dog``).
* ``model_arch_json``: the converter's ``--arch-json`` (for checkpoints of other architectures).

If the format or the architecture cannot be inferred, the error names the exact converter command to run.

Cache: the converted folder ``{workdir}/converted/{stem}-{preset}-{hash of the source path}`` carries
``jaxhspace_source.json`` (source path, size, mtime, format, preset / arch); a later run with the same source (same
path, size and mtime) and the same architecture reuses it. A folder at that path without the marker is never
touched (an error says so); one with a stale marker is replaced (atomically: the new folder is written beside it
first).
"""
from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import sys
import tempfile
from typing import Any, Callable, Mapping, Optional

import numpy as np

FORMATS = ("auto", "diffusers", "ddpm_ckpt", "guided_diffusion")
MARKER = "jaxhspace_source.json"
CONVERTED_SUBDIR = "converted"
_CONVERTER = {"ddpm_ckpt": "checkpoints_convert.ddpm_ckpt", "guided_diffusion": "checkpoints_convert.guided_diffusion"}
_GUIDED_PREFIXES = ("input_blocks.", "middle_block.", "output_blocks.", "time_embed.")
# File-name hints choosing among presets that build the same network (lower-case substrings of the basename).
_NAME_HINTS = {"bedroom": ("bedroom",), "church_outdoor": ("church",), "celeba_hq": ("celeba",),
               "afhq_dog": ("afhq", "dog"), "ffhq": ("ffhq",), "metfaces_p2": ("metface",),
               "celeba_hq_p2": ("celeba", "p2"), "imagenet256_uncond": ("256x256_diffusion", "imagenet")}


# ----------------------------------------------------------------------------------------------
# Reading names and shapes only
# ----------------------------------------------------------------------------------------------
def read_shapes(path: str) -> dict[str, tuple[int, ...]]:
    """``{key: shape}`` of a torch-saved flat state dict (``.ckpt`` / ``.pt`` / ``.pth``) or ``.safetensors``,
    without reading the tensors where the format allows it (torch zip files are memory-mapped).

    Raises:
      ValueError naming the file if it is missing, truncated / corrupt or not a flat state dict.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise ValueError(f"{path} not found")
    if path.endswith(".safetensors"):
        try:
            from safetensors import safe_open

            with safe_open(path, framework="np") as f:
                return {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
        except Exception:  # noqa: BLE001 (read_state_dict gives the clear error)
            pass
    else:
        try:
            import torch

            sd = torch.load(path, map_location="cpu", weights_only=True, mmap=True)
            if isinstance(sd, Mapping) and all(isinstance(v, torch.Tensor) for v in sd.values()):
                return {k: tuple(v.shape) for k, v in sd.items()}
        except Exception:  # noqa: BLE001 legacy (non-zip) files cannot be mmap-ed; read_state_dict decides
            pass
    from jaxhspace.checkpoints.common import read_state_dict

    return {k: tuple(np.shape(v)) for k, v in read_state_dict(path).items()}


def _strip_module(shapes: Mapping[str, tuple]) -> dict:
    if shapes and all(k.startswith("module.") for k in shapes):
        return {k[len("module."):]: v for k, v in shapes.items()}
    return dict(shapes)


def detect_format(shapes: Mapping[str, tuple]) -> Optional[str]:
    """``"ddpm_ckpt"`` (Ho et al.'s key format), ``"guided_diffusion"`` (openai UNetModel keys) or None."""
    from jaxhspace.checkpoints.ddpm_ckpt import _HO_ANCHORS

    shapes = _strip_module(shapes)
    if any(k in shapes for k in _HO_ANCHORS):
        return "ddpm_ckpt"
    if any(k.startswith(_GUIDED_PREFIXES) for k in shapes):
        return "guided_diffusion"
    return None


# ----------------------------------------------------------------------------------------------
# Which preset builds this network
# ----------------------------------------------------------------------------------------------
def _ho_expected(arch) -> dict[str, tuple]:
    from jaxhspace.checkpoints.ddpm_ckpt import rename_table, unet_config
    from jaxhspace.models.unet import UNet2DModel

    return {k: tuple(v[1]) for k, v in rename_table(UNet2DModel(unet_config(arch))).items()}


def _guided_expected(config) -> dict[str, tuple]:
    from flax import traverse_util

    from jaxhspace.checkpoints.guided_diffusion import flax_path_to_key, param_shapes
    from jaxhspace.models.guided_unet import GuidedUNetModel

    out = {}
    for path, ref in traverse_util.flatten_dict(param_shapes(GuidedUNetModel(config))).items():
        s = tuple(ref.shape)
        if path[-1] == "kernel" and len(s) == 4:
            s = (s[3], s[2], s[0], s[1])
        elif path[-1] == "kernel" and len(s) == 2:
            s = (s[1], s[0])
        out[flax_path_to_key(path)] = s
    return out


def _file_shapes_for(fmt: str, shapes: Mapping[str, tuple]) -> dict:
    shapes = _strip_module(shapes)
    if fmt == "guided_diffusion":  # Conv1d(k=1) qkv / proj_out [O, I, 1] are read as [O, I]
        return {k: (v[:-1] if len(v) == 3 and v[-1] == 1 else tuple(v)) for k, v in shapes.items()}
    return dict(shapes)


def matching_presets(fmt: str, shapes: Mapping[str, tuple]) -> list[str]:
    """Presets of ``fmt`` whose parameter names and shapes equal the file's (``shapes`` from :func:`read_shapes`),
    in the presets' order. Presets with the same create-model keywords are compared once."""
    build: Callable[[str], Any]  # preset name -> HoArch / GuidedUNetConfig
    expected: Callable[[Any], dict[str, tuple]]
    if fmt == "ddpm_ckpt":
        from jaxhspace.checkpoints.ddpm_ckpt import PRESETS, preset_arch

        build, expected = preset_arch, _ho_expected
    else:
        from jaxhspace.checkpoints.guided_diffusion import PRESETS, preset_config

        build, expected = preset_config, _guided_expected
    file_shapes = _file_shapes_for(fmt, shapes)
    seen: dict[str, bool] = {}
    out = []
    for name, spec in PRESETS.items():
        key = json.dumps({k: v for k, v in spec.items() if not k.startswith("_")}, sort_keys=True, default=list)
        if key not in seen:
            arch: Any = build(name)  # HoArch (ddpm_ckpt) or GuidedUNetConfig
            # the first conv's width first: it rules out most presets without building their parameter shapes
            if fmt == "ddpm_ckpt":
                width, first = arch.ch, file_shapes.get("conv_in.weight", (None,))[0]
            else:
                width = int(arch.channel_mult_tuple[0] * arch.num_channels)
                first = file_shapes.get("input_blocks.0.0.weight", (None,))[0]
            if width != first:
                seen[key] = False
                continue
            want = expected(arch)
            seen[key] = len(want) == len(file_shapes) and all(file_shapes.get(k) == s for k, s in want.items())
        if seen[key]:
            out.append(name)
    return out


def _pick_by_name(candidates: list[str], src: str) -> str:
    base = os.path.basename(src).lower()
    scored = [(sum(h in base for h in _NAME_HINTS.get(c, ())), -i, c) for i, c in enumerate(candidates)]
    return max(scored)[2]


def converter_command(fmt: Optional[str], src: str, dst: str = "DST") -> str:
    """The command that converts ``src`` (``fmt`` None: both possibilities)."""
    if fmt is None:
        return (f"python -m checkpoints_convert.ddpm_ckpt {src} {dst} --preset ... | --arch-json ARCH.json (Ho et "
                f"al. .ckpt) or python -m checkpoints_convert.guided_diffusion {src} {dst} --preset ... | --arch-json "
                "ARCH.json (guided-diffusion .pt)")
    from importlib import import_module

    presets = sorted(import_module(f"jaxhspace.checkpoints.{fmt}").PRESETS)
    return f"python -m {_CONVERTER[fmt]} {src} {dst} (--preset {'|'.join(presets)} | --arch-json ARCH.json)"


def _shape_only(shapes: Mapping[str, tuple]) -> dict:
    """Zero-stride arrays carrying only shapes, for the converters' hint functions."""
    return {k: np.broadcast_to(np.float32(0), v) for k, v in shapes.items()}


def _arch_summary(fmt: str, shapes: Mapping[str, tuple]) -> str:
    try:
        if fmt == "ddpm_ckpt":
            from jaxhspace.checkpoints.ddpm_ckpt import infer_arch_summary

            return infer_arch_summary(_shape_only(_strip_module(shapes)))
        from jaxhspace.checkpoints.guided_diffusion import _hints, preset_config

        hints = _hints(_shape_only(_file_shapes_for(fmt, shapes)), preset_config("afhq_dog"))
        return "compared with the afhq_dog preset: " + ("; ".join(hints) if hints else "same block counts and widths, "
                                                          "other shapes differ (attention levels, heads)")
    except Exception:  # noqa: BLE001 a summary is a courtesy
        return "its architecture could not be summarised"


# ----------------------------------------------------------------------------------------------
# Converting into the workdir, with a cache
# ----------------------------------------------------------------------------------------------
def _source_record(src: str, fmt: str, preset: Optional[str], arch: Optional[dict]) -> dict:
    st = os.stat(src)
    return {"source": os.path.abspath(src), "size": int(st.st_size), "mtime_ns": int(st.st_mtime_ns),
            "format": fmt, "preset": preset, "arch": arch}


def _read_marker(folder: str) -> Optional[dict]:
    try:
        with open(os.path.join(folder, MARKER)) as f:
            return json.load(f)
    except (OSError, ValueError):
        return None


def _convert(fmt: str, src: str, dst: str, preset: Optional[str], arch: Optional[dict]) -> dict:
    if fmt == "ddpm_ckpt":
        from jaxhspace.checkpoints.ddpm_ckpt import HoArch, convert_ddpm_ckpt, preset_arch

        if preset:
            return convert_ddpm_ckpt(src, dst, preset_arch(preset))
        assert arch is not None  # resolve_model_path passes a preset or an ARCH.json dict
        return convert_ddpm_ckpt(src, dst, HoArch.from_dict(arch))
    from jaxhspace.checkpoints.guided_diffusion import convert_guided_diffusion

    return convert_guided_diffusion(src, dst, preset=preset, arch=None if preset else arch)


def resolve_model_path(config, workdir: str, log: Optional[Callable[[str], None]] = None
                       ) -> tuple[str, Optional[dict]]:
    """``config.model_path`` as a folder a job can load: itself, or the converted folder of an official file.

    Args:
      config: a job config (``model_path``; optional ``model_format``, ``model_preset``, ``model_arch_json``).
      workdir: the job's output folder; conversions go to ``workdir/converted/``.
      log: where to say what happened (default: stderr).

    Returns:
      ``(path, record)``: ``record`` is None when nothing was converted, else the source record (``source``,
      ``size``, ``mtime_ns``, ``format``, ``preset``, ``arch``) plus ``folder`` and ``reused`` (bool).

    Raises:
      ValueError (before any long work): unknown ``model_format``, a file whose format or architecture cannot be
      inferred (the message gives the exact converter command), a preset or ARCH.json that does not match the file
      (the converters' lists of keys and shapes), a non-jaxhspace folder in the way.
    """
    log = log or (lambda s: print(f"jaxhspace: {s}", file=sys.stderr))
    path = str(config.get("model_path", "") or "")
    fmt = str(config.get("model_format", "auto") or "auto")
    if fmt not in FORMATS:
        raise ValueError(f"config.model_format={fmt!r} is not one of {FORMATS}")
    preset = str(config.get("model_preset", "") or "") or None
    arch_json = str(config.get("model_arch_json", "") or "") or None
    if not path or not os.path.isfile(path):
        if fmt in _CONVERTER and path:
            raise ValueError(f"config.model_format={fmt!r} needs config.model_path to be the official checkpoint "
                             f"file; {path!r} is not a file")
        return path, None
    if fmt == "diffusers":
        raise ValueError(f"config.model_path={path!r} is a file but config.model_format='diffusers' expects a folder; "
                         f"use model_format 'auto' to convert an official .ckpt / .pt, or convert it yourself: "
                         f"{converter_command(None, path)}")
    if preset and arch_json:
        raise ValueError("set only one of config.model_preset and config.model_arch_json")
    shapes = read_shapes(path)
    found = detect_format(shapes)
    if fmt == "auto":
        if found is None:
            keys = sorted(shapes)[:6]
            raise ValueError(
                f"config.model_path={path!r}: cannot tell the checkpoint format from its keys (first keys {keys}); "
                "jaxhspace converts Ho et al. DDPM .ckpt files (temb.dense.0, down.L.block.B, mid.attn_1) and "
                "guided-diffusion .pt files (input_blocks, middle_block, output_blocks). If it is one of them, "
                f"set config.model_format, or convert it yourself: {converter_command(None, path)}, then pass "
                "--config.model_path=DST")
        fmt = found
    arch = None
    if arch_json:
        from jaxhspace.checkpoints.common import read_json

        arch = read_json(arch_json)
    elif preset is None:
        matches = matching_presets(fmt, shapes)
        if not matches:
            raise ValueError(
                f"config.model_path={path!r} is a {fmt} checkpoint whose architecture matches no preset "
                f"({_arch_summary(fmt, shapes)}). Write its ARCH.json and either set --config.model_arch_json="
                f"ARCH.json, or run {converter_command(fmt, path)} and pass --config.model_path=DST")
        preset = _pick_by_name(matches, path)
    record = _source_record(path, fmt, preset, arch)
    tag = preset or "arch-" + hashlib.sha1(json.dumps(arch, sort_keys=True).encode()).hexdigest()[:8]
    stem = os.path.splitext(os.path.basename(path))[0]
    name = f"{stem}-{tag}-{hashlib.sha1(record['source'].encode()).hexdigest()[:8]}"
    root = os.path.join(os.path.abspath(workdir), CONVERTED_SUBDIR)
    dst = os.path.join(root, name)
    old = _read_marker(dst) if os.path.isdir(dst) else None
    if os.path.exists(dst) and old is None:
        raise ValueError(f"{dst} exists but was not written by jaxhspace's on-the-fly conversion (no {MARKER}); "
                         "move it away or use another --workdir")
    if old == record:
        log(f"reusing {dst} (converted from {path})")
        return dst, dict(record, folder=dst, reused=True)
    os.makedirs(root, exist_ok=True)
    staging = tempfile.mkdtemp(prefix=f".{name}.staging-", dir=root)
    try:
        fresh = os.path.join(staging, "model")
        log(f"converting {path} ({fmt}, {'preset ' + preset if preset else 'ARCH.json ' + str(arch_json)}) -> {dst}")
        summary = _convert(fmt, path, fresh, preset, arch)
        with open(os.path.join(fresh, MARKER), "w") as f:
            json.dump(record, f, indent=2, sort_keys=True)
        if os.path.exists(dst):  # a stale conversion of ours: move it aside, then put the new one in place
            os.rename(dst, os.path.join(staging, "stale"))
        os.rename(fresh, dst)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return dst, dict(record, folder=dst, reused=False, params=int(summary.get("params", 0)))


def with_model_conversion(run: Callable) -> Callable:
    """Wrap a job's ``run(config, workdir)``: an official checkpoint in ``config.model_path`` is converted
    (:func:`resolve_model_path`) and the job runs on a copy of the config pointing at the converted folder; the
    returned metrics gain ``model_converted_from`` (the source record)."""

    @functools.wraps(run)
    def wrapped(config, workdir: str, *args, **kwargs) -> Any:
        if not hasattr(config, "get") or not config.get("model_path"):
            return run(config, workdir, *args, **kwargs)
        path, record = resolve_model_path(config, workdir)
        if record is None:
            return run(config, workdir, *args, **kwargs)
        config = config.copy_and_resolve_references()
        config.model_path = path
        metrics = run(config, workdir, *args, **kwargs)
        if isinstance(metrics, dict):
            metrics["model_converted_from"] = record
        return metrics

    return wrapped


__all__ = ["FORMATS", "MARKER", "read_shapes", "detect_format", "matching_presets", "converter_command",
           "resolve_model_path", "with_model_conversion"]
