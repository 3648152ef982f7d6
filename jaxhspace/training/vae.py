"""Train a tiny ``AutoencoderKL`` on SynthFaces (the VAE of the embedded text-conditioned default), resumably,
and export it as a diffusers ``AutoencoderKL`` folder.

The job is :mod:`jaxhspace.tasks.vae_train_job`:
``python -m jaxhspace.main --config configs/sd_synthfaces/vae.py --workdir runs/sd_vae``
(re-running resumes from the newest checkpoint in ``workdir/checkpoints``).

Loss per image (Rombach et al. 2022, "High-Resolution Image Synthesis with Latent Diffusion Models", App. G: a
reconstruction term, a perceptual term and a small KL to N(0, I); the discriminator is left out):

    Σ_pixels (x̂ − x)² + perceptual_weight · ‖φ(x̂) − φ(x)‖² + kl_weight · KL(q(z|x) ‖ N(0, I))

with x̂ decoded from a posterior *sample*, and φ the shipped SynthFaces probe's penultimate features (frozen; the
perceptual term keeps the 2-pixel mouth curve and the glasses that a pixel loss alone blurs). After training the
latent scale is set as Stable Diffusion's was: ``scaling_factor = 1 / std`` of posterior samples of held-out faces
(SD's 0.18215 came from the same recipe), written into the exported ``config.json``.
"""
from __future__ import annotations

import os
from typing import cast

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxhspace.data import synthfaces
from jaxhspace.data.probe import load_probe
from jaxhspace.models.vae import AutoencoderKL, DiagonalGaussian

WORKDIR_FILES = ("checkpoints", "train_log.jsonl", "metrics.json", "run_config.json")


@flax.struct.dataclass
class VAEState:
    """Train state: ``step`` (int32 scalar), ``params``, ``opt_state``."""

    step: jax.Array
    params: dict
    opt_state: optax.OptState


def kl_to_standard_normal(mean: jax.Array, logvar: jax.Array) -> jax.Array:
    """KL(N(mean, exp(logvar)) ‖ N(0, I)) summed over the latent, per image: [B, h, w, c] -> [B]."""
    return 0.5 * jnp.sum(mean ** 2 + jnp.exp(logvar) - 1.0 - logvar, axis=(1, 2, 3))


def vae_loss(vae: AutoencoderKL, params, x: jax.Array, key: jax.Array, probe_fn, kl_weight: float,
             perceptual_weight: float) -> tuple[jax.Array, dict]:
    """The loss of the module docstring, averaged over the batch. ``x``: [B, H, W, 3] in [-1, 1];
    ``probe_fn(images) -> features [B, D]`` (frozen). Returns ``(loss, parts)``."""
    post = cast(DiagonalGaussian, vae.apply({"params": params}, x, method=vae.encode))
    x_hat = cast(jax.Array, vae.apply({"params": params}, post.sample(key), method=vae.decode))
    rec = jnp.sum((x_hat - x) ** 2, axis=(1, 2, 3))
    perc = jnp.sum((probe_fn(x_hat) - probe_fn(x)) ** 2, axis=-1) if perceptual_weight else jnp.zeros_like(rec)
    kl = kl_to_standard_normal(post.mean, post.logvar)
    loss = jnp.mean(rec + perceptual_weight * perc + kl_weight * kl)
    return loss, {"rec": jnp.mean(rec), "perceptual": jnp.mean(perc), "kl": jnp.mean(kl)}


def make_vae_optimizer(lr: float, final_lr: float, warmup_steps: int, total_steps: int,
                       grad_clip: float) -> optax.GradientTransformation:
    """Adam with global-norm clipping on a linear warm-up (0 -> ``lr`` over ``warmup_steps``) and a cosine decay
    to ``final_lr`` at ``total_steps``."""
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, warmup_steps, total_steps, final_lr)
    return optax.chain(optax.clip_by_global_norm(grad_clip), optax.adam(sched))


def batch_for_step(seed: int, step: int, batch_size: int, size: int) -> np.ndarray:
    """The SynthFaces batch of a given step, a pure function of (seed, step) (exact resume). [B, S, S, 3]."""
    return synthfaces.generate(seed * 1_000_003 + step, batch_size, size=size)[0]


def make_vae_step(vae: AutoencoderKL, optimizer, base_key: jax.Array, probe_fn, kl_weight: float,
                  perceptual_weight: float):
    """Jitted ``step(state, x) -> (state, loss)``; randomness ``fold_in(base_key, step)`` (exact resume)."""

    def step(state: VAEState, x):
        key = jax.random.fold_in(base_key, state.step)
        (loss, _), grads = jax.value_and_grad(
            lambda p: vae_loss(vae, p, x, key, probe_fn, kl_weight, perceptual_weight), has_aux=True)(state.params)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        return VAEState(state.step + 1, optax.apply_updates(state.params, updates), opt_state), loss

    return jax.jit(step, donate_argnums=(0,))


def probe_feature_fn(probe_path: str = ""):
    """Differentiable ``images [B, 32, 32, 3] -> probe features [B, D]`` of the (frozen) SynthFaces probe."""
    model, params = load_probe(probe_path or None)
    params = jax.lax.stop_gradient(params)
    return lambda x: model.apply({"params": params}, x)[1]


def latent_scaling_factor(vae: AutoencoderKL, params, seed: int, n: int = 1024, size: int = 32) -> float:
    """``1 / std`` of posterior samples of ``n`` held-out faces (the recipe of SD's 0.18215)."""
    x, _ = synthfaces.generate(seed, n, size=size)
    post = jax.jit(lambda p, x: vae.apply({"params": p}, x, method=vae.encode))(params, jnp.asarray(x))
    z = post.sample(jax.random.PRNGKey(seed))
    return float(1.0 / jnp.std(z))


def reconstruction_metrics(vae: AutoencoderKL, params, seed: int, n: int = 512, size: int = 32) -> dict:
    """Held-out reconstruction from the posterior mean: per-pixel MSE and PSNR (images in [-1, 1], peak-to-peak
    2), and the probe's factor agreement between faces and reconstructions (smile/skin/eye: mean |Δ|; hair,
    background: class agreement; glasses: agreement of the > 0.5 decision)."""
    from jaxhspace.data import probe

    x, _ = synthfaces.generate(seed, n, size=size)
    rec = np.asarray(jax.jit(lambda p, x: vae.apply({"params": p}, x))(params, jnp.asarray(x)))
    mse = float(np.mean((rec - x) ** 2))
    pp = load_probe()
    a, b = probe.score(pp, x), probe.score(pp, np.clip(rec, -1, 1))
    out = {"mse": mse, "psnr_db": float(10 * np.log10(4.0 / mse))}
    for name, f in synthfaces.FACTORS.items():
        if f.kind == "continuous":
            out[f"probe_{name}_abs_diff"] = float(np.mean(np.abs(a[name] - b[name])))
        elif f.kind == "binary":
            out[f"probe_{name}_agree"] = float(np.mean((a[name] > 0.5) == (b[name] > 0.5)))
        else:
            out[f"probe_{name}_agree"] = float(np.mean(a[name] == b[name]))
    return out


def save_vae_diffusers(folder: str, vae: AutoencoderKL, params: dict, scaling_factor: float | None = None,
                       overwrite: bool = False) -> None:
    """Write a folder that ``diffusers.AutoencoderKL.from_pretrained`` loads (config.json + float32 safetensors),
    atomically; ``scaling_factor`` (if given) replaces the config's."""
    from jaxhspace.checkpoints.common import atomic_directory, save_state_dict_safetensors, write_json
    from jaxhspace.checkpoints.vae import vae_params_to_state_dict

    cfg = vae.config.to_dict()
    if scaling_factor is not None:
        cfg["scaling_factor"] = float(scaling_factor)
    state_dict = {k: np.asarray(v, np.float32) for k, v in vae_params_to_state_dict(jax.device_get(params)).items()}
    with atomic_directory(folder, overwrite=overwrite) as tmp:
        write_json(os.path.join(tmp, "config.json"), {"_class_name": "AutoencoderKL",
                                                      "_diffusers_version": _diffusers_version(), **cfg})
        save_state_dict_safetensors(os.path.join(tmp, "diffusion_pytorch_model.safetensors"), state_dict)


def _diffusers_version() -> str:
    try:
        import diffusers
        return diffusers.__version__
    except ImportError:  # pragma: no cover
        return "0.30.0"
