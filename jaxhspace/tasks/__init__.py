"""Runnable jobs, one module each, dispatched by ``jaxhspace.main`` on ``config.task``.

Each job is ``run(config, workdir) -> dict`` (the metrics it also writes to ``workdir``).
"""
import importlib

TASKS = {
    "sample": "jaxhspace.tasks.sample",
    "invert_reconstruct": "jaxhspace.tasks.invert_reconstruct",
    "ddpm_train": "jaxhspace.tasks.ddpm_train",
    "vae_train": "jaxhspace.tasks.vae_train",
    "latent_ddpm_train": "jaxhspace.tasks.latent_ddpm_train",
    "pullback": "jaxhspace.tasks.pullback",
    "haas": "jaxhspace.tasks.haas",
    "pca": "jaxhspace.tasks.pca",
    "asyrp_train": "jaxhspace.tasks.asyrp_train",
    "asyrp_edit": "jaxhspace.tasks.asyrp_edit",
    "clip_train": "jaxhspace.tasks.clip_train",
    "hosvd": "jaxhspace.tasks.hosvd",
    "demo": "jaxhspace.tasks.demo",
    "prompt_sample": "jaxhspace.tasks.prompt_sample",
    "prompt_edit": "jaxhspace.tasks.prompt_edit",
}


def get_task(name: str):
    """Return the ``run`` function of a job, or raise a ValueError listing the known jobs.

    The function converts an official checkpoint in ``config.model_path`` (``.ckpt`` / ``.pt``) into the workdir
    first (:func:`jaxhspace.checkpoints.auto_convert.with_model_conversion`). Before anything, it checks the whole
    config and the workdir (:func:`jaxhspace.tasks.validate.validate`: ranges, fields, the job's own
    ``validate(config)``)."""
    if name not in TASKS:
        raise ValueError(f"unknown task {name!r}; known tasks: {sorted(TASKS)}")
    from jaxhspace.checkpoints.auto_convert import with_model_conversion
    from jaxhspace.tasks.validate import validated

    return validated(with_model_conversion(importlib.import_module(TASKS[name]).run), name)
