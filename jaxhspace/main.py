"""Run any jaxhspace job from a config file:

    python -m jaxhspace.main --config configs/sample.py --workdir runs/sample
    python -m jaxhspace.main --config configs/sample.py --workdir runs/sample --config.n_steps=50
    python -m jaxhspace.main --config sample --workdir runs/sample    # a shipped config by name, from any directory
    python -m jaxhspace.main --version

The config's ``task`` field picks the job (see ``jaxhspace.tasks.TASKS``); results go to ``--workdir``.
``--config`` takes a config file or a shipped config's name (``jaxhspace.resources.config_names()``: ``demo``,
``celebahq256/pullback``, ...; an unknown name lists them).
A training job stopped by Ctrl-C / SIGTERM saves its state and exits 128 + the signal number (130 / 143).
An anticipated bad input (:class:`jaxhspace.errors.JaxhspaceError`: a config field, file or folder) prints one line
``jaxhspace: error: ...`` and exits 2; unexpected errors keep their traceback.
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


def main(argv):
    del argv
    try:
        set_matmul_precision(FLAGS.config)  # config.precision (default "highest"): float32 matmuls on TPU / GPU too
        metrics = get_task(FLAGS.config.task)(FLAGS.config, FLAGS.workdir)
    except TrainingInterrupted as e:
        print(f"\njaxhspace: {e}", file=sys.stderr)
        sys.exit(128 + e.signum)
    except JaxhspaceError as e:
        print("jaxhspace: error: " + " ".join(str(e).split()), file=sys.stderr)  # one line
        sys.exit(2)
    print(json.dumps(metrics, indent=2, default=str))


if __name__ == "__main__":
    if "--version" in sys.argv[1:]:  # before absl's required-flag check
        print(f"jaxhspace {__version__}")
        sys.exit(0)
    app.run(main)
