"""The config a training run was started with, stored beside its checkpoints, so a resume cannot mix configs.

``workdir/run_config.json`` holds the config's result-affecting fields (everything but the job's bookkeeping
fields, e.g. ``max_minutes``, ``export_dir``, ``log_every``; the job passes them as a flat dict built by
:func:`result_fields`). When a run resumes from a checkpoint, :func:`check_resume` compares the new fields with it
and, under the default ``resume_policy="strict"``, refuses any change, naming the fields; ``resume_policy="allow"``
resumes anyway and records the change in the file's ``changes`` list.
"""
from __future__ import annotations

import json
import os
import warnings
from typing import Mapping

from jaxhspace.errors import JaxhspaceError

RUN_CONFIG = "run_config.json"
RESUME_POLICIES = ("strict", "allow")


def _plain(value):
    """JSON-normal form (tuples -> lists, ConfigDicts -> dicts) so stored and current values compare equal."""
    return json.loads(json.dumps(value, default=lambda o: o.to_dict() if hasattr(o, "to_dict") else str(o)))


def flatten_fields(d: dict, prefix: str = "", keep_empty: bool = False) -> dict:
    """``{"a": {"b": 1}}`` -> ``{"a.b": 1}`` (ConfigDicts count as dicts). An empty sub-dict is dropped, or kept as a
    field with value ``{}`` when ``keep_empty`` (the config-field check needs it; resume checks do not)."""
    out = {}
    for k, v in d.items():
        if isinstance(v, dict) and (v or not keep_empty):
            out.update(flatten_fields(v, f"{prefix}{k}.", keep_empty))
        else:
            out[f"{prefix}{k}"] = v
    return out


def result_fields(mapping, ignore: tuple[str, ...] = ()) -> dict:
    """A (nested) mapping, e.g. a job's ConfigDict, as a flat JSON-normal dict ``{"a.b": value}`` without the
    ``ignore`` fields (top-level names): what :func:`check_resume` stores and compares."""
    d = mapping.to_dict() if hasattr(mapping, "to_dict") else dict(mapping)
    return flatten_fields(_plain({k: v for k, v in d.items() if k not in ignore}))


def check_resume(fields: Mapping, workdir: str, resuming: bool, resume_policy: str = "strict",
                 allowed: Mapping | None = None) -> list[str]:
    """Store (fresh run) or compare (resume) the run's result-affecting fields; return the changed field names.

    Args:
      fields: the flat ``{name: JSON value}`` that identifies the run (a job builds it with :func:`result_fields`
        from its config minus the bookkeeping fields).
      workdir: the run's workdir (``workdir/run_config.json``).
      resuming: True if a checkpoint will be restored.
      resume_policy: ``"strict"`` refuses a changed field, ``"allow"`` resumes anyway and records the change.
      allowed: ``{field: reason}`` of fields whose change the job has found harmless for this resume (not refused).

    Raises:
      JaxhspaceError naming ``resume_policy`` if it is unknown, or, under ``"strict"``, every changed field with its
      stored and new value.
    """
    policy = resume_policy or "strict"
    if policy not in RESUME_POLICIES:
        raise JaxhspaceError(f"config.resume_policy must be one of {RESUME_POLICIES}, got {policy!r}")
    path = os.path.join(workdir, RUN_CONFIG)
    current = flatten_fields(_plain(dict(fields)))
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
