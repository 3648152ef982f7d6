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

import jax.numpy as jnp
import numpy as np

from jaxhspace.errors import JaxhspaceError
from jaxhspace.tasks.skeleton import Column, EditJob, Edits, Grid


class PromptEditJob(EditJob):
    """Faces → VAE latents → DDIM inversion with the source prompt → sampled with each target prompt."""

    task = "prompt_edit"

    def validate(self, config) -> None:
        """A pipeline folder; ``edits`` as (prompt, factor) string pairs."""
        if not config.get("model_path"):
            raise JaxhspaceError("config.model_path must be a text-conditioned diffusers pipeline folder")
        for e in config.edits:
            if len(e) != 2 or not all(isinstance(v, str) for v in e):
                raise JaxhspaceError(f"config.edits entries must be (target prompt, target factor) string pairs, "
                                     f"got {e!r}")

    def edit(self, config, world, faces, workdir) -> Edits:
        from jaxhspace.checkpoints.pipeline import images_to_latents, latents_to_images
        from jaxhspace.diffusion.text_sampling import invert_with_prompt, text_to_latents

        pipe = world.pipeline
        if pipe is None or pipe.text_encoder is None:
            raise JaxhspaceError(f"config.model_path={config.model_path!r} is not a text-conditioned pipeline folder")
        x0 = faces
        z_T = invert_with_prompt(pipe, images_to_latents(pipe, jnp.asarray(x0)), config.source_prompt,
                                 config.n_steps)
        n = len(x0)

        def sample(prompt, g):
            return np.asarray(latents_to_images(pipe, text_to_latents(pipe, [prompt] * n, g, config.n_steps, z_T)))

        recon = sample(config.source_prompt, 1.0)
        columns = [Column(sample(p, float(config.guidance_scale)), p,
                          f"prompt edit {config.source_prompt!r} -> {p!r}", "prompt", p, None, target=target,
                          score={"prompt": p})
                   for p, target in config.edits]
        metrics = {"model": config.model_path, "source_prompt": config.source_prompt,
                   "guidance_scale": config.guidance_scale, "n_steps": config.n_steps,
                   "reconstruction_mse": float(np.mean((np.clip(recon, -1, 1) - x0) ** 2))}
        return Edits([Grid("prompt_edit_grid", recon, columns)], metrics)

    def finish(self, config, metrics, scored, paths) -> None:
        """The reconstruction column's header names the source prompt; each ``edit_scores`` entry has the prompt,
        its target factor (a string) and that target's signed change beside every factor's change."""
        metrics["columns"][1] = f"reconstruction ({config.source_prompt!r})"
        metrics["edit_scores"] = [{"prompt": s.column.direction, "target": s.column.target,
                                   "target_change": s.target["target_change"], "max_leakage": s.target["max_leakage"],
                                   **s.probe} for s in scored["prompt_edit_grid"] if s.probe is not None]


JOB = PromptEditJob()
run, validate = JOB.run, JOB.validate
