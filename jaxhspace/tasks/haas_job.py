"""Job ``haas``: Haas et al.'s Jacobian directions J = ∂ε/∂h per test face, applied as their ``get_direction`` with
``global_at_idx`` and ``apply_svals`` (renhaa/semantic-diffusion@91f0a15:editing/direction_plotter.py:113-121): the unit
vector v_k(t_J) of ONE timestep t_J = ``jacobian_t`` is used at every edited step t, multiplied by that step's σ_k(t):
Δh_t = scale·σ_k(t)·v_k(t_J) (``sigma_schedule="per_step"``, the default). σ_k(t) comes from one top-k SVD per edited
grid step along the unedited DDIM trajectory from the inverted x_T (:func:`haas_trajectory_svd`).
``sigma_schedule="constant"`` instead uses σ_k(t_J) at every step (one SVD at the inverted x_{t_J}; not the official
scaling: σ_k(t) varies up to ~3× over t on the shipped DDPM). Grid rows: images; columns: input, reconstruction, then
directions × scales.

Haas' edits are symmetric (edited ε in both DDIM terms) by default; ``config.symmetric=False`` gives
Asyrp's asymmetric step instead. Their directions are image-specific, so each face gets its own.
"""
from __future__ import annotations

import os

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxhspace.data.plots import save_line_plot
from jaxhspace.diffusion.schedule import asyrp_timesteps
from jaxhspace.directions import haas_jacobian
from jaxhspace.directions.haas import haas_schedule_delta, haas_trajectory_svd
from jaxhspace.editing.asyrp_edit import ConstantDelta, asyrp_edit, invert, stack_deltas
from jaxhspace.errors import JaxhspaceError
from jaxhspace.tasks.inputs import invert_to
from jaxhspace.tasks.skeleton import Column, EditJob, Edits, Grid

SIGMA_SCHEDULES = ("per_step", "constant")


class HaasJob(EditJob):
    """Faces → inverted x_T → top-k SVD of ∂ε/∂h (per edited step, or once at t_J) → Δh_t = scale·σ·v added in the
    reverse process, per face and direction."""

    task = "haas"

    def validate(self, config) -> None:
        """``sigma_schedule`` name, ``svd_batch_steps``."""
        mode = config.get("sigma_schedule", "per_step")
        if mode not in SIGMA_SCHEDULES:
            raise JaxhspaceError(f"config.sigma_schedule must be 'per_step' (official σ_k(t) per step) or "
                                 f"'constant', got {mode!r}")
        nb = config.get("svd_batch_steps", 1)
        if isinstance(nb, bool) or not isinstance(nb, int) or nb < 1:
            raise JaxhspaceError(f"config.svd_batch_steps must be an int >= 1 (SVDs of the per-step schedule solved "
                                 f"together), got {nb!r}")

    def edit(self, config, world, faces, workdir) -> Edits:
        mode = config.get("sigma_schedule", "per_step")
        model, params, schedule = world.model, world.params, world.schedule
        grid = asyrp_timesteps(config.n_steps, schedule.num_train_timesteps - 1)[::-1]
        edited = [int(g) for g in grid if g >= config.t_edit]                             # steps that get Δh
        t_j = int(grid[np.argmin(np.abs(grid - config.jacobian_t))])                      # = invert_to's grid point
        if mode == "per_step" and t_j not in edited:
            raise JaxhspaceError(f"jacobian_t={config.jacobian_t} (grid point {t_j}) is below t_edit="
                                 f"{config.t_edit}: with sigma_schedule='per_step' the vector is taken on the edited "
                                 "steps; lower t_edit")
        x0 = jnp.asarray(faces)
        z0 = world.to_x(x0)                                                                # pixels or latents
        x_t, t = None, t_j
        if mode == "constant":                                                             # J at the inverted x_{t_J}
            x_t, t, _ = invert_to(model, params, schedule, z0, config.n_steps, config.jacobian_t)
        x_lat = invert(model, params, schedule, z0, config.n_steps)
        key = jax.random.PRNGKey(config.seed)
        kw = dict(n_test=config.n_steps, t_edit=config.t_edit, t_boost=config.t_boost, symmetric=config.symmetric,
                  key=key)
        recon = world.to_images(asyrp_edit(model, params, schedule, x_lat=x_lat, **kw)[0])  # [B, H, W, 3]
        svals: list = []
        products: list = []                                      # Jacobian products per face (None: per_step)
        edits: list = []
        schedules: list = []
        for i in tqdm(range(x0.shape[0]), desc="haas dε/dh SVD + edits"):
            if mode == "per_step":
                s_t, v_t = haas_trajectory_svd(model, params, schedule, x_lat[i], edited, config.k,
                                               jax.random.fold_in(key, i), tol=config.svd_tol,
                                               max_iters=config.svd_max_iters,
                                               batch_steps=config.get("svd_batch_steps", 1))  # [S, k], [S, k, h, w, C]
                j = edited.index(t)
                svals.append(s_t[j].tolist())
                schedules.append(s_t[:, :config.n_dirs].T.tolist())                       # [n_dirs, S]
                products.append(None)
                deltas = haas_schedule_delta(s_t, v_t, edited, j, range(config.n_dirs), "per_step")
            else:
                assert x_t is not None                           # "constant": inverted to t_J above
                res = haas_jacobian(model, params, x_t[i], t, config.k, jax.random.fold_in(key, i),
                                    tol=config.svd_tol, max_iters=config.svd_max_iters)
                svals.append(np.asarray(res.s).tolist())
                products.append(res.n_products)
                deltas = stack_deltas([ConstantDelta(res.s[d] * res.v[d]) for d in range(config.n_dirs)])
            out = asyrp_edit(model, params, schedule, x_lat=x_lat[i:i + 1], delta=deltas, scales=config.scales,
                             stacked=True, image_ids=[i], **kw)                           # [D, K, 1, H, W, C]
            edits.append(world.to_images(np.asarray(out)[:, :, 0]))
        E = np.stack(edits, axis=2)                                                        # [D, K, B, H, W, C]
        columns = [Column(E[d, k], f"v{d} x{s:g}", f"Haas v{d} x{s:g}", "haas", f"v{d}", s,
                          score={"direction": d, "scale": s})
                   for d in range(config.n_dirs) for k, s in enumerate(config.scales)]
        plot = save_line_plot(os.path.join(workdir, "haas_singular_values.png"),
                              {f"image {i}": s for i, s in enumerate(svals)}, "Haas singular values (∂ε/∂h)",
                              "index", "σ")
        metrics = {"jacobian_t": t, "k": config.k, "symmetric": config.symmetric, "sigma_schedule": mode,
                   "sigma_schedule_timesteps": edited if mode == "per_step" else None,
                   "sigma_per_step": schedules if mode == "per_step" else None, "singular_values": svals,
                   "jacobian_products": products, "singular_value_plot": plot}
        return Edits([Grid("haas_grid", recon, columns)], metrics)


JOB = HaasJob()
run, validate = JOB.run, JOB.validate
