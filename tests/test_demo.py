"""The demo job (configs/demo.py) end to end with tiny settings on the shipped world, the report's HTML
rendered by a real headless Chromium, and the score rows checked against the stage jobs' own metrics."""
import json
import os
import shutil
import subprocess

import pytest

from configs.demo import get_config
from jaxhspace.tasks import demo
from jaxhspace.world import DEFAULT_DDPM, DEFAULT_PROBE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_demo_config():
    c = get_config()
    c.num_images = 2
    c.upscale = 1
    c.asyrp_edit.n_inv = c.asyrp_edit.n_test = 8
    c.asyrp_edit.scales = (-1.0, 1.0)
    c.asyrp_edit.global_dh_images = 2
    c.pullback.n_steps = 8
    c.pullback.k = 2
    c.pullback.n_dirs = 1
    c.pullback.svd_max_iters = 3
    c.pullback.n_edit_steps = 2
    c.haas.n_steps = 6
    c.haas.k = 2
    c.haas.n_dirs = 1
    c.haas.svd_max_iters = 3
    c.pca.n_steps = 6
    c.pca.num_pca_samples = 16
    c.pca.k = 2
    c.pca.n_dirs = 1
    c.pca.scales = (2.0,)
    lat = c.latent
    lat.pullback.update(n_steps=4, k=2, n_dirs=1, svd_max_iters=3, n_edit_steps=2)
    lat.haas.update(n_steps=3, k=2, n_dirs=1, svd_max_iters=3)
    lat.pca.update(n_steps=4, num_pca_samples=16, k=2, n_dirs=1, scales=(-1.0, 1.0))
    lat.prompt_edit.update(n_steps=3)
    return c


@pytest.fixture(scope="module")
def demo_run(tmp_path_factory):
    assert os.path.isdir(DEFAULT_DDPM) and os.path.isdir(DEFAULT_PROBE), "the shipped DDPM and probe must be in assets/"
    workdir = str(tmp_path_factory.mktemp("demo"))
    out = demo.run(tiny_demo_config(), workdir)
    return workdir, out


def test_demo_writes_consistent_report_and_metrics(demo_run):
    workdir, out = demo_run
    assert os.path.isfile(out["report"]) and os.path.isfile(out["metrics"])
    m = json.load(open(out["metrics"]))
    assert m["stages"] == ["asyrp_edit", "pullback", "haas", "pca", "latent"]
    # Row counts: 2 editors x (2 scales + 2 global scales) + combination (2 alone + combined); pullback 1 dir x 2
    # signs; Haas 1 dir x 2 scales; PCA (1 PC + supervised) x 1 scale; latent: pullback 2 + Haas 2 + PCA (1 PC +
    # 3 supervised) x 2 scales + 3 prompt edits.
    assert [len(m["scores"][s]) for s in m["stages"]] == [2 * 4 + 3, 2, 2, 2, 2 + 2 + 8 + 3]
    # every row agrees with the stage job's own probe numbers
    pull = json.load(open(os.path.join(workdir, "pullback", "metrics.json")))
    for row, src in zip(m["scores"]["pullback"], pull["edit_scores"]):
        assert row["changes"] == pytest.approx(src["changes"])
        assert row["target"] == src["dominant"]
    asy = json.load(open(os.path.join(workdir, "asyrp_edit", "metrics.json")))
    hair = [r for r in m["scores"]["asyrp_edit"] if r["edit"] == "red hair editor s=1"][0]
    src = [c for c in asy["columns"]["edit_0"] if c.get("column") == "s=1"][0]
    assert hair["target"] == "hair_color" and hair["supervised"]
    assert hair["target_change"] == pytest.approx(src["target"]["target_change"])
    assert hair["max_leakage"] == pytest.approx(src["target"]["max_leakage"])
    # the latent stage: supervised Δh rows carry their known target's signed change, prompt edits theirs
    lat = m["scores"]["latent"]
    pca = json.load(open(os.path.join(workdir, "latent", "pca", "metrics.json")))
    red = [r for r in lat if r["edit"] == "latent supervised hair_color=red x1"][0]
    src = [s for s in pca["edit_scores"] if s["direction"] == "supervised hair_color=red" and s["scale"] == 1.0][0]
    assert red["target"] == "hair_color" and red["target_class"] == "red" and red["supervised"]
    assert red["target_change"] == pytest.approx(src["target"]["target_change"])
    assert red["changes"] == pytest.approx(src["changes"])
    pe = json.load(open(os.path.join(workdir, "latent", "prompt_edit", "metrics.json")))
    smile = [r for r in lat if r["edit"] == "prompt edit 'a face' -> 'a smiling face'"][0]
    assert smile["target"] == "smile" and smile["target_change"] == pytest.approx(pe["edit_scores"][0]["target_change"])
    html = open(out["report"], encoding="utf-8").read()
    for sec in ("asyrp", "pullback", "haas", "pca", "latent"):
        assert f"<section id='{sec}'>" in html
    # + grid and plot per pixel direction stage, + the latent stage's four grids
    assert html.count("data:image/png;base64,") == len(asy["grids"]) + 3 * 2 + 4
    assert "http://" not in html and "https://" not in html and "<script" not in html  # offline, self-contained


def test_demo_rejects_unknown_stage(tmp_path):
    c = tiny_demo_config()
    c.stages = ("asyrp_edit", "sefa")
    with pytest.raises(ValueError, match="unknown stages.*sefa"):
        demo.run(c, str(tmp_path))


def _chromium():
    for name in ("chromium", "chromium-browser", "google-chrome"):
        if shutil.which(name):
            return shutil.which(name)
    return None


# Outside CI a machine without chromium skips; under CI=true (.ci/run sets it) a missing chromium fails.
@pytest.mark.skipif(_chromium() is None and os.environ.get("CI") != "true",
                    reason="needs Debian's chromium (.ci/run installs it)")
def test_report_renders_in_headless_chromium(demo_run, tmp_path):
    """Chromium loads index.html from disk, lays it out (DOM dump has every table row) and paints it."""
    assert _chromium() is not None, "CI=true but no chromium binary: .ci/run must install Debian's chromium"
    _, out = demo_run
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]
    url = "file://" + os.path.abspath(out["report"])
    dom = subprocess.run([_chromium(), *flags, "--dump-dom", url], capture_output=True, text=True, timeout=120)
    assert dom.returncode == 0, dom.stderr[-2000:]
    m = json.load(open(out["metrics"]))
    n_rows = sum(len(v) for v in m["scores"].values())
    assert dom.stdout.count("<tr>") == n_rows + len(m["scores"])  # data rows + one header per table
    shot = tmp_path / "shot.png"
    r = subprocess.run([_chromium(), *flags, f"--screenshot={shot}", "--window-size=1200,2400", url],
                       capture_output=True, text=True, timeout=120)
    assert r.returncode == 0 and shot.is_file(), r.stderr[-2000:]
    from PIL import Image
    import numpy as np

    img = np.asarray(Image.open(shot).convert("RGB"), np.float32)
    assert img.std() > 10.0  # not a blank page: grids and tables were painted


def test_demo_rejects_unknown_latent_job(tmp_path):
    c = tiny_demo_config()
    c.latent.jobs = ("pullback", "sefa")
    with pytest.raises(ValueError, match="unknown jobs.*sefa"):
        demo.run(c, str(tmp_path))
