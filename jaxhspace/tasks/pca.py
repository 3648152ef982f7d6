"""Job ``pca``: Haas et al.'s PCA of h per timestep over real faces (``get_PCs_indv``) and the supervised
mean-difference direction for a known factor, both applied as per-timestep Δh tables:
PCA: Δh_t = scale·std_t(k)·u_t(k) (signs aligned over t to the first grid step, as official);
supervised: Δh_t = scale·(mean h_t of positives − mean h_t of negatives) for ``config.supervised_factor``.
Grid rows: images; columns: input, reconstruction, PCs × scales, supervised × scales.
"""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxhspace.data import synthfaces
from jaxhspace.data.images import save_grid
from jaxhspace.data.plots import save_line_plot
from jaxhspace.diffusion.ddim import ddim_invert
from jaxhspace.diffusion.schedule import asyrp_timesteps
from jaxhspace.directions import collect_h, mean_difference, pca
from jaxhspace.editing.asyrp_edit import TableDelta, asyrp_edit, invert, stack_deltas
from jaxhspace.editing.scoring import factor_changes, load_default_probe
from jaxhspace.models.functional import eps_fn
from jaxhspace.tasks.common import write_metrics
from jaxhspace.tasks.inputs import image_size, test_images
from jaxhspace.world import load_model


def trajectory_h(model, params, schedule, x0, grid):
    """h at every grid timestep along the DDIM inversion of ``x0 [N,H,W,C]``: ``[S, N, h, w, C]`` for the
    ascending ``grid [S]`` (h at grid[0] is taken on x0 itself)."""
    _, traj = ddim_invert(eps_fn(model, params), jnp.asarray(x0), grid, schedule, return_trajectory=True)
    xs = [jnp.asarray(x0)] + [traj["x"][i] for i in range(len(grid) - 1)]
    return np.stack([collect_h(model, params, x, int(t)) for x, t in zip(xs, grid)])


def run(config, workdir: str) -> dict:
    """See the module docstring; fields in ``configs/pca.py``."""
    model, params, schedule, source = load_model(config.model_path, config.seed)
    t_start = time.time()
    grid = asyrp_timesteps(config.n_steps, schedule.num_train_timesteps - 1)
    data, factors = synthfaces.generate(config.pca_data_seed, config.num_pca_samples, size=image_size(model))
    H = trajectory_h(model, params, schedule, data, grid)                                 # [S, N, h, w, C]
    comps, stds, ratios = [], [], []
    for s in tqdm(range(len(grid)), desc="PCA of h per t"):
        res = pca(H[s], config.k)
        comps.append(res.components)
        stds.append(res.std)
        ratios.append(res.explained_variance_ratio.tolist())
    comps, stds = np.stack(comps), np.stack(stds)                                          # [S, k, ...], [S, k]
    ref = comps[-1].reshape(config.k, -1)                                                  # align to t = 999
    signs = np.sign(np.einsum("skd,kd->sk", comps.reshape(len(grid), config.k, -1), ref))
    comps = comps * np.where(signs == 0, 1, signs)[:, :, None, None, None]
    f = synthfaces.FACTORS[config.supervised_factor]
    v = factors[config.supervised_factor]
    pos, neg = (v > 0.5 * f.high, v < 0.5 * f.low) if f.kind == "continuous" else (v == 1, v == 0)
    sup = np.stack([mean_difference(H[s][pos], H[s][neg]) for s in range(len(grid))])     # [S, h, w, C]

    ts = tuple(int(t) for t in grid)
    tables = [TableDelta(jnp.asarray(stds[:, d, None, None, None] * comps[:, d]), ts) for d in range(config.n_dirs)]
    tables.append(TableDelta(jnp.asarray(sup), ts))
    x0 = jnp.asarray(test_images(config, model))
    x_lat = invert(model, params, schedule, x0, config.n_steps)
    kw = dict(n_test=config.n_steps, t_edit=config.t_edit, t_boost=config.t_boost, symmetric=config.symmetric,
              key=jax.random.PRNGKey(config.seed))
    recon = np.asarray(asyrp_edit(model, params, schedule, x_lat=x_lat, **kw)[0])
    E = np.asarray(asyrp_edit(model, params, schedule, x_lat=x_lat, delta=stack_deltas(tables),
                              scales=config.scales, stacked=True, **kw))                   # [D+1, K, B, H, W, C]
    names = [f"PC{d}" for d in range(config.n_dirs)] + [f"supervised {config.supervised_factor}"]
    labels = [f"{n} x{s:g}" for n in names for s in config.scales]
    cols = [np.asarray(x0), recon] + [E[d, k] for d in range(len(names)) for k in range(len(config.scales))]
    grid_png = save_grid(os.path.join(workdir, "pca_grid.png"), np.stack(cols, axis=1), upscale=config.upscale)
    plot = save_line_plot(os.path.join(workdir, "pca_std.png"), {f"t={grid[s]}": stds[s] for s in (0, len(grid) // 2, len(grid) - 1)},
                          "std of h along each PC", "PC", "std")
    probe_params = load_default_probe()
    scores = []
    if probe_params is not None:
        for d, n in enumerate(names):
            for k, s in enumerate(config.scales):
                scores.append({"direction": n, "scale": s, **factor_changes(probe_params, recon, E[d, k])})
    metrics = {"task": "pca", "model": source, "timesteps": list(ts), "pc_std": stds.tolist(),
               "explained_variance_ratio": ratios, "columns": ["input", "reconstruction"] + labels,
               "edit_scores": scores, "grid": grid_png, "std_plot": plot, "wall_s": time.time() - t_start,
               "supervised": {"factor": config.supervised_factor, "n_pos": int(pos.sum()), "n_neg": int(neg.sum())}}
    write_metrics(workdir, metrics)
    return metrics
