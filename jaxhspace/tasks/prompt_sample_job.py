"""Job ``prompt_sample``: does a text-conditioned pipeline follow its prompts? CFG DDIM samples for prompts built
from random SynthFaces factor combinations, read back by the shipped probe, per factor and guidance scale, beside
the same read-back on data rendered with the prompted factors (the probe's ceiling) and on a random-init UNet.

    python -m jaxhspace.main --config configs/sd_synthfaces/sample.py --workdir runs/sd_sample

Prompts are full SynthFaces captions ("a smiling face with red hair, big eyes and glasses on a teal background");
smile is drawn as clearly smiling or frowning (|smile| ≥ 0.5) and eyes as big, small or unstated, so every stated
word has one right answer. Read-back rules (probe on the decoded samples, clipped to [-1, 1]): smile: the sign;
hair colour and background: the arg-max class; glasses: probability > 0.5; eyes (where stated): eye size above or
below 0.5. Skin tone is never stated in a caption, so it is not scored.
"""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np

from jaxhspace.data import synthfaces
from jaxhspace.data.images import save_grid
from jaxhspace.tasks.common import write_metrics

SCORED = ("smile", "hair_color", "background", "glasses", "eyes")


def prompt_factors(seed: int, n: int) -> dict:
    """``n`` random factor combinations with unambiguous captions (see the module docstring): {name: [n]}."""
    f = synthfaces.sample_factors(seed, n)
    rng = np.random.default_rng((seed, 1))
    f["smile"] = (np.where(rng.random(n) < 0.5, -1.0, 1.0) * rng.uniform(0.5, 1.0, n)).astype(np.float32)
    f["eye_size"] = rng.choice(np.array([0.15, 0.5, 0.85], np.float32), n)
    return f


def readback(scores: dict, factors: dict) -> dict:
    """Per-face correctness of each :data:`SCORED` factor: {name: bool [n] (NaN-free), "eyes_stated": bool [n]}."""
    stated_eyes = np.abs(factors["eye_size"] - 0.5) > 0.2
    return {"smile": np.sign(scores["smile"]) == np.sign(factors["smile"]),
            "hair_color": scores["hair_color"] == factors["hair_color"],
            "background": scores["background"] == factors["background"],
            "glasses": (scores["glasses"] > 0.5) == (factors["glasses"] == 1),
            "eyes": (scores["eye_size"] > 0.5) == (factors["eye_size"] > 0.5), "eyes_stated": stated_eyes}


def accuracy(correct: dict) -> dict:
    """Share correct per factor (eyes over the faces whose caption states them) and the share with all right."""
    out = {k: float(np.mean(correct[k])) for k in SCORED if k != "eyes"}
    st = correct["eyes_stated"]
    out["eyes"] = float(np.mean(correct["eyes"][st])) if st.any() else float("nan")
    all_ok = np.all([correct[k] for k in SCORED if k != "eyes"], axis=0) & (correct["eyes"] | ~st)
    out["all"] = float(np.mean(all_ok))
    return out


def validate(config) -> None:
    """Checks before any work."""
    if not config.get("model_path"):
        raise ValueError("config.model_path must be a text-conditioned diffusers pipeline folder "
                         "(e.g. assets/sd_synthfaces)")
    if not config.guidance_scales or any(float(g) < 0 for g in config.guidance_scales):
        raise ValueError(f"config.guidance_scales={config.guidance_scales} must be a non-empty list of scales >= 0")


def run(config, workdir: str) -> dict:
    """Sample ``config.num_prompts`` prompts at each of ``config.guidance_scales`` and score them."""
    from jaxhspace.checkpoints.pipeline import latents_to_images, load_pipeline
    from jaxhspace.diffusion.text_sampling import text_to_latents
    from jaxhspace.tasks.sample_job import probe_sample_scores
    from jaxhspace.world import DEFAULT_PROBE, resolve_asset

    validate(config)
    t_start = time.time()
    pipe = load_pipeline(resolve_asset(config.model_path))
    if pipe.text_encoder is None:
        raise ValueError(f"{config.model_path} is unconditional (no text_encoder): prompts do not apply")
    from jaxhspace.data import probe

    probe_p = probe.load_probe(DEFAULT_PROBE)
    n, bs = int(config.num_prompts), int(config.batch_size)
    factors = prompt_factors(int(config.prompt_seed), n)
    prompts = synthfaces.captions(factors)
    c = pipe.latent_channels
    s = pipe.unet.config.sample_size
    s = s if isinstance(s, int) else s[0]
    z_T = jax.random.normal(jax.random.PRNGKey(int(config.seed)), (n, s, s, c))

    def sample(g, unet_params=None):
        outs = []
        for a in range(0, n, bs):
            z0 = text_to_latents(pipe, prompts[a:a + bs], g, config.n_steps, z_T[a:a + bs], unet_params)
            outs.append(np.clip(np.asarray(latents_to_images(pipe, z0)), -1, 1))
        return np.concatenate(outs)

    rows, images = {}, {}
    data = synthfaces.render(factors, size=32)
    rows["data"] = accuracy(readback(probe.score(probe_p, data), factors))
    for g in config.guidance_scales:
        x = sample(float(g))
        images[f"guidance {g:g}"] = x
        rows[f"guidance {g:g}"] = {**accuracy(readback(probe.score(probe_p, x), factors)), **probe_sample_scores(x)}
    if config.get("random_init_baseline", True):
        dummy = jnp.zeros((1, s, s, c))
        rand = pipe.unet.init(jax.random.PRNGKey(int(config.seed) + 1), dummy, jnp.zeros((1,), jnp.int32),
                              encoder_hidden_states=jnp.zeros((1, 1, pipe.text_encoder.config.hidden_size)))["params"]
        g = float(config.get("random_init_guidance", 3.0))
        x = sample(g, rand)
        rows[f"random init, guidance {g:g}"] = accuracy(readback(probe.score(probe_p, x), factors))
    k = min(n, int(config.grid_cols) * 2)
    grid = save_grid(os.path.join(workdir, "samples.png"),
                     np.stack([data[:k]] + [v[:k] for v in images.values()], axis=0), upscale=config.upscale)
    metrics = {"task": "prompt_sample", "model": config.model_path, "num_prompts": n, "n_steps": config.n_steps,
               "guidance_scales": list(config.guidance_scales), "accuracy": rows, "prompts_shown": prompts[:k],
               "grid": grid, "grid_rows": ["data"] + list(images), "wall_s": time.time() - t_start}
    write_metrics(workdir, metrics)
    return metrics
