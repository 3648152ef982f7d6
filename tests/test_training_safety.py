"""Training jobs never delete what jaxhspace did not write, never write into the repository's assets/ unasked,
and survive Ctrl-C / SIGTERM (issue #18, items 1-3).

Each test here failed on the code before the fix: the DDPM / CLIP jobs exported with ``overwrite=True`` (a user's
folder at ``export_dir``, or the workdir itself, was deleted), ``configs/ddpm_synthfaces.py`` exported to the
relative path ``assets/ddpm_synthfaces_refined`` and an interruption lost every step since the last periodic save.
"""
import json
import os
import signal
import subprocess
import sys
import textwrap
import time

import ml_collections
import numpy as np
import pytest
from safetensors.numpy import load_file

from jaxhspace.tasks import clip_train_job as clip_train, ddpm_train_job as ddpm_train
from jaxhspace.training import ddpm
from jaxhspace.training.checkpointing import Checkpointer

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# no attention in the down/up blocks (fast compile); the mid block keeps its attention
TINY_UNET = dict(sample_size=32, in_channels=3, out_channels=3, block_out_channels=[8, 16], layers_per_block=1,
                 down_block_types=["DownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "UpBlock2D"],
                 norm_num_groups=4, norm_eps=1e-6, attention_head_dim=None, downsample_padding=0,
                 flip_sin_to_cos=False, freq_shift=1, act_fn="silu")


def ddpm_config(export_dir, **kw):
    c = ml_collections.ConfigDict(dict(
        task="ddpm_train", seed=0, image_size=32, unet=dict(TINY_UNET), beta_schedule="linear", beta_start=1e-4,
        beta_end=0.02, num_train_timesteps=1000, batch_size=2, lr=1e-3, warmup_steps=1, grad_clip=1.0,
        ema_decay=0.9, total_steps=3, checkpoint_every=100, log_every=1, max_minutes=0.0, export_dir=export_dir))
    c.update(kw)
    return c


def clip_config(export_dir):
    from tests.test_clip_synthfaces import tiny_config

    c = tiny_config()
    c.total_steps = 2
    c.export_dir = export_dir
    return c


def latest_step(workdir):
    ckpt = Checkpointer(os.path.join(workdir, "checkpoints"), every=1)
    step = ckpt.latest_step()
    ckpt.close()
    return step


def user_folder(path):
    os.makedirs(path, exist_ok=True)
    with open(os.path.join(path, "thesis.tex"), "w") as f:
        f.write("three years of work")
    return os.path.join(path, "thesis.tex")


def export_weights(folder):
    return load_file(os.path.join(folder, "diffusion_pytorch_model.safetensors"))


# ----------------------------------------------------------------------------------------------
# 1. never delete a folder jaxhspace did not write; export and workdir never overlap
# ----------------------------------------------------------------------------------------------
def test_ddpm_user_file_in_export_dir_survives(tmp_path):
    user_file = user_folder(str(tmp_path / "mine"))
    wd = str(tmp_path / "wd")
    with pytest.raises(ValueError, match=r"(?s)export_dir.*mine.*not written by jaxhspace"):
        ddpm_train.run(ddpm_config(str(tmp_path / "mine")), wd)
    assert open(user_file).read() == "three years of work"
    assert latest_step(wd) is None  # refused before training started


def test_clip_user_file_in_export_dir_survives(tmp_path):
    user_file = user_folder(str(tmp_path / "mine"))
    with pytest.raises(ValueError, match=r"(?s)export_dir.*mine.*not written by jaxhspace"):
        clip_train.run(clip_config(str(tmp_path / "mine")), str(tmp_path / "wd"))
    assert open(user_file).read() == "three years of work"
    assert not os.path.exists(tmp_path / "wd" / "checkpoints")


@pytest.mark.parametrize("where", ["workdir", "parent", "checkpoints", "nested"])
def test_export_overlapping_the_workdir_is_refused_before_training(tmp_path, where):
    wd = tmp_path / "wd"
    user_file = user_folder(str(wd))  # e.g. the log of an earlier run
    export = {"workdir": wd, "parent": tmp_path, "checkpoints": wd / "checkpoints", "nested": wd / "a" / "b"}[where]
    with pytest.raises(ValueError, match=r"(?s)export_dir.*workdir"):
        ddpm_train.run(ddpm_config(str(export)), str(wd))
    assert open(user_file).read() == "three years of work"
    assert latest_step(str(wd)) is None


def test_own_export_is_replaced_but_not_with_foreign_files_in_it(tmp_path):
    from jaxhspace.errors import JaxhspaceError
    from jaxhspace.training.safety import EXPORT_MARKER

    wd, export = str(tmp_path / "wd"), str(tmp_path / "export")
    ddpm_train.run(ddpm_config(export, total_steps=2), wd)
    assert os.path.isfile(os.path.join(export, EXPORT_MARKER))
    first = export_weights(export)
    ddpm_train.run(ddpm_config(export, total_steps=3), wd)  # resumes and replaces its own export
    second = export_weights(export)
    assert any(not np.array_equal(first[k], second[k]) for k in first)
    user_file = os.path.join(export, "notes.txt")
    with open(user_file, "w") as f:
        f.write("mine")
    with pytest.raises(JaxhspaceError, match=r"notes\.txt"):
        ddpm_train.run(ddpm_config(export, total_steps=4), wd)
    assert open(user_file).read() == "mine"


# ----------------------------------------------------------------------------------------------
# 2. the shipped config exports under the workdir; assets/ needs an explicit flag
# ----------------------------------------------------------------------------------------------
def test_quick_run_from_the_repository_root_leaves_assets_untouched(tmp_path, monkeypatch):
    import configs.ddpm_synthfaces as cfg_mod

    # a stand-in for the repository root (the real assets/ must not be put at risk by a failing test)
    shipped = tmp_path / "assets" / "ddpm_synthfaces_refined"
    user_folder(str(shipped))
    monkeypatch.chdir(tmp_path)
    c = cfg_mod.get_config()
    c.unet = dict(TINY_UNET)
    c.update(batch_size=2, total_steps=2, warmup_steps=1, refine_from_step=1, checkpoint_every=100, log_every=1,
             max_minutes=0.0)
    m = ddpm_train.run(c, "runs/smoke")
    assert sorted(os.listdir(tmp_path / "assets")) == ["ddpm_synthfaces_refined"]
    assert os.listdir(shipped) == ["thesis.tex"]
    assert os.path.abspath(m["exported_to"]).startswith(str(tmp_path / "runs" / "smoke") + os.sep)
    c.export_dir = "assets/new_model"
    with pytest.raises(ValueError, match="allow_asset_export"):
        ddpm_train.run(c, "runs/smoke2")
    c.allow_asset_export = True
    assert ddpm_train.run(c, "runs/smoke2")["exported_to"].endswith("new_model")


# ----------------------------------------------------------------------------------------------
# 3. Ctrl-C / SIGTERM save the state and exit non-zero; the final step is always saved
# ----------------------------------------------------------------------------------------------
def test_final_step_is_saved_when_total_steps_is_not_a_multiple_of_checkpoint_every(tmp_path):
    wd = str(tmp_path / "wd")
    ddpm_train.run(ddpm_config("", total_steps=3, checkpoint_every=2), wd)
    assert latest_step(wd) == 3


def test_sigint_mid_training_then_resume_equals_uninterrupted(tmp_path, monkeypatch):
    from jaxhspace.errors import TrainingInterrupted

    ea, eb = str(tmp_path / "export_a"), str(tmp_path / "export_b")
    ddpm_train.run(ddpm_config(ea, total_steps=5), str(tmp_path / "a"))
    real_batch = ddpm.batch_for_step

    def batch_then_ctrl_c(seed, step, batch_size, size):
        if step == 2:
            signal.raise_signal(signal.SIGINT)  # Ctrl-C while step 2 runs
        return real_batch(seed, step, batch_size, size)

    monkeypatch.setattr(ddpm, "batch_for_step", batch_then_ctrl_c)
    with pytest.raises(TrainingInterrupted) as info:
        ddpm_train.run(ddpm_config(eb, total_steps=5), str(tmp_path / "b"))
    assert info.value.signum == signal.SIGINT and info.value.step == 3
    assert latest_step(str(tmp_path / "b")) == 3 and not os.path.exists(eb)
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler  # handler restored
    monkeypatch.setattr(ddpm, "batch_for_step", real_batch)
    assert ddpm_train.run(ddpm_config(eb, total_steps=5), str(tmp_path / "b"))["steps_done"] == 5
    wa, wb = export_weights(ea), export_weights(eb)
    assert wa.keys() == wb.keys()
    for k in wa:
        np.testing.assert_array_equal(wa[k], wb[k], err_msg=k)


def test_sigterm_saves_and_exits_nonzero(tmp_path):
    cfg = tmp_path / "cfg.py"
    cfg.write_text(textwrap.dedent(f"""
        import ml_collections
        def get_config():
            return ml_collections.ConfigDict({ddpm_config("", total_steps=100000).to_dict()!r})
        """))
    wd = tmp_path / "wd"
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
    proc = subprocess.Popen([sys.executable, "-m", "jaxhspace.main", f"--config={cfg}", f"--workdir={wd}"],
                            cwd=str(tmp_path), env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    log = wd / "train_log.jsonl"
    deadline = time.time() + 240
    while not (log.exists() and log.read_text().count("\n") >= 2) and proc.poll() is None and time.time() < deadline:
        time.sleep(0.2)
    assert proc.poll() is None, proc.communicate()
    proc.send_signal(signal.SIGTERM)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err.decode()[-2000:]
    assert "interrupted" in err.decode().splitlines()[-1]
    logged = [json.loads(line)["step"] for line in log.read_text().splitlines()]
    step = latest_step(str(wd))
    assert step is not None and step >= max(logged) >= 2
