"""Benchmark: what one 256-px Jacobian SVD costs on CPU (celebahq-256 architecture, random init, k = 8, b = 1).

    nice -n 10 python -m benchmarks.jacobian_svd_256 [--k 8] [--methods lanczos,svds] [--threads 1]
        [--cache-dir /tmp/jaxhspace_svd256] [--out benchmarks/results/jacobian_svd_celebahq256_256px.json]

J = dh/dx of google/ddpm-ema-celebahq-256's architecture (``configs/celebahq256``, ``CELEBAHQ_UNET`` of
:mod:`benchmarks.jacobian_svd`: 113,673,219 parameters, random init perturbed by 0.02 randn since no weights are
downloaded) at x ~ N(0, 1) of shape [256, 256, 3], t = 500: n = 196,608, m = 8 x 8 x 512 = 32,768. No dense truth
at this size (n products), so the run reports instead:

  * ``probe``: linearisation time, one JVP and one VJP (first call = compile + run, then the median of 2 warm calls),
    the process's peak RSS (``resource.getrusage``) after each phase;
  * ``lanczos``: ``lanczos_bidiag_svd`` (b = 1, tol ``--tol``) in one jitted call: wall/CPU (compile reported
    separately from a first call cut short by ``max_products``), products, steps, restarts;
  * ``svds``: ``scipy.sparse.linalg.svds`` (ARPACK, float64 driver, tol ``--svds-tol``) on the same operator, one
    jitted JVP/VJP per column;
  * for each method the explicit two-sided residuals ``max(||J v_i - s_i u_i||, ||J^T u_i - s_i v_i||) / s_1``
    (k JVPs + k VJPs, not counted), and between the methods the per-triplet relative difference of s and the
    angles of v_i and of the top-k right subspaces (the agreement of two independent methods replaces the dense
    truth).

The process is pinned to ``--threads`` CPUs (default 1) before jax starts (:mod:`benchmarks.cpu_threads`). The
random-init model is built once by a child process (torch ``UNet2DModel`` -> ``save_pretrained`` into
``--cache-dir``), so torch's memory is not in this process's peak. Resumable: the JSON is rewritten after every
phase and the triplets of finished methods are kept in ``--cache-dir``; a rerun skips what is done (``--fresh``
starts over).
"""
from __future__ import annotations

import argparse
import json
import math
import os
import resource
import subprocess
import sys
import time

from benchmarks.cpu_threads import Clock, cpus_usable, limit_cpu_threads  # imports neither jax nor torch

if __name__ == "__main__" and "jax" not in sys.modules and "--build-only" not in sys.argv:
    limit_cpu_threads(sys.argv[1:])

PARAMS_EXPECTED = 113_673_219
T_EDIT = 500


def peak_rss_gib() -> float:
    """Peak resident set size of this process so far (Linux ``ru_maxrss`` is in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 2**20


def build_model_folder(folder: str, seed: int = 0) -> None:
    """Random-init diffusers ``UNet2DModel`` of the celebahq-256 config, every parameter + 0.02 randn (as the
    benchmark's other random-init setups), saved with ``save_pretrained``; run in a child process."""
    import torch
    from diffusers import UNet2DModel

    from benchmarks.jacobian_svd import CELEBAHQ_UNET

    torch.manual_seed(seed)
    unet = UNet2DModel(**CELEBAHQ_UNET)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.02 * torch.randn_like(p))
    n = sum(p.numel() for p in unet.parameters())
    if n != PARAMS_EXPECTED:
        raise AssertionError(f"celebahq-256 UNet has {n} parameters, expected {PARAMS_EXPECTED}")
    tmp = folder + ".tmp"
    unet.save_pretrained(tmp)
    os.replace(tmp, folder)


def _log(msg: str) -> None:
    print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--k", type=int, default=8)
    ap.add_argument("--tol", type=float, default=1e-6, help="Lanczos per-triplet residual stop")
    ap.add_argument("--svds-tol", type=float, default=1e-5)
    ap.add_argument("--methods", default="lanczos,svds")
    ap.add_argument("--max-products", type=int, default=400, help="budget of the Lanczos run (JVP + VJP)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--cache-dir", default="/tmp/jaxhspace_svd256")
    ap.add_argument("--out", default="benchmarks/results/jacobian_svd_celebahq256_256px.json")
    ap.add_argument("--probe-only", action="store_true", help="stop after timing one JVP and one VJP")
    ap.add_argument("--fresh", action="store_true", help="ignore earlier partial results")
    ap.add_argument("--build-only", action="store_true", help=argparse.SUPPRESS)
    a = ap.parse_args(argv)
    folder = os.path.join(a.cache_dir, "unet")
    if a.build_only:
        build_model_folder(folder, a.seed)
        return 0

    os.makedirs(a.cache_dir, exist_ok=True)
    res = {}
    if os.path.isfile(a.out) and not a.fresh:
        with open(a.out) as fh:
            res = json.load(fh)
        if res.get("k") != a.k or res.get("seed") != a.seed:
            res = {}

    def save():
        res["peak_rss_gib"] = peak_rss_gib()
        os.makedirs(os.path.dirname(a.out) or ".", exist_ok=True)
        with open(a.out + ".tmp", "w") as fh:
            json.dump(res, fh, indent=1)
        os.replace(a.out + ".tmp", a.out)

    if not os.path.isdir(folder):
        _log(f"building the random-init celebahq-256 UNet in a child process -> {folder}")
        subprocess.run([sys.executable, "-m", "benchmarks.jacobian_svd_256", "--build-only", "--cache-dir",
                        a.cache_dir, "--seed", str(a.seed)], check=True)

    import jax
    import jax.numpy as jnp
    import numpy as np

    from jaxhspace.checkpoints.unet import load_unet
    from jaxhspace.directions.pullback import pullback_operator
    from jaxhspace.geometry.lanczos import lanczos_bidiag_svd
    from jaxhspace.geometry.svd import principal_angles, two_sided_residuals

    res.update(config="celebahq256 (google/ddpm-ema-celebahq-256 architecture, random init + 0.02 randn)",
               k=a.k, seed=a.seed, t=T_EDIT, block_size=1,
               environment=dict(jax=jax.__version__, cpus_usable=cpus_usable(), cpu_count=os.cpu_count(),
                                xla_flags=os.environ.get("XLA_FLAGS", ""), nice=os.nice(0),
                                loadavg_start=list(os.getloadavg())))
    with Clock() as c:
        model, params = load_unet(folder)
    n_params = int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))
    x = jnp.asarray(np.random.default_rng(a.seed).standard_normal((256, 256, 3)).astype(np.float32))
    res["load_s"], res["n_params"] = c.wall, n_params
    _log(f"loaded {n_params:,} params in {c.wall:.1f} s; peak RSS {peak_rss_gib():.2f} GiB")

    with Clock() as c:
        op = pullback_operator(model, params, x, T_EDIT)
        jax.block_until_ready(op.primal_out)
    n, m = op.dim_in, op.dim_out
    res["sizes"] = dict(n=n, m=m, x_shape=list(x.shape), h_shape=list(op.out_shape))
    probe = dict(linearize_s=c.wall, linearize_cpu_s=c.cpu, rss_after_linearize_gib=peak_rss_gib())
    _log(f"linearize {c.wall:.1f} s (n={n}, m={m}); peak RSS {peak_rss_gib():.2f} GiB")
    v1 = jax.random.normal(jax.random.PRNGKey(1), op.in_shape)
    u1 = jax.random.normal(jax.random.PRNGKey(2), op.out_shape)
    for name, fn, arg in (("jvp", op.matvec, v1), ("vjp", op.rmatvec, u1)):
        with Clock() as c:
            jax.block_until_ready(fn(arg))
        walls, cpus = [], []
        for _ in range(2):
            with Clock() as c2:
                jax.block_until_ready(fn(arg))
            walls.append(c2.wall)
            cpus.append(c2.cpu)
        probe[f"{name}_first_s"] = c.wall
        probe[f"{name}_s"], probe[f"{name}_cpu_s"] = float(np.median(walls)), float(np.median(cpus))
        _log(f"{name}: first call {c.wall:.1f} s, warm {probe[name + '_s']:.2f} s (cpu {probe[name + '_cpu_s']:.2f})")
    op.reset_counts()
    probe["pair_s"] = probe["jvp_s"] + probe["vjp_s"]
    probe["pair_cpu_s"] = probe["jvp_cpu_s"] + probe["vjp_cpu_s"]
    probe["rss_after_products_gib"] = peak_rss_gib()
    res["probe"] = probe
    save()
    if a.probe_only:
        return 0

    k = a.k
    methods = [s.strip() for s in a.methods.split(",") if s.strip()]
    runs = res.setdefault("runs", {})
    key = jax.random.PRNGKey(a.seed)

    def finish(name, u, s, v, row):
        """Residuals (not counted), cache the triplets, record the row, rewrite the JSON."""
        u, s, v = np.asarray(u, np.float32), np.asarray(s, np.float64), np.asarray(v, np.float32)
        r = np.asarray(two_sided_residuals(op, op.unflatten_out(jnp.asarray(u)), jnp.asarray(s, jnp.float32),
                                           op.unflatten_in(jnp.asarray(v))), np.float64)
        op.reset_counts()
        rel = r.max(axis=1) / s[0]
        row.update(sigma=s.tolist(), rel_residual=rel.tolist(), rel_residual_max=float(rel.max()),
                   rss_after_gib=peak_rss_gib())
        np.savez(os.path.join(a.cache_dir, f"{name}_k{k}.npz"), u=u, s=s, v=v)
        runs[name] = row
        save()
        _log(f"{name}: {row['products']} products, {row['wall_s']:.0f} s (cpu {row['cpu_s']:.0f}); "
             f"max rel residual {row['rel_residual_max']:.1e}; s = {np.array2string(s, precision=5)}")

    for name in methods:
        if name in runs and os.path.isfile(os.path.join(a.cache_dir, f"{name}_k{k}.npz")):
            _log(f"{name}: done before, skipped")
            continue
        if name == "lanczos":
            _log(f"lanczos b=1 k={k}: compile (a call stopped after {2 * k} products)")
            with Clock() as cc:
                lanczos_bidiag_svd(op, k, key, tol=a.tol, block_size=1, max_products=2 * k)
            op.reset_counts()
            _log(f"lanczos compile + {2 * k} products: {cc.wall:.0f} s; timed run")
            with Clock() as c:
                r = lanczos_bidiag_svd(op, k, key, tol=a.tol, block_size=1, max_products=a.max_products)
                jax.block_until_ready(r.v)
            h = r.history[0]
            row = dict(method="lanczos_bidiag_svd(b=1)", tol=a.tol, wall_s=c.wall, cpu_s=c.cpu,
                       first_call_s=cc.wall, compile_s_estimate=max(cc.wall - c.wall * 2 * k / max(r.n_products, 1),
                                                                    0.0),
                       n_jvp=r.n_jvp, n_vjp=r.n_vjp, products=r.n_products, steps=r.iterations,
                       restarts=h["restarts"], work_size=h["work_size"], restart_size=h["restart_size"],
                       converged=r.converged, in_loop_rel_residual_max=float(np.max(np.asarray(r.residuals)) /
                                                                              float(r.s[0])),
                       wall_per_product_s=c.wall / r.n_products, cpu_per_product_s=c.cpu / r.n_products)
            op.reset_counts()
            finish(name, op.flatten_out(r.u), r.s, op.flatten_in(r.v), row)
        elif name == "svds":
            from scipy.sparse.linalg import LinearOperator, svds

            cnt = dict(jvp=0, vjp=0)

            def mv(v):
                cnt["jvp"] += 1
                out = op.matvec(op.unflatten_in(jnp.asarray(np.ravel(v), jnp.float32)))
                return np.asarray(op.flatten_out(out), np.float64)

            def rmv(u):
                cnt["vjp"] += 1
                out = op.rmatvec(op.unflatten_out(jnp.asarray(np.ravel(u), jnp.float32)))
                return np.asarray(op.flatten_in(out), np.float64)

            A = LinearOperator((m, n), matvec=mv, rmatvec=rmv, dtype=np.float64)
            v0 = np.random.default_rng(a.seed).standard_normal(min(m, n))
            _log(f"svds k={k} tol={a.svds_tol}")
            with Clock() as c:
                u, s, vt = svds(A, k=k, tol=a.svds_tol, v0=v0)
            order = np.argsort(s)[::-1]
            nprod = cnt["jvp"] + cnt["vjp"]
            row = dict(method="scipy.svds(arpack)", tol=a.svds_tol, wall_s=c.wall, cpu_s=c.cpu, n_jvp=cnt["jvp"],
                       n_vjp=cnt["vjp"], products=nprod, ncv_default=min(min(m, n), max(2 * k + 1, 20)),
                       wall_per_product_s=c.wall / nprod, cpu_per_product_s=c.cpu / nprod)
            op.reset_counts()
            finish(name, u[:, order].T, s[order], vt[order], row)
        else:
            raise SystemExit(f"unknown method {name!r} (lanczos, svds)")

    done = [nm for nm in methods if os.path.isfile(os.path.join(a.cache_dir, f"{nm}_k{k}.npz"))]
    if len(done) >= 2:
        A_, B_ = (np.load(os.path.join(a.cache_dir, f"{nm}_k{k}.npz")) for nm in done[:2])
        va = A_["v"] / np.linalg.norm(A_["v"], axis=1, keepdims=True)
        vb = B_["v"] / np.linalg.norm(B_["v"], axis=1, keepdims=True)
        cos = np.clip(np.abs(np.sum(va.astype(np.float64) * vb, axis=1)), 0.0, 1.0)
        res["agreement"] = dict(
            methods=done[:2], sigma_rel_diff=(np.abs(A_["s"] - B_["s"]) / B_["s"]).tolist(),
            sigma_rel_diff_max=float(np.max(np.abs(A_["s"] - B_["s"]) / B_["s"])),
            angle_v_deg=np.degrees(np.arccos(cos)).tolist(),
            subspace_angle_deg=math.degrees(float(principal_angles(jnp.asarray(va), jnp.asarray(vb)))),
            gap_k_over_k_minus_1=float(B_["s"][-1] / B_["s"][-2]))
        _log(f"agreement: {res['agreement']}")
    res["environment"]["loadavg_end"] = list(os.getloadavg())
    save()
    _log(f"wrote {a.out}; peak RSS {peak_rss_gib():.2f} GiB")
    return 0


if __name__ == "__main__":
    sys.exit(main())
