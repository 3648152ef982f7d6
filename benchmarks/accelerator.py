"""Accelerator benchmark (GPU/TPU; runs on CPU with small sizes): the Jacobian SVD and Asyrp editing at 256 px.

    python -m benchmarks.accelerator [--config celebahq] [--size 256] [--k 50] [--batch 8] [--n-test 40] [--out FILE]
    python -m benchmarks.accelerator --config smoke --size 8 --k 2 --batch 2 --n-test 4   # the CPU test

On one random-init (perturbed) diffusers ``UNet2DModel`` (``celebahq``: the google/ddpm-ema-celebahq-256
architecture, 113.7 M parameters), saved with ``save_pretrained`` and loaded with ``load_unet``, it times with
JAX on its default device (median of warm calls, compile reported separately):

  * the UNet forward (batch 1) and the encoder forward x -> h (batch 1);
  * one JVP block and one VJP block of J = dh/dx (``--jvp-block`` columns, vmapped, from ``jax.linearize``);
  * ``lanczos_bidiag_svd`` (tol 1e-6) at ``k`` with block size 1 and 8: products, steps, wall, time per product;
  * a batched SVD: ``--batch`` images in one ``lanczos_svd_batch_of`` call and in one ``jit(vmap(lanczos_svd_of))``
    call (k = ``--batch-k``) vs as many sequential jitted calls;
  * Asyrp edit throughput (images/s): ``--batch`` latents, ``--n-test`` steps, our jitted, vmapped ``asyrp_edit``
    beside :func:`benchmarks.torch_asyrp.asyrp_edit_loop` (the official per-image loop) on torch's device (CUDA when
    torch has it, else CPU). Both run with t_edit 500 and no η = 1 boosting (t_boost 0), so that the torch loop
    draws no host noise on the device.

Prints a markdown table and writes JSON (``benchmarks/results/accelerator_<config>_<platform>.json``).
"""
from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

from benchmarks.cpu_threads import limit_cpu_threads  # noqa: E402  (imports no jax/torch)

if __name__ == "__main__" and "jax" not in sys.modules and "--threads" in " ".join(sys.argv):
    limit_cpu_threads(sys.argv[1:])

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from benchmarks.jacobian_svd import CELEBAHQ_UNET, SMOKE_UNET, TINY_UNET, jsonable  # noqa: E402
from jaxhspace.checkpoints.unet import load_unet  # noqa: E402
from jaxhspace.diffusion.schedule import asyrp_timesteps, make_schedule  # noqa: E402
from jaxhspace.editing import asyrp_edit as AE  # noqa: E402
from jaxhspace.geometry.lanczos import lanczos_bidiag_svd, lanczos_svd_batch_of, lanczos_svd_of  # noqa: E402
from jaxhspace.geometry.operators import JacobianOperator, _apply_block  # noqa: E402
from jaxhspace.models.functional import h_of_x  # noqa: E402

CONFIGS = {"celebahq": CELEBAHQ_UNET, "tiny": TINY_UNET, "smoke": SMOKE_UNET}
T = 500


def _median(fn, reps: int = 3) -> tuple:
    """(first-call seconds, median warm seconds) of ``fn`` (which blocks)."""
    t0 = time.perf_counter()
    fn()
    first = time.perf_counter() - t0
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return first, float(np.median(ts))


def build(config: str, size: int, seed: int = 0):
    """Torch UNet (perturbed random init) -> save_pretrained -> load_unet; returns (torch_unet, model, params)."""
    import torch
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    tu = UNet2DModel(**dict(CONFIGS[config], sample_size=size))
    with torch.no_grad():
        for p in tu.parameters():
            p.add_(0.02 * torch.randn_like(p))
    tu.eval().requires_grad_(False)
    with tempfile.TemporaryDirectory() as d:
        tu.save_pretrained(d)
        model, params = load_unet(d)
    return tu, model, params


def run(config: str = "celebahq", size: int = 256, k: int = 50, batch: int = 8, batch_k: int = 8, n_test: int = 40,
        jvp_block: int = 8, blocks=(1, 8), reps: int = 3, seed: int = 0, tol: float = 1e-6) -> dict:
    """All measurements; returns a JSON-ready dict with ``rows`` (name, setting, seconds, derived figures)."""
    import torch

    from benchmarks import torch_asyrp as TA

    tdev = "cuda" if torch.cuda.is_available() else "cpu"
    tu, model, params = build(config, size, seed)
    rng = np.random.default_rng(seed)
    x = jnp.asarray(rng.standard_normal((size, size, 3)).astype(np.float32))
    rows = []

    def row(name, setting, first, wall, **kw):
        rows.append(dict(name=name, setting=setting, compile_s=max(first - wall, 0.0), wall_s=wall, **kw))

    fwd = jax.jit(lambda xb, tb: model.apply({"params": params}, xb, tb))
    first, wall = _median(lambda: fwd(x[None], jnp.full((1,), T)).block_until_ready(), reps)
    row("UNet forward", "batch 1", first, wall)
    f = h_of_x(model, params, T)
    enc = jax.jit(f)
    first, wall = _median(lambda: enc(x).block_until_ready(), reps)
    row("encoder forward x -> h", "batch 1", first, wall)
    op = JacobianOperator(f, x)
    V = jax.random.normal(jax.random.PRNGKey(1), (jvp_block,) + op.in_shape)
    U = jax.random.normal(jax.random.PRNGKey(2), (jvp_block,) + op.out_shape)

    def jb():
        _apply_block(op._jvp, V, chunk_size=None, in_dtype=op._tin, out_dtype=op.dtype).block_until_ready()

    def vb():
        _apply_block(op._vjp, U, chunk_size=None, in_dtype=op._tout, out_dtype=op.dtype).block_until_ready()

    first, wall = _median(jb, reps)
    row("JVP block", f"{jvp_block} columns", first, wall, per_product_s=wall / jvp_block)
    first, wall = _median(vb, reps)
    row("VJP block", f"{jvp_block} columns", first, wall, per_product_s=wall / jvp_block)
    kk = min(k, op.dim_in, op.dim_out)
    for b in blocks:
        if b > min(op.dim_in, op.dim_out):
            continue
        t0 = time.perf_counter()
        r0 = lanczos_bidiag_svd(op, kk, seed, tol=tol, block_size=b)
        first = time.perf_counter() - t0
        t0 = time.perf_counter()
        r = lanczos_bidiag_svd(op, kk, seed, tol=tol, block_size=b)
        wall = time.perf_counter() - t0
        row("Lanczos SVD", f"k={kk}, b={b}", first, wall, products=r.n_products, steps=r.iterations,
            converged=r.converged, per_product_s=wall / max(r.n_products, 1),
            max_rel_residual=r.max_relative_residual, sigma_1=float(r.s[0]), sigma_k=float(r.s[-1]),
            repeat_identical=bool(np.allclose(np.asarray(r0.s), np.asarray(r.s))))
    bk = min(batch_k, op.dim_in, op.dim_out)
    xs = x[None] + 0.1 * jax.random.normal(jax.random.PRNGKey(3), (batch,) + x.shape)
    keys = jax.random.split(jax.random.PRNGKey(seed), batch)
    one = jax.jit(lambda xx, key: lanczos_svd_of(f, xx, bk, key, tol=tol))
    batched = jax.jit(lambda xx, keys: lanczos_svd_batch_of(f, xx, bk, keys, tol=tol))
    many = jax.jit(jax.vmap(lambda xx, key: lanczos_svd_of(f, xx, bk, key, tol=tol)))
    first_b, wall_b = _median(lambda: jax.block_until_ready(batched(xs, keys)), 1)
    first_v, wall_v = _median(lambda: jax.block_until_ready(many(xs, keys)), 1)
    jax.block_until_ready(one(xs[0], keys[0]))
    t0 = time.perf_counter()
    outs = [jax.block_until_ready(one(xs[i], keys[i])) for i in range(batch)]
    wall_s = time.perf_counter() - t0
    out_b, out_v = batched(xs, keys), many(xs, keys)
    s_seq = np.stack([np.asarray(o.s) for o in outs])
    row("batched Lanczos SVD", f"B={batch}, k={bk}, b=1, one lanczos_svd_batch_of call", first_b, wall_b,
        products_per_image=np.asarray(out_b.n_jvp + out_b.n_vjp).tolist(),
        sequential_wall_s=wall_s, speedup_vs_sequential=wall_s / wall_b,
        sequential_products=[int(o.n_jvp + o.n_vjp) for o in outs],
        max_sigma_rel_diff_vs_sequential=float(np.max(np.abs(np.asarray(out_b.s) - s_seq) / s_seq)))
    row("vmapped Lanczos SVD", f"B={batch}, k={bk}, b=1, one jit(vmap(lanczos_svd_of)) call", first_v, wall_v,
        products_per_image=np.asarray(out_v.n_jvp + out_v.n_vjp).tolist(), sequential_wall_s=wall_s,
        speedup_vs_sequential=wall_s / wall_v)

    # Asyrp edit throughput, B latents, n_test steps (random latents: the cost does not depend on them)
    sched = make_schedule()
    lat = rng.standard_normal((batch, size, size, 3)).astype(np.float32)
    h = model.apply({"params": params}, jnp.asarray(lat[:1]), jnp.full((1,), 999), method=model.encode)[0]
    dh = (0.2 * float(jnp.std(h)) * rng.standard_normal(h.shape[1:])).astype(np.float32)
    delta = AE.ConstantDelta(jnp.asarray(dh))
    ours = lambda: AE.asyrp_edit(model, params, sched, x_lat=jnp.asarray(lat), delta=delta, scales=(1.0,),  # noqa: E731
                                 n_test=n_test, t_edit=500, t_boost=0, key=jax.random.PRNGKey(0))[0].block_until_ready()
    first, wall = _median(ours, max(1, reps - 1))
    row("Asyrp edit (ours, jit+vmap)", f"B={batch}, {n_test} steps", first, wall, images_per_s=batch / wall)
    grid = asyrp_timesteps(n_test, 999)[::-1].copy()
    ac = np.asarray(sched.alphas_cumprod, np.float32)
    tu = tu.to(tdev)
    xt = torch.from_numpy(np.ascontiguousarray(lat.transpose(0, 3, 1, 2))).to(tdev)
    dh_t = torch.from_numpy(np.ascontiguousarray(dh.transpose(2, 0, 1)[None])).to(tdev)

    def ref():
        with torch.no_grad():
            out = TA.asyrp_edit_loop(tu, xt, lambda hh, temb: dh_t, grid, ac, 500, 0)
        if tdev == "cuda":
            torch.cuda.synchronize()
        return out

    first, wall = _median(ref, 1)
    row(f"Asyrp edit (official loop, torch {tdev})", f"B={batch}, {n_test} steps", first, wall,
        images_per_s=batch / wall)
    diff = float(np.max(np.abs(np.asarray(ours()) - ref().cpu().numpy().transpose(0, 2, 3, 1))))
    dev = jax.devices()[0]
    return jsonable(dict(config=config, size=size, n=op.dim_in, m=op.dim_out, k=kk, batch=batch, n_test=n_test,
                         jax_device=f"{dev.platform}:{getattr(dev, 'device_kind', '')}", torch_device=tdev,
                         n_params=int(sum(p.numel() for p in tu.parameters())), rows=rows,
                         asyrp_max_abs_diff_ours_vs_torch=diff, versions=dict(jax=jax.__version__,
                                                                               torch=torch.__version__)))


def render(res: dict) -> str:
    """Markdown table of :func:`run`'s rows."""
    lines = [f"## Accelerator benchmark: {res['config']} at {res['size']} px (n={res['n']}, m={res['m']}), "
             f"JAX on {res['jax_device']}, torch on {res['torch_device']}", "",
             "| what | setting | wall s | compile s | products | per product ms | images/s | note |",
             "|---|---|---|---|---|---|---|---|"]
    for r in res["rows"]:
        note = ""
        if "speedup_vs_sequential" in r:
            note = f"sequential {r['sequential_wall_s']:.3f} s (×{r['speedup_vs_sequential']:.2f})"
        elif "converged" in r:
            note = f"{r['steps']} steps, converged {r['converged']}, max rel res {r['max_rel_residual']:.1e}"
        prods = r.get("products", r.get("products_per_image", ""))
        pp = f"{1e3 * r['per_product_s']:.2f}" if "per_product_s" in r else ""
        ips = f"{r['images_per_s']:.3g}" if "images_per_s" in r else ""
        lines.append(f"| {r['name']} | {r['setting']} | {r['wall_s']:.4g} | {r['compile_s']:.3g} | {prods} | {pp} "
                     f"| {ips} | {note} |")
    lines.append(f"\nAsyrp edit max |ours - torch| = {res['asyrp_max_abs_diff_ours_vs_torch']:.2e}")
    return "\n".join(lines)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="celebahq")
    p.add_argument("--size", type=int, default=256)
    p.add_argument("--k", type=int, default=50)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batch-k", type=int, default=8)
    p.add_argument("--n-test", type=int, default=40)
    p.add_argument("--jvp-block", type=int, default=8)
    p.add_argument("--blocks", default="1,8", help="block sizes of the Lanczos rows")
    p.add_argument("--reps", type=int, default=3)
    p.add_argument("--threads", type=int, default=None, help="pin CPU threads (CPU runs only)")
    p.add_argument("--out", default=None)
    a = p.parse_args(argv)
    res = run(a.config, a.size, a.k, a.batch, a.batch_k, a.n_test, a.jvp_block, reps=a.reps,
              blocks=tuple(int(v) for v in a.blocks.split(",") if v.strip()))
    print(render(res))
    out = a.out or f"benchmarks/results/accelerator_{a.config}_{jax.devices()[0].platform}.json"
    os.makedirs(os.path.dirname(out) or ".", exist_ok=True)
    with open(out, "w") as fh:
        json.dump(res, fh, indent=1)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
