"""Checks every job runs on its whole config and its workdir before it loads a model (cheap, table-driven).

:func:`validate` walks the config (nested ConfigDicts such as the demo's ``asyrp_edit`` too) and raises a
:class:`jaxhspace.errors.JaxhspaceError` naming the field (``config.grid_cols``, ``config.pullback.n_dirs``), its
value and the allowed range. Only fields a config actually has are checked, so one table serves every job:

* counts that must be >= 1 (:data:`POSITIVE`), e.g. ``num_samples``, ``grid_cols``, ``n_steps``, ``k``;
* counts that must be >= 0 (:data:`NON_NEGATIVE`) and ``eta`` >= 0;
* timesteps with the sentinel -1 (:data:`TIMESTEPS`): -1 or in [0, ``num_train_timesteps``);
* ``lr`` finite and > 0; ``n_dirs`` <= ``k``; ``target_factors`` names SynthFaces factors;
* the workdir: not a file, and its nearest existing folder writable.
"""
from __future__ import annotations

import functools
import math
import numbers
import os

from jaxhspace.errors import JaxhspaceError

POSITIVE = ("num_samples", "num_images", "grid_cols", "n_steps", "n_inv", "n_train", "n_epochs", "n_dirs", "k",
            "batch_size", "total_steps", "checkpoint_every", "log_every", "num_pca_samples", "n_edit_steps",
            "num_train_timesteps", "n_train_img", "upscale")
NON_NEGATIVE = ("image_size", "n_test", "warmup_steps", "max_minutes", "stop_at_step", "eval_every",
                "text_freeze_steps", "eta")  # image_size 0: from the model
TIMESTEPS = ("t_edit", "t_boost", "edit_t", "jacobian_t")  # -1: the job's own default


def _is_int(v) -> bool:
    return isinstance(v, numbers.Integral) and not isinstance(v, bool)


def _is_num(v) -> bool:
    return isinstance(v, numbers.Real) and not isinstance(v, bool)


def _check_level(cfg: dict, prefix: str, T: int) -> None:
    def name(k):
        return f"config.{prefix}{k}"

    for k in POSITIVE:
        v = cfg.get(k)
        if v is not None and _is_num(v) and not (v >= 1):
            raise JaxhspaceError(f"{name(k)} must be >= 1, got {v!r}; pass --{name(k)}=<a positive integer>.")
    for k in NON_NEGATIVE:
        v = cfg.get(k)
        if v is not None and _is_num(v) and not (v >= 0):
            raise JaxhspaceError(f"{name(k)} must be >= 0, got {v!r}.")
    t_max = int(cfg.get("num_train_timesteps", T)) if _is_int(cfg.get("num_train_timesteps", T)) else T
    for k in TIMESTEPS:
        v = cfg.get(k)
        if v is not None and _is_int(v) and v != -1 and not 0 <= v < t_max:
            raise JaxhspaceError(f"{name(k)} must be a timestep in [0, {t_max}) or -1 (the default), got {v!r}.")
    if "n_train_step" in cfg and _is_int(cfg["n_train_step"]) and cfg["n_train_step"] < -1:
        raise JaxhspaceError(f"{name('n_train_step')} must be -1 (from the editor's meta), 0 (no scaling) or a "
                             f"positive step count, got {cfg['n_train_step']!r}.")
    lr = cfg.get("lr")
    if lr is not None and _is_num(lr) and not (math.isfinite(lr) and lr > 0):
        raise JaxhspaceError(f"{name('lr')} must be a finite learning rate > 0, got {lr!r}.")
    n_dirs, k = cfg.get("n_dirs"), cfg.get("k")
    if _is_int(n_dirs) and _is_int(k) and n_dirs > k:
        raise JaxhspaceError(f"{name('n_dirs')} = {n_dirs} exceeds {name('k')} = {k} (only k singular directions "
                             f"are computed); lower n_dirs or raise k.")
    targets = cfg.get("target_factors")
    if targets:
        from jaxhspace.data.synthfaces import FACTORS

        if isinstance(targets, str):
            targets = (targets,)
        for entry in targets:
            factor = str(entry).split("=", 1)[0].strip()
            if factor and factor not in FACTORS:
                raise JaxhspaceError(f"{name('target_factors')}: unknown factor {factor!r} in {entry!r}; known "
                                     f"factors: {sorted(FACTORS)} (optionally 'factor=value').")
    for key, value in cfg.items():
        if isinstance(value, dict):
            _check_level(value, f"{prefix}{key}.", t_max)


def check_workdir(workdir: str) -> None:
    """Raise a JaxhspaceError if ``workdir`` is a file or cannot be created / written."""
    if not workdir:
        raise JaxhspaceError("--workdir is empty; give the folder the job should write into.")
    path = os.path.abspath(workdir)
    if os.path.exists(path) and not os.path.isdir(path):
        raise JaxhspaceError(f"--workdir {workdir} is a file, not a folder; choose another --workdir.")
    probe = path
    while not os.path.exists(probe):
        probe = os.path.dirname(probe)
    if not os.path.isdir(probe):
        raise JaxhspaceError(f"--workdir {workdir} cannot be created: {probe} is a file.")
    if not os.access(probe, os.W_OK | os.X_OK):
        raise JaxhspaceError(f"--workdir {workdir} is not writable ({probe} does not allow writing); choose "
                             "another --workdir.")


def validate(config, workdir: str) -> None:
    """Check ``config`` (see the module docstring) and ``workdir``; raise a JaxhspaceError naming the first problem."""
    cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    _check_level(cfg, "", 1000)
    check_workdir(workdir)


def validated(run):
    """``run(config, workdir)`` preceded by :func:`validate`."""

    @functools.wraps(run)
    def wrapper(config, workdir: str):
        validate(config, workdir)
        return run(config, workdir)

    return wrapper
