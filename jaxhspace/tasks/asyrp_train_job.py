"""Job ``asyrp_train``: the config → :class:`~jaxhspace.editing.asyrp_train.AsyrpTrainSettings`, the models and the
training images, then :func:`jaxhspace.editing.asyrp_train.train_asyrp` (the trainer, which reads no config)."""
from __future__ import annotations

import dataclasses
import os
import time
import typing
from typing import Optional

import numpy as np

from jaxhspace.editing import asyrp_train as trainer
from jaxhspace.editing.asyrp_train import AsyrpModels, AsyrpTrainSettings
from jaxhspace.editing.editor_io import check_editor_destination


def check_t_select_config(config) -> None:
    """:func:`jaxhspace.editing.asyrp_train.check_t_select` on the fields ``t_boost``, ``t_select_metric``,
    ``lpips_addnoise_th`` and ``add_noise_from_xt`` (default True) of an ``asyrp_train`` config (or an
    :class:`AsyrpTrainSettings`)."""
    trainer.check_t_select(int(config.t_boost), str(config.t_select_metric), float(config.lpips_addnoise_th),
                           bool(getattr(config, "add_noise_from_xt", True)))


def settings_from_config(config) -> AsyrpTrainSettings:
    """The :class:`AsyrpTrainSettings` of an ``asyrp_train`` config (``configs/asyrp_train.py``): every settings field
    the config has (a field it lacks keeps the official default); the model, CLIP and data fields stay in the config
    (:func:`load_models`, :func:`training_images`). An int given for a float field becomes a float, NumPy scalars
    become Python numbers; anything else is left for :meth:`AsyrpTrainSettings.validate` to refuse, naming the field.
    """
    hints = typing.get_type_hints(AsyrpTrainSettings)
    kw = {}
    for f in dataclasses.fields(AsyrpTrainSettings):
        if f.name not in config:
            continue
        v = config[f.name]
        if isinstance(v, np.generic):
            v = v.item()
        if hints[f.name] is float and isinstance(v, int) and not isinstance(v, bool):
            v = float(v)
        kw[f.name] = v
    return AsyrpTrainSettings(**kw)


def training_images(image_paths, data_seed: int, n_train_img: int, size: int) -> np.ndarray:
    """``[N, size, size, 3]`` in [-1, 1]: the images at ``image_paths`` if any, else ``n_train_img`` SynthFaces
    (seed ``data_seed``): :func:`jaxhspace.tasks.inputs.load_faces` with the training set's count."""
    from jaxhspace.tasks.inputs import load_faces

    return load_faces({"image_paths": tuple(image_paths), "data_seed": data_seed, "num_images": n_train_img}, size)


def load_models(model_path: str, clip_path: str, seed: int = 0) -> tuple[AsyrpModels, dict]:
    """``(AsyrpModels, sources)`` from ``model_path`` / ``clip_path`` ("" = the shipped defaults:
    :func:`jaxhspace.world.load_model` and ``assets/clip_synthfaces``); ``sources`` = ``{"model": ..., "clip": ...}``.

    Raises:
      ValueError naming ``config.clip_path`` when the CLIP folder is missing.
    """
    from jaxhspace import world
    from jaxhspace.checkpoints import load_clip, load_clip_tokenizer

    path = clip_path or world.DEFAULT_CLIP
    if not clip_path and not os.path.isdir(path):
        raise ValueError(f"{world.missing_asset_message(path)} Or set config.clip_path to an HF CLIPModel "
                         "folder (with tokenizer files).")
    if not os.path.isdir(path):
        raise ValueError(f"CLIP folder {path} not found: set config.clip_path to an HF CLIPModel folder (with "
                         "tokenizer files) or leave it empty for the shipped assets/clip_synthfaces")
    unet, uparams, schedule, usrc = world.load_model(model_path, int(seed))
    clip_model, clip_params = load_clip(path)
    tok = load_clip_tokenizer(path)
    return AsyrpModels(unet, uparams, schedule, clip_model, clip_params, tok), {"model": usrc, "clip": path}


def train_asyrp(config, workdir: str, models: Optional[tuple] = None) -> dict:
    """Train (or resume) an Asyrp editor from an ``asyrp_train`` config; returns the metrics, also written to
    ``workdir/metrics.json``.

    The settings are validated before anything loads; then the models (``models``: an
    :class:`~jaxhspace.editing.asyrp_train.AsyrpModels` / 6-tuple instead of ``config.model_path`` /
    ``config.clip_path``) and the images (``config.image_paths``, else SynthFaces ``data_seed`` / ``n_train_img``
    at the UNet's sample size) go to :func:`jaxhspace.editing.asyrp_train.train_asyrp`."""
    from jaxhspace.tasks.common import write_metrics

    t_start = time.time()
    settings = settings_from_config(config).validate()
    os.makedirs(workdir, exist_ok=True)
    if models is None:
        models, sources = load_models(config.model_path, config.clip_path, settings.seed)
    else:
        models, sources = AsyrpModels(*models), {"model": "given", "clip": "given"}
    from jaxhspace.tasks.inputs import image_size

    images = training_images(config.image_paths, config.data_seed, config.n_train_img, image_size(models.unet))
    metrics = trainer.train_asyrp(settings, workdir, models, images, sources)
    metrics["wall_s_this_run"] = time.time() - t_start  # loading included
    write_metrics(workdir, metrics)
    return metrics


def run(config, workdir: str) -> dict:
    """Train (or resume) an Asyrp editor; returns the metrics written to ``workdir/metrics.json``.

    Before any model loads, ``workdir/editor`` (where the trained editor is saved, replacing an earlier one) must be
    absent or a folder jaxhspace wrote (:func:`~jaxhspace.editing.editor_io.check_editor_destination`), so a user's
    files there are never deleted; otherwise a JaxhspaceError names it."""
    check_editor_destination(os.path.join(workdir, "editor"), overwrite=True,
                             hint=" (the asyrp_train job saves its editor into WORKDIR/editor; use another --workdir "
                                  "or move that folder away.)")
    return train_asyrp(config, workdir)
