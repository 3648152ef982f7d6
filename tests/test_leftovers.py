"""Smaller faults (issue #18, item 11): converted folders honour the umask (were 0700), hidden ``.DST.tmp-*``
folders of a killed converter are removed by the next run, a converter with an unwritable destination prints one
line instead of a traceback, and train_log.jsonl has no duplicate records after a resume."""
import json
import os
import stat

import pytest

from checkpoints_convert import diffusers_unet
from jaxhspace.tasks import ddpm_train_job as ddpm_train
from tests.test_load_validation import folder  # noqa: F401  (module fixture: a tiny diffusers UNet folder)
from tests.test_training_safety import ddpm_config


def test_converted_folder_honours_the_umask(folder, tmp_path):  # noqa: F811
    old = os.umask(0o022)
    try:
        diffusers_unet.convert(folder, str(tmp_path / "converted"))
    finally:
        os.umask(old)
    assert stat.S_IMODE(os.stat(tmp_path / "converted").st_mode) == 0o755


def test_stale_temporaries_of_a_killed_converter_are_removed(folder, tmp_path):  # noqa: F811
    dead = tmp_path / ".converted.tmp-999999999-abc123"  # no such process
    old_style = tmp_path / ".converted.tmp-k2j3h4"
    live = tmp_path / f".converted.tmp-{os.getpid()}-zzz"  # a writer that is still running
    for d in (dead, old_style, live):
        (d / "params").mkdir(parents=True)
    os.utime(old_style, (0, 0))
    diffusers_unet.convert(folder, str(tmp_path / "converted"))
    assert not dead.exists() and not old_style.exists() and live.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted([live.name, "converted"])


def test_converter_unwritable_destination_is_one_line(folder, tmp_path):  # noqa: F811
    (tmp_path / "file.txt").write_text("x")
    with pytest.raises(SystemExit, match=r"^error: cannot write .*file\.txt/dst: "):
        diffusers_unet.main([folder, str(tmp_path / "file.txt" / "dst")])


def test_train_log_has_no_duplicates_after_resume(tmp_path):
    wd = str(tmp_path / "wd")
    ddpm_train.run(ddpm_config("", total_steps=2, refine_from_step=2), wd)
    log = os.path.join(wd, "train_log.jsonl")
    with open(log, "a") as f:  # a run killed after logging step 3, before saving it
        f.write(json.dumps({"step": 3, "loss": 1.0, "elapsed_s": 0.0}) + "\n")
    ddpm_train.run(ddpm_config("", total_steps=4, refine_from_step=2), wd)
    with open(log) as f:
        steps = [json.loads(line)["step"] for line in f]
    assert steps == [1, 2, 3, 4]
