"""Library code takes explicit arguments; only the jobs (``jaxhspace/tasks/``) read job configs (issue #17, item 3).

* :class:`jaxhspace.training.loop.RunSettings` (the training loop's settings) refuses a bad field, naming it, before
  any work;
* an AST scan of ``jaxhspace/`` finds no function outside ``tasks/`` and the config glue (checkpoint auto-conversion,
  the distributed set-up, ``main``, ``resources``) whose first parameter is ``config`` and that reads fields of it
  (``config.<field>``, ``config.get(...)``, ``config[...]``). Model configs read as attributes of a model
  (``unet.config.x``) are not ``config`` names and so not matched.
"""
import ast
import os

import pytest

from jaxhspace.errors import JaxhspaceError
from jaxhspace.training.loop import RunSettings

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
PACKAGE = os.path.join(REPO, "jaxhspace")
# task glue that may take the job config: the job layer itself and the wrappers main runs around every job
GLUE = ("tasks/", "checkpoints/auto_convert.py", "parallel.py", "main.py", "resources.py")
# functions whose ``config`` is a model's config file, not a job config (a diffusers scheduler_config.json dict)
MODEL_CONFIG_READERS = {"diffusion/schedule.py:schedule_from_config", "diffusion/ve_sde.py:ve_schedule_from_config"}
# job-config readers outside tasks/ that belong to another part of issue #17 (the Asyrp trainer's helper); move
# each to its job module and delete its entry here
KNOWN_LEFTOVERS: set[str] = set()


def config_readers(source: str) -> list[tuple[str, int, list[str]]]:
    """``(function, line, fields read)`` of the functions in ``source`` whose first parameter (after self / cls) is
    named ``config`` and that read ``config.<attr>`` or ``config[...]``."""
    out = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
            continue
        names = [a.arg for a in node.args.posonlyargs + node.args.args]
        if names and names[0] in ("self", "cls"):
            names = names[1:]
        if not names or names[0] != "config":
            continue
        reads = {n.attr for n in ast.walk(node)
                 if isinstance(n, ast.Attribute) and isinstance(n.value, ast.Name) and n.value.id == "config"}
        reads |= {"[...]" for n in ast.walk(node)
                  if isinstance(n, ast.Subscript) and isinstance(n.value, ast.Name) and n.value.id == "config"}
        if reads:
            out.append((node.name, node.lineno, sorted(reads)))
    return out


def library_modules() -> list[str]:
    """Paths of ``jaxhspace/**/*.py`` relative to the package, without the glue."""
    out = []
    for root, _, files in os.walk(PACKAGE):
        for f in files:
            rel = os.path.relpath(os.path.join(root, f), PACKAGE).replace(os.sep, "/")
            if f.endswith(".py") and not rel.startswith(GLUE):
                out.append(rel)
    return sorted(out)


def test_no_library_function_reads_a_job_config():
    found = []
    for rel in library_modules():
        with open(os.path.join(PACKAGE, rel), encoding="utf-8") as f:
            for name, line, reads in config_readers(f.read()):
                key = f"{rel}:{name}"
                if key not in MODEL_CONFIG_READERS | KNOWN_LEFTOVERS:
                    found.append(f"jaxhspace/{rel}:{line} {name}(config, ...) reads config.{reads}")
    assert not found, ("library functions read a job config; give them explicit arguments and read the config in "
                       "the job (jaxhspace/tasks/):\n" + "\n".join(found))
    assert "training/loop.py" in library_modules() and "training/clip_synthfaces.py" in library_modules()


def test_the_scan_sees_config_reads():
    """The scan itself: reads of a ``config`` first parameter are found, a model's ``.config`` is not."""
    src = ("def a(config, step):\n    return config.batch_size + step\n"
           "def b(config):\n    return config.get('lr', 1.0)\n"
           "def c(config):\n    return config['seed']\n"
           "def d(unet, config=None):\n    return unet.config.sample_size\n"
           "class E:\n    def m(self, config):\n        return config.x\n")
    assert [(n, r) for n, _, r in config_readers(src)] == [("a", ["batch_size"]), ("b", ["get"]), ("c", ["[...]"]),
                                                           ("m", ["x"])]


RUN_OK = dict(total_steps=10, lr=1e-3, checkpoint_every=5, log_every=1, max_minutes=0.0, max_loss_growth=100.0,
              loss_window=10, resume_policy="strict")
RUN_BAD = [("total_steps", -1), ("total_steps", 2.5), ("checkpoint_every", 0), ("log_every", True),
           ("loss_window", 0), ("max_minutes", -1.0), ("max_minutes", float("nan")), ("max_loss_growth", "big"),
           ("lr", "fast"), ("resume_policy", "sometimes")]


def test_run_settings_defaults_and_valid_values_pass():
    assert RunSettings(**RUN_OK).validate() == RunSettings(**RUN_OK)
    assert RunSettings(total_steps=0).validate().resume_policy == "strict"


@pytest.mark.parametrize("field, value", RUN_BAD, ids=[f"{f}={v!r}" for f, v in RUN_BAD])
def test_run_settings_validate_names_the_bad_field(field, value):
    with pytest.raises(JaxhspaceError, match=rf"RunSettings\.{field} must be .*got {value!r}"):
        RunSettings(**{**RUN_OK, field: value}).validate()


def test_the_jobs_refuse_bad_loop_settings_before_any_work(tmp_path):
    """The trainer jobs' ``validate(config)`` (run by main before any work) checks the loop settings."""
    import ml_collections

    from jaxhspace.tasks import ddpm_train_job as ddpm_train

    c = ml_collections.ConfigDict(dict(total_steps=3, lr=1e-3, checkpoint_every=0, log_every=1))
    with pytest.raises(JaxhspaceError, match=r"RunSettings\.checkpoint_every must be an int >= 1, got 0"):
        ddpm_train.validate(c)
    with pytest.raises(JaxhspaceError, match=r"RunSettings\.checkpoint_every"):
        ddpm_train.run(c, str(tmp_path / "wd"))
    assert not os.path.exists(tmp_path / "wd")
