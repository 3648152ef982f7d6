"""Run any jaxhspace job from a config file:

    python -m jaxhspace.main --config configs/sample.py --workdir runs/sample
    python -m jaxhspace.main --config configs/sample.py --workdir runs/sample --config.n_steps=50

The config's ``task`` field picks the job (see ``jaxhspace.tasks.TASKS``); results go to ``--workdir``.
"""
import json

from absl import app, flags
from ml_collections import config_flags

from jaxhspace.tasks import get_task

FLAGS = flags.FLAGS
config_flags.DEFINE_config_file("config", None, "Path to a configs/*.py file.", lock_config=True)
flags.DEFINE_string("workdir", None, "Output folder.")
flags.mark_flags_as_required(["config", "workdir"])


def main(argv):
    del argv
    metrics = get_task(FLAGS.config.task)(FLAGS.config, FLAGS.workdir)
    print(json.dumps(metrics, indent=2, default=str))


if __name__ == "__main__":
    app.run(main)
