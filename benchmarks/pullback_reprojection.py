r"""Pullback editing with a fixed direction (official) vs re-projecting it onto the local tangent space
before every step (the seeds' steps 5-6), on the shipped SynthFaces DDPM, scored by the probe.

    python -m benchmarks.pullback_reprojection --num-images 4 --dirs 0 1 \
        --out benchmarks/results/pullback_reprojection.json

For each test face and top direction v_i of J = ∂h/∂x at edit_t: (a) N steps x ← x + γ[ε(x+λv) − ε(x)]
with v fixed; (b) the same steps with v re-projected onto span(top-k right singular vectors at the current
x) each step. Both are sampled down to x_0 the same way. Reported per method: the probe's change of every
factor vs the reconstruction (dominant factor, its change, max leakage), how far the used direction turned
away from v_i (angle of the last direction to the first), Jacobian products and wall time.
"""
from __future__ import annotations

import argparse
import json
import os
import time

import jax
import jax.numpy as jnp
import numpy as np
from tqdm import tqdm

from jaxhspace.data import synthfaces
from jaxhspace.data.images import save_grid
from jaxhspace.diffusion.ddim import ddim_invert
from jaxhspace.diffusion.schedule import asyrp_timesteps
from jaxhspace.directions import pullback
from jaxhspace.editing.pullback_edit import continue_sampling, edit_steps, reprojected_edit_steps
from jaxhspace.editing.scoring import factor_changes, load_default_probe
from jaxhspace.models.functional import eps_fn
from jaxhspace.world import load_model


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model-path", default="")
    ap.add_argument("--num-images", type=int, default=4)
    ap.add_argument("--dirs", type=int, nargs="+", default=[0, 1])
    ap.add_argument("--k", type=int, default=6, help="tangent-space basis size for the re-projection")
    ap.add_argument("--edit-t", type=int, default=600)
    ap.add_argument("--n-steps", type=int, default=50)
    ap.add_argument("--gamma", type=float, default=0.5)
    ap.add_argument("--lam", type=float, default=10.0)
    ap.add_argument("--n-edit-steps", type=int, default=16)
    ap.add_argument("--t-boost", type=int, default=200)
    ap.add_argument("--svd-tol", type=float, default=1e-3)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default="benchmarks/results/pullback_reprojection.json")
    a = ap.parse_args(argv)

    model, params, schedule, source = load_model(a.model_path, a.seed)
    f = eps_fn(model, params)
    x0, _ = synthfaces.generate(12345, a.num_images, size=32)
    grid = asyrp_timesteps(a.n_steps, schedule.num_train_timesteps - 1)
    i_t = int(np.argmin(np.abs(grid - a.edit_t)))
    t = int(grid[i_t])
    x_t = ddim_invert(f, jnp.asarray(x0), grid[: i_t + 1], schedule)
    down = grid[: i_t + 1][::-1].copy()
    key = jax.random.PRNGKey(a.seed)
    finish = lambda x: np.asarray(continue_sampling(f, x, down, schedule, a.t_boost, key))  # noqa: E731
    recon = finish(x_t)

    products = {"basis": 0}

    def basis(x):
        r = pullback(model, params, x, t, a.k, key, tol=a.svd_tol, max_iters=30)
        products["basis"] += r.n_products
        return r.v

    fixed, reproj, turn, walls = {}, {}, {}, {"fixed": 0.0, "reprojected": 0.0}
    prods = {"fixed_svd": 0, "reprojected_svd": 0}
    for i in tqdm(range(a.num_images), desc="faces"):
        r0 = pullback(model, params, x_t[i], t, a.k, key, tol=a.svd_tol, max_iters=30)
        prods["fixed_svd"] += r0.n_products
        for d in a.dirs:
            t0 = time.time()
            xf = edit_steps(f, x_t[i:i + 1], t, r0.v[d], a.gamma, a.n_edit_steps, a.lam)
            jax.block_until_ready(xf)
            walls["fixed"] += time.time() - t0
            t0 = time.time()
            before = products["basis"]
            xr, used = reprojected_edit_steps(f, basis, x_t[i], t, r0.v[d], a.gamma, a.n_edit_steps, a.lam)
            jax.block_until_ready(xr)
            walls["reprojected"] += time.time() - t0
            prods["reprojected_svd"] += products["basis"] - before
            fixed.setdefault(d, []).append(np.asarray(xf[0]))
            reproj.setdefault(d, []).append(np.asarray(xr))
            cos = float(jnp.vdot(used[-1], r0.v[d]))
            turn.setdefault(d, []).append(float(np.degrees(np.arccos(np.clip(abs(cos), 0.0, 1.0)))))

    probe_params = load_default_probe()
    rows, cols = [], [np.asarray(x0), recon]
    for d in a.dirs:
        for name, store in (("fixed", fixed), ("reprojected", reproj)):
            out = finish(jnp.asarray(np.stack(store[d])))
            cols.append(out)
            sc = factor_changes(probe_params, recon, out) if probe_params is not None else {}
            rows.append({"direction": d, "method": name, **sc,
                         "turn_deg_mean": float(np.mean(turn[d])) if name == "reprojected" else 0.0})
    os.makedirs(os.path.dirname(os.path.abspath(a.out)), exist_ok=True)
    png = save_grid(os.path.splitext(a.out)[0] + ".png", np.stack(cols, axis=1), upscale=3)
    res = {"model": source, "edit_t": t, "k": a.k, "gamma": a.gamma, "lam": a.lam, "n_edit_steps": a.n_edit_steps,
           "num_images": a.num_images, "dirs": a.dirs, "rows": rows, "wall_s": walls, "svd_products": prods,
           "grid": png, "columns": ["input", "reconstruction"] + [f"v{d} {m}" for d in a.dirs
                                                                    for m in ("fixed", "reprojected")]}
    with open(a.out + ".tmp", "w") as fh:
        json.dump(res, fh, indent=1, default=float)
    os.replace(a.out + ".tmp", a.out)
    print("| direction | method | dominant factor | its change | max leakage | turn (deg) |")
    print("|---|---|---|---|---|---|")
    for r in rows:
        print(f"| v{r['direction']} | {r['method']} | {r.get('dominant')} | {r.get('dominant_change', 0):.3f} | "
              f"{r.get('max_leakage', 0):.3f} | {r['turn_deg_mean']:.1f} |")
    print(json.dumps({"wall_s": walls, "svd_products": prods}))


if __name__ == "__main__":
    main()
