"""Train the tiny text-conditioned latent DDPM of the embedded default (a Stable-Diffusion-format pipeline on
SynthFaces), resumably, and export the whole diffusers pipeline folder.

The job is :mod:`jaxhspace.tasks.latent_ddpm_train_job`:
``python -m jaxhspace.main --config configs/sd_synthfaces/unet.py --workdir runs/sd_unet``
(re-running resumes from the newest checkpoint in ``workdir/checkpoints``).

The recipe is Stable Diffusion's (Rombach et al. 2022, §4.3 and App. E): a ``UNet2DConditionModel`` predicts ε of
``z_t = √ᾱ_t z_0 + √(1 − ᾱ_t) ε`` with ``z_0 = scaling_factor · sample of q(z|x)`` from the frozen VAE, cross-attending
to the frozen CLIP text tower's last hidden state; SD's "scaled_linear" β schedule (0.00085 → 0.012, T = 1000);
captions dropped to the empty prompt with probability ``caption_dropout`` so that one network gives both branches of
classifier-free guidance (Ho & Salimans 2022). Captions are SynthFaces captions with attributes randomly left out
(:func:`jaxhspace.training.clip_synthfaces.augmented_captions`, no templates), so short prompts ("a face with red
hair", "a smiling face") are in-distribution too.

The batch of step i (faces, captions, dropout) is a pure function of ``(seed, i)`` and the step's noise is
``fold_in(key, i)``, so a resumed run equals an uninterrupted one bit for bit. The export is a diffusers pipeline
folder: ``unet/`` (EMA weights), ``vae/`` (copied from ``vae_path``), ``text_encoder/`` + ``tokenizer/`` (the CLIP
text tower of ``clip_path``), ``scheduler/`` (DDIM), ``model_index.json``.
"""
from __future__ import annotations

import os
import shutil

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxhspace.diffusion.schedule import Schedule
from jaxhspace.training.ddpm import DDPMState

WORKDIR_FILES = ("checkpoints", "train_log.jsonl", "metrics.json", "run_config.json")
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


def batch_captions(seed: int, step: int, factors: dict, keep_prob: float, full_prob: float,
                   dropout: float) -> list[str]:
    """Captions of step ``step``'s faces (``factors``: SynthFaces factors of the batch): attributes kept with
    ``keep_prob`` (the full caption with ``full_prob``), then replaced by ``""`` with ``dropout``
    (rng ``(seed, step, 1)``)."""
    from jaxhspace.training.clip_synthfaces import augmented_captions

    rng = np.random.default_rng((int(seed), int(step), 1))
    texts, _ = augmented_captions(rng, factors, keep_prob=float(keep_prob), full_prob=float(full_prob),
                                  template_prob=0.0)
    drop = rng.random(len(texts)) < float(dropout)
    return ["" if d else t for t, d in zip(texts, drop)]


class TextTower:
    """The frozen CLIP text tower and its tokenizer: ``ids(prompts) -> int32 [B, L]`` (padded to the tokenizer's
    ``model_max_length`` as diffusers' ``encode_prompt``; cached per prompt) and ``hidden(ids) -> [B, L, D]``."""

    def __init__(self, text_folder: str, tokenizer_folder: str):
        from jaxhspace.checkpoints.clip import load_clip_text, load_clip_tokenizer

        self.model, self.params = load_clip_text(text_folder)
        self.tokenizer = load_clip_tokenizer(tokenizer_folder)
        self._cache: dict[str, np.ndarray] = {}

    def ids(self, prompts) -> np.ndarray:
        new = [p for p in dict.fromkeys(prompts) if p not in self._cache]
        if new:
            tok = self.tokenizer(new, padding="max_length", max_length=self.tokenizer.model_max_length,
                                 truncation=True, return_tensors="np")["input_ids"]
            self._cache.update(zip(new, np.asarray(tok, np.int32)))
        return np.stack([self._cache[p] for p in prompts])

    def hidden(self, params, ids):
        return self.model.apply({"params": params}, ids)[0]


def latent_ddpm_loss(unet, params, schedule: Schedule, z0: jax.Array, context: jax.Array, key: jax.Array):
    """E_{t,ε}‖ε − ε_θ(z_t, t, context)‖² over the batch. ``z0``: [B, h, w, c] scaled latents; ``context``:
    [B, L, D] text hidden states."""
    kt, ke = jax.random.split(key)
    t = jax.random.randint(kt, (z0.shape[0],), 0, schedule.alphas_cumprod.shape[0])
    eps = jax.random.normal(ke, z0.shape, z0.dtype)
    a = schedule.alphas_cumprod[t][:, None, None, None]
    z_t = jnp.sqrt(a) * z0 + jnp.sqrt(1.0 - a) * eps
    pred = unet.apply({"params": params}, z_t, t, encoder_hidden_states=context)
    return jnp.mean((pred - eps) ** 2)


def make_latent_step(unet, vae, vae_params, scaling_factor: float, text: TextTower, schedule: Schedule, optimizer,
                     ema_decay: float, base_key: jax.Array):
    """Jitted ``step(state, (images [B, H, W, 3], ids [B, L])) -> (state, loss)``: encode (posterior sample),
    embed the text, one ε-MSE step, EMA. Randomness ``fold_in(base_key, step)``; state buffers donated."""
    text_params = text.params

    def step(state: DDPMState, batch):
        x, ids = batch
        k_vae, k_loss = jax.random.split(jax.random.fold_in(base_key, state.step))
        z0 = vae.apply({"params": vae_params}, x, method=vae.encode).sample(k_vae) * scaling_factor
        ctx = text.hidden(text_params, ids)
        loss, grads = jax.value_and_grad(
            lambda p: latent_ddpm_loss(unet, p, schedule, z0, ctx, k_loss))(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        params = optax.apply_updates(state.params, updates)
        ema = jax.tree.map(lambda e, p: ema_decay * e + (1.0 - ema_decay) * p, state.ema_params, params)
        return DDPMState(state.step + 1, params, ema, opt_state), loss

    return jax.jit(step, donate_argnums=(0,))


def scheduler_config(beta_schedule: str, beta_start: float, beta_end: float, num_train_timesteps: int) -> dict:
    """diffusers ``DDIMScheduler`` config of the training schedule (SD's: leading spacing, offset 1)."""
    return {"_class_name": "DDIMScheduler", "beta_schedule": beta_schedule, "beta_start": beta_start,
            "beta_end": beta_end, "num_train_timesteps": num_train_timesteps, "clip_sample": False,
            "set_alpha_to_one": False, "steps_offset": 1, "prediction_type": "epsilon",
            "timestep_spacing": "leading"}


def write_pipeline(folder: str, unet, params, scheduler: dict, text_folder: str, tokenizer_folder: str,
                   vae_folder: str):
    """Write the diffusers pipeline folder (see the module docstring) into the new folder ``folder``; ``scheduler``:
    the ``scheduler_config.json`` dict (:func:`scheduler_config`)."""
    from jaxhspace.checkpoints.common import write_json
    from jaxhspace.checkpoints.unet_condition import save_unet_condition_diffusers

    os.makedirs(folder)
    save_unet_condition_diffusers(os.path.join(folder, "unet"), unet, params)
    shutil.copytree(vae_folder, os.path.join(folder, "vae"), ignore=shutil.ignore_patterns(".*"))
    shutil.copytree(text_folder, os.path.join(folder, "text_encoder"), ignore=shutil.ignore_patterns(".*"))
    os.makedirs(os.path.join(folder, "tokenizer"))
    for f in TOKENIZER_FILES:
        if os.path.isfile(os.path.join(tokenizer_folder, f)):
            shutil.copy2(os.path.join(tokenizer_folder, f), os.path.join(folder, "tokenizer", f))
    os.makedirs(os.path.join(folder, "scheduler"))
    version = _diffusers_version()
    write_json(os.path.join(folder, "scheduler", "scheduler_config.json"),
               {"_diffusers_version": version, **scheduler})
    write_json(os.path.join(folder, "model_index.json"), {
        "_class_name": "StableDiffusionPipeline", "_diffusers_version": version,
        "unet": ["diffusers", "UNet2DConditionModel"], "vae": ["diffusers", "AutoencoderKL"],
        "text_encoder": ["transformers", "CLIPTextModel"], "tokenizer": ["transformers", "CLIPTokenizer"],
        "scheduler": ["diffusers", "DDIMScheduler"], "safety_checker": [None, None],
        "feature_extractor": [None, None], "image_encoder": [None, None], "requires_safety_checker": False})


def _diffusers_version() -> str:
    try:
        import diffusers
        return diffusers.__version__
    except ImportError:  # pragma: no cover
        return "0.30.0"
