"""Job ``prompt_edit``: the non-h-space baseline of the latent demo: invert faces with a source prompt, sample them
back with a target prompt ("a face" -> "a smiling face"), and score the change against the source-prompt
reconstruction with the probe.

    python -m jaxhspace.main --config configs/sd_synthfaces/prompt_edit.py --workdir runs/sd_prompt_edit

Each edit is ``(target prompt, target factor)``; the factor ("smile", "glasses", "hair_color=red") names what the
prompt asks for, so the row reports its signed change and the largest change of any other factor (leakage).
Inversion and sampling use the pipeline's DDIM grid (:mod:`jaxhspace.diffusion.text_sampling`); inversion runs the
conditional branch only (guidance 1), sampling uses ``guidance_scale``.
"""
from __future__ import annotations

import os
import time

import jax.numpy as jnp
import numpy as np

from jaxhspace.data.images import save_grid
from jaxhspace.tasks.common import write_metrics


def validate(config) -> None:
    """Checks before any work."""
    if not config.get("model_path"):
        raise ValueError("config.model_path must be a text-conditioned diffusers pipeline folder")
    for e in config.edits:
        if len(e) != 2 or not all(isinstance(v, str) for v in e):
            raise ValueError(f"config.edits entries must be (target prompt, target factor) string pairs, got {e!r}")


def run(config, workdir: str) -> dict:
    """Invert ``config.num_images`` faces with ``config.source_prompt``; sample each ``config.edits`` prompt."""
    from jaxhspace.checkpoints.pipeline import images_to_latents, latents_to_images
    from jaxhspace.diffusion.text_sampling import invert_with_prompt, text_to_latents
    from jaxhspace.editing.scoring import factor_changes, load_default_probe, target_effect
    from jaxhspace.tasks.inputs import load_world, test_images

    validate(config)
    t0 = time.time()
    world = load_world(config)
    pipe = world.pipeline
    if pipe is None or pipe.text_encoder is None:
        raise ValueError(f"config.model_path={config.model_path!r} is not a text-conditioned pipeline folder")
    size = world.image_size
    x0 = np.asarray(test_images(config, world))
    z_T = invert_with_prompt(pipe, images_to_latents(pipe, jnp.asarray(x0)), config.source_prompt, config.n_steps)
    n = len(x0)

    def sample(prompt, g):
        return np.asarray(latents_to_images(pipe, text_to_latents(pipe, [prompt] * n, g, config.n_steps, z_T)))

    recon = sample(config.source_prompt, 1.0)
    edited = [sample(p, float(config.guidance_scale)) for p, _ in config.edits]
    probe_p = load_default_probe(size)
    scores = []
    if probe_p is not None:
        for (prompt, target), e in zip(config.edits, edited):
            t = target_effect(probe_p, recon, e, target)
            scores.append({"prompt": prompt, "target": target, "target_change": t["target_change"],
                           "max_leakage": t["max_leakage"], **factor_changes(probe_p, recon, e)})
    grid = save_grid(os.path.join(workdir, "prompt_edit_grid.png"), np.stack([x0, recon] + edited, axis=1),
                     upscale=config.upscale)
    metrics = {"task": "prompt_edit", "model": config.model_path, "source_prompt": config.source_prompt,
               "guidance_scale": config.guidance_scale, "n_steps": config.n_steps,
               "columns": ["input", f"reconstruction ({config.source_prompt!r})"] + [p for p, _ in config.edits],
               "reconstruction_mse": float(np.mean((np.clip(recon, -1, 1) - x0) ** 2)),
               "edit_scores": scores, "grid": grid, "wall_s": time.time() - t0}
    write_metrics(workdir, metrics)
    return metrics
