"""The demo job (configs/demo.py) end to end with tiny settings on the shipped world, the report's HTML
rendered by a real headless Chromium, and the score rows checked against the stage jobs' own metrics."""
import json
import os
import shutil
import subprocess

import pytest

from configs.demo import get_config
from jaxhspace.tasks import demo_job as demo
from jaxhspace.world import DEFAULT_DDPM, DEFAULT_PROBE

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def tiny_demo_config():
    """The tiny demo: ``configs/demo.py:quick`` (2 faces, a few steps per stage)."""
    return get_config("quick")


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
    # the stage metrics it points to exist (the latent stage has one folder per job)
    latent_jobs = [f"latent/{j}" for j in tiny_demo_config().latent.jobs]
    assert sorted(m["stage_metrics"]) == sorted(m["stages"][:4] + latent_jobs)
    assert all(os.path.isfile(p) for p in m["stage_metrics"].values()), m["stage_metrics"]
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


# Rows of the tiny demo computed by the code before the job skeleton and typed rows (commit 129b574, whose demo
# parsed grid names and column labels): the same edits must give the same rows. Two deliberate changes since:
# Asyrp rows name their target's class (hair_color=red: target_class "red", was None), and the combination's
# "<editor> alone" rows report the editor's target like the editor rows do (signed change of P(red), was the
# hair-colour distribution's total-variation magnitude).
OLD_ROWS = os.path.join(os.path.dirname(os.path.abspath(__file__)), "data", "demo_quick_scores_129b574.json")


def test_typed_rows_reproduce_the_old_demo_rows(demo_run):
    _, out = demo_run
    new = json.load(open(out["metrics"]))["scores"]
    old = json.load(open(OLD_ROWS))
    assert list(new) == list(old)
    for stage in old:
        assert [r["edit"] for r in new[stage]] == [r["edit"] for r in old[stage]], stage
        for a, b in zip(new[stage], old[stage]):
            combination_alone = b["edit"].startswith("combination:") and b["edit"].endswith(" alone")
            if stage == "asyrp_edit" and b["target_class"] is None and a["target_class"] is not None:
                assert a["target"] == b["target"] == "hair_color" and a["target_class"] == "red"
            else:
                assert a["target_class"] == b["target_class"], b["edit"]
            assert (a["target"], a["supervised"]) == (b["target"], b["supervised"]), b["edit"]
            assert a["changes"] == pytest.approx(b["changes"], abs=1e-4), b["edit"]
            assert a["max_leakage"] == pytest.approx(b["max_leakage"], abs=1e-4), b["edit"]
            if not (combination_alone and b["target"] == "hair_color"):
                assert a["target_change"] == pytest.approx(b["target_change"], abs=1e-4), b["edit"]


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
