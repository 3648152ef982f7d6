"""The config a training run was started with, stored beside its checkpoints, so a resume cannot mix configs.

``workdir/run_config.json`` holds the config's result-affecting fields (everything but the job's bookkeeping
fields, e.g. ``max_minutes``, ``export_dir``, ``log_every``). When a run resumes from a checkpoint,
:func:`check_resume` compares the new config with it and, under the default ``resume_policy="strict"``, refuses any
change, naming the fields; ``resume_policy="allow"`` resumes anyway and records the change in the file's
``changes`` list.
"""
from __future__ import annotations

import json
import os
import warnings

from jaxhspace.errors import JaxhspaceError

RUN_CONFIG = "run_config.json"
RESUME_POLICIES = ("strict", "allow")


def _plain(value):
    """JSON-normal form (tuples -> lists, ConfigDicts -> dicts) so stored and current values compare equal."""
    return json.loads(json.dumps(value, default=lambda o: o.to_dict() if hasattr(o, "to_dict") else str(o)))


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = v
    return out


def result_fields(config, ignore: tuple[str, ...]) -> dict:
    """The config as a flat JSON-normal dict ``{"a.b": value}`` without the ``ignore`` fields (top-level names)."""
    d = config.to_dict() if hasattr(config, "to_dict") else dict(config)
    return _flatten(_plain({k: v for k, v in d.items() if k not in ignore}))


def check_resume(config, workdir: str, resuming: bool, ignore: tuple[str, ...],
                 allowed: dict | None = None) -> list[str]:
    """Store (fresh run) or compare (resume) the run's result-affecting config; return the changed field names.

    Args:
      config: the job config (``config.resume_policy``: ``"strict"`` (default) or ``"allow"``).
      workdir: the run's workdir (``workdir/run_config.json``).
      resuming: True if a checkpoint will be restored.
      ignore: top-level fields that do not affect the result (bookkeeping).
      allowed: ``{field: reason}`` of fields whose change the job has found harmless for this resume (not refused).

    Raises:
      JaxhspaceError naming ``resume_policy`` if it is unknown, or, under ``"strict"``, every changed field with its
      stored and new value.
    """
    policy = config.get("resume_policy", "strict") or "strict"
    if policy not in RESUME_POLICIES:
        raise JaxhspaceError(f"config.resume_policy must be one of {RESUME_POLICIES}, got {policy!r}")
    path = os.path.join(workdir, RUN_CONFIG)
    current = result_fields(config, ignore)
    stored = None
    if resuming and os.path.isfile(path):
        try:
            with open(path) as f:
                stored = json.load(f)
            stored_fields = stored["config"]
        except (OSError, ValueError, KeyError, TypeError) as e:
            raise JaxhspaceError(f"{path} is unreadable ({e}); delete it to resume without the config check, or "
                                 "start a fresh workdir.") from e
    if stored is None:
        if resuming:
            warnings.warn(f"{path} is missing (a run from before configs were stored): resuming without checking "
                          "that the config is unchanged.", UserWarning, stacklevel=2)
        _write(path, {"config": current, "changes": []})
        return []
    keys = sorted(set(stored_fields) | set(current))
    changed = [k for k in keys if stored_fields.get(k, "<absent>") != current.get(k, "<absent>")]
    refused = [k for k in changed if k not in (allowed or {})]
    if refused and policy == "strict":
        lines = [f"  {k}: {stored_fields.get(k, '<absent>')!r} in the checkpoint's run, now "
                 f"{current.get(k, '<absent>')!r}" for k in refused]
        raise JaxhspaceError(
            f"resuming {workdir} with a changed config would mix two runs; changed result-affecting fields "
            f"{refused}:\n" + "\n".join(lines) + "\nRestore those values, start a fresh --workdir, or pass "
            "--config.resume_policy=allow to resume with the new values anyway.")
    if changed:
        stored["changes"] = stored.get("changes", []) + [
            {k: [stored_fields.get(k), current.get(k)] for k in changed}]
        stored["config"] = current
        _write(path, stored)
    return changed


def _write(path: str, obj: dict) -> None:
    os.makedirs(os.path.dirname(path), exist_ok=True)
    with open(path + ".tmp", "w") as f:
        json.dump(obj, f, indent=2, sort_keys=True)
    os.replace(path + ".tmp", path)
