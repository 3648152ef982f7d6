"""A training job stops with a clear error when its loss becomes non-finite or grows by orders of magnitude
(issue #18, item 7): before, a learning rate that made the loss explode (2 -> 830) still exported an editor with
~1e11 weights and exited 0."""
import math
import os

import pytest

from jaxhspace.tasks import ddpm_train_job as ddpm_train
from jaxhspace.training.safety import LossGuard
from tests.test_training_safety import latest_step, ddpm_config


def test_loss_guard_closed_form():
    g = LossGuard(max_growth=100.0, window=3, lr=0.1)
    for i, loss in enumerate([1.0, 0.8, 1.1, 0.5, 0.7, 0.4, 0.9, 0.6] * 3):  # noisy but healthy
        g.update(i + 1, loss)
    with pytest.raises(ValueError, match=r"step 7: the loss is nan.*config\.lr = 0\.1"):
        g.update(7, math.nan)
    with pytest.raises(ValueError, match="the loss is inf"):
        LossGuard().update(1, math.inf)
    g = LossGuard(max_growth=100.0, window=2)
    for i, loss in enumerate([2.0, 2.0, 1.0, 1.0, 50.0, 120.0]):
        g.update(i + 1, loss)  # mean 85 = 85x the best mean 1.0: still allowed
    with pytest.raises(ValueError, match=r"step 7: the mean loss of the last 2 steps is 415, 415x its best 1.*"
                                         r"max_loss_growth = 100"):
        g.update(7, 710.0)
    off = LossGuard(max_growth=0.0, window=1)
    for i, loss in enumerate([1.0, 1e6]):
        off.update(i + 1, loss)


def test_ddpm_exploding_loss_stops_before_export(tmp_path):
    wd, export = str(tmp_path / "wd"), str(tmp_path / "export")
    c = ddpm_config(export, total_steps=4, lr=1e4, grad_clip=1e9, checkpoint_every=1, loss_window=1)
    with pytest.raises(ValueError, match=r"training diverged at step 3: the loss is nan.*config\.lr = 10000"):
        ddpm_train.run(c, wd)  # (the first update has lr 0: one warm-up step)
    assert not os.path.exists(export)
    assert latest_step(wd) == 2  # the diverged state (step 3) was not saved
