"""Table-driven bad inputs (issue #18): each case names the class (loader, job config, workdir, converter, training
export), the call, the error type and a pattern that the message must match, naming the offending field or file.
Everything here fails before any model is built, so the module is fast."""
import json
import os
import subprocess
import sys

import ml_collections
import numpy as np
import pytest

from jaxhspace.errors import JaxhspaceError

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _config(name, **overrides):
    import importlib

    c = importlib.import_module(f"configs.{name}").get_config()
    for k, v in overrides.items():
        target = c
        *parents, leaf = k.split(".")
        for p in parents:
            target = target[p]
        target[leaf] = v
    return c


def _run_job(tmp_path, name, **overrides):
    from jaxhspace.tasks import get_task

    c = _config(name, **overrides)
    return get_task(c.task)(c, str(tmp_path / "wd"))


# (id, config, overrides, field named in the message)
JOB_CASES = [
    ("num_samples=0", "sample", {"num_samples": 0}, r"config\.num_samples must be >= 1"),
    ("grid_cols=0", "sample", {"grid_cols": 0}, r"config\.grid_cols must be >= 1"),
    ("eta<0", "sample", {"eta": -1.0}, r"config\.eta must be >= 0"),
    ("n_steps<0", "sample", {"n_steps": -5}, r"config\.n_steps must be >= 1"),
    ("n_dirs>k", "pullback", {"n_dirs": 5, "k": 2}, r"config\.n_dirs = 5 exceeds config\.k = 2"),
    ("target_factors typo", "asyrp_edit", {"target_factors": ("glases",)},
     r"config\.target_factors: unknown factor 'glases'"),
    ("n_train_step=-5", "asyrp_edit", {"n_train_step": -5}, r"config\.n_train_step must be -1"),
    ("t_edit out of range", "asyrp_edit", {"t_edit": 1000}, r"config\.t_edit must be a timestep in \[0, 1000\)"),
    ("nested demo field", "demo", {"pullback.n_dirs": 9}, r"config\.pullback\.n_dirs = 9 exceeds"),
    ("lr nan", "ddpm_synthfaces", {"lr": float("nan")}, r"config\.lr must be a finite learning rate"),
    ("total_steps=0", "clip_synthfaces", {"total_steps": 0}, r"config\.total_steps must be >= 1"),
]


@pytest.mark.parametrize("name, overrides, pattern", [c[1:] for c in JOB_CASES], ids=[c[0] for c in JOB_CASES])
def test_job_config(tmp_path, name, overrides, pattern):
    with pytest.raises(JaxhspaceError, match=pattern):
        _run_job(tmp_path, name, **overrides)
    assert not os.path.exists(tmp_path / "wd")  # refused before any work


def test_workdir_is_a_file(tmp_path):
    from jaxhspace.tasks import get_task

    (tmp_path / "wd").write_text("not a folder")
    with pytest.raises(JaxhspaceError, match=r"--workdir .*wd is a file"):
        get_task("sample")(_config("sample"), str(tmp_path / "wd"))


def test_workdir_unwritable(tmp_path):
    """A workdir under a folder the user cannot write to is refused before any work. Root may write into any
    folder whatever its mode, so as root the folder is made immutable (``chattr +i``), which root cannot write to
    either."""
    from jaxhspace.tasks import get_task

    ro = tmp_path / "ro"
    ro.mkdir(mode=0o500)
    immutable = False
    if os.geteuid() == 0:
        try:
            r = subprocess.run(["chattr", "+i", str(ro)], capture_output=True, text=True)
        except FileNotFoundError as e:  # no e2fsprogs
            r = subprocess.CompletedProcess(e.filename, 127, "", str(e))
        if r.returncode != 0:
            pytest.skip(f"running as root and chattr +i is not available here: {r.stderr.strip()}")
        immutable = True
    try:
        with pytest.raises(JaxhspaceError, match=r"--workdir .*ro/wd is not writable"):
            get_task("sample")(_config("sample"), str(ro / "wd"))
        assert not (ro / "wd").exists()
    finally:
        if immutable:
            subprocess.run(["chattr", "-i", str(ro)], check=True)


# ----------------------------------------------------------------------------------------------
# loaders and converters
# ----------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def unet_folder(tmp_path_factory):
    from tests.test_convert_scheduler import TINY
    from tests.unet_fixtures import make_torch_unet

    path = str(tmp_path_factory.mktemp("unet"))
    make_torch_unet(TINY).save_pretrained(path)
    return path


def _weights_edit(folder, dst, edit):
    from safetensors.numpy import load_file, save_file

    os.makedirs(dst)
    with open(os.path.join(folder, "config.json")) as f, open(os.path.join(dst, "config.json"), "w") as g:
        g.write(f.read())
    sd = load_file(os.path.join(folder, "diffusion_pytorch_model.safetensors"))
    edit(sd)
    save_file(sd, os.path.join(dst, "diffusion_pytorch_model.safetensors"))
    return dst


LOADER_CASES = [
    ("int weights", lambda sd: sd.update({"conv_in.weight": sd["conv_in.weight"].astype(np.int32)}),
     r"conv_in\.weight: dtype int32, not floating point"),
    ("nan weights", lambda sd: sd.update({"conv_out.bias": sd["conv_out.bias"] * np.nan}),
     r"conv_out\.bias: 3 of 3 values are NaN/Inf"),
]


@pytest.mark.parametrize("edit, pattern", [c[1:] for c in LOADER_CASES], ids=[c[0] for c in LOADER_CASES])
def test_loader(unet_folder, tmp_path, edit, pattern):
    from jaxhspace.checkpoints import load_unet

    bad = _weights_edit(unet_folder, str(tmp_path / "bad"), edit)
    with pytest.raises(JaxhspaceError, match=pattern):
        load_unet(bad)


def test_loader_config_json_is_a_list(unet_folder, tmp_path):
    from jaxhspace.checkpoints import load_unet

    bad = _weights_edit(unet_folder, str(tmp_path / "bad"), lambda sd: None)
    with open(os.path.join(bad, "config.json"), "w") as f:
        json.dump([1, 2], f)
    with pytest.raises(ValueError, match=r"config\.json"):
        load_unet(bad)


def test_converter_existing_destination(unet_folder, tmp_path):
    from checkpoints_convert import diffusers_unet

    (tmp_path / "dst").mkdir()
    with pytest.raises(SystemExit, match=r"dst already exists; pass --overwrite"):
        diffusers_unet.main([unet_folder, str(tmp_path / "dst")])


# ----------------------------------------------------------------------------------------------
# training exports
# ----------------------------------------------------------------------------------------------
EXPORT_CASES = [
    ("export is the workdir", lambda tmp: str(tmp / "wd"), r"export_dir .*wd is the workdir"),
    ("export contains the workdir", lambda tmp: str(tmp), r"export_dir .* contains the workdir"),
    ("export in checkpoints", lambda tmp: str(tmp / "wd" / "checkpoints"), r"export_dir .*inside the workdir"),
    ("export is a file", lambda tmp: str(tmp / "file.txt"), r"export_dir .*file\.txt exists and is not a folder"),
    ("foreign folder", lambda tmp: str(tmp / "mine"), r"export_dir .*mine exists and was not written by jaxhspace"),
    ("assets", lambda tmp: os.path.join(REPO, "assets", "x"), r"allow_asset_export"),
]


@pytest.mark.parametrize("export, pattern", [c[1:] for c in EXPORT_CASES], ids=[c[0] for c in EXPORT_CASES])
def test_training_export(tmp_path, export, pattern):
    from jaxhspace.training.ddpm import WORKDIR_FILES
    from jaxhspace.training.safety import check_export_dir

    (tmp_path / "file.txt").write_text("x")
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("x")
    with pytest.raises(JaxhspaceError, match=pattern):
        check_export_dir(export(tmp_path), str(tmp_path / "wd"), WORKDIR_FILES)


def test_resume_policy_unknown(tmp_path):
    from jaxhspace.training.run_config import check_resume

    c = ml_collections.ConfigDict({"lr": 1.0, "resume_policy": "maybe"})
    with pytest.raises(JaxhspaceError, match=r"config\.resume_policy must be one of"):
        check_resume(dict(c), str(tmp_path), False, c.resume_policy)


# ----------------------------------------------------------------------------------------------
# the command line: one clear line, exit 2
# ----------------------------------------------------------------------------------------------
def test_main_prints_one_line_and_exits_2(tmp_path):
    env = {**os.environ, "PYTHONPATH": REPO, "JAX_PLATFORMS": "cpu"}
    r = subprocess.run([sys.executable, "-m", "jaxhspace.main", "--config", os.path.join(REPO, "configs", "sample.py"),
                        "--workdir", str(tmp_path / "wd"), "--config.grid_cols=0"],
                       cwd=str(tmp_path), env=env, capture_output=True, text=True, timeout=300)
    assert r.returncode == 2, r.stderr[-2000:]
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith("jaxhspace: error: config.grid_cols must be >= 1")
    assert "Traceback" not in r.stderr
