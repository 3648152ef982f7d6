"""Safety rails shared by the training jobs (DDPM, CLIP): where they may export, how they replace an export,
and how they stop on Ctrl-C / SIGTERM.

* **Exports** go through :func:`export_folder`: the files are written into a hidden staging folder beside
  ``export_dir``, a marker :data:`EXPORT_MARKER` listing every file (with its SHA-256) is added, and only then is
  the folder renamed into place. An existing ``export_dir`` is replaced only if it carries that marker and holds
  no file the marker does not list (:func:`check_replaceable`); anything else is refused, so a user's folder is
  never deleted.
* **Where** (:func:`check_export_dir`, run before training starts): ``export_dir`` must not be the workdir, contain
  it, or lie inside it other than as a direct sub-folder that the job does not use itself (e.g. the default
  ``{workdir}/export``); a path inside the shipped assets (``jaxhspace.resources.assets_dir()``, the repository's
  ``assets/``) or ``./assets`` needs ``allow_asset_export=True``.
* **Divergence** (:class:`LossGuard`): a non-finite loss, or a running-mean loss ``max_loss_growth`` times its
  best value, stops the job with a clear error before the broken state is saved or exported.
* **Interruption** (:class:`InterruptGuard`): SIGINT / SIGTERM only set a flag; the training loop finishes its step,
  saves the state (orbax commits atomically) and raises :class:`jaxhspace.errors.TrainingInterrupted`.
"""
from __future__ import annotations

import datetime
import hashlib
import json
import math
import os
import shutil
import signal
import threading
import uuid
from typing import Callable

from jaxhspace.errors import JaxhspaceError

EXPORT_MARKER = ".jaxhspace_export.json"
REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
WORKDIR_PLACEHOLDER = "{workdir}"


def _real(path: str) -> str:
    return os.path.realpath(os.path.abspath(os.path.expanduser(path)))


def _within(path: str, root: str) -> bool:
    """True if ``path`` is ``root`` or inside it (both already resolved)."""
    return path == root or path.startswith(root.rstrip(os.sep) + os.sep)


def umask_dir_mode() -> int:
    """The mode a folder created now gets from ``os.makedirs`` (0o777 minus the process umask)."""
    mask = os.umask(0)
    os.umask(mask)
    return 0o777 & ~mask


def resolve_export_dir(export_dir: str | None, workdir: str) -> str:
    """``export_dir`` with ``{workdir}`` replaced by ``workdir``, as an absolute path ('' / None: no export)."""
    if not export_dir:
        return ""
    return os.path.abspath(str(export_dir).replace(WORKDIR_PLACEHOLDER, workdir))


def check_export_dir(export_dir: str | None, workdir: str, reserved: tuple[str, ...] = (),
                     allow_asset_export: bool = False, field: str = "export_dir") -> str:
    """Check, before any work, that exporting to ``export_dir`` cannot destroy anything; return its absolute path.

    Args:
      export_dir: the config value ('' / None: no export; ``{workdir}`` is replaced by ``workdir``).
      workdir: the job's workdir.
      reserved: names inside ``workdir`` the job writes itself (checkpoints, logs): never an export target.
      allow_asset_export: allow a path inside the repository's ``assets/`` or ``./assets``.

    Raises:
      JaxhspaceError naming ``field`` if export and workdir overlap, the path is under assets/ without the flag,
      or an existing folder there was not written by jaxhspace (:func:`check_replaceable`).
    """
    path = resolve_export_dir(export_dir, workdir)
    if not path:
        return ""
    real, wd = _real(path), _real(workdir)
    if _within(wd, real):
        raise JaxhspaceError(
            f"{field} {path} {'is' if real == wd else 'contains'} the workdir {workdir}: replacing the export "
            f"would delete the run's checkpoints and logs. Use --config.{field}={WORKDIR_PLACEHOLDER}/export or a "
            "folder outside the workdir.")
    if _within(real, wd):
        rel = os.path.relpath(real, wd)
        if os.sep in rel or rel in reserved:
            raise JaxhspaceError(
                f"{field} {path} lies inside the workdir {workdir} where the job keeps its own files ({rel}); "
                f"use a direct sub-folder other than {sorted(reserved)} (e.g. {WORKDIR_PLACEHOLDER}/export) "
                "or a folder outside the workdir.")
    if not allow_asset_export:
        from jaxhspace.resources import assets_dir

        for assets in {_real(assets_dir()), _real(os.path.join(REPO_ROOT, "assets")), _real("assets")}:
            if _within(real, assets):
                raise JaxhspaceError(
                    f"{field} {path} is inside {assets}, where the shipped models live; pass "
                    "--config.allow_asset_export=True to (re)write a shipped asset on purpose, or export elsewhere "
                    f"(the default is {WORKDIR_PLACEHOLDER}/export).")
    check_replaceable(path, field)
    return path


def read_marker(folder: str) -> dict | None:
    """The export marker of ``folder`` (a dict), or None if there is none."""
    path = os.path.join(folder, EXPORT_MARKER)
    if not os.path.isfile(path):
        return None
    try:
        with open(path) as f:
            marker = json.load(f)
    except (OSError, json.JSONDecodeError) as e:
        raise JaxhspaceError(f"{path} is unreadable ({e}); move the folder away or choose another export_dir.") \
            from e
    if not isinstance(marker, dict) or not isinstance(marker.get("files"), dict):
        raise JaxhspaceError(f"{path} is not a jaxhspace export marker; move the folder away or choose another "
                             "export_dir.")
    return marker


def _listing(folder: str) -> list[str]:
    """Every file below ``folder`` as a relative path (sorted)."""
    out = []
    for root, _, files in os.walk(folder):
        out += [os.path.relpath(os.path.join(root, f), folder) for f in files]
    return sorted(out)


def check_replaceable(folder: str, field: str = "export_dir",
                      legacy: Callable[[str, list[str]], bool] | None = None) -> None:
    """Raise a JaxhspaceError unless ``folder`` is absent, empty, or a jaxhspace export holding only its own files.

    ``legacy(folder, files)`` (optional) may accept a folder without a marker that jaxhspace wrote before markers
    existed (e.g. an editor folder holding exactly its two files)."""
    if not os.path.lexists(folder):
        return
    if not os.path.isdir(folder) or os.path.islink(folder):
        raise JaxhspaceError(f"{field} {folder} exists and is not a folder; choose another {field}.")
    files = _listing(folder)
    if not files:
        return
    marker = read_marker(folder)
    if marker is None and legacy is not None and legacy(folder, files):
        return
    if marker is None:
        raise JaxhspaceError(
            f"{field} {folder} exists and was not written by jaxhspace (no {EXPORT_MARKER} in it); jaxhspace only "
            f"replaces its own exports. Choose a new --config.{field} or move the folder away yourself.")
    foreign = [f for f in files if f != EXPORT_MARKER and f not in marker["files"]]
    if foreign:
        raise JaxhspaceError(
            f"{field} {folder} is a jaxhspace export but also holds files jaxhspace did not write: {foreign[:10]}; "
            f"move them away or choose a new --config.{field}.")


def sha256_file(path: str) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def write_marker(folder: str, job: str, extra: dict | None = None) -> dict:
    """Write :data:`EXPORT_MARKER` into ``folder``: job, time and every file's SHA-256 and size. Returns it."""
    files = {f: {"sha256": sha256_file(os.path.join(folder, f)), "bytes": os.path.getsize(os.path.join(folder, f))}
             for f in _listing(folder) if f != EXPORT_MARKER}
    from jaxhspace import __version__

    marker = {"written_by": "jaxhspace", "jaxhspace_version": __version__, "job": job,
              "written_utc": datetime.datetime.now(datetime.timezone.utc).isoformat(timespec="seconds"),
              "files": files, **(extra or {})}
    with open(os.path.join(folder, EXPORT_MARKER), "w") as f:
        json.dump(marker, f, indent=2, sort_keys=True)
    return marker


def _chmod_tree(folder: str) -> None:
    """Give ``folder`` and its sub-folders the umask's mode (tempfile.mkdtemp makes them 0700)."""
    mode = umask_dir_mode()
    for root, dirs, _ in os.walk(folder):
        for d in dirs:
            os.chmod(os.path.join(root, d), mode)
    os.chmod(folder, mode)


def export_folder(export_dir: str, write: Callable[[str], None], job: str, extra: dict | None = None,
                  field: str = "export_dir", legacy: Callable[[str, list[str]], bool] | None = None) -> str:
    """Write an export atomically and mark it as jaxhspace's; replace an older export of jaxhspace only.

    Args:
      export_dir: absolute destination (from :func:`check_export_dir`).
      write: ``write(path)`` creates the folder ``path`` (which does not exist yet) and fills it, e.g.
        ``lambda p: save_unet_diffusers(p, model, params)``.
      job: recorded in the marker.
      legacy: passed to :func:`check_replaceable`.

    Returns:
      ``export_dir``. Nothing is left at ``export_dir`` or beside it if ``write`` fails (the previous export, if
      any, stays in place); a full disk (ENOSPC / EDQUOT) raises a JaxhspaceError saying so instead of the raw
      OSError (:func:`jaxhspace.checkpoints.common.no_space_error`).
    """
    parent, base = os.path.dirname(export_dir), os.path.basename(export_dir)
    os.makedirs(parent, exist_ok=True)
    tag = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
    stage = os.path.join(parent, f".{base}.tmp-export-{tag}")
    trash = os.path.join(parent, f".{base}.tmp-old-{tag}")
    try:
        write(stage)
        write_marker(stage, job, extra)
        _chmod_tree(stage)
        check_replaceable(export_dir, field, legacy)  # again, right before the swap
        if os.path.lexists(export_dir):
            os.rename(export_dir, trash)
        os.rename(stage, export_dir)
    except BaseException as e:
        shutil.rmtree(stage, ignore_errors=True)
        if os.path.isdir(trash) and not os.path.lexists(export_dir):
            os.rename(trash, export_dir)
        from jaxhspace.checkpoints.common import no_space_error

        err = no_space_error(e, export_dir)
        if err is not None:
            raise err from e
        raise
    shutil.rmtree(trash, ignore_errors=True)
    return export_dir


class InterruptGuard:
    """Context manager: while active, SIGINT and SIGTERM set :attr:`signum` instead of stopping the process,
    so a training loop can finish its step, save and stop cleanly (see the module docstring). Handlers are
    installed only in the main thread (signals are delivered there) and restored on exit."""

    SIGNALS = (signal.SIGINT, signal.SIGTERM)

    def __init__(self) -> None:
        self.signum: int | None = None
        self._old: dict = {}

    def _handle(self, signum, frame):  # noqa: ARG002
        self.signum = signum

    def __enter__(self) -> "InterruptGuard":
        if threading.current_thread() is threading.main_thread():
            for s in self.SIGNALS:
                self._old[s] = signal.signal(s, self._handle)
        return self

    def __exit__(self, *exc) -> None:
        for s, h in self._old.items():
            signal.signal(s, h)
        self._old = {}


class LossGuard:
    """Stop a training run whose loss diverges (before the broken state is saved or exported).

    ``update(step, loss)`` raises a :class:`jaxhspace.errors.JaxhspaceError` when ``loss`` is NaN/Inf, or when the
    mean of the last ``window`` losses exceeds ``max_growth`` times the lowest such mean seen in this run
    (``max_growth`` <= 0: only the finiteness check). The message names the step and ``config.lr``."""

    def __init__(self, max_growth: float = 100.0, window: int = 10, lr: float | None = None):
        self.max_growth, self.window, self.lr = float(max_growth or 0.0), max(1, int(window)), lr
        self.recent: list[float] = []
        self.best: float | None = None

    def _fail(self, step: int, what: str):
        hint = f" (config.lr = {self.lr})" if self.lr is not None else ""
        raise JaxhspaceError(f"training diverged at step {step}: {what}. Nothing from this step on was saved or "
                             f"exported; lower the learning rate{hint} or check the data, then resume (the last "
                             "checkpoint is intact) or start a fresh workdir.")

    def update(self, step: int, loss: float) -> None:
        loss = float(loss)
        if not math.isfinite(loss):
            self._fail(step, f"the loss is {loss}")
        self.recent = (self.recent + [loss])[-self.window:]
        if len(self.recent) < self.window:
            return
        mean = sum(self.recent) / self.window
        if self.best is None or mean < self.best:
            self.best = mean
        elif self.max_growth > 0 and mean > self.max_growth * self.best:
            self._fail(step, f"the mean loss of the last {self.window} steps is {mean:.4g}, "
                             f"{mean / self.best:.0f}x its best {self.best:.4g} (config.max_loss_growth = "
                             f"{self.max_growth:g})")


def trim_log(path: str, step: int) -> int:
    """Drop the records of ``path`` (a JSON-lines training log) logged after ``step``: a run killed between
    logging and saving logs those steps again when it resumes from ``step``. Returns the number dropped."""
    if not os.path.isfile(path):
        return 0
    with open(path) as f:
        lines = f.readlines()
    keep = []
    for line in lines:
        try:
            rec_step = json.loads(line).get("step", 0)
        except (ValueError, AttributeError):
            continue  # a line cut short by the kill
        if rec_step <= step:
            keep.append(line if line.endswith("\n") else line + "\n")
    if len(keep) != len(lines):
        with open(path + ".tmp", "w") as f:
            f.writelines(keep)
        os.replace(path + ".tmp", path)
    return len(lines) - len(keep)
