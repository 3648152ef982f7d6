"""The resumable training loop shared by the VAE and latent-DDPM trainers (one loop, a few hooks).

A trainer builds its initial state and a jitted ``step_fn(state, batch) -> (state, loss)`` whose randomness is
``fold_in(key, state.step)``, and a ``batch_fn(step) -> batch`` that is a pure function of the step; this loop
restores the newest checkpoint, runs to ``config.total_steps`` (or ``config.max_minutes``), logs, saves on the
checkpoint interval, on SIGINT/SIGTERM and at the end, and stops on a diverging loss. So a resumed run equals an
uninterrupted one bit for bit.
"""
from __future__ import annotations

import dataclasses
import json
import os
import time
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

from jaxhspace.errors import TrainingInterrupted
from jaxhspace.training.checkpointing import Checkpointer
from jaxhspace.training.run_config import check_resume
from jaxhspace.training.safety import InterruptGuard, LossGuard, trim_log

# config fields no trainer compares on resume (they do not change the weights)
BOOKKEEPING = ("task", "max_minutes", "export_dir", "allow_asset_export", "log_every", "checkpoint_every",
               "resume_policy", "max_loss_growth", "loss_window", "precision")


def add_run_fields(c, max_minutes: float = 55.0):
    """Set the fields :func:`run_training` and the export read on a trainer's ConfigDict ``c`` (their shipped
    defaults): save every 250 steps, log every 25, stop (after saving) at ``max_minutes``, export to
    ``{workdir}/export`` ('' = none; ``assets/...`` needs ``allow_asset_export``), refuse a resume with a changed
    config (``resume_policy="strict"``; "allow" resumes anyway), stop when the 10-step mean loss reaches 100x its best
    (``max_loss_growth``; 0 = off; NaN always stops). Returns ``c``."""
    c.checkpoint_every = 250
    c.log_every = 25
    c.max_minutes = float(max_minutes)
    c.export_dir = "{workdir}/export"
    c.allow_asset_export = False
    c.resume_policy = "strict"
    c.max_loss_growth = 100.0
    return c


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


def run_training(config, workdir: str, state, step_fn: Callable, batch_fn: Callable, desc: str,
                 bookkeeping: tuple = BOOKKEEPING, harmless: dict | None = None) -> LoopResult:
    """Restore-or-start ``state`` from ``workdir/checkpoints`` and train it to ``config.total_steps``.

    Args:
      config: reads ``total_steps``, ``checkpoint_every``, ``log_every``, ``lr`` (LossGuard scale), optional
        ``max_minutes``, ``max_loss_growth``, ``loss_window``, ``resume_policy``.
      state: initial train state with an int ``step`` field (a pytree orbax can save).
      step_fn: ``(state, batch) -> (state, loss)``; batch_fn: ``step -> batch`` (a pure function of the step).
      bookkeeping: config fields not compared on resume; harmless: extra allowed changes (see ``check_resume``).
    """
    os.makedirs(workdir, exist_ok=True)
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), every=config.checkpoint_every)
    check_resume(config, workdir, ckpt.latest_step() is not None, bookkeeping, harmless or {})
    state = ckpt.restore_or(state)
    start = int(state.step)
    log_path = os.path.join(workdir, "train_log.jsonl")
    trim_log(log_path, start)  # records after the checkpoint are logged again
    t0, losses, stopped_early = time.time(), [], False
    bar = tqdm(range(start, config.total_steps), initial=start, total=config.total_steps, desc=desc, mininterval=5)
    guard_loss = LossGuard(config.get("max_loss_growth", 100.0), config.get("loss_window", 10), config.lr)
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
            if done % config.log_every == 0:
                rec = {"step": done, "loss": float(np.mean(losses[-config.log_every:])), "elapsed_s": time.time() - t0}
                bar.set_postfix(loss=f"{rec['loss']:.4f}")
                with open(log_path, "a") as f:
                    f.write(json.dumps(rec) + "\n")
            ckpt.maybe_save(done, state)
            if guard.signum is not None:
                bar.close()
                _save_final(ckpt, state)
                ckpt.close()
                raise TrainingInterrupted(guard.signum, done, ckpt.directory)
            if config.get("max_minutes") and time.time() - t0 > 60 * config.max_minutes and done < config.total_steps:
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
