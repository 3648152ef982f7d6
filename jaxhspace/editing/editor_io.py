"""Load / save Asyrp editors (:class:`~jaxhspace.models.editor.DeltaBlock`).

Our folder format (written atomically by :func:`save_editor`, with jaxhspace's export marker)::

    DST/config.json         {"_jaxhspace_format": "asyrp_editor", "editor": EditorConfig fields, "meta": {...}}
    DST/editor.safetensors  float32 state dict with the *official* names and PyTorch layout
                            DDPM variant: conv1.weight [C, C, 1, 1], conv1.bias, temb_proj.weight [C, temb_dim],
                              temb_proj.bias, norm2.weight, norm2.bias, conv2.weight, conv2.bias
                            ADM variant: in_layers.0.{weight,bias} [C], in_layers.2.weight [C, C, 1, 1],
                              in_layers.2.bias, emb_layers.1.weight [C, temb_dim], emb_layers.1.bias,
                              out_layers.0.{weight,bias}, out_layers.3.weight [C, C, 1, 1], out_layers.3.bias

so the weights file also loads into the official PyTorch DeltaBlock with ``load_state_dict``. ``meta`` keeps what
test-time scaling needs (``n_train_step``: Δh is scaled by n_train_step / n_test_step,
kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:626) plus the texts, t_edit / t_boost and the training settings.

Official checkpoints (``checkpoint/<exp>_LC_<attr>_t999_ninv40_ngen40_0.pth``) are torch-saved dicts
``{'0': DeltaBlock.state_dict(), 'optimizer': ..., 'scheduler': ...}``; :func:`read_official_checkpoint`
reads them (``torch.load(weights_only=True)``: the optimiser / StepLR state dicts hold only tensors and
numbers) and :func:`load_editor` accepts such a ``.pth`` directly. The variant is read from the keys: ``conv1.*``
etc. is the DDPM DeltaBlock (CelebA-HQ / LSUN editors), ``in_layers.*`` / ``emb_layers.*`` / ``out_layers.*`` the
ADM one (``dog_*`` / ``metface_*`` editors, trained on the iDDPM / P2 guided-diffusion bases); an ADM editor only
means something on the base it was trained on.
"""
from __future__ import annotations

import os
import re
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np

from jaxhspace.checkpoints.common import (
    flax_path_to_torch_key, params_to_state_dict, read_json, read_state_dict, save_state_dict_safetensors,
    state_dict_to_params, verify_checksums, write_json)
from jaxhspace.models.editor import DeltaBlock, EditorConfig, editor_param_shapes

FORMAT_KEY = "_jaxhspace_format"
EDITOR_FORMAT = "asyrp_editor"
WEIGHTS = "editor.safetensors"
OFFICIAL_KEYS = ("conv1.weight", "conv1.bias", "temb_proj.weight", "temb_proj.bias", "norm2.weight", "norm2.bias",
                 "conv2.weight", "conv2.bias")
ADM_OFFICIAL_KEYS = ("in_layers.0.weight", "in_layers.0.bias", "in_layers.2.weight", "in_layers.2.bias",
                     "emb_layers.1.weight", "emb_layers.1.bias", "out_layers.0.weight", "out_layers.0.bias",
                     "out_layers.3.weight", "out_layers.3.bias")
_ADM_PREFIXES = ("in_layers.", "emb_layers.", "out_layers.")
_DDPM_PREFIXES = ("conv1.", "temb_proj.", "norm2.", "conv2.")
_LIST_NAMES = ("in_layers", "emb_layers", "out_layers")


def _key_fn(path: tuple[str, ...]) -> str:
    return flax_path_to_torch_key(path, _LIST_NAMES)


def state_dict_variant(state_dict: Mapping[str, Any]) -> str:
    """``"adm"`` if the keys are the ADM DeltaBlock's (``in_layers.*`` ...), ``"ddpm"`` if the DDPM one's
    (``conv1.*`` ...); ValueError if both or neither."""
    adm = any(k.startswith(_ADM_PREFIXES) for k in state_dict)
    ddpm = any(k.startswith(_DDPM_PREFIXES) for k in state_dict)
    if adm and ddpm:
        raise ValueError(f"state dict mixes DDPM ({', '.join(OFFICIAL_KEYS[:2])} ...) and ADM "
                         f"({', '.join(ADM_OFFICIAL_KEYS[:2])} ...) DeltaBlock keys: {sorted(state_dict)[:12]}")
    if not (adm or ddpm):
        raise ValueError(f"not an Asyrp DeltaBlock state dict: expected {list(OFFICIAL_KEYS)} (DDPM variant) or "
                         f"{list(ADM_OFFICIAL_KEYS)} (ADM variant); got {sorted(state_dict)[:10]}")
    return "adm" if adm else "ddpm"


def state_dict_to_editor_params(editor: DeltaBlock, state_dict: Mapping[str, Any]) -> dict:
    """Official DeltaBlock state dict (PyTorch layout, NumPy or torch tensors) -> Flax params of ``editor``.

    Raises:
      ValueError: keys of the other variant than ``editor.config.variant``, or missing / unexpected / mis-shaped
        keys (all listed).
    """
    sd = {k: (v.detach().float().numpy() if hasattr(v, "detach") else np.asarray(v)) for k, v in state_dict.items()}
    variant = editor.config.variant
    other = _DDPM_PREFIXES if variant == "adm" else _ADM_PREFIXES
    foreign = sorted(k for k in sd if k.startswith(other))
    if foreign:
        name = "DDPM" if variant == "adm" else "ADM"
        raise ValueError(f"{name}-variant Asyrp editor keys ({foreign[:4]} ...) are not supported by a DeltaBlock "
                         f"with variant={variant!r}: build it with EditorConfig(variant="
                         f"{'ddpm' if variant == 'adm' else 'adm'!r}) (config_from_state_dict picks the variant)")
    return state_dict_to_params(editor_param_shapes(editor), sd, (),
                                what=f"Asyrp DeltaBlock ({variant} variant)", key_fn=_key_fn)


def editor_params_to_state_dict(params: Mapping) -> dict[str, np.ndarray]:
    """Flax editor params -> official-name PyTorch-layout NumPy state dict (float32)."""
    sd = params_to_state_dict(jax.device_get(params), (), key_fn=_key_fn)
    return {k: np.asarray(v, np.float32) for k, v in sd.items()}


def config_from_state_dict(state_dict: Mapping[str, Any], num_groups: int = 32,
                           eps: float | None = None) -> EditorConfig:
    """Infer the variant (from the key names), ``channels`` and ``temb_dim``: DDPM from conv1.weight [C, C, 1, 1] and
    temb_proj.weight [C, temb_dim], ADM from in_layers.2.weight [C, C, 1, 1] and emb_layers.1.weight [C, temb_dim].
    ``eps=None``: the variant's official GroupNorm eps (1e-6 DDPM, 1e-5 ADM)."""
    variant = state_dict_variant(state_dict)
    conv_key, emb_key = ("conv1.weight", "temb_proj.weight") if variant == "ddpm" else \
        ("in_layers.2.weight", "emb_layers.1.weight")
    missing = [k for k in (conv_key, emb_key) if k not in state_dict]
    if missing:
        raise ValueError(f"not an Asyrp DeltaBlock state dict ({variant} variant): missing keys {missing}; got "
                         f"{sorted(state_dict)[:10]}")
    w1, wt = tuple(np.shape(state_dict[conv_key])), tuple(np.shape(state_dict[emb_key]))
    if len(w1) != 4 or w1[2:] != (1, 1) or len(wt) != 2:
        raise ValueError(f"{conv_key} {w1} must be [C, C, 1, 1] and {emb_key} {wt} [C, temb_dim]")
    if variant == "adm" and wt[0] == 2 * w1[0]:
        raise ValueError(f"{emb_key} {wt} has 2C rows: an ADM DeltaBlock with use_scale_shift_norm=True, which the "
                         "official code never builds (setattr_layers); not supported")
    return EditorConfig(channels=int(w1[0]), temb_dim=int(wt[1]), num_groups=num_groups, eps=eps, variant=variant)


def read_official_checkpoint(path: str, layer: int | str = 0, allow_pickle: bool = False) -> tuple[dict, dict]:
    """Read an official Asyrp ``.pth``: returns ``(state_dict [NumPy, PyTorch layout], info)``.

    ``info`` holds what could be recovered: ``lr`` / ``momentum`` from the optimiser state, ``step_size`` /
    ``gamma`` from the StepLR state, and ``n_inv_step`` / ``n_train_step`` / ``t_0`` parsed from the file name
    (``..._t999_ninv40_ngen40_0.pth``: ``ngen`` is n_train_step, needed for test-time scaling).

    Args:
      layer: which editor of the dict (the key is ``str(layer)``; 0 for single-attribute training).
      allow_pickle: retry with ``torch.load(weights_only=False)`` if the safe loader refuses the file
        (only for files you trust: unpickling runs code).

    Raises:
      ValueError: unreadable file, missing layer key (the available keys are listed).
    """
    import torch

    if not os.path.isfile(path):
        raise ValueError(f"{path} not found")
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # pickle restrictions or corruption
        if not allow_pickle:
            raise ValueError(f"could not read {path} with torch.load(weights_only=True): {e}. If you trust the file, "
                             "retry with allow_pickle=True (--allow-pickle).") from e
        try:
            obj = torch.load(path, map_location="cpu", weights_only=False)
        except Exception as e2:
            raise ValueError(f"could not read {path}: {e2}") from e2
    if not isinstance(obj, Mapping):
        raise ValueError(f"{path} does not hold a dict (got {type(obj).__name__})")
    key = str(layer)
    if key in obj and isinstance(obj[key], Mapping):
        sd = obj[key]
    elif all(hasattr(v, "shape") for v in obj.values()):  # a bare DeltaBlock state dict
        sd = obj
    else:
        layers = sorted(k for k, v in obj.items() if isinstance(v, Mapping) and k not in ("optimizer", "scheduler"))
        raise ValueError(f"{path} has no editor layer {key!r}; available layers: {layers}")
    sd = {k: v.detach().float().numpy() if hasattr(v, "detach") else np.asarray(v) for k, v in sd.items()}
    info: dict[str, Any] = {"source": os.path.abspath(path), "layer": key}
    try:
        pg = obj["optimizer"]["param_groups"][0]
        info.update({k: float(pg[k]) for k in ("lr", "momentum", "weight_decay") if k in pg})
    except (KeyError, IndexError, TypeError):
        pass
    sched = obj.get("scheduler")
    if isinstance(sched, Mapping):
        info.update({k: float(sched[k]) for k in ("step_size", "gamma") if k in sched})
    name = os.path.basename(path)
    for field, pat in (("n_inv_step", r"ninv(\d+)"), ("n_train_step", r"ngen(\d+)"), ("t_0", r"_t(\d+)_")):
        m = re.search(pat, name)
        if m:
            info[field] = int(m.group(1))
    return sd, info


def _is_plain_editor_folder(folder: str, files: list[str]) -> bool:
    """True for an editor folder that :func:`save_editor` wrote before it added an export marker: exactly
    ``config.json`` (our format key) and ``editor.safetensors``."""
    if set(files) != {"config.json", WEIGHTS}:
        return False
    try:
        cfg = read_json(os.path.join(folder, "config.json"))
    except Exception:
        return False
    return isinstance(cfg, dict) and cfg.get(FORMAT_KEY) == EDITOR_FORMAT


def check_editor_destination(path: str, overwrite: bool = False, hint: str = "") -> str:
    """Check (before any long work) that :func:`save_editor` may write ``path``; returns it as an absolute path.

    An existing ``path`` needs ``overwrite=True`` and must be a folder jaxhspace wrote: an editor folder with its
    export marker (and no other files) or a plain editor folder of ``config.json`` + ``editor.safetensors``.
    Anything else (a file, a user's folder, extra files) raises a :class:`jaxhspace.errors.JaxhspaceError`
    naming it; ``hint`` is appended to that message."""
    from jaxhspace.errors import JaxhspaceError
    from jaxhspace.training.safety import EXPORT_MARKER, check_replaceable

    path = os.path.abspath(os.fspath(path))
    if not os.path.lexists(path):
        return path
    if not overwrite:
        raise JaxhspaceError(f"{path} already exists; choose a new destination or pass overwrite=True.{hint}")
    try:
        check_replaceable(path, "editor folder", legacy=_is_plain_editor_folder)
    except JaxhspaceError as e:
        raise JaxhspaceError(f"cannot save the editor to {path}: it exists and holds what jaxhspace did not write "
                             f"({' '.join(str(e).split())[:300]}). jaxhspace replaces only its own editor folders "
                             f"(with {EXPORT_MARKER}, or exactly config.json + {WEIGHTS}); move it away or save "
                             f"elsewhere.{hint}") from e
    return path


def save_editor(path: str, editor: DeltaBlock, params: Mapping, meta: Mapping | None = None,
                overwrite: bool = False) -> str:
    """Write ``path/config.json`` + ``path/editor.safetensors`` atomically (see the module docstring), with the
    export marker of :func:`jaxhspace.training.safety.export_folder` (file list and SHA-256 sums, checked by
    :func:`load_editor`).

    Args:
      editor: the module (its config is stored).
      params: its params (any array type).
      meta: JSON-serialisable extras; include ``n_train_step`` (the grid size the editor was trained with).
      overwrite: replace an existing folder, only if jaxhspace wrote it (:func:`check_editor_destination`).

    Returns:
      the path.

    Raises:
      JaxhspaceError (a ValueError): ``path`` exists (without ``overwrite``) or is not jaxhspace's; a full disk
      (nothing is left at ``path``, an older editor there stays intact).
    """
    from jaxhspace.training.safety import export_folder

    sd = editor_params_to_state_dict(params)
    state_dict_to_editor_params(editor, sd)  # validates shapes against the config
    dst = check_editor_destination(path, overwrite)

    def write(tmp):
        os.makedirs(tmp)
        write_json(os.path.join(tmp, "config.json"),
                   {FORMAT_KEY: EDITOR_FORMAT, "editor": editor.config.to_dict(), "meta": dict(meta or {})})
        save_state_dict_safetensors(os.path.join(tmp, WEIGHTS), sd)

    export_folder(dst, write, job="asyrp_editor", field="editor folder", legacy=_is_plain_editor_folder)
    return os.fspath(path)


def load_editor(path: str, layer: int | str = 0, num_groups: int = 32,
                allow_pickle: bool = False) -> tuple[DeltaBlock, dict, dict]:
    """Load an editor: our folder (:func:`save_editor`) or an official ``.pth`` directly.

    Returns:
      ``(editor, params, meta)``; ``editor.apply({"params": params}, h [B,h,w,C], temb [B,temb_dim]) -> Δh``.
      For a ``.pth``, meta is the ``info`` of :func:`read_official_checkpoint` and ``num_groups`` (default 32,
      the official value) is used.

    Raises:
      ValueError for a missing path, a folder of another format, mismatched keys / shapes (listed).
    """
    path = os.fspath(path)
    if os.path.isfile(path):
        sd, meta = read_official_checkpoint(path, layer=layer, allow_pickle=allow_pickle)
        editor = DeltaBlock(config_from_state_dict(sd, num_groups=num_groups))
        params = state_dict_to_editor_params(editor, sd)
        return editor, jax.tree_util.tree_map(jnp.asarray, params), meta
    if not os.path.isdir(path):
        raise ValueError(f"{path} not found: pass an editor folder (save_editor / checkpoints_convert.asyrp_editor) "
                         "or an official Asyrp .pth")
    cfg = read_json(os.path.join(path, "config.json"))
    if cfg.get(FORMAT_KEY) != EDITOR_FORMAT:
        raise ValueError(f"{path}/config.json is not an Asyrp editor ({FORMAT_KEY}={cfg.get(FORMAT_KEY)!r}; expected "
                         f"{EDITOR_FORMAT!r}). Convert official checkpoints with "
                         "python -m checkpoints_convert.asyrp_editor")
    editor = DeltaBlock(EditorConfig.from_dict(cfg["editor"]))
    wf = os.path.join(path, WEIGHTS)
    if not os.path.isfile(wf):
        raise ValueError(f"{path} has no {WEIGHTS}")
    verify_checksums(path, only=WEIGHTS)  # editors saved with a marker: the weights are the ones written
    params = state_dict_to_editor_params(editor, read_state_dict(wf))
    return editor, jax.tree_util.tree_map(jnp.asarray, params), dict(cfg.get("meta", {}))


__all__ = ["load_editor", "save_editor", "read_official_checkpoint", "state_dict_to_editor_params",
           "editor_params_to_state_dict", "config_from_state_dict", "state_dict_variant", "OFFICIAL_KEYS",
           "ADM_OFFICIAL_KEYS"]
