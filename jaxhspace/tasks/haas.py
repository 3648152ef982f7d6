"""Job ``haas``: Haas et al.'s Jacobian directions J = ∂ε/∂h per test face at one timestep, applied as
Δh = scale·σ_k·v_k (their ``apply_svals`` with ``global_at_idx``: one timestep's vector, used at every
edited step). Grid rows: images; columns: input, reconstruction, then directions × scales.

Haas' edits are symmetric (edited ε in both DDIM terms) by default; ``config.symmetric=False`` gives
Asyrp's asymmetric step instead. Their directions are image-specific, so each face gets its own.
"""
from __future__ import annotations

import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxhspace.data.images import save_grid
from jaxhspace.data.plots import save_line_plot
from jaxhspace.directions import haas_jacobian
from jaxhspace.editing.asyrp_edit import ConstantDelta, asyrp_edit, invert, stack_deltas
from jaxhspace.editing.scoring import factor_changes, load_default_probe
from jaxhspace.tasks.common import write_metrics
from jaxhspace.tasks.inputs import invert_to, load_world, test_images


def run(config, workdir: str) -> dict:
    """See the module docstring; fields in ``configs/haas.py``."""
    world = load_world(config)
    model, params, schedule, source = world.model, world.params, world.schedule, world.source
    x0 = jnp.asarray(test_images(config, world))
    z0 = world.to_x(x0)                                                                # pixels or latents
    t_start = time.time()
    x_t, t, _ = invert_to(model, params, schedule, z0, config.n_steps, config.jacobian_t)
    x_lat = invert(model, params, schedule, z0, config.n_steps)
    key = jax.random.PRNGKey(config.seed)
    kw = dict(n_test=config.n_steps, t_edit=config.t_edit, t_boost=config.t_boost, symmetric=config.symmetric,
              key=key)
    recon = world.to_images(asyrp_edit(model, params, schedule, x_lat=x_lat, **kw)[0])  # [B, H, W, 3]
    svals, products, edits = [], [], []
    for i in tqdm(range(x0.shape[0]), desc="haas dε/dh SVD + edits"):
        res = haas_jacobian(model, params, x_t[i], t, config.k, jax.random.fold_in(key, i),
                            tol=config.svd_tol, max_iters=config.svd_max_iters)
        svals.append(np.asarray(res.s).tolist())
        products.append(res.n_products)
        deltas = stack_deltas([ConstantDelta(res.s[d] * res.v[d]) for d in range(config.n_dirs)])
        out = asyrp_edit(model, params, schedule, x_lat=x_lat[i:i + 1], delta=deltas, scales=config.scales,
                         stacked=True, image_ids=[i], **kw)                           # [D, K, 1, H, W, C]
        edits.append(world.to_images(np.asarray(out)[:, :, 0]))
    E = np.stack(edits, axis=2)                                                        # [D, K, B, H, W, C]
    labels = [f"v{d} x{s:g}" for d in range(config.n_dirs) for s in config.scales]
    cols = [np.asarray(x0), recon] + [E[d, k] for d in range(config.n_dirs) for k in range(len(config.scales))]
    grid = save_grid(os.path.join(workdir, "haas_grid.png"), np.stack(cols, axis=1), upscale=config.upscale)
    plot = save_line_plot(os.path.join(workdir, "haas_singular_values.png"),
                          {f"image {i}": s for i, s in enumerate(svals)}, "Haas singular values (∂ε/∂h)", "index", "σ")
    probe_params = load_default_probe(x0.shape[1])
    scores = []
    if probe_params is not None:
        for d in range(config.n_dirs):
            for k, s in enumerate(config.scales):
                scores.append({"direction": d, "scale": s, **factor_changes(probe_params, recon, E[d, k])})
    metrics = {"task": "haas", "model": source, "prompt": world.prompt if world.is_latent else None, "jacobian_t": t, "k": config.k, "symmetric": config.symmetric,
               "singular_values": svals, "jacobian_products": products, "columns": ["input", "reconstruction"] + labels,
               "edit_scores": scores, "grid": grid, "singular_value_plot": plot, "wall_s": time.time() - t_start}
    write_metrics(workdir, metrics)
    return metrics
