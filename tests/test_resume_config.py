"""Resume after a config change (issue #18, item 5): the config is stored with the checkpoint, and a resume with a
changed result-affecting field is refused, naming the field, unless ``resume_policy="allow"``; before the fix such a
rerun exited 0 and exported the old run under the new labels."""
import json
import os

import pytest

from jaxhspace.tasks import clip_train_job as clip_train, ddpm_train_job as ddpm_train
from tests.test_training_safety import clip_config, ddpm_config


def test_ddpm_resume_with_changed_lr_is_refused(tmp_path):
    wd = str(tmp_path / "wd")
    assert ddpm_train.run(ddpm_config("", total_steps=2, refine_from_step=2), wd)["steps_done"] == 2
    with pytest.raises(ValueError, match=r"(?s)\['lr'\].*0\.001.*now 0\.005.*resume_policy=allow"):
        ddpm_train.run(ddpm_config("", total_steps=2, refine_from_step=2, lr=5e-3), wd)
    with pytest.raises(ValueError, match=r"'batch_size', 'unet\.block_out_channels'"):
        ddpm_train.run(ddpm_config("", total_steps=2, refine_from_step=2, batch_size=4,
                                    unet=dict(ddpm_config("").unet, block_out_channels=[8, 8])), wd)
    # fewer steps than the checkpoint holds: refused too ("steps_done 3, total_steps 2" before the fix)
    m = ddpm_train.run(ddpm_config("", total_steps=3, refine_from_step=2, lr=5e-3, resume_policy="allow"), wd)
    assert m["steps_done"] == 3
    with open(os.path.join(wd, "run_config.json")) as f:
        stored = json.load(f)
    assert stored["config"]["lr"] == 5e-3 and stored["changes"][-1]["lr"] == [1e-3, 5e-3]
    with pytest.raises(ValueError, match=r"total_steps.*3.*now 2"):
        ddpm_train.run(ddpm_config("", total_steps=2, refine_from_step=2, lr=5e-3), wd)
    with pytest.raises(ValueError, match="resume_policy"):
        ddpm_train.run(ddpm_config("", total_steps=3, resume_policy="sometimes"), wd)


def test_ddpm_extending_total_steps_before_the_refine_phase_is_allowed(tmp_path):
    """The README's recipe: 6000 plain steps exported, then the same workdir resumed to 9000 (refine from 6000)."""
    wd = str(tmp_path / "wd")
    ddpm_train.run(ddpm_config("", total_steps=1, refine_from_step=1), wd)
    assert ddpm_train.run(ddpm_config("", total_steps=2, refine_from_step=1), wd)["steps_done"] == 2
    with pytest.raises(ValueError, match=r"\['total_steps'\]"):  # now past the refine switch: lr depends on it
        ddpm_train.run(ddpm_config("", total_steps=3, refine_from_step=1), wd)


def test_clip_resume_with_changed_lr_is_refused(tmp_path):
    c = clip_config("")
    wd = str(tmp_path / "wd")
    clip_train.run(c, wd)
    c.lr = 0.5
    with pytest.raises(ValueError, match=r"\['lr'\]"):
        clip_train.run(c, wd)
    c.lr, c.eval_every, c.max_minutes = clip_config("").lr, 5, 3.0  # bookkeeping fields may change
    assert clip_train.run(c, wd)["steps_done"] == 2
