"""Checks every job runs on its whole config and its workdir before it loads a model (cheap, table-driven).

:func:`validate` walks the config (nested ConfigDicts such as the demo's ``asyrp_edit`` too) and raises a
:class:`jaxhspace.errors.JaxhspaceError` naming the field (``config.grid_cols``, ``config.pullback.n_dirs``), its
value and the allowed range. Only fields a config actually has are checked, so one table serves every job:

* counts that must be >= 1 (:data:`POSITIVE`), e.g. ``num_samples``, ``grid_cols``, ``n_steps``, ``k``;
* counts that must be >= 0 (:data:`NON_NEGATIVE`) and ``eta`` >= 0;
* timesteps with the sentinel -1 (:data:`TIMESTEPS`): -1 or in [0, ``num_train_timesteps``);
* ``lr`` finite and > 0; ``n_dirs`` <= ``k``; ``target_factors`` names SynthFaces factors;
* the workdir: not a file, and its nearest existing folder writable;
* every field is one some shipped config of the job has, with a value of the kind they give it
  (:func:`check_fields`: a typo such as ``pca_sorce`` fails with the closest names);
* the job's own ``validate(config)`` (impossible combinations, unknown option names), e.g.
  :meth:`jaxhspace.tasks.pullback_job.PullbackJob.validate`; the demo validates every stage's sub-config this way
  before its first stage runs.
"""
from __future__ import annotations

import functools
import math
import numbers
import os

from jaxhspace.errors import JaxhspaceError
from jaxhspace.training.run_config import flatten_fields

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
    n_dirs, n_k = cfg.get("n_dirs"), cfg.get("k")
    if isinstance(n_dirs, numbers.Integral) and isinstance(n_k, numbers.Integral) and int(n_dirs) > int(n_k):
        raise JaxhspaceError(f"{name('n_dirs')} = {n_dirs} exceeds {name('k')} = {n_k} (only k singular directions "
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


def validate(config, workdir: str, task: str = "") -> None:
    """Check ``config`` of job ``task`` (default ``config.task``; see the module docstring and
    :func:`validate_job`) and ``workdir``; raise a JaxhspaceError naming the first problem."""
    validate_job(task or config.task, config)
    check_workdir(workdir)


def validated(run, task: str = ""):
    """``run(config, workdir)`` preceded by :func:`validate` (as job ``task``)."""

    @functools.wraps(run)
    def wrapper(config, workdir: str):
        validate(config, workdir, task)
        return run(config, workdir)

    return wrapper


def _kind(v) -> str:
    """The type class a field's value belongs to: bool, number, str, sequence, dict, none."""
    if v is None:
        return "none"
    if isinstance(v, bool):
        return "bool"
    if _is_num(v):
        return "number"
    if isinstance(v, str):
        return "str"
    if isinstance(v, (tuple, list)):
        return "sequence"
    return "dict" if isinstance(v, dict) else type(v).__name__


@functools.lru_cache(maxsize=1)
def known_fields() -> dict:
    """``{task: {field: ({kinds seen}, first config that has it)}}`` over every shipped config (``configs/``) and
    every sub-config the demo builds (its stages are jobs of their own): the fields a job's config may have."""
    import importlib

    from jaxhspace import resources

    table: dict = {}

    def add(task, cfg: dict, where: str):
        fields = table.setdefault(task, {})
        for k, v in flatten_fields(cfg, keep_empty=True).items():
            kinds, first = fields.get(k, (set(), where))
            fields[k] = (kinds | {_kind(v)}, first)

    for name in resources.config_names():
        try:
            mod = importlib.import_module("jaxhspace.configs." + name.replace("/", "."))
        except ImportError:
            continue
        config = mod.get_config()
        cfg = config.to_dict()
        add(cfg.get("task", ""), cfg, f"configs/{name}.py")
        if cfg.get("task") == "demo":
            from jaxhspace.tasks.demo_job import stage_configs

            for _, job, sub in stage_configs(config):
                add(job, sub.to_dict(), f"configs/{name}.py")
    return table


def check_fields(task: str, config) -> None:
    """Raise a JaxhspaceError for a field no shipped config of ``task`` has (a typo: with the closest known names)
    or a value of another kind than the shipped configs give it (e.g. a string where they have a number)."""
    import difflib

    known = known_fields().get(task)
    if not known:
        return  # a task without a shipped config (none today): nothing to compare with
    cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    for k, v in flatten_fields(cfg, keep_empty=True).items():
        if k not in known:
            close = difflib.get_close_matches(k, list(known), n=3)
            hint = f"; did you mean {' or '.join(close)}?" if close else f"; the {task} job's fields: {sorted(known)}"
            raise JaxhspaceError(f"config.{k}: unknown field for the {task} job{hint}")
        kinds, where = known[k]
        kind = _kind(v)
        if "none" in kinds or kind in kinds or kind == "none" or (kind == "sequence" and not v):
            continue
        raise JaxhspaceError(f"config.{k} = {v!r} is a {kind}, but the {task} job expects a "
                             f"{' or '.join(sorted(kinds))} "
                             f"(as in {where}); fix the value's type.")


def validate_job(task: str, config) -> None:
    """All checks of a job's ``config`` before any work: the table-driven ranges (:func:`validate`'s), the fields
    (:func:`check_fields`) and the job's own ``validate(config)`` (impossible combinations, names)."""
    import importlib

    from jaxhspace.tasks import TASKS

    cfg = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    _check_level(cfg, "", 1000)
    check_fields(task, config)
    job_validate = getattr(importlib.import_module(TASKS[task]), "validate", None)
    if job_validate is not None:
        job_validate(config)
