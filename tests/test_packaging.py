"""Packaging: the wheel carries the embedded default world and the configs, and works outside the checkout.

``python -m build --no-isolation`` (offline, with the running environment's setuptools) builds the sdist and,
from it, the wheel; a fast test checks both for warnings and their contents. The slow test installs the wheel
into a fresh venv outside the checkout (``--no-deps``; a ``.pth`` file lets the venv see the running
environment's dependencies, never the checkout's editable jaxhspace) and, from a temporary directory, loads the
shipped DDPM, probe and CLIP and runs the demo by its config name with tests/test_demo.py's quick settings. The
other fast tests check config names, ``--config.<field>=`` overrides and the missing-asset messages.
"""
import glob
import hashlib
import importlib.resources
import json
import os
import shutil
import subprocess
import sys
import tarfile
import time
import warnings
import zipfile

import pytest
from absl import flags

import jaxhspace
from jaxhspace import resources, world

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _parse_config(arg, overrides=()):
    """The ``--config`` flag of jaxhspace.main, parsed on its own FlagValues: the resulting config as a dict."""
    fv = flags.FlagValues()
    argv = ["prog", "--config", arg, *overrides]
    resources.define_config_flag("config", flag_values=fv, sys_argv=argv)
    fv(argv)
    return fv.config.to_dict()


def _clean_env(**extra):
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONDONTWRITEBYTECODE")}
    env.update(PYTHONNOUSERSITE="1", **extra)
    return env


def _shipped_config_files():
    """Config names from the checkout's files (an independent listing: glob, not os.walk)."""
    files = glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True)
    return sorted(os.path.relpath(f, os.path.join(ROOT, "configs"))[:-3].replace(os.sep, "/")
                  for f in files if not os.path.basename(f).startswith("_"))


def _asset_files():
    return sorted(os.path.relpath(f, os.path.join(ROOT, "assets"))
                  for f in glob.glob(os.path.join(ROOT, "assets", "**", "*"), recursive=True)
                  if os.path.isfile(f) and "__pycache__" not in f and not f.endswith("__init__.py"))


def _sha256(path):
    with open(path, "rb") as f:
        return hashlib.sha256(f.read()).hexdigest()


# ------------------------------------------------------------------------------------------------------------
# Fast: the checkout (editable install)
# ------------------------------------------------------------------------------------------------------------
def test_assets_and_configs_found_through_importlib_resources():
    assert os.path.samefile(world.ASSETS, str(importlib.resources.files("jaxhspace.assets")))
    assert os.path.samefile(world.ASSETS, os.path.join(ROOT, "assets"))  # editable: the checkout's own folder
    assert os.path.samefile(resources.configs_dir(), os.path.join(ROOT, "configs"))
    assert resources.config_names() == _shipped_config_files()
    assert {"demo", "pullback", "celebahq256/pullback"} <= set(resources.config_names())


def test_config_by_name_path_and_overrides_agree(tmp_path, monkeypatch):
    from configs.demo import get_config

    monkeypatch.chdir(tmp_path)  # no configs/ here: names and configs/<name>.py resolve to the packaged files
    want = get_config()
    want.num_images = 3
    want.pullback.k = 4
    overrides = ["--config.num_images=3", "--config.pullback.k=4"]
    for arg in ("demo", "configs/demo.py", "demo.py", os.path.join(ROOT, "configs", "demo.py")):
        assert _parse_config(arg, overrides) == want.to_dict(), arg
    assert resources.resolve_config("celebahq256/pullback") == os.path.join(ROOT, "configs", "celebahq256",
                                                                            "pullback.py")
    assert resources.resolve_config("demo:arg") == os.path.join(ROOT, "configs", "demo.py") + ":arg"
    own = tmp_path / "my_config.py"  # a user's own file is used as it is
    own.write_text("from jaxhspace.configs.pca import get_config\n")
    assert resources.resolve_config(str(own)) == str(own)
    assert _parse_config("my_config.py")["task"] == "pca"


def test_demo_quick_variant_from_the_command_line_is_test_demos():
    """``--config demo:quick`` (ml_collections' ``FILE:ARG``) reaches ``get_config("quick")``: the tests' tiny demo."""
    from test_demo import tiny_demo_config

    quick = _parse_config("demo:quick")
    assert quick == tiny_demo_config().to_dict() and quick != _parse_config("demo")


def test_unknown_config_name_lists_available_names(tmp_path):
    with pytest.raises(ValueError, match="no_such_job.*Shipped configs.*celebahq256/pullback"):
        resources.resolve_config("no_such_job")
    r = subprocess.run([sys.executable, "-m", "jaxhspace.main", "--config", "no_such_job", "--workdir",
                        str(tmp_path / "w")], cwd=tmp_path, capture_output=True, text=True, env=_clean_env(),
                       timeout=300)
    assert r.returncode != 0
    assert "no_such_job" in r.stderr
    for name in _shipped_config_files():
        assert name in r.stderr, name
    assert not (tmp_path / "w").exists()


def test_version_flag():
    r = subprocess.run([sys.executable, "-m", "jaxhspace.main", "--version"], capture_output=True, text=True,
                       env=_clean_env(), timeout=300)
    assert r.returncode == 0 and r.stdout.strip() == f"jaxhspace {jaxhspace.__version__}"
    import tomllib

    with open(os.path.join(ROOT, "pyproject.toml"), "rb") as f:
        proj = tomllib.load(f)
    assert proj["tool"]["setuptools"]["dynamic"]["version"] == {"attr": "jaxhspace.__version__"}


def test_missing_assets_say_what_and_how(tmp_path, monkeypatch):
    from jaxhspace.editing import scoring

    empty = str(tmp_path / "assets")
    monkeypatch.setattr(world, "ASSETS", empty)
    monkeypatch.setattr(world, "DEFAULT_DDPM", os.path.join(empty, "ddpm_synthfaces"))
    with warnings.catch_warnings():  # the warning as an error: stops before the (slow) random init
        warnings.simplefilter("error", UserWarning)
        with pytest.raises(UserWarning, match="randomly initialised") as rec:
            world.load_model("")
    msg = str(rec.value)
    assert "assets/ddpm_synthfaces is missing" in msg and "pip install --force-reinstall" in msg
    assert "--config ddpm_synthfaces" in msg and "not there yet" not in msg
    monkeypatch.chdir(tmp_path)
    with pytest.raises(ValueError, match="assets/editors/glasses is missing.*--config editor_glasses"):
        world.require_asset("assets/editors/glasses")
    monkeypatch.setattr(scoring, "DEFAULT_PROBE", os.path.join(empty, "probe"))
    with pytest.warns(UserWarning, match="not scored.*assets/probe is missing.*jaxhspace.data.probe"):
        assert scoring.load_default_probe(32) is None


# ------------------------------------------------------------------------------------------------------------
# Slow: build, install outside the checkout, run
# ------------------------------------------------------------------------------------------------------------
INSTALLED_CHECK = r'''
import json, os, sys, warnings
import importlib.metadata
import numpy as np

venv = sys.argv[1]
import jaxhspace
from jaxhspace import resources, world
from jaxhspace.checkpoints import load_clip, load_clip_tokenizer
from jaxhspace.editing.scoring import load_default_probe

assert os.path.realpath(jaxhspace.__file__).startswith(os.path.realpath(venv)), jaxhspace.__file__
with warnings.catch_warnings(record=True) as caught:
    warnings.simplefilter("always")
    model, params, schedule, source = world.load_model()
    probe = load_default_probe(32)
clip, clip_params = load_clip(world.DEFAULT_CLIP)
tok = load_clip_tokenizer(world.DEFAULT_CLIP)
import jax
print(json.dumps(dict(
    file=jaxhspace.__file__, version=jaxhspace.__version__, dist_version=importlib.metadata.version("jaxhspace"),
    assets=world.ASSETS, configs=resources.configs_dir(), config_names=resources.config_names(), source=source,
    n_params=int(sum(np.size(x) for x in jax.tree_util.tree_leaves(params))), sample_size=model.config.sample_size,
    probe=probe is not None, clip_params=int(sum(np.size(x) for x in jax.tree_util.tree_leaves(clip_params))),
    tokens=len(tok("a smiling face with red hair")["input_ids"]),
    warnings=[str(w.message) for w in caught])))
'''


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """``python -m build --no-isolation``: the sdist, then the wheel built from the unpacked sdist. Built from a
    copy of the checkout without its build state (a stale ``*.egg-info/SOURCES.txt`` would add its files to the
    sdist), as a fresh clone would be."""
    pytest.importorskip("build", reason="the test extra installs build")
    src = tmp_path_factory.mktemp("src") / "jaxhspace"
    shutil.copytree(ROOT, src, ignore=shutil.ignore_patterns(".git", ".venv", "*.egg-info", "build", "dist", "runs",
                                                             "__pycache__", ".pytest_cache"))
    dist = tmp_path_factory.mktemp("dist")
    t0 = time.perf_counter()
    r = subprocess.run([sys.executable, "-m", "build", "--no-isolation", "--outdir", str(dist), str(src)],
                       capture_output=True, text=True, env=_clean_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    (sdist,) = glob.glob(str(dist / "*.tar.gz"))
    (wheel,) = glob.glob(str(dist / "*.whl"))
    return dict(sdist=sdist, wheel=wheel, log=r.stdout + r.stderr, seconds=time.perf_counter() - t0)


def test_build_sdist_and_wheel_carry_sources_configs_assets(built):
    log = built["log"]
    assert not [ln for ln in log.splitlines() if "warn" in ln.lower()], log[-3000:]
    # sdist: sources, configs, assets, README (the wheel was built from it)
    with tarfile.open(built["sdist"]) as tf:
        prefix = os.path.basename(built["sdist"])[:-len(".tar.gz")] + "/"
        in_sdist = {n[len(prefix):] for n in tf.getnames()}
    sources = {os.path.relpath(f, ROOT) for f in glob.glob(os.path.join(ROOT, "jaxhspace", "**", "*.py"),
                                                           recursive=True)}
    configs = {"configs/" + n + ".py" for n in _shipped_config_files()}
    assets = {"assets/" + a for a in _asset_files()}
    for required in (sources, configs, assets, {"README.md", "LICENSE", "pyproject.toml", "setup.py"}):
        assert required <= in_sdist, sorted(required - in_sdist)[:10]
    assert not [n for n in in_sdist if "__pycache__" in n or n.endswith(".pyc")]

    # wheel: every package, config and asset under jaxhspace/; under PyPI's 100 MB limit
    assert os.path.getsize(built["wheel"]) < 100e6
    in_wheel = set(zipfile.ZipFile(built["wheel"]).namelist())
    packages = {os.path.relpath(f, ROOT) for f in glob.glob(os.path.join(ROOT, "jaxhspace", "**", "__init__.py"),
                                                            recursive=True)}
    assert packages <= in_wheel, sorted(packages - in_wheel)
    assert {"jaxhspace/" + c for c in configs} <= in_wheel, sorted({"jaxhspace/" + c for c in configs} - in_wheel)
    assert {"jaxhspace/" + a for a in assets} <= in_wheel, sorted({"jaxhspace/" + a for a in assets} - in_wheel)
    assert not [n for n in in_wheel if "__pycache__" in n or n.endswith(".pyc")]


@pytest.mark.slow
def test_wheel_installs_outside_checkout_and_runs_demo(built, tmp_path):
    wheel = built["wheel"]
    # fresh venv outside the checkout; the wheel alone, then a .pth with the running environment's
    # site-packages (dependencies only: .pth files there, e.g. the editable jaxhspace's finder, are not run)
    venv = tmp_path / "venv"
    t_start = time.perf_counter()
    subprocess.run([sys.executable, "-m", "venv", "--without-pip", str(venv)], check=True, timeout=300)
    py = str(venv / "bin" / "python")
    r = subprocess.run([sys.executable, "-m", "pip", "--python", py, "install", "--no-deps", "--no-index",
                        "--no-cache-dir", "--disable-pip-version-check", wheel],
                       capture_output=True, text=True, env=_clean_env(), timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    site_dir = subprocess.run([py, "-c", "import sysconfig; print(sysconfig.get_path('purelib'))"],
                              capture_output=True, text=True, check=True).stdout.strip()
    import site

    deps = [p for p in site.getsitepackages() if os.path.isdir(p)]
    with open(os.path.join(site_dir, "zz_running_env_deps.pth"), "w") as f:
        f.write("\n".join(deps) + "\n")
    t_installed = time.perf_counter()

    work = tmp_path / "elsewhere"
    work.mkdir()
    env = _clean_env()
    r = subprocess.run([py, "-c", INSTALLED_CHECK, str(venv)], cwd=work, capture_output=True, text=True, env=env,
                       timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    info = json.loads(r.stdout.strip().splitlines()[-1])
    assert info["version"] == info["dist_version"] == jaxhspace.__version__
    assert info["assets"].startswith(str(venv)) and info["configs"].startswith(str(venv))
    assert info["config_names"] == _shipped_config_files()
    assert info["source"] == os.path.join("assets", "ddpm_synthfaces"), info
    assert not info["warnings"], info["warnings"]
    # the installed files are the checkout's, byte for byte, and the loaded UNet is the shipped one (its
    # parameter count read independently from the checkout's safetensors header), not the random tiny fallback
    for a in _asset_files():
        assert _sha256(os.path.join(info["assets"], a)) == _sha256(os.path.join(ROOT, "assets", a)), a
    from safetensors.numpy import load_file

    shipped = load_file(os.path.join(ROOT, "assets", "ddpm_synthfaces", "diffusion_pytorch_model.safetensors"))
    n_shipped = sum(v.size for v in shipped.values())
    assert info["n_params"] == n_shipped and info["sample_size"] == 32
    assert info["probe"] and info["clip_params"] > 0 and info["tokens"] > 2
    t_checks = time.perf_counter()

    # the demo by its config name, quick settings, from the other directory
    r = subprocess.run([py, "-m", "jaxhspace.main", "--config", "demo:quick", "--workdir", "runs/demo"],
                       cwd=work, capture_output=True, text=True, env=env, timeout=1800)
    assert r.returncode == 0, r.stderr[-3000:]
    t_report = time.perf_counter()
    out = work / "runs" / "demo"
    m = json.loads((out / "metrics.json").read_text())
    assert m["stages"] == ["asyrp_edit", "pullback", "haas", "pca", "latent"]
    assert [len(m["scores"][s]) for s in m["stages"]] == [2 * 4 + 3, 2, 2, 2, 15]  # as in tests/test_demo.py
    html = (out / "index.html").read_text(encoding="utf-8")
    assert all(f"<section id='{s}'>" in html for s in ("asyrp", "pullback", "haas", "pca", "latent"))
    print(f"\nwheel {os.path.getsize(wheel) / 1e6:.1f} MB; build {built['seconds']:.0f} s; venv + install "
          f"{t_installed - t_start:.0f} s; load checks {t_checks - t_installed:.0f} s; quick demo "
          f"{t_report - t_checks:.0f} s; install to report {t_report - t_start:.0f} s")
