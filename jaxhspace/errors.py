"""jaxhspace's own error types.

``JaxhspaceError`` marks an anticipated problem with the user's input (a config value, a file, a folder): its
message names what is wrong and how to fix it, and ``python -m jaxhspace.main`` prints it as one line and exits 2
(unexpected errors keep their traceback). It subclasses ``ValueError`` so code catching ``ValueError`` still works.
"""
from __future__ import annotations

import signal


class JaxhspaceError(ValueError):
    """An anticipated bad input (config field, file, folder); the message names it and says how to fix it."""


class TrainingInterrupted(Exception):
    """A training job stopped on SIGINT / SIGTERM after saving its state at ``step`` (``signum``: the signal).

    ``python -m jaxhspace.main`` exits with ``128 + signum`` (130 for Ctrl-C, 143 for SIGTERM), as a shell does.
    """

    def __init__(self, signum: int, step: int, checkpoint_dir: str):
        self.signum, self.step, self.checkpoint_dir = int(signum), int(step), checkpoint_dir
        name = signal.Signals(self.signum).name
        super().__init__(f"training interrupted by {name}: state saved at step {self.step} in {checkpoint_dir}; "
                         "run the same command again to resume")
