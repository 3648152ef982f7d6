"""The resumable training loop shared by the DDPM, VAE and latent-DDPM trainers (one loop, a few hooks).

A trainer builds its initial state and a jitted ``step_fn(state, batch) -> (state, loss)`` whose randomness is
``fold_in(key, state.step)``, and a ``batch_fn(step) -> batch`` that is a pure function of the step; this loop
restores the newest checkpoint, runs to ``RunSettings.total_steps`` (or ``max_minutes``), logs, saves on the
checkpoint interval, on SIGINT/SIGTERM and at the end, and stops on a diverging loss. So a resumed run equals an
uninterrupted one bit for bit. The loop reads no config: the jobs (:mod:`jaxhspace.tasks`) build its
:class:`RunSettings` and the fields the resume check compares.
"""
from __future__ import annotations

import dataclasses
import json
import math
import numbers
import os
import time
from typing import Any, Callable, Mapping

import numpy as np
from tqdm import tqdm

from jaxhspace.errors import JaxhspaceError, TrainingInterrupted
from jaxhspace.training.checkpointing import Checkpointer
from jaxhspace.training.run_config import RESUME_POLICIES, check_resume
from jaxhspace.training.safety import InterruptGuard, LossGuard, trim_log

@dataclasses.dataclass(frozen=True)
class RunSettings:
    """How :func:`run_training` runs (of these only ``total_steps`` changes the trained weights).

    Attributes:
      total_steps: train until the state's ``step`` reaches it.
      lr: the learning rate, only named in the divergence message (:class:`~jaxhspace.training.safety.LossGuard`).
      checkpoint_every: steps between checkpoints (the last step is always saved).
      log_every: steps per ``train_log.jsonl`` record (the mean loss of those steps).
      max_minutes: > 0 stops (after saving) once this much wall time has passed; 0 = no limit.
      max_loss_growth: stop when the ``loss_window``-step mean loss reaches this multiple of its best (0 = off;
        NaN / inf always stop).
      loss_window: steps of that mean.
      resume_policy: "strict" (a resume with changed result-affecting fields is refused) or "allow".
    """

    total_steps: int
    lr: float | None = None
    checkpoint_every: int = 250
    log_every: int = 25
    max_minutes: float = 0.0
    max_loss_growth: float = 100.0
    loss_window: int = 10
    resume_policy: str = "strict"

    def validate(self) -> "RunSettings":
        """Check every field's type and range; returns self.

        Raises:
          JaxhspaceError naming the field (``RunSettings.<field>``), its value and what is allowed.
        """
        def bad(name: str, what: str):
            v = getattr(self, name)
            raise JaxhspaceError(f"RunSettings.{name} must be {what}, got {v!r} ({type(v).__name__})")

        for name in ("total_steps", "checkpoint_every", "log_every", "loss_window"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Integral) or isinstance(v, bool) or v < (0 if name == "total_steps" else 1):
                bad(name, "an int >= 0" if name == "total_steps" else "an int >= 1")
        for name in ("max_minutes", "max_loss_growth"):
            v = getattr(self, name)
            if not isinstance(v, numbers.Real) or isinstance(v, bool) or not math.isfinite(v) or v < 0:
                bad(name, "a finite number >= 0")
        if self.lr is not None and (not isinstance(self.lr, numbers.Real) or isinstance(self.lr, bool)):
            bad("lr", "a number or None")
        if self.resume_policy not in RESUME_POLICIES:
            bad("resume_policy", f"one of {RESUME_POLICIES}")
        return self


@dataclasses.dataclass
class LoopResult:
    """What :func:`run_training` returns: the final ``state``, ``losses`` of this run (floats), whether it
    ``stopped_early`` (``max_minutes``), its wall time, the step it started from, and ``final_loss``: the mean loss of
    the run's last 50 steps, read from ``train_log.jsonl`` so that it covers steps of earlier (resumed) runs too."""

    state: Any
    losses: list
    stopped_early: bool
    wall_s: float
    start_step: int
    final_loss: float | None = None


def run_training(run: RunSettings, workdir: str, state, step_fn: Callable, batch_fn: Callable, desc: str,
                 resume_fields: Mapping, harmless: Mapping | None = None) -> LoopResult:
    """Restore-or-start ``state`` from ``workdir/checkpoints`` and train it to ``run.total_steps``.

    Args:
      run: the loop's :class:`RunSettings`.
      state: initial train state with an int ``step`` field (a pytree orbax can save).
      step_fn: ``(state, batch) -> (state, loss)``; batch_fn: ``step -> batch`` (a pure function of the step).
      desc: the progress bar's label.
      resume_fields: the flat ``{field: value}`` that identifies the run, stored in ``workdir/run_config.json`` and
        compared on resume (:func:`~jaxhspace.training.run_config.check_resume`); harmless: ``{field: reason}`` of
        changes this resume may make.
    """
    os.makedirs(workdir, exist_ok=True)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), every=run.checkpoint_every)
    check_resume(resume_fields, workdir, ckpt.latest_step() is not None, run.resume_policy, harmless or {})
    state = ckpt.restore_or(state)
    start = int(state.step)
    log_path = os.path.join(workdir, "train_log.jsonl")
    trim_log(log_path, start)  # records after the checkpoint are logged again
    t0, losses, stopped_early = time.time(), [], False
    bar = tqdm(range(start, run.total_steps), initial=start, total=run.total_steps, desc=desc, mininterval=5)
    guard_loss = LossGuard(run.max_loss_growth, run.loss_window, run.lr)
    with InterruptGuard() as guard:
        for step in bar:
            state, loss = step_fn(state, batch_fn(step))
            losses.append(float(loss))
            done = step + 1
            try:
                guard_loss.update(done, losses[-1])
            except ValueError:
                bar.close()
                ckpt.close()  # pending saves finish; the diverged state is not saved
                raise
            if done % run.log_every == 0:
                rec = {"step": done, "loss": float(np.mean(losses[-run.log_every:])), "elapsed_s": time.time() - t0}
                bar.set_postfix(loss=f"{rec['loss']:.4f}")
                with open(log_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
            ckpt.maybe_save(done, state)
            if guard.signum is not None:
                bar.close()
                _save_final(ckpt, state)
                ckpt.close()
                raise TrainingInterrupted(guard.signum, done, ckpt.directory)
            if run.max_minutes and time.time() - t0 > 60 * run.max_minutes and done < run.total_steps:
                stopped_early = True
                break
        _save_final(ckpt, state)
        ckpt.close()
    final = final_loss_from_log(log_path, int(state.step), losses)
    return LoopResult(state, losses, stopped_early, time.time() - t0, start, final)


def final_loss_from_log(log_path: str, step: int, losses: list, window: int = 50) -> float | None:
    """Mean loss over the last ``window`` steps up to ``step``: the logged means of the records in that window (the
    log holds every run of a resumed training), else this run's own ``losses``."""
    recs = []
    if os.path.isfile(log_path):
        with open(log_path) as f:
            recs = [json.loads(line) for line in f if line.strip()]
    vals = [r["loss"] for r in recs if step - window < r["step"] <= step]
    if vals:
        return float(np.mean(vals))
    return float(np.mean(losses[-window:])) if losses else None


def latest_step(workdir: str) -> int | None:
    """The step of the newest checkpoint in ``workdir/checkpoints`` (None if there is none); creates nothing."""
    folder = os.path.join(workdir, "checkpoints")
    if not os.path.isdir(folder):
        return None
    ckpt = Checkpointer(folder, every=1)
    try:
        return ckpt.latest_step()
    finally:
        ckpt.close()


def _save_final(ckpt: Checkpointer, state) -> None:
    if ckpt.latest_step() != int(state.step):
        ckpt.save(int(state.step), state)
