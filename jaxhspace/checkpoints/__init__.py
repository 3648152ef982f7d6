"""Loading and saving models: ``load_unet`` (diffusers UNet2DModel folders or converted orbax folders),
``load_clip`` (HF CLIP folders or converted ones). Shared machinery lives in ``common``.

Imports are lazy so that one model family's loader never needs the other's dependencies.
"""
import importlib

_EXPORTS = {
    "load_unet": "jaxhspace.checkpoints.unet",
    "save_unet_diffusers": "jaxhspace.checkpoints.unet",
    "save_unet_converted": "jaxhspace.checkpoints.unet",
    "load_clip": "jaxhspace.checkpoints.clip",
    "load_clip_tokenizer": "jaxhspace.checkpoints.clip",
    "save_clip_hf": "jaxhspace.checkpoints.clip",
    "save_clip_converted": "jaxhspace.checkpoints.clip",
    "load_clip_text": "jaxhspace.checkpoints.clip",
    "load_vae": "jaxhspace.checkpoints.vae",
    "load_pipeline": "jaxhspace.checkpoints.pipeline",
    "Pipeline": "jaxhspace.checkpoints.pipeline",
    "encode_prompt": "jaxhspace.checkpoints.pipeline",
    "images_to_latents": "jaxhspace.checkpoints.pipeline",
    "latents_to_images": "jaxhspace.checkpoints.pipeline",
}

__all__ = list(_EXPORTS)


def __getattr__(name):
    if name in _EXPORTS:
        return getattr(importlib.import_module(_EXPORTS[name]), name)
    raise AttributeError(f"module 'jaxhspace.checkpoints' has no attribute {name!r}")
