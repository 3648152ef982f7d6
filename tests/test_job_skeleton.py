"""Issue #17: every shipped config (and every sub-config the demo builds) passes its job's checks; a bad field in
any demo stage fails before the first stage runs, naming the field; configs are base plus overrides (the variants
differ from their base only where they say so); the ``python -m jaxhspace.main --config ... --config.<field>=...``
command line runs a job end to end."""
import glob
import importlib
import json
import os
import subprocess
import sys

import pytest

from jaxhspace.errors import JaxhspaceError
from jaxhspace.tasks import get_task
from jaxhspace.tasks.validate import validate_job

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
# configs whose REQUIRED field has no usable default: the value their docstring's command passes
REQUIRED = {"asyrp_edit": {"editor_paths": ("assets/editors/red_hair",)},
            "pca": {"pca_image_paths": ("/data/faces_train",)}}   # configs/sd/pca.py: pca_source="images"


def _load(name):
    return importlib.import_module("jaxhspace.configs." + name.replace("/", ".")).get_config()


def _config_files():
    """Shipped config names from the checkout's files (glob: independent of resources.config_names)."""
    files = glob.glob(os.path.join(ROOT, "configs", "**", "*.py"), recursive=True)
    return sorted(os.path.relpath(f, os.path.join(ROOT, "configs"))[:-3].replace(os.sep, "/")
                  for f in files if not os.path.basename(f).startswith("_"))


@pytest.mark.parametrize("name", _config_files())
def test_every_shipped_config_passes_its_jobs_validate(name):
    c = _load(name)
    try:
        validate_job(c.task, c)
    except JaxhspaceError as e:  # only a REQUIRED field may be missing, and the error names it
        (field, value), = [(f, v) for f, v in REQUIRED.get(c.task, {}).items() if f"config.{f}" in str(e)]
        c[field] = value
        validate_job(c.task, c)
    if c.task == "demo":
        from jaxhspace.tasks.demo_job import stage_configs

        subs = stage_configs(c)
        assert [j for _, j, _ in subs] == ["asyrp_edit", "pullback", "haas", "pca", "pullback", "haas", "pca",
                                           "prompt_edit"]
        for _, job, sub in subs:
            validate_job(job, sub)


def test_required_fields_are_refused_naming_them():
    with pytest.raises(JaxhspaceError, match="config.editor_paths"):
        validate_job("asyrp_edit", _load("asyrp_edit"))


@pytest.mark.parametrize("mutate, field", [
    (lambda c: c.pca.update(supervised_factor="smil"), "config.pca.supervised_factor"),
    (lambda c: c.latent.pca.update(supervised_factor=("smile", "hair_color")), "config.latent.pca.supervised_factor"),
    (lambda c: c.haas.update(sigma_schedule="per-step"), "config.haas.sigma_schedule"),
    (lambda c: c.latent.pullback.update(park_grid="float"), "config.latent.pullback.park_grid"),
    (lambda c: c.pullback.update(n_dirs=9), "config.pullback.n_dirs"),
    (lambda c: c.pca.__setitem__("pca_sorce", "images"), "config.pca.pca_sorce"),
    (lambda c: c.latent.__setitem__("haas", {**c.latent.haas.to_dict(), "k": "3"}), "config.latent.haas.k"),
])
def test_a_bad_field_in_any_demo_stage_fails_before_the_first_stage(tmp_path, mutate, field):
    from configs.demo import get_config

    c = get_config("quick")
    mutate(c)
    workdir = tmp_path / "demo"
    with pytest.raises(JaxhspaceError) as e:
        get_task("demo")(c, str(workdir))
    assert field in str(e.value), str(e.value)
    assert not os.path.exists(workdir / "asyrp_edit")  # nothing ran


def test_unknown_field_names_the_closest_known_ones():
    c = _load("pca")
    c.supervised_factr = "smile"
    with pytest.raises(JaxhspaceError, match=r"config\.supervised_factr: unknown field.*supervised_factor"):
        validate_job("pca", c)


def test_variants_are_their_base_plus_overrides():
    """Each celebahq256 config equals its base config with only the fields it sets (read from its source)."""
    import re

    for job in ("asyrp_edit", "asyrp_train", "haas", "invert_reconstruct", "pca", "pullback", "sample"):
        path = os.path.join(ROOT, "configs", "celebahq256", f"{job}.py")
        src = open(path).read()
        assert f"from jaxhspace.configs.{job} import get_config as base" in src, job
        assigned = set(re.findall(r"^    c\.(\w+) = ", src, re.M))
        conversion = {"model_path", "model_format", "model_preset", "model_arch_json", "upscale"}
        base, variant = _load(job).to_dict(), _load(f"celebahq256/{job}").to_dict()
        differing = {k for k in variant if base.get(k, object()) != variant[k]}
        assert differing <= assigned | conversion, (job, differing - assigned - conversion)
        assert len(assigned) <= 8, (job, assigned)  # overrides only, not a restatement


def test_demo_stages_are_the_stage_configs_with_overrides():
    from configs.demo import SHARED, get_config

    c = get_config()
    for stage, overrides in (("pullback", {"k": 6, "svd_max_iters": 20}),
                             ("haas", {"svd_max_iters": 20, "sigma_schedule": "constant"}),
                             ("pca", {"supervised_factor": "glasses", "scales": (-2.0, 2.0)})):
        base = {k: v for k, v in _load(stage).to_dict().items() if k not in SHARED}
        assert c[stage].to_dict() == {**base, **overrides}, stage
    quick = get_config("quick")
    assert quick.num_images == 2 and quick.pullback.k == 2 and quick.latent.prompt_edit.n_steps == 3
    with pytest.raises(ValueError, match="unknown variant"):
        get_config("tiny")


def test_command_line_runs_a_job_end_to_end(tmp_path):
    """``python -m jaxhspace.main --config <file> --config.<field>=<value>``: the override reaches the job."""
    out = tmp_path / "inv"
    r = subprocess.run([sys.executable, "-m", "jaxhspace.main", "--config", "configs/invert_reconstruct.py",
                        "--workdir", str(out), "--config.num_images=2", "--config.n_steps_list=(2,3)",
                        "--config.upscale=1"], cwd=ROOT, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr[-3000:]
    m = json.load(open(out / "metrics.json"))
    assert [row["n"] for row in m["table"]] == [2, 3] and m["task"] == "invert_reconstruct"
    from PIL import Image

    # columns: input + 2 reconstructions, rows: 2 faces; 32 px tiles, 2 px padding around each
    assert Image.open(m["grid"]).size == (2 + 3 * 34, 2 + 2 * 34)
    bad = subprocess.run([sys.executable, "-m", "jaxhspace.main", "--config", "configs/pca.py", "--workdir",
                          str(tmp_path / "pca"), "--config.pca_source=imgs"], cwd=ROOT, capture_output=True,
                         text=True, timeout=300)
    assert bad.returncode == 2 and "config.pca_source" in bad.stderr and "Traceback" not in bad.stderr, bad.stderr


def test_a_value_of_the_wrong_kind_is_refused_naming_the_field():
    import ml_collections

    c = ml_collections.ConfigDict({**_load("haas").to_dict(), "k": "3"})  # str where haas has a number
    with pytest.raises(JaxhspaceError, match=r"config\.k = '3' is a str, but the haas job expects a number"):
        validate_job("haas", c)
    c = ml_collections.ConfigDict({**_load("haas").to_dict(), "scales": 100.0})  # number, not a sequence
    with pytest.raises(JaxhspaceError, match=r"config\.scales"):
        validate_job("haas", c)
