"""Resumable training checkpoints (orbax CheckpointManager) with exact resume.

A run stores its whole train state (params, optimiser state, EMA, step) every ``every`` steps and on
interruption; restarting the same command restores the newest complete checkpoint. Orbax writes each
step into a temporary folder and commits it atomically, so an interrupted save is never restored.
Randomness must be a function of the step (``jax.random.fold_in(key, step)``) for the resumed run to
equal an uninterrupted one bit for bit.
"""
from __future__ import annotations

import os

import jax
import orbax.checkpoint as ocp


class Checkpointer:
    """Thin wrapper over ``ocp.CheckpointManager`` for one pytree train state.

    Args:
      directory: where step folders go (created if missing).
      every: save when ``step % every == 0`` (``maybe_save``); ``save`` always saves.
      keep: how many recent checkpoints to keep.
    """

    def __init__(self, directory: str, every: int, keep: int = 2):
        self.directory = os.path.abspath(directory)
        self.every = int(every)
        if self.every < 1:
            raise ValueError(f"checkpoint interval must be >= 1 step, got {every}")
        self.manager = ocp.CheckpointManager(
            self.directory, options=ocp.CheckpointManagerOptions(max_to_keep=keep, create=True))

    def latest_step(self) -> int | None:
        return self.manager.latest_step()

    def restore_or(self, state):
        """Restore the newest checkpoint into the structure of ``state``; return ``state`` if there is none."""
        step = self.latest_step()
        if step is None:
            return state
        abstract = jax.tree.map(ocp.utils.to_shape_dtype_struct, state)
        try:
            return self.manager.restore(step, args=ocp.args.StandardRestore(abstract))
        except Exception as e:
            raise ValueError(
                f"could not restore checkpoint step {step} from {self.directory}: {e}. If the config changed "
                "(model size, optimiser), start a fresh workdir.") from e

    def save(self, step: int, state) -> None:
        self.manager.save(int(step), args=ocp.args.StandardSave(state), force=True)

    def maybe_save(self, step: int, state) -> None:
        if step % self.every == 0:
            self.save(step, state)

    def close(self) -> None:
        self.manager.wait_until_finished()
        self.manager.close()
