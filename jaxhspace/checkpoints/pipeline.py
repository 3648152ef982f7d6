"""Load a local diffusers pipeline folder (Stable Diffusion 1.x / 2.x, unconditional LDM) into Flax modules.

A pipeline folder holds ``model_index.json`` (component name -> ``[library, class]``) and one subfolder per
component::

    unet/          config.json + diffusion_pytorch_model.safetensors   UNet2DConditionModel (SD) | UNet2DModel (LDM)
    vae/ | vqvae/  config.json + diffusion_pytorch_model.safetensors   AutoencoderKL (SD) | VQModel (LDM)
    text_encoder/  config.json + model.safetensors                     transformers CLIPTextModel (SD only)
    tokenizer/     vocab.json + merges.txt (or tokenizer.json)          CLIPTokenizer (SD only)
    scheduler/     scheduler_config.json

``safety_checker``, ``feature_extractor`` and ``image_encoder`` are ignored. Every component is checked for its
files before anything is loaded, and all problems are reported in one ValueError naming component and file.

Latent scaling follows diffusers: the diffusion model sees ``z = scaling_factor * latents`` and images are decoded from
``z / scaling_factor`` (StableDiffusionPipeline, and LDMPipeline since diffusers PR #5213). The factor is the VAE
config's ``scaling_factor`` (diffusers' default 0.18215 when absent) for an ``AutoencoderKL``; for a ``VQModel`` it is
the config's ``scaling_factor`` only when the field is written there, else 1.0: the original LDM VQ latents are
unscaled (CompVis ``LatentDiffusion`` default ``scale_factor=1.0``) and ``CompVis/ldm-celebahq-256``'s ``vqvae`` config
predates the field (diffusers would apply its 0.18215 default there). ``load_pipeline(..., vae_scaling_factor=)``
overrides both.
"""
from __future__ import annotations

import dataclasses
import os
from functools import partial
from typing import Any, Optional, Sequence, Union

import jax
import jax.numpy as jnp
import numpy as np

from jaxhspace.checkpoints.common import read_json

MODEL_INDEX = "model_index.json"
IGNORED_COMPONENTS = ("safety_checker", "feature_extractor", "image_encoder", "requires_safety_checker")
UNET_CLASSES = ("UNet2DConditionModel", "UNet2DModel")
VAE_COMPONENTS = {"vae": "AutoencoderKL", "vqvae": "VQModel"}
TEXT_ENCODER_CLASSES = ("CLIPTextModel",)
TOKENIZER_CLASSES = ("CLIPTokenizer", "CLIPTokenizerFast")
DIFFUSERS_WEIGHTS = ("diffusion_pytorch_model.safetensors", "diffusion_pytorch_model.bin",
                     "diffusion_pytorch_model.fp16.safetensors", "diffusion_pytorch_model.fp16.bin")
HF_WEIGHTS = ("model.safetensors", "pytorch_model.bin", "model.fp16.safetensors",
              "model.safetensors.index.json", "pytorch_model.bin.index.json")


@dataclasses.dataclass(frozen=True, eq=False)
class Pipeline:
    """A loaded latent-diffusion pipeline (all params float32).

    Attributes:
      unet, unet_params: Flax UNet (``UNet2DConditionModel`` for SD, ``UNet2DModel`` for the LDM) and its params.
      vae, vae_params: :class:`~jaxhspace.models.vae.AutoencoderKL` or :class:`~jaxhspace.models.vae.VQModel`.
      text_encoder, text_params: :class:`~jaxhspace.models.clip.CLIPTextModel` and params, or None (LDM).
      tokenizer: transformers ``CLIPTokenizer``, or None (LDM).
      scheduler: the ``scheduler_config.json`` dict (``_class_name`` included), ``prediction_type`` always set
        (diffusers' default ``"epsilon"`` when absent).
      vae_scaling_factor: latents given to the UNet are ``vae_scaling_factor *`` the VAE's latents.
      pipeline_class: ``model_index.json``'s ``_class_name`` (e.g. ``StableDiffusionPipeline``, ``LDMPipeline``).
      folder: the pipeline folder.
    """

    unet: Any
    unet_params: Any
    vae: Any
    vae_params: Any
    text_encoder: Any
    text_params: Any
    tokenizer: Any
    scheduler: dict
    vae_scaling_factor: float
    pipeline_class: str
    folder: str

    @property
    def prediction_type(self) -> str:
        return self.scheduler["prediction_type"]

    @property
    def is_vq(self) -> bool:
        return type(self.vae).__name__ == "VQModel"

    @property
    def latent_channels(self) -> int:
        """Channels of the latents the UNet sees (``embed_dim`` of a VQModel, ``latent_channels`` of a KL VAE)."""
        c = self.vae.config
        return c.embed_dim if self.is_vq else c.latent_channels

    @property
    def vae_downsample_factor(self) -> int:
        return self.vae.config.downsample_factor


def _component(index: dict, name: str) -> Optional[str]:
    """Class name of component ``name`` in model_index.json, or None if absent or ``[null, null]``."""
    entry = index.get(name)
    if isinstance(entry, (list, tuple)) and len(entry) == 2:
        return entry[1]
    return None  # absent, [null, null], or a pipeline flag such as requires_safety_checker


def _has_any(folder: str, names: Sequence[str]) -> bool:
    return any(os.path.isfile(os.path.join(folder, n)) for n in names)


def _check_files(root: str, index: dict) -> dict:
    """Check every component's files; return ``{component: class}`` of those to load, or raise one ValueError."""
    problems = []
    components = {}
    for name in index:
        if name.startswith("_") or name in IGNORED_COMPONENTS:
            continue
        cls = _component(index, name)
        if cls is not None:
            components[name] = cls

    unsupported = {n: c for n, c in components.items()
                   if n not in ("unet", "vae", "vqvae", "text_encoder", "tokenizer", "scheduler")}
    for n, c in unsupported.items():
        problems.append(f"{n}: component class {c!r} is not supported (supported components: unet, vae or vqvae, "
                        "text_encoder, tokenizer, scheduler)")
    if "unet" not in components:
        problems.append(f"unet: {MODEL_INDEX} lists no 'unet'")
    elif components["unet"] not in UNET_CLASSES:
        problems.append(f"unet: class {components['unet']!r} is not supported; supported: {list(UNET_CLASSES)}")
    vaes = [n for n in VAE_COMPONENTS if n in components]
    if len(vaes) != 1:
        problems.append(f"vae: {MODEL_INDEX} must list exactly one of 'vae' (AutoencoderKL) or 'vqvae' (VQModel), "
                        f"got {vaes or 'none'}")
    for n in vaes:
        if components[n] not in VAE_COMPONENTS.values():
            problems.append(f"{n}: class {components[n]!r} is not supported; supported: AutoencoderKL, VQModel")
    if "scheduler" not in components:
        problems.append(f"scheduler: {MODEL_INDEX} lists no 'scheduler'")
    conditional = components.get("unet") == "UNet2DConditionModel"
    for n, classes in (("text_encoder", TEXT_ENCODER_CLASSES), ("tokenizer", TOKENIZER_CLASSES)):
        if n in components and components[n] not in classes:
            problems.append(f"{n}: class {components[n]!r} is not supported; supported: {list(classes)}")
        elif conditional and n not in components:
            problems.append(f"{n}: {MODEL_INDEX} lists no {n!r}, but a UNet2DConditionModel needs text embeddings")
    if ("text_encoder" in components) != ("tokenizer" in components):
        problems.append("text_encoder/tokenizer: a pipeline needs both or neither")

    def need(sub: str, files: Sequence[str], what: str):
        folder = os.path.join(root, sub)
        if not os.path.isdir(folder):
            problems.append(f"{sub}: folder {folder} is missing")
        elif not _has_any(folder, files):
            problems.append(f"{sub}: no {what} in {folder} (expected {' or '.join(files)})")

    for n, cls in components.items():
        if n in unsupported:
            continue
        if n == "unet" or n in VAE_COMPONENTS:
            need(n, ["config.json"], "config")
            folder = os.path.join(root, n)
            converted = n == "unet" and os.path.isdir(os.path.join(folder, "params"))
            if os.path.isdir(folder) and not converted:
                need(n, DIFFUSERS_WEIGHTS, "weights")
        elif n == "text_encoder":
            need(n, ["config.json"], "config")
            if os.path.isdir(os.path.join(root, n)):
                need(n, HF_WEIGHTS, "weights")
        elif n == "tokenizer":
            folder = os.path.join(root, n)
            if not os.path.isdir(folder):
                problems.append(f"tokenizer: folder {folder} is missing")
            elif not (_has_any(folder, ["tokenizer.json"]) or
                      all(os.path.isfile(os.path.join(folder, f)) for f in ("vocab.json", "merges.txt"))):
                problems.append(f"tokenizer: no vocab.json + merges.txt (or tokenizer.json) in {folder}")
        elif n == "scheduler":
            need(n, ["scheduler_config.json"], "scheduler_config.json")
    if problems:
        raise ValueError(f"pipeline folder {root} is incomplete or unsupported:\n  " + "\n  ".join(problems))
    return components


def load_pipeline(folder, dtype: Any = jnp.float32, vae_scaling_factor: Optional[float] = None) -> Pipeline:
    """Load a diffusers pipeline folder (SD-1.x, SD-2.x or the unconditional LDM) into a :class:`Pipeline`.

    Args:
      folder: pipeline root with ``model_index.json`` (see the module docstring for the layout).
      dtype: compute dtype of the UNet, VAE (params stay float32); the text encoder runs in float32.
      vae_scaling_factor: override of the latent scaling (see the module docstring for the default).

    Returns:
      :class:`Pipeline`. The UNet is loaded by :func:`jaxhspace.checkpoints.load_unet` (dispatching on its
      ``_class_name``), the VAE by :func:`jaxhspace.checkpoints.vae.load_vae`, the text encoder by
      :func:`jaxhspace.checkpoints.clip.load_clip_text`, the tokenizer by
      :func:`jaxhspace.checkpoints.clip.load_clip_tokenizer`.

    Raises:
      ValueError before loading anything if ``model_index.json`` or a component's folder/config/weights is missing
      (one message naming every missing component and file) or a component's class is unsupported; ValueError from
      the component loaders for weights that do not match their configs.
    """
    from jaxhspace.checkpoints.clip import load_clip_text, load_clip_tokenizer
    from jaxhspace.checkpoints.unet import load_unet
    from jaxhspace.checkpoints.vae import load_vae

    root = os.path.abspath(os.fspath(folder))
    if not os.path.isdir(root):
        raise ValueError(f"{root} is not a folder: pass a diffusers pipeline folder (with {MODEL_INDEX}).")
    index_path = os.path.join(root, MODEL_INDEX)
    if not os.path.isfile(index_path):
        raise ValueError(f"{index_path} is missing: a diffusers pipeline folder needs its {MODEL_INDEX} "
                         "(save the pipeline with save_pretrained, or load components with load_unet/load_vae).")
    index = read_json(index_path)
    components = _check_files(root, index)

    scheduler = dict(read_json(os.path.join(root, "scheduler", "scheduler_config.json")))
    scheduler.setdefault("prediction_type", "epsilon")

    vae_name = next(n for n in VAE_COMPONENTS if n in components)
    vae_cfg = read_json(os.path.join(root, vae_name, "config.json"))
    unet, unet_params = load_unet(os.path.join(root, "unet"), dtype=dtype)
    vae, vae_params = load_vae(os.path.join(root, vae_name), dtype=dtype)
    if vae_scaling_factor is None:
        vq = type(vae).__name__ == "VQModel"
        vae_scaling_factor = vae_cfg.get("scaling_factor", 1.0) if vq else vae.config.scaling_factor
    if not float(vae_scaling_factor) > 0:
        raise ValueError(f"vae_scaling_factor must be > 0, got {vae_scaling_factor!r}")

    text_encoder = text_params = tokenizer = None
    if "text_encoder" in components:
        text_encoder, text_params = load_clip_text(os.path.join(root, "text_encoder"))
        tokenizer = load_clip_tokenizer(os.path.join(root, "tokenizer"))
        max_len = tokenizer.model_max_length
        if max_len > text_encoder.config.max_position_embeddings:
            raise ValueError(f"tokenizer: model_max_length={max_len} (tokenizer/tokenizer_config.json) exceeds the "
                             f"text encoder's max_position_embeddings={text_encoder.config.max_position_embeddings}; "
                             "set model_max_length to 77 in tokenizer_config.json.")
    return Pipeline(unet=unet, unet_params=unet_params, vae=vae, vae_params=vae_params, text_encoder=text_encoder,
                    text_params=text_params, tokenizer=tokenizer, scheduler=scheduler,
                    vae_scaling_factor=float(vae_scaling_factor), pipeline_class=str(index.get("_class_name", "")),
                    folder=root)


# ----------------------------------------------------------------------------------------------
# Helpers
# ----------------------------------------------------------------------------------------------
@partial(jax.jit, static_argnums=0)
def _text_hidden(model, params, ids):
    return model.apply({"params": params}, ids)[0]


@partial(jax.jit, static_argnums=(0, 3))
def _encode_latents(vae, params, x, sample, key):
    if type(vae).__name__ == "VQModel":
        return vae.apply({"params": params}, x, method=vae.encode)
    dist = vae.apply({"params": params}, x, method=vae.encode)
    return dist.sample(key) if sample else dist.mean


@partial(jax.jit, static_argnums=0)
def _decode_latents(vae, params, z):
    return vae.apply({"params": params}, z, method=vae.decode)


def tokenize(pipe: Pipeline, prompts: Union[str, Sequence[str]]) -> np.ndarray:
    """Token ids ``[B, model_max_length]`` int32 as diffusers' ``encode_prompt``: ``padding="max_length"``,
    ``max_length=tokenizer.model_max_length`` (77), ``truncation=True``."""
    if pipe.tokenizer is None:
        raise ValueError(f"this pipeline ({pipe.pipeline_class or 'unconditional'}) has no tokenizer/text encoder: "
                         "it is unconditional, prompts do not apply.")
    if isinstance(prompts, str):
        prompts = [prompts]
    prompts = list(prompts)
    if not prompts or not all(isinstance(p, str) for p in prompts):
        raise ValueError(f"prompts must be a string or a non-empty list of strings, got {prompts!r}")
    tok = pipe.tokenizer(prompts, padding="max_length", max_length=pipe.tokenizer.model_max_length, truncation=True,
                         return_tensors="np")
    return np.asarray(tok["input_ids"], np.int32)


def encode_prompt(pipe: Pipeline, prompts: Union[str, Sequence[str]]) -> jax.Array:
    """Text embeddings for the UNet's cross-attention, as diffusers' ``StableDiffusionPipeline.encode_prompt``.

    Args:
      pipe: a conditional :class:`Pipeline` (SD).
      prompts: a string or a list of B strings (``""`` gives the unconditional embedding used by CFG).

    Returns:
      ``last_hidden_state`` of the CLIP text encoder (after ``final_layer_norm``), ``[B, 77, D]`` float32
      (D = 768 for SD-1.x, 1024 for SD-2.x). No attention mask is passed (diffusers passes none unless the
      text config sets ``use_attention_mask``, which CLIP configs do not); the mask is causal, so padding tokens
      do not change the embeddings of the tokens before them.
    """
    ids = tokenize(pipe, prompts)
    return _text_hidden(pipe.text_encoder, pipe.text_params, jnp.asarray(ids))


def images_to_latents(pipe: Pipeline, x, key: Optional[jax.Array] = None) -> jax.Array:
    """Images ``[B, H, W, 3]`` in [-1, 1] (NHWC) -> scaled latents ``[B, H/f, W/f, C_latent]`` for the UNet.

    AutoencoderKL: ``scaling_factor * mean`` of the latent distribution, or ``scaling_factor * sample`` when
    ``key`` is given (diffusers' ``retrieve_latents`` with ``sample_mode="argmax"`` / ``"sample"``). VQModel:
    ``scaling_factor * pre-quantisation latents`` (deterministic; ``key`` is ignored).
    """
    x = jnp.asarray(x, jnp.float32)
    sample = key is not None and not pipe.is_vq
    key = key if key is not None else jax.random.PRNGKey(0)
    z = _encode_latents(pipe.vae, pipe.vae_params, x, sample, key)
    return z * pipe.vae_scaling_factor


def latents_to_images(pipe: Pipeline, z) -> jax.Array:
    """Scaled latents ``[B, h, w, C_latent]`` -> images ``[B, h*f, w*f, 3]`` float32, ``decode(z / scaling_factor)``
    (a VQModel quantises first, as diffusers' ``VQModel.decode``). Not clipped: clip to [-1, 1] for display, as
    diffusers' image processor does."""
    z = jnp.asarray(z, jnp.float32)
    c = pipe.latent_channels
    if z.ndim != 4 or z.shape[-1] != c:
        raise ValueError(f"latents must be NHWC [B, h, w, {c}], got shape {z.shape}")
    return _decode_latents(pipe.vae, pipe.vae_params, z / pipe.vae_scaling_factor)


__all__ = ["Pipeline", "load_pipeline", "tokenize", "encode_prompt", "images_to_latents", "latents_to_images"]
