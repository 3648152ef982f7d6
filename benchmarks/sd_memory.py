"""Benchmark: parameter count and XLA's compiled memory of Stable Diffusion UNet products (nothing materialised).

    python -m benchmarks.sd_memory [--config sd15|sd21_base] [--size 64] [--dtype float32|bfloat16]
                                   [--query-chunk 1024] [--time-jvp] [--threads N] [--out FILE]

For the UNet of ``--config`` (SD-1.5 by default; latent ``--size`` 64 = 512 px, text [1, 77, cross_attention_dim])
it compiles, with abstract params (``jax.ShapeDtypeStruct`` from ``jax.eval_shape``, so no weights are allocated):

  * one forward ``eps = unet(z, t, c)`` (batch 1);
  * one JVP block of 8: ``vmap`` over 8 tangents of ``jax.jvp`` of ``h(z) = mid_block output`` (J = ∂h/∂z, the
    pullback Jacobian; the primal is shared by the 8 tangents);
  * one VJP block of 8: ``vmap`` over 8 cotangents of the ``jax.vjp`` pullback of ``h(z)``;

``--query-chunk`` uses the model's ``attention_query_chunk`` memory option (default: plain attention). It then
prints ``compiled.memory_analysis()``: arguments (params + inputs), outputs, XLA temporaries, and their sum
minus aliased bytes as the peak estimate of one call. These are this backend's (CPU's) numbers; a TPU/GPU
compile fuses and schedules differently, so read them as the order of magnitude. ``--time-jvp`` additionally
materialises random weights and measures the wall time of one JVP block of 8 (second call; needs the peak
above in free RAM). Output: a Markdown table on stdout and, with ``--out``, a JSON file.
"""
from __future__ import annotations

import argparse
import json
import platform
import sys
import time

from benchmarks.cpu_threads import cpus_usable, limit_cpu_threads

if __name__ == "__main__" and "jax" not in sys.modules:
    limit_cpu_threads(sys.argv[1:])

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402

from jaxhspace.checkpoints.unet_condition import param_shapes  # noqa: E402
from jaxhspace.models.unet_condition import UNet2DConditionModel, UNetConditionConfig  # noqa: E402

_SD_BLOCKS = dict(
    down_block_types=("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "DownBlock2D"),
    up_block_types=("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D"),
    block_out_channels=(320, 640, 1280, 1280), layers_per_block=2, sample_size=64,
)
# unet/config.json of runwayml/stable-diffusion-v1-5 and stabilityai/stable-diffusion-2-1-base (other fields default)
CONFIGS = {
    "sd15": dict(_SD_BLOCKS, cross_attention_dim=768, attention_head_dim=8),
    "sd21_base": dict(_SD_BLOCKS, cross_attention_dim=1024, attention_head_dim=(5, 10, 20, 20),
                      use_linear_projection=True),
}
BLOCK = 8
GIB = 2.0 ** 30


def products(model: UNet2DConditionModel):
    """The three jitted programs ``(params, z, t, c[, V]) -> ...`` measured here."""
    def h_fn(p, t, c):
        return lambda z: model.apply({"params": p}, z, t, c, method=model.encode).h.astype(jnp.float32)

    def forward(p, z, t, c):
        return model.apply({"params": p}, z, t, c)

    def jvp_block(p, z, t, c, tangents):
        h = h_fn(p, t, c)
        return jax.vmap(lambda v: jax.jvp(h, (z,), (v,))[1])(tangents)

    def vjp_block(p, z, t, c, cotangents):
        _, pullback = jax.vjp(h_fn(p, t, c), z)
        return jax.vmap(lambda u: pullback(u)[0])(cotangents)

    return {"forward": jax.jit(forward), f"jvp_block_{BLOCK}": jax.jit(jvp_block),
            f"vjp_block_{BLOCK}": jax.jit(vjp_block)}


def memory_row(compiled) -> dict:
    """``memory_analysis()`` of a compiled program in GiB (``peak`` = args + outputs + temps - aliased)."""
    m = compiled.memory_analysis()
    args, out, temp = m.argument_size_in_bytes, m.output_size_in_bytes, m.temp_size_in_bytes
    alias = getattr(m, "alias_size_in_bytes", 0)
    return {"args_gib": args / GIB, "outputs_gib": out / GIB, "temps_gib": temp / GIB,
            "peak_gib": (args + out + temp - alias) / GIB}


def main(argv=None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--config", choices=sorted(CONFIGS), default="sd15")
    ap.add_argument("--size", type=int, default=64, help="latent side (64 = 512 px)")
    ap.add_argument("--tokens", type=int, default=77)
    ap.add_argument("--dtype", choices=("float32", "bfloat16"), default="float32", help="compute dtype")
    ap.add_argument("--query-chunk", type=int, default=None, help="attention_query_chunk (default: plain)")
    ap.add_argument("--time-jvp", action="store_true", help="also time one JVP block with random weights")
    ap.add_argument("--threads", type=int, default=1, help="CPU threads (set before jax starts)")
    ap.add_argument("--out", default=None, help="JSON output path")
    args = ap.parse_args(argv)

    cfg = UNetConditionConfig(**CONFIGS[args.config])
    model = UNet2DConditionModel(cfg, dtype=jnp.dtype(args.dtype), attention_query_chunk=args.query_chunk)
    shapes = param_shapes(model)
    n_params = int(sum(np.prod(s.shape) for s in jax.tree.leaves(shapes)))
    s = args.size
    hw = model.hspace_shape(s, s)
    z = jax.ShapeDtypeStruct((1, s, s, cfg.in_channels), jnp.float32)
    t = jax.ShapeDtypeStruct((1,), jnp.int32)
    c = jax.ShapeDtypeStruct((1, args.tokens, cfg.context_dim), jnp.float32)
    extra = {"forward": (), f"jvp_block_{BLOCK}": (jax.ShapeDtypeStruct((BLOCK, 1, s, s, cfg.in_channels),
                                                                        jnp.float32),),
             f"vjp_block_{BLOCK}": (jax.ShapeDtypeStruct((BLOCK, 1, *hw), jnp.float32),)}
    fns = products(model)
    rows, compiled = {}, {}
    for name, fn in fns.items():
        t0 = time.perf_counter()
        compiled[name] = fn.lower(shapes, z, t, c, *extra[name]).compile()
        rows[name] = dict(memory_row(compiled[name]), compile_s=time.perf_counter() - t0)
        print(f"compiled {name} in {rows[name]['compile_s']:.0f} s", file=sys.stderr, flush=True)

    result = {"config": args.config, "latent": [s, s, cfg.in_channels], "text": [args.tokens, cfg.context_dim],
              "h": list(hw), "dtype": args.dtype, "query_chunk": args.query_chunk, "params": n_params,
              "backend": jax.default_backend(), "machine": platform.processor() or platform.machine(),
              "cpus": cpus_usable(), "rows": rows}
    if args.time_jvp:
        name = f"jvp_block_{BLOCK}"
        rng = np.random.default_rng(0)  # random weights (timing does not depend on their values)
        params = jax.tree.map(lambda a: jnp.asarray(rng.normal(0, 0.02, a.shape).astype(np.float32)), shapes)
        zz, cc, vv = (rng.normal(size=a.shape).astype(np.float32) for a in (z, c, extra[name][0]))
        tt = np.array([500], np.int32)
        for i in range(2):  # the first call pays the transfer and warm-up
            t0, c0 = time.perf_counter(), time.process_time()
            jax.block_until_ready(compiled[name](params, zz, tt, cc, vv))
            rows[name][f"wall_s_call{i + 1}"] = time.perf_counter() - t0
            rows[name][f"cpu_s_call{i + 1}"] = time.process_time() - c0
            print(f"{name} call {i + 1}: {rows[name][f'wall_s_call{i + 1}']:.1f} s wall, "
                  f"{rows[name][f'cpu_s_call{i + 1}']:.1f} s CPU", file=sys.stderr, flush=True)

    print(f"\n{args.config} UNet, {n_params:,} params, z {s}x{s}x{cfg.in_channels} ({8 * s} px), text "
          f"{args.tokens}x{cfg.context_dim}, h {'x'.join(map(str, hw))}, {args.dtype} compute, attention "
          f"{'plain' if args.query_chunk is None else f'query chunk {args.query_chunk}'}, "
          f"backend {result['backend']}\n")
    print("| program | args GiB | outputs GiB | temps GiB | peak GiB | compile s |")
    print("|---|---:|---:|---:|---:|---:|")
    for name, r in rows.items():
        print(f"| {name} | {r['args_gib']:.2f} | {r['outputs_gib']:.3f} | {r['temps_gib']:.2f} | "
              f"{r['peak_gib']:.2f} | {r['compile_s']:.0f} |")
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2)
    return result


if __name__ == "__main__":
    main()
