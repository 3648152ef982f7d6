"""Runnable jobs, one module each, dispatched by ``jaxhspace.main`` on ``config.task``.

Each job is ``run(config, workdir) -> dict`` (the metrics it also writes to ``workdir``).
"""
import importlib

TASKS = {
    "sample": "jaxhspace.tasks.sample_job",
    "invert_reconstruct": "jaxhspace.tasks.invert_reconstruct_job",
    "ddpm_train": "jaxhspace.tasks.ddpm_train_job",
    "vae_train": "jaxhspace.tasks.vae_train_job",
    "latent_ddpm_train": "jaxhspace.tasks.latent_ddpm_train_job",
    "pullback": "jaxhspace.tasks.pullback_job",
    "haas": "jaxhspace.tasks.haas_job",
    "pca": "jaxhspace.tasks.pca_job",
    "asyrp_train": "jaxhspace.tasks.asyrp_train_job",
    "asyrp_edit": "jaxhspace.tasks.asyrp_edit_job",
    "clip_train": "jaxhspace.tasks.clip_train_job",
    "hosvd": "jaxhspace.tasks.hosvd_job",
    "demo": "jaxhspace.tasks.demo_job",
    "prompt_sample": "jaxhspace.tasks.prompt_sample_job",
    "prompt_edit": "jaxhspace.tasks.prompt_edit_job",
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
