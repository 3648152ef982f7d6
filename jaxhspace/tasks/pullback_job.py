"""Job ``pullback``: Park et al.'s pullback directions (J = ∂h/∂x) at an edit time, edits along the top
ones, a grid (rows: images; columns: input, reconstruction, then each direction at -/+), the singular
values as JSON and a plot, and the probe's factor changes for every edit.

On a VE-SDE score model (NCSN++, a ``kind="ve"`` World: ``configs/ncsnpp/pullback.py``) the same job runs with t = σ:
x_σ = x0 + σ z at ``config.edit_sigma`` (no inversion; :func:`~jaxhspace.tasks.inputs.noise_to_sigma`), J = ∂h/∂x
at (x_σ, σ), edits with ε = −σ·score, and predictor-corrector sampling from σ to 0
(:func:`~jaxhspace.tasks.inputs.ve_continue_sampling`, ``config.n_steps`` steps over the whole σ range).

``config.park_grid`` / ``config.park_inversion`` (default ``"asyrp"`` / ``"to_edit_t"``; ``"official"`` / ``"official"``
reproduce the official code's float grid, boosting boundary, last step to ᾱ_0 and x_t from the truncated inversion):
see :mod:`jaxhspace.editing.pullback_edit` and :func:`~jaxhspace.editing.pullback_edit.park_invert`.
"""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxhspace.data.plots import save_line_plot
from jaxhspace.diffusion import ve_sde
from jaxhspace.directions import pullback
from jaxhspace.editing.pullback_edit import PARK_GRIDS, PARK_INVERSIONS, continue_sampling, edit_steps, park_invert
from jaxhspace.errors import JaxhspaceError
from jaxhspace.models.functional import eps_fn
from jaxhspace.tasks.inputs import noise_to_sigma, ve_continue_sampling
from jaxhspace.tasks.skeleton import Column, EditJob, Edits, Grid


class PullbackJob(EditJob):
    """Faces → x_t (DDIM inversion, or x0 + σz on a VE model) → top-k SVD of ∂h/∂x per face → x̂ = x + γ[ε(x+λv) −
    ε(x)] for each direction and sign → sampled down."""

    task = "pullback"

    def validate(self, config) -> None:
        """``park_grid`` / ``park_inversion`` names."""
        grid, inversion = config.get("park_grid", "asyrp"), config.get("park_inversion", "to_edit_t")
        if grid not in PARK_GRIDS:
            raise JaxhspaceError(f"config.park_grid must be one of {PARK_GRIDS} (\"official\": the official float "
                                 f"grid), got {grid!r}.")
        if inversion not in PARK_INVERSIONS:
            raise JaxhspaceError(f"config.park_inversion must be one of {PARK_INVERSIONS} (\"official\": x_t from the "
                                 f"inversion truncated before its last step), got {inversion!r}.")

    def edit(self, config, world, faces, workdir) -> Edits:
        park_grid, park_inversion = config.get("park_grid", "asyrp"), config.get("park_inversion", "to_edit_t")
        model, params, schedule = world.model, world.params, world.schedule
        x0 = faces
        f = eps_fn(model, params)
        key = jax.random.PRNGKey(config.seed)
        ve = world.kind == "ve"
        if ve and (park_grid, park_inversion) != ("asyrp", "to_edit_t"):
            raise JaxhspaceError(f"config.park_grid = {park_grid!r} / config.park_inversion = {park_inversion!r} "
                                 "apply to DDIM (VP) models only; a VE-SDE (NCSN++) model samples from "
                                 "config.edit_sigma: set park_grid='asyrp' and park_inversion='to_edit_t'.")
        if ve:  # NCSN++: t is σ, f is the score; edits use ε = −σ·score
            noise_key, key = jax.random.split(key)
            x_t, t, ve_start, ve_sched = noise_to_sigma(world, world.to_x(x0), config.n_steps,
                                                         _edit_sigma(config), noise_key)
            snr = float(config.get("snr", schedule.get("snr", 0.15)))
            correct = int(config.get("correct_steps", schedule.get("correct_steps", 1)))

            def finish(groups):  # [G, N, H, W, C] at σ -> images [G, N, S, S, 3]
                return world.to_images(ve_continue_sampling(model, params, groups, ve_sched, ve_start, key, snr,
                                                            correct))

            f_edit = ve_sde.eps_fn_from_score(f)
            recon = finish(x_t[None])[0]
        else:
            x_t, t, grid = park_invert(f, world.to_x(x0), schedule, config.n_steps, config.edit_t, park_grid,
                                       park_inversion)
            recon = world.to_images(continue_sampling(f, x_t, grid, schedule, config.t_boost, key))
            f_edit = f

        bases, svals, products, svd_s = [], [], [], []
        for i in tqdm(range(x_t.shape[0]), desc="pullback SVD"):
            t0 = time.time()
            res = pullback(model, params, x_t[i], t, config.k, jax.random.fold_in(key, i), method=config.svd_method,
                           tol=config.svd_tol, max_iters=config.svd_max_iters)
            svd_s.append(time.time() - t0)
            bases.append(np.asarray(res.v))
            svals.append(np.asarray(res.s).tolist())
            products.append(res.n_products)
        V = np.stack(bases)                                     # [N, k, H, W, C] (of x: pixels or latents)

        # Every (direction, sign) for every image in one batch: [D*2*N, H, W, C].
        combos = [(d, s) for d in range(config.n_dirs) for s in (-1.0, 1.0)]
        dirs = np.concatenate([s * V[:, d] for d, s in combos])
        xs = jnp.tile(x_t, (len(combos), 1, 1, 1))
        edited_t = edit_steps(f_edit, xs, t, jnp.asarray(dirs), config.gamma, config.n_edit_steps, config.lam)
        if ve:
            edited = finish(edited_t.reshape(len(combos), *x_t.shape))
        else:
            edited = world.to_images(continue_sampling(f, edited_t, grid, schedule, config.t_boost, key))
        edited = edited.reshape(len(combos), *x0.shape)       # [combos, N, H, W, C] images

        columns = [Column(edited[c], f"v{d}{'+' if s > 0 else '-'}", f"pullback v{d} {'+' if s > 0 else '-'}",
                          "pullback", f"v{d}", s, score={"direction": d, "sign": s})
                   for c, (d, s) in enumerate(combos)]
        plot = save_line_plot(os.path.join(workdir, "pullback_singular_values.png"),
                              {f"image {i}": s for i, s in enumerate(svals)}, "pullback singular values (∂h/∂x)",
                              "index", "σ")
        metrics = {"edit_t": t, "k": config.k, "svd_method": config.svd_method, "singular_values": svals,
                   "jacobian_products": products, "svd_wall_s": svd_s, "singular_value_plot": plot}
        if ve:  # "edit_t" above is σ
            metrics.update(model_kind="ve", edit_sigma=t, ve_steps=config.n_steps, ve_start_step=ve_start, snr=snr,
                           correct_steps=correct)
        else:  # "edit_t" above is a float on the official grid (595.36 for edit_t 600 and 100 steps)
            metrics.update(park_grid=park_grid, park_inversion=park_inversion)
        return Edits([Grid("pullback_grid", recon, columns)], metrics)


def _edit_sigma(config) -> float:
    """``config.edit_sigma`` (the VE edit noise level), with an error naming the VE config if it is missing."""
    sigma = config.get("edit_sigma")
    if sigma is None:
        raise JaxhspaceError("config.model_path is a VE-SDE (NCSN++) model: set config.edit_sigma (the noise level σ "
                             "of the edit), e.g. run configs/ncsnpp/pullback.py.")
    return float(sigma)


JOB = PullbackJob()
run, validate = JOB.run, JOB.validate
