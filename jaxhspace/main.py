"""Run any jaxhspace job from a config file:

    python -m jaxhspace.main --config configs/sample.py --workdir runs/sample
    python -m jaxhspace.main --config configs/sample.py --workdir runs/sample --config.n_steps=50
    python -m jaxhspace.main --config sample --workdir runs/sample    # a shipped config by name, from any directory
    python -m jaxhspace.main --version

The config's ``task`` field picks the job (see ``jaxhspace.tasks.TASKS``); results go to ``--workdir``.
``--config`` takes a config file or a shipped config's name (``jaxhspace.resources.config_names()``: ``demo``,
``celebahq256/pullback``, ...; an unknown name lists them).
A training job stopped by Ctrl-C / SIGTERM saves its state and exits 128 + the signal number (130 / 143).
An anticipated bad input (:class:`jaxhspace.errors.JaxhspaceError`: a config field, file or folder; a bad flag, a
missing or broken config file) prints one line ``jaxhspace: error: ...`` and exits 2; unexpected errors keep their
traceback.
"""
import json
import sys

from absl import app, flags

from jaxhspace import __version__
from jaxhspace.errors import JaxhspaceError, TrainingInterrupted
from jaxhspace.precision import set_matmul_precision
from jaxhspace.resources import define_config_flag
from jaxhspace.tasks import get_task

FLAGS = flags.FLAGS
define_config_flag("config")  # ml_collections' config-file flag that also takes a shipped config's name
flags.DEFINE_string("workdir", None, "Output folder.")
flags.mark_flags_as_required(["config", "workdir"])


def _fail(message: str) -> None:
    """Print ``jaxhspace: error: MESSAGE`` as one line on stderr and exit 2."""
    print("jaxhspace: error: " + " ".join(str(message).split()), file=sys.stderr)
    sys.exit(2)


def parse_flags(argv):
    """absl's flag parsing with jaxhspace's convention for anticipated errors: a bad flag (a ``--config`` that is
    neither a file nor a shipped config, a missing ``--workdir``, an unknown ``--config.field``), a config file with
    a syntax error or without ``get_config()`` print one line and exit 2 (absl: a usage text and exit 1, or a
    traceback). Returns the remaining arguments."""
    try:
        return FLAGS(argv)
    except flags.Error as e:
        _fail(e)
    except SyntaxError as e:
        _fail(f"config file {e.filename}, line {e.lineno}: syntax error: {e.msg}")
    except AttributeError as e:
        if "get_config" in str(e):
            _fail(f"the --config file defines no get_config() ({e}); a config file is a .py with get_config() "
                  "returning an ml_collections.ConfigDict")
        overrides = [a.split("=", 1)[0] for a in argv[1:] if a.startswith("--config.")]
        if not overrides:
            raise
        detail = e
        while isinstance(detail, BaseException) and detail.args:
            detail = detail.args[0]  # ml_collections wraps a KeyError carrying its did-you-mean text
        _fail(f"unknown config field in {', '.join(overrides)}: {detail}; check the spelling against the fields of "
              "the --config file")


def main(argv):
    del argv
    try:
        set_matmul_precision(FLAGS.config)  # config.precision (default "highest"): float32 matmuls on TPU / GPU too
        metrics = get_task(FLAGS.config.task)(FLAGS.config, FLAGS.workdir)
    except TrainingInterrupted as e:
        print(f"\njaxhspace: {e}", file=sys.stderr)
        sys.exit(128 + e.signum)
    except JaxhspaceError as e:
        _fail(e)  # one line, exit 2
    print(json.dumps(metrics, indent=2, default=str))


if __name__ == "__main__":
    if "--version" in sys.argv[1:]:  # before absl's required-flag check
        print(f"jaxhspace {__version__}")
        sys.exit(0)
    app.run(main, flags_parser=parse_flags)
