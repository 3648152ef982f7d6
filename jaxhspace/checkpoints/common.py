"""Shared checkpoint machinery: reading PyTorch state dicts, renaming them onto Flax param trees,
validating keys and shapes, and writing checkpoint folders atomically.

Flax modules in jaxhspace name their submodules after the PyTorch state-dict keys, so conversion is a
rename plus a layout transpose:

=====================  ==========================  ==============================
Flax leaf              PyTorch key suffix          layout change
=====================  ==========================  ==============================
``kernel`` (4-D)       ``weight`` (OIHW)           OIHW -> HWIO
``kernel`` (2-D)       ``weight`` (out, in)        transpose
``scale``              ``weight`` (norms)          none
``embedding``          ``weight`` (nn.Embedding)   none
``bias`` / other       same name                   none
=====================  ==========================  ==============================

List attributes (``self.resnets = [...]`` in ``setup``) are named ``resnets_0`` by Flax and
``resnets.0`` by PyTorch; callers pass the set of list attribute names so ``linear_1`` (a plain
attribute in diffusers) is not mistaken for a list element.
"""
from __future__ import annotations

import contextlib
import errno
import json
import os
import re
import shutil
import tempfile
from typing import Callable, Iterable, Mapping, Optional

import numpy as np
from flax import traverse_util

StateDict = dict[str, np.ndarray]


# ----------------------------------------------------------------------------------------------
# Reading
# ----------------------------------------------------------------------------------------------
def read_json(path: str) -> dict:
    """Read a JSON file (e.g. ``config.json``) with an error naming the file on failure."""
    if not os.path.isfile(path):
        raise ValueError(f"{path} not found: a model folder needs its config.json beside the weights.")
    try:
        with open(path) as f:
            obj = json.load(f)
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ValueError(f"{path} is not valid JSON ({e}); re-export the model with save_pretrained.") from e
    if not isinstance(obj, dict):
        from jaxhspace.errors import JaxhspaceError

        raise JaxhspaceError(f"{path} holds a JSON {type(obj).__name__}, not an object of settings; re-export the "
                             "model with save_pretrained or point to the right folder.")
    return obj


def find_weights_file(folder: str, candidates: Iterable[str]) -> str:
    """Return the first of ``candidates`` present in ``folder`` or raise a ValueError listing them."""
    candidates = list(candidates)
    for name in candidates:
        path = os.path.join(folder, name)
        if os.path.isfile(path):
            return path
    raise ValueError(
        f"no weights file in {folder}: expected one of {candidates}. "
        "Save the model with save_pretrained(...) or point to the right folder."
    )


def read_state_dict(path: str) -> StateDict:
    """Read a ``.safetensors`` or PyTorch ``.bin``/``.pth`` state dict into float32/int NumPy arrays.

    Half-precision tensors are upcast to float32. A truncated or corrupt file raises a ValueError
    naming the file, and so does a file whose SHA-256 differs from the one jaxhspace recorded when it wrote the
    folder (:func:`verify_checksums`).
    """
    verify_checksums(os.path.dirname(os.path.abspath(path)), only=os.path.basename(path))
    if path.endswith(".safetensors"):
        try:
            from safetensors import safe_open

            out = {}
            with safe_open(path, framework="np") as f:
                for k in f.keys():
                    out[k] = f.get_tensor(k)
        except Exception as e:  # safetensors raises its own error types for corrupt headers
            if "bfloat16" in str(e).lower() or "bf16" in str(e).lower():
                return _read_with_torch(path, safetensors=True)
            raise ValueError(f"could not read {path}: {e}. The file is corrupt or truncated; re-save it.") from e
    else:
        out = _read_with_torch(path, safetensors=False)
    return {k: (v.astype(np.float32) if v.dtype in (np.float16,) else v) for k, v in out.items()}


def verify_checksums(folder: str, prefix: str = "", only: str | None = None) -> int:
    """Check the files of ``folder`` against the SHA-256 sums in its jaxhspace marker (``.jaxhspace_export.json``,
    written with every export and conversion); folders without a marker are not checked.

    Args:
      prefix: check only the recorded files under this relative folder (e.g. ``"params/"``).
      only: check only this relative file.

    Returns:
      the number of files checked. Raises a :class:`jaxhspace.errors.JaxhspaceError` naming a missing or changed file.
    """
    from jaxhspace.errors import JaxhspaceError
    from jaxhspace.training.safety import EXPORT_MARKER, read_marker, sha256_file

    marker = read_marker(folder)
    if marker is None:
        return 0
    n = 0
    for rel, rec in marker["files"].items():
        if (only is not None and rel != only) or not rel.startswith(prefix) or not isinstance(rec, dict):
            continue
        path = os.path.join(folder, rel)
        if not os.path.isfile(path):
            raise JaxhspaceError(f"{path} is missing but listed in {os.path.join(folder, EXPORT_MARKER)}; the folder "
                                 "is incomplete: re-export / re-convert it.")
        if rec.get("sha256") and sha256_file(path) != rec["sha256"]:
            raise JaxhspaceError(f"{path} does not match the SHA-256 recorded when jaxhspace wrote it (in "
                                 f"{EXPORT_MARKER}): the file is corrupt or was modified; re-export / re-convert it.")
        n += 1
    return n


def _read_with_torch(path: str, safetensors: bool) -> StateDict:
    try:
        import torch
    except ImportError as e:
        raise ValueError(f"reading {path} needs PyTorch (pip install torch==2.13.0) or a .safetensors file.") from e
    try:
        if safetensors:
            from safetensors.torch import load_file

            sd = load_file(path)
        else:
            sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"could not read {path}: {e}. The file is corrupt or truncated; re-save it.") from e
    if not isinstance(sd, Mapping):
        raise ValueError(f"{path} does not hold a state dict (got {type(sd).__name__}).")
    nested = sorted(k for k, v in sd.items() if not isinstance(v, torch.Tensor))
    if nested:
        raise ValueError(f"{path} is not a flat state dict: entries {nested[:10]} are not tensors. For a "
                         "training checkpoint (e.g. an official Asyrp .pth) use its converter in checkpoints_convert.")
    return {k: v.detach().float().numpy() if v.is_floating_point() else v.numpy() for k, v in sd.items()}


# ----------------------------------------------------------------------------------------------
# Renaming between Flax param trees and PyTorch state dicts
# ----------------------------------------------------------------------------------------------
def flax_path_to_torch_key(path: tuple[str, ...], list_names: Iterable[str]) -> str:
    """Map a Flax param path such as ``('down_blocks_0', 'resnets_1', 'conv1', 'kernel')`` to the
    PyTorch key ``down_blocks.0.resnets.1.conv1.weight``."""
    pattern = re.compile(r"^(%s)_(\d+)$" % "|".join(sorted(list_names, key=len, reverse=True)))
    parts: list[str] = []
    for p in path[:-1]:
        m = pattern.match(p)
        parts.extend([m.group(1), m.group(2)] if m else [p])
    leaf = path[-1]
    parts.append("weight" if leaf in ("kernel", "scale", "embedding") else leaf)
    return ".".join(parts)


def torch_to_flax_array(leaf: str, value: np.ndarray) -> np.ndarray:
    """Layout change for one tensor (see the module docstring)."""
    if leaf == "kernel" and value.ndim == 4:
        return np.transpose(value, (2, 3, 1, 0))
    if leaf == "kernel" and value.ndim == 2:
        return value.T
    return value


def flax_to_torch_array(leaf: str, value: np.ndarray) -> np.ndarray:
    """Inverse of :func:`torch_to_flax_array`."""
    if leaf == "kernel" and value.ndim == 4:
        return np.transpose(value, (3, 2, 0, 1))
    if leaf == "kernel" and value.ndim == 2:
        return value.T
    return value


def state_dict_to_params(
    param_shapes: Mapping,
    state_dict: Mapping[str, np.ndarray],
    list_names: Iterable[str],
    what: str,
    key_fn: Callable[[tuple[str, ...]], str] | None = None,
    ignore_unexpected: Callable[[str], bool] = lambda k: False,
) -> dict:
    """Build a Flax param tree with the structure of ``param_shapes`` from a PyTorch ``state_dict``.

    Args:
      param_shapes: nested dict of arrays or ``jax.ShapeDtypeStruct`` (e.g. from ``jax.eval_shape(model.init, ...)``).
      state_dict: PyTorch key -> array.
      list_names: Flax list attribute names (see :func:`flax_path_to_torch_key`).
      what: a short description ("UNet2DModel", "CLIPModel") used in error messages.
      key_fn: optional override of the path -> key mapping.
      ignore_unexpected: predicate for state-dict keys that may be present but unused (buffers).

    Raises:
      ValueError listing every missing key, unexpected key and shape mismatch at once.
    """
    flat = traverse_util.flatten_dict(dict(param_shapes))
    key_fn = key_fn or (lambda p: flax_path_to_torch_key(p, list_names))
    out, missing, mismatched, used, bad_values = {}, [], [], set(), []
    for path, ref in flat.items():
        key = key_fn(path)
        if key not in state_dict:
            missing.append(key)
            continue
        used.add(key)
        arr = torch_to_flax_array(path[-1], np.asarray(state_dict[key]))
        if tuple(arr.shape) != tuple(ref.shape):
            mismatched.append(f"{key}: checkpoint {tuple(state_dict[key].shape)} vs model {tuple(ref.shape)} "
                              "(flax layout)")
            continue
        if np.issubdtype(np.dtype(ref.dtype), np.floating):
            problem = weight_problem(arr)
            if problem:
                bad_values.append(f"{key}: {problem}")
                continue
        out[path] = arr.astype(ref.dtype) if np.issubdtype(arr.dtype, np.floating) else arr
    unexpected = sorted(k for k in state_dict if k not in used and not ignore_unexpected(k))
    if missing or unexpected or mismatched:
        lines = [f"{what} checkpoint does not match the model config:"]
        problems = (("missing keys", missing), ("unexpected keys", unexpected), ("shape mismatches", mismatched),
                    ("unusable weights", bad_values))
        for name, items in problems:
            if items:
                shown = items[:40]
                lines.append(f"  {name} ({len(items)}): " + ", ".join(shown) + (" ..." if len(items) > 40 else ""))
        lines.append("  Check that config.json belongs to these weights (same block_out_channels, layers, heads).")
        raise ValueError("\n".join(lines))
    if bad_values:
        from jaxhspace.errors import JaxhspaceError

        raise JaxhspaceError(f"{what} checkpoint has unusable weights ({len(bad_values)} tensors): "
                             + "; ".join(bad_values[:20]) + (" ..." if len(bad_values) > 20 else "")
                             + ". Re-save the model from a healthy copy (weights must be finite floating point).")
    return traverse_util.unflatten_dict(out)


def weight_problem(arr) -> str | None:
    """Why ``arr`` cannot be a weight tensor ('dtype int32, not floating point', '3 of 64 values are NaN/Inf'),
    or None if it is a finite floating-point array."""
    arr = np.asarray(arr)
    if not np.issubdtype(arr.dtype, np.floating):
        return f"dtype {arr.dtype}, not floating point"
    bad = int(arr.size - np.count_nonzero(np.isfinite(arr)))
    if bad:
        return f"{bad} of {arr.size} values are NaN/Inf"
    return None


def check_weight_tree(params: Mapping, where: str) -> None:
    """Raise a :class:`jaxhspace.errors.JaxhspaceError` naming every leaf of ``params`` (a param pytree loaded from
    ``where``) that is not a finite floating-point array (see :func:`weight_problem`)."""
    bad = []
    for path, leaf in traverse_util.flatten_dict(dict(params)).items():
        problem = weight_problem(leaf)
        if problem:
            bad.append(f"{'/'.join(str(p) for p in path)}: {problem}")
    if bad:
        from jaxhspace.errors import JaxhspaceError

        raise JaxhspaceError(f"{where} holds unusable weights ({len(bad)} tensors): " + "; ".join(bad[:20])
                             + (" ..." if len(bad) > 20 else "")
                             + ". Re-convert the model from a healthy copy (weights must be finite floating point).")


def params_to_state_dict(params: Mapping, list_names: Iterable[str],
                         key_fn: Callable[[tuple[str, ...]], str] | None = None) -> StateDict:
    """Inverse of :func:`state_dict_to_params`: Flax params -> PyTorch-layout NumPy state dict."""
    key_fn = key_fn or (lambda p: flax_path_to_torch_key(p, list_names))
    flat = traverse_util.flatten_dict(dict(params))
    return {key_fn(p): np.asarray(flax_to_torch_array(p[-1], np.asarray(v)), order="C") for p, v in flat.items()}


# ----------------------------------------------------------------------------------------------
# Writing
# ----------------------------------------------------------------------------------------------
NO_SPACE_ERRNOS = tuple(getattr(errno, n) for n in ("ENOSPC", "EDQUOT") if hasattr(errno, n))


def no_space_error(exc: BaseException, dst: str):
    """A :class:`jaxhspace.errors.JaxhspaceError` for a full disk / quota (``OSError`` ENOSPC or EDQUOT, also when
    wrapped by a library as its ``__cause__`` / ``__context__``) while writing ``dst``, else None. The message says
    that nothing was written at ``dst`` (callers remove their temporaries first)."""
    from jaxhspace.errors import JaxhspaceError

    seen: set[int] = set()
    e: Optional[BaseException] = exc
    while e is not None and id(e) not in seen:
        if isinstance(e, JaxhspaceError):
            return None
        if isinstance(e, OSError) and e.errno in NO_SPACE_ERRNOS:
            folder = os.path.dirname(os.path.abspath(dst)) or "."
            try:
                free = shutil.disk_usage(folder).free
                free_txt = f"{free / 2**20:.1f} MiB free there now"
            except OSError:
                free_txt = "free space unknown"
            return JaxhspaceError(f"no space left on the device while writing {dst} ({e.strerror or e}; "
                                  f"{free_txt}): nothing was written there and the partial temporary files were "
                                  "removed. Free some space (or choose another destination) and run again.")
        seen.add(id(e))
        e = e.__cause__ or e.__context__
    return None


@contextlib.contextmanager
def atomic_directory(dst: str, overwrite: bool = False):
    """Yield a fresh temporary folder beside ``dst``; rename it to ``dst`` only if the block succeeds.

    An interrupted or failed write leaves nothing at ``dst`` (and removes the temporary folder); temporaries of a
    killed earlier write are removed first (:func:`remove_stale_temporaries`). The folder gets the mode the process
    umask gives a new folder (not mkdtemp's 0700). A full disk (ENOSPC / EDQUOT) raises a
    :class:`jaxhspace.errors.JaxhspaceError` saying so (:func:`no_space_error`) instead of the raw OSError.
    """
    dst = os.path.abspath(dst)
    if os.path.exists(dst) and not overwrite:
        raise ValueError(f"{dst} already exists; choose a new destination or pass overwrite=True.")
    parent = os.path.dirname(dst)
    os.makedirs(parent, exist_ok=True)
    remove_stale_temporaries(dst)
    tmp = tempfile.mkdtemp(prefix=f".{os.path.basename(dst)}.tmp-{os.getpid()}-", dir=parent)
    try:
        yield tmp
        mask = os.umask(0)
        os.umask(mask)
        os.chmod(tmp, 0o777 & ~mask)  # mkdtemp makes it 0700; the result gets the mode a plain mkdir would give
        if os.path.exists(dst):
            shutil.rmtree(dst)
        os.rename(tmp, dst)
    except BaseException as e:
        shutil.rmtree(tmp, ignore_errors=True)
        err = no_space_error(e, dst)
        if err is not None:
            raise err from e
        raise


STALE_TMP_SECONDS = 3600  # temporaries without a process id in their name count as stale after this long


def remove_stale_temporaries(dst: str) -> list[str]:
    """Remove the ``.DST.tmp-*`` folders that a killed :func:`atomic_directory` left beside ``dst``: those whose
    writer process (the id in the name) is gone, or, for names without one, older than :data:`STALE_TMP_SECONDS`.
    Returns the removed paths."""
    import glob
    import time

    removed = []
    base = os.path.basename(os.path.abspath(dst))
    pattern = os.path.join(glob.escape(os.path.dirname(os.path.abspath(dst))), f".{glob.escape(base)}.tmp-*")
    for path in glob.glob(pattern):
        rest = os.path.basename(path)[len(base) + 6:]
        pid = rest.split("-", 1)[0]
        if pid.isdigit() and "-" in rest:
            try:
                os.kill(int(pid), 0)
                continue  # its writer is still running
            except ProcessLookupError:
                pass
            except PermissionError:
                continue
        elif time.time() - os.path.getmtime(path) < STALE_TMP_SECONDS:
            continue
        shutil.rmtree(path, ignore_errors=True)
        removed.append(path)
    return removed


def write_json(path: str, obj) -> None:
    with open(path, "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)


def save_params(folder: str, params) -> None:
    """Save a param pytree with orbax under ``folder/params`` (folder must exist, e.g. from atomic_directory)."""
    import orbax.checkpoint as ocp

    ckptr = ocp.StandardCheckpointer()
    ckptr.save(os.path.join(os.path.abspath(folder), "params"), params)
    ckptr.wait_until_finished()


def restore_params(folder: str):
    """Restore a param pytree saved by :func:`save_params` (as NumPy-backed jax arrays, exact)."""
    import orbax.checkpoint as ocp

    path = os.path.join(os.path.abspath(folder), "params")
    if not os.path.isdir(path):
        raise ValueError(f"{folder} has no orbax 'params' folder; convert the model with checkpoints_convert first.")
    verify_checksums(os.path.abspath(folder), prefix="params/")
    try:
        params = ocp.StandardCheckpointer().restore(path)
    except Exception as e:
        raise ValueError(f"could not restore orbax params from {path}: {e}") from e
    check_weight_tree(params, path)
    return params


def save_state_dict_safetensors(path: str, state_dict: Mapping[str, np.ndarray]) -> None:
    """Write a NumPy state dict as safetensors (e.g. to ship a model in diffusers/HF folder format)."""
    from safetensors.numpy import save_file

    save_file({k: np.asarray(v, order="C") for k, v in state_dict.items()}, path)
