"""Train the tiny text-conditioned latent DDPM of the embedded default (a Stable-Diffusion-format pipeline on
SynthFaces), resumably, and export the whole diffusers pipeline folder.

Run: ``python -m jaxhspace.main --config configs/sd_synthfaces/unet.py --workdir runs/sd_unet``
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

import json
import os
import shutil
from typing import Any

import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxhspace.data import synthfaces
from jaxhspace.diffusion.schedule import Schedule, make_schedule
from jaxhspace.models.unet_condition import UNet2DConditionModel, UNetConditionConfig
from jaxhspace.training.ddpm import DDPMState, make_optimizer
from jaxhspace.training.loop import BOOKKEEPING, run_training
from jaxhspace.training.safety import check_export_dir, export_folder

WORKDIR_FILES = ("checkpoints", "train_log.jsonl", "metrics.json", "run_config.json")
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer_config.json", "special_tokens_map.json")


def unet_config(config) -> UNetConditionConfig:
    """The :class:`UNetConditionConfig` of ``config.unet`` (diffusers field names)."""
    return UNetConditionConfig(**dict(config.unet))


def batch_captions(config, step: int, factors: dict) -> list[str]:
    """Captions of step ``step``'s faces: attributes kept with ``caption_keep_prob`` (the full caption with
    ``caption_full_prob``), then replaced by ``""`` with ``caption_dropout`` (rng ``(seed, step, 1)``)."""
    from jaxhspace.training.clip_synthfaces import augmented_captions

    rng = np.random.default_rng((int(config.seed), int(step), 1))
    texts, _ = augmented_captions(rng, factors, keep_prob=float(config.caption_keep_prob),
                                  full_prob=float(config.caption_full_prob), template_prob=0.0)
    drop = rng.random(len(texts)) < float(config.caption_dropout)
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


def scheduler_config(config) -> dict:
    """diffusers ``DDIMScheduler`` config of the training schedule (SD's: leading spacing, offset 1)."""
    return {"_class_name": "DDIMScheduler", "beta_schedule": config.beta_schedule, "beta_start": config.beta_start,
            "beta_end": config.beta_end, "num_train_timesteps": config.num_train_timesteps, "clip_sample": False,
            "set_alpha_to_one": False, "steps_offset": 1, "prediction_type": "epsilon",
            "timestep_spacing": "leading"}


def write_pipeline(folder: str, unet, params, config, text_folder: str, tokenizer_folder: str, vae_folder: str):
    """Write the diffusers pipeline folder (see the module docstring) into the new folder ``folder``."""
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
               {"_diffusers_version": version, **scheduler_config(config)})
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


def _resolve(path: str) -> str:
    from jaxhspace.world import resolve_asset

    return resolve_asset(path)


def validate(config) -> None:
    """Config checks run before any work (ValueError naming the field and the fix)."""
    unet_config(config)
    for field in ("caption_dropout", "caption_keep_prob", "caption_full_prob"):
        if not 0.0 <= float(config[field]) <= 1.0:
            raise ValueError(f"{field}={config[field]} must be in [0, 1]")
    if not 0.0 <= float(config.ema_decay) < 1.0:
        raise ValueError(f"ema_decay={config.ema_decay} must be in [0, 1)")
    for field in ("vae_path", "clip_path"):
        if not os.path.isfile(os.path.join(_resolve(config[field]), "config.json")):
            raise ValueError(f"{field}={config[field]!r} has no config.json: train the VAE first "
                             "(configs/sd_synthfaces/vae.py) or point it at a diffusers AutoencoderKL folder"
                             if field == "vae_path" else f"{field}={config[field]!r} is not a CLIP folder")


def train_latent_ddpm(config, workdir: str) -> dict:
    """Train (or resume) the text-conditioned latent UNet; at ``total_steps`` export the pipeline folder.

    Returns metrics (also in ``workdir/metrics.json``).
    """
    from jaxhspace.checkpoints.clip import save_text_encoder_from_clip
    from jaxhspace.checkpoints.vae import load_vae

    validate(config)
    export_dir = check_export_dir(config.get("export_dir"), workdir, WORKDIR_FILES + ("text_encoder",),
                                  bool(config.get("allow_asset_export", False)))
    vae_folder, clip_folder = _resolve(config.vae_path), _resolve(config.clip_path)
    vae, vae_params = load_vae(vae_folder)
    os.makedirs(workdir, exist_ok=True)
    text_folder = os.path.join(workdir, "text_encoder")
    if not os.path.isdir(text_folder):
        save_text_encoder_from_clip(text_folder, clip_folder)
    text = TextTower(text_folder, clip_folder)
    ucfg = unet_config(config)
    if ucfg.cross_attention_dim != text.model.config.hidden_size:
        raise ValueError(f"unet.cross_attention_dim={ucfg.cross_attention_dim} must equal the text tower's "
                         f"hidden_size={text.model.config.hidden_size}")
    unet = UNet2DConditionModel(ucfg)
    schedule = make_schedule(config.beta_schedule, config.beta_start, config.beta_end, config.num_train_timesteps)
    size, f = int(config.image_size), vae.config.downsample_factor
    init_key, train_key = jax.random.split(jax.random.PRNGKey(config.seed))
    dummy = jnp.zeros((1, size // f, size // f, ucfg.in_channels))
    params = unet.init(init_key, dummy, jnp.zeros((1,), jnp.int32),
                       encoder_hidden_states=jnp.zeros((1, 1, ucfg.cross_attention_dim)))["params"]
    optimizer = make_optimizer(config.lr, config.warmup_steps, config.grad_clip)
    state = DDPMState(jnp.array(0, jnp.int32), params, jax.tree.map(jnp.copy, params), optimizer.init(params))
    step_fn = make_latent_step(unet, vae, vae_params, float(vae.config.scaling_factor), text, schedule, optimizer,
                               float(config.ema_decay), train_key)

    def batch_fn(step):
        images, factors = synthfaces.generate(config.seed * 1_000_003 + step, config.batch_size, size=size)
        return jnp.asarray(images), jnp.asarray(text.ids(batch_captions(config, step, factors)))

    # warm-up then a constant lr: the weights up to any step do not depend on total_steps, so it may change on resume
    harmless = {"total_steps": "the learning rate does not depend on it"}
    res = run_training(config, workdir, state, step_fn, batch_fn, "latent-ddpm", BOOKKEEPING, harmless)
    state = res.state
    metrics: dict[str, Any] = {"steps_done": int(state.step), "total_steps": int(config.total_steps),
               "params": int(sum(np.prod(a.shape) for a in jax.tree.leaves(state.params))),
               "wall_s_this_run": res.wall_s, "final_loss": res.final_loss,
               "stopped_early": res.stopped_early}
    if int(state.step) >= config.total_steps and export_dir:
        ema = jax.device_get(state.ema_params)
        export_folder(export_dir, lambda p: write_pipeline(p, unet, ema, config, text_folder, clip_folder,
                                                           vae_folder),
                      job="latent_ddpm_train", extra={"steps": int(state.step)})
        metrics["exported_to"] = export_dir
    with open(os.path.join(workdir, "metrics.json"), "w") as fh:
        json.dump(metrics, fh, indent=2)
    return metrics
