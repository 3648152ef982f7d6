"""Benchmark: top-k SVD of the pullback Jacobian J = dh/dx, ours (JAX) vs the official algorithm (PyTorch).

    python -m benchmarks.jacobian_svd --config tiny|celebahq64|trained [--k 8] [--size S] [--out FILE]

One run measures, side by side on the same weights, the same x_t, t = 500 and the same k:

  (a) ``randomized_block_krylov`` (ours, JAX, residual stop ``--tol``),
  (b) ``subspace_iteration`` (ours, JAX, same stop),
  (c) the official ``local_encoder_pullback_xt`` re-implemented in PyTorch
      (:mod:`benchmarks.torch_pullback`; call-site defaults chunk 25, min_iter 10, max_iter 50,
      ``allclose`` atol 1e-4),
  (d) ``scipy.sparse.linalg.svds`` (ARPACK) on a ``LinearOperator`` calling our JAX products,
  (e) on ``tiny`` also the official algorithm with k = 50 (and ours at k = 50),
  (f) ``lanczos_bidiag_svd`` (ours, thick-restart Lanczos bidiagonalisation in one jitted call) with each block
      size of ``--lanczos-blocks`` (default 1 and 8), its solver overhead (wall time minus ``steps`` times the
      measured time of one block of b JVPs + b VJPs, as a fraction of the latter), and with ``--batched B`` a
      row of B images in one ``jit(vmap(...))`` call against B sequential jitted calls (the overhead's split into
      product time inside the loop and the solver's own work, pinned to one core: ``benchmarks/lanczos_overhead.py``;
      the 256-px celebahq-256 cost: ``benchmarks/jacobian_svd_256.py``),
  and ours again with the loosest tolerance whose accuracy is >= the official's: "@eq-acc" (max σ
  error, max angle of v_i and top-k subspace angle each <= the official's) and "@eq-acc-per-triplet"
  (every σ_i error and every angle of v_i <= the official's, with float32-level floors).

Weights: a random-init diffusers ``UNet2DModel`` (every parameter perturbed by 0.02 randn, as in
``tests/unet_fixtures.py``) is saved with ``save_pretrained`` and loaded into JAX with ``load_unet``;
the mid-block outputs h of both frameworks are compared before anything is timed. ``trained`` loads
the shipped SynthFaces DDPM (``assets/ddpm_synthfaces``) on both sides and uses a noised SynthFaces face.

Ground truth: the dense Jacobian (built with our operator, on the cheaper side: n JVPs or m VJPs)
and its top triplets in float64 (eigenpairs of the smaller Gram matrix) when that is estimated to
take <= ``--dense-budget`` seconds, otherwise a long-run block-Krylov result (labelled
``krylov_best_estimate`` in the output).

Reported per method: wall and process-CPU time (ours: jit compile excluded and reported
separately; torch warmed up; CPU time is the steadier number on a shared machine), Jacobian
products (JVP + VJP columns; the official also its plain forwards), iterations, whether its own
convergence test fired, per-triplet singular-value relative error and angle of v_i to the ground
truth (after sign alignment), the largest principal angle of the top-k right subspace, two-sided
residuals max(||J v - s u||, ||J^T u - s v||) / s_1 with the u the method returns (the official u
column-normalised, as its callers do), and ratios against the official method. Timings are never
asserted: JAX and PyTorch convolutions run at different speeds on CPU; ``wall / FE``
(forward-equivalents of the same framework) is the framework-neutral cost.
"""
from __future__ import annotations

import argparse
import dataclasses
import functools
import json
import math
import os
import platform
import sys
import tempfile
import time
from typing import Optional


from benchmarks.cpu_threads import Clock, cpus_usable, limit_cpu_threads  # noqa: E402  (imports no jax/torch)

if __name__ == "__main__" and "jax" not in sys.modules:
    limit_cpu_threads(sys.argv[1:])

import jax  # noqa: E402
import jax.numpy as jnp  # noqa: E402
import numpy as np  # noqa: E402
import torch  # noqa: E402

from benchmarks.torch_pullback import get_h, local_encoder_pullback_xt, make_jvp_friendly  # noqa: E402
from jaxhspace.checkpoints.unet import load_unet  # noqa: E402
from jaxhspace.directions.pullback import pullback_operator  # noqa: E402
from jaxhspace.geometry.lanczos import lanczos_bidiag_svd, lanczos_svd_batch_of, lanczos_svd_of  # noqa: E402
from jaxhspace.geometry.operators import _apply_block  # noqa: E402
from jaxhspace.geometry.svd import (  # noqa: E402
    principal_angles, randomized_block_krylov, subspace_iteration, two_sided_residuals)
from jaxhspace.models.functional import h_of_x  # noqa: E402

T_EDIT = 500
H_ATOL = 1e-4
TRAINED_FOLDER = "assets/ddpm_synthfaces"

# ---------------------------------------------------------------------------------------------
# Configurations
# ---------------------------------------------------------------------------------------------
# A random-init toy UNet (n = 3072, h = 8x8x64) on which benchmarks/torch_pullback.py re-implements the official
# enkeejunior1/Diffusion-Pullback@859c012:src/utils/utils.py:165-249.
TINY_UNET = dict(
    sample_size=32, in_channels=3, out_channels=3, block_out_channels=[32, 64, 64], layers_per_block=1,
    down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"], norm_num_groups=8,
)
# google/ddpm-ema-celebahq-256 (same dict as tests/unet_fixtures.CELEBAHQ); run at a smaller input.
CELEBAHQ_UNET = dict(
    sample_size=256, in_channels=3, out_channels=3, center_input_sample=False, time_embedding_type="positional",
    freq_shift=1, flip_sin_to_cos=False, block_out_channels=[128, 128, 256, 256, 512, 512], layers_per_block=2,
    down_block_types=["DownBlock2D"] * 4 + ["AttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "AttnUpBlock2D"] + ["UpBlock2D"] * 4,
    downsample_padding=0, norm_eps=1e-6, norm_num_groups=32, attention_head_dim=None, act_fn="silu",
    mid_block_scale_factor=1,
)
# For the smoke test: 8x8 input, n = 192, h = 2x2x4 (m = 16), so k = m is cheap and exact.
SMOKE_UNET = dict(
    sample_size=8, in_channels=3, out_channels=3, block_out_channels=[4, 4, 4], layers_per_block=1,
    down_block_types=["DownBlock2D", "AttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "AttnUpBlock2D", "UpBlock2D"], norm_num_groups=2, attention_head_dim=None,
)
CONFIGS = {
    "tiny": dict(unet=TINY_UNET, size=32, official_k50=True),
    "celebahq64": dict(unet=CELEBAHQ_UNET, size=64, official_k50=False),
    "trained": dict(folder=TRAINED_FOLDER, size=None, official_k50=False),
    "smoke": dict(unet=SMOKE_UNET, size=8, official_k50=False),
}


@dataclasses.dataclass
class Setup:
    """Both frameworks' models with identical weights, and the point (x_t, t)."""

    name: str
    torch_unet: object
    model: object  # jaxhspace UNet2DModel
    params: dict
    x: np.ndarray  # [H, W, C] float32 (NHWC without batch)
    t: int
    source: str  # "random-init" or the folder

    @functools.cached_property
    def h_jax(self):
        """Jitted ``x [H, W, C] -> h`` (compiled once per setup)."""
        return jax.jit(h_of_x(self.model, self.params, self.t))

    @property
    def x_torch(self) -> torch.Tensor:
        """``[1, C, H, W]`` for the PyTorch side."""
        return torch.from_numpy(np.ascontiguousarray(self.x.transpose(2, 0, 1))[None])


def perturbed_torch_unet(cfg: dict, seed: int = 0):
    """Random-init diffusers ``UNet2DModel``, every parameter += 0.02 randn (as the test fixtures)."""
    from diffusers import UNet2DModel

    torch.manual_seed(seed)
    unet = UNet2DModel(**cfg)
    with torch.no_grad():
        for p in unet.parameters():
            p.add_(0.02 * torch.randn_like(p))
    return make_jvp_friendly(unet.eval())


def build_random_setup(name: str, cfg: dict, size: int, seed: int = 0) -> Setup:
    """Torch model -> save_pretrained -> load_unet (JAX); x ~ N(0, 1) of shape [size, size, 3]."""
    unet = perturbed_torch_unet(dict(cfg, sample_size=size), seed)
    with tempfile.TemporaryDirectory() as folder:
        unet.save_pretrained(folder)
        model, params = load_unet(folder)
    x = np.random.default_rng(seed).standard_normal((size, size, cfg["in_channels"])).astype(np.float32)
    return Setup(name, unet, model, params, x, T_EDIT, "random-init (perturbed 0.02 randn)")


def _unet_folder(folder: str) -> str:
    sub = os.path.join(folder, "unet")
    return sub if not os.path.isfile(os.path.join(folder, "config.json")) and os.path.isdir(sub) else folder


def _alpha_bar(folder: str, t: int) -> float:
    """ᾱ_t from the folder's scheduler config if there is one, else DDPM linear 1e-4..0.02, T=1000."""
    from jaxhspace.diffusion.schedule import make_schedule, schedule_from_config

    for path in (os.path.join(folder, "scheduler", "scheduler_config.json"),
                 os.path.join(folder, "scheduler_config.json")):
        if os.path.isfile(path):
            with open(path) as fh:
                return float(schedule_from_config(json.load(fh)).alphas_cumprod[t])
    return float(make_schedule().alphas_cumprod[t])


def build_trained_setup(folder: str, seed: int = 0) -> Optional[Setup]:
    """The shipped DDPM on both sides and x_t = noised SynthFaces face at t = 500; None if absent."""
    from diffusers import UNet2DModel

    from jaxhspace.data.synthfaces import generate

    if not os.path.isdir(folder):
        return None
    ufolder = _unet_folder(folder)
    unet = make_jvp_friendly(UNet2DModel.from_pretrained(ufolder).eval())
    model, params = load_unet(folder)
    size = int(unet.config.sample_size)
    x0 = generate(seed, 1, size=size)[0][0]
    ab = _alpha_bar(folder, T_EDIT)
    noise = np.random.default_rng(seed + 1).standard_normal(x0.shape).astype(np.float32)
    x = (math.sqrt(ab) * x0 + math.sqrt(1 - ab) * noise).astype(np.float32)
    return Setup("trained", unet, model, params, x, T_EDIT, f"{folder} (noised SynthFaces face, ᾱ_t={ab:.4f})")


def build_setup(name: str, size: Optional[int] = None, seed: int = 0) -> Optional[Setup]:
    c = CONFIGS[name]
    if "folder" in c:
        return build_trained_setup(c["folder"], seed)
    return build_random_setup(name, c["unet"], size or c["size"], seed)


# ---------------------------------------------------------------------------------------------
# Consistency and per-forward costs
# ---------------------------------------------------------------------------------------------
def check_h_agree(setup: Setup, atol: float = H_ATOL) -> dict:
    """Torch ``get_h`` vs JAX ``h_of_x`` at x_t (NHWC); raises if max |diff| > atol."""
    with torch.no_grad():
        h_t = get_h(setup.torch_unet, setup.x_torch, setup.t)[0].numpy().transpose(1, 2, 0)
    h_j = np.asarray(setup.h_jax(jnp.asarray(setup.x)))
    diff = float(np.max(np.abs(h_t.astype(np.float64) - h_j)))
    scale = float(np.max(np.abs(h_t)))
    if not diff <= atol:
        raise AssertionError(f"torch and JAX h differ: max |diff| = {diff:.3e} > {atol} (max |h| = {scale:.3f})")
    return dict(max_abs_diff=diff, max_abs_h=scale, h_shape=list(h_j.shape))


def _median_time(fn, reps: int = 3) -> float:
    fn()  # warm-up (and compile)
    ts = []
    for _ in range(reps):
        t0 = time.perf_counter()
        fn()
        ts.append(time.perf_counter() - t0)
    return float(np.median(ts))


def forward_costs(setup: Setup) -> dict:
    """Seconds of one batch-1 encoder forward (FE) in each framework (median of 3, warmed up)."""
    f = setup.h_jax
    xj = jnp.asarray(setup.x)
    xt = setup.x_torch

    def torch_fe():
        with torch.no_grad():
            get_h(setup.torch_unet, xt, setup.t)

    return dict(fe_s_torch=_median_time(torch_fe), fe_s_jax=_median_time(lambda: f(xj).block_until_ready()))


# ---------------------------------------------------------------------------------------------
# Ground truth
# ---------------------------------------------------------------------------------------------
def _dense_from_operator(op, chunk: int) -> np.ndarray:
    """Dense ``J [m, n]`` (float64) from identity blocks on the cheaper side (n JVPs or m VJPs)."""
    m, n = op.shape
    by_rows = m < n
    d = m if by_rows else n
    out = np.empty((d, n if by_rows else m), np.float64)
    for s in range(0, d, chunk):
        rows = min(chunk, d - s)
        E = np.zeros((chunk, d), np.float32)  # padded to a fixed block: one compilation
        E[np.arange(rows), s + np.arange(rows)] = 1.0
        E = jnp.asarray(E)
        prod = op.rmatmat_flat(E) if by_rows else op.matmat_flat(E)
        out[s:s + rows] = np.asarray(prod, np.float64)[:rows]
    return out if by_rows else out.T


def dense_ground_truth(op, k_max: int, chunk: int = 64) -> dict:
    """Dense J (float64) and the top ``k_max + 1`` triplets (flattened NHWC) from the eigenpairs of the
    smaller Gram matrix (``J^T J`` or ``J J^T``, LAPACK ``syevr`` on an index subset).

    In float64 the Gram squares the condition number harmlessly for the leading triplets (relative
    σ error ~ 1e-16 σ_1²/σ_i²); the partner vectors come from one product with J, so ``J v = σ u``.
    """
    from scipy.linalg import eigh

    t0 = time.perf_counter()
    J = _dense_from_operator(op, chunk)
    m, n = J.shape
    d = min(m, n)
    kk = min(k_max + 1, d)
    n_head = min(d, max(kk, 64))
    G = J.T @ J if n <= m else J @ J.T
    lam, X = eigh(G, subset_by_index=[d - n_head, d - 1])
    lam, X = lam[::-1], X[:, ::-1]
    s_all = np.sqrt(np.maximum(lam, 0.0))
    s, X = s_all[:kk], X[:, :kk]
    if n <= m:
        v, u = X.T, (J @ X / s).T
    else:
        u, v = X.T, (J.T @ X / s).T
    return dict(kind="dense", s=s, u=u, v=v, wall_s=time.perf_counter() - t0,
                products=int(d), s_all_head=s_all.tolist())


def krylov_best_estimate(op, k_max: int, seed: int, max_iters: int = 30) -> dict:
    """Long-run block Krylov (block k+8, tol 1e-6, up to ``max_iters``) when the dense SVD is too dear."""
    t0 = time.perf_counter()
    r = randomized_block_krylov(op, k_max + 1, jax.random.PRNGKey(seed + 1000), max_iters=max_iters, tol=1e-6)
    return dict(kind="krylov_best_estimate", s=np.asarray(r.s, np.float64), u=_flat(r.u), v=_flat(r.v),
                wall_s=time.perf_counter() - t0, products=r.n_products, iterations=r.iterations,
                converged=r.converged, max_rel_residual=r.max_relative_residual)


def estimate_dense_seconds(op, chunk: int = 64) -> float:
    """Rough cost of :func:`_dense_from_operator` from one timed (warm) product block."""
    m, n = op.shape
    E = jnp.zeros((chunk, min(m, n)), jnp.float32)
    fn = (lambda: op.rmatmat_flat(E).block_until_ready()) if m < n else (lambda: op.matmat_flat(E).block_until_ready())
    c0 = op.counts()
    sec = _median_time(fn, reps=1)
    op.n_jvp, op.n_vjp = c0["n_jvp"], c0["n_vjp"]
    svd_s = 1e-9 * 2 * min(m, n) ** 2 * max(m, n) / 2.0  # float64 Gram + eigh at ~2 GFLOP/s
    return sec * math.ceil(min(m, n) / chunk) + svd_s


def ground_truth(op, k_max: int, seed: int, dense_budget_s: float) -> dict:
    est = estimate_dense_seconds(op)
    gt = dense_ground_truth(op, k_max) if est <= dense_budget_s else krylov_best_estimate(op, k_max, seed)
    gt["dense_estimate_s"] = est
    return gt


# ---------------------------------------------------------------------------------------------
# Methods
# ---------------------------------------------------------------------------------------------
def _flat(a) -> np.ndarray:
    a = np.asarray(a, np.float64)
    return a.reshape(a.shape[0], -1)


@dataclasses.dataclass
class Run:
    """One method's output in a common format: flattened NHWC ``u [k, m]``, ``s [k]``, ``v [k, n]``."""

    method: str
    k: int
    u: np.ndarray
    s: np.ndarray
    v: np.ndarray
    wall_s: float
    cpu_s: float
    n_jvp: int
    n_vjp: int
    n_fwd: int = 0
    iterations: int = 0
    converged: Optional[bool] = None
    framework: str = "jax"
    extra: dict = dataclasses.field(default_factory=dict)
    history: list = dataclasses.field(default_factory=list)

    @property
    def n_products(self) -> int:
        return self.n_jvp + self.n_vjp


def _svd_fn(name: str):
    return {"krylov": randomized_block_krylov, "subspace": subspace_iteration}[name]


def run_ours(op, name: str, k: int, seed: int, warmup: bool = True, **kw) -> Run:
    """Our method on ``op`` (same key every call, so runs with different stops share a prefix).

    ``warmup`` first runs 2 iterations, which compiles the block products and the first basis updates;
    ``extra["compile_s"]`` = that warm-up's wall minus 2 iterations of the timed run (the buffer growth
    of block Krylov, which compiles a few more shapes later, stays in the timed run). The JAX
    linearisation is timed separately (``jax_linearize_s``).
    """
    fn = _svd_fn(name)
    key = jax.random.PRNGKey(seed)
    warm = None
    if warmup:
        with Clock() as cw:
            jax.block_until_ready(fn(op, k, key, **dict(kw, max_iters=min(2, kw.get("max_iters", 2)))).v)
        warm = cw.wall
    with Clock() as c:
        r = fn(op, k, key, **kw)
        jax.block_until_ready((r.u, r.s, r.v))
    extra = dict(tol=kw.get("tol"), max_iters=kw.get("max_iters"), max_rel_residual_in_loop=r.max_relative_residual)
    if warm is not None:
        extra["compile_s"] = max(warm - c.wall * min(2, r.iterations) / max(r.iterations, 1), 0.0)
    return Run(f"ours:{name}", k, _flat(r.u), np.asarray(r.s, np.float64), _flat(r.v), c.wall, c.cpu,
               r.n_jvp, r.n_vjp, 0, r.iterations, r.converged, "jax", extra, r.history)


def _block_pair_seconds(op, b: int, reps: int = 5) -> tuple:
    """Median (wall, process-CPU) seconds of one block of ``b`` JVPs followed by ``b`` VJPs (jitted, warm; not
    counted on ``op``)."""
    V = jnp.ones((b,) + op.in_shape, op.dtype)
    U = jnp.ones((b,) + op.out_shape, op.dtype)

    def pair():
        _apply_block(op._jvp, V, chunk_size=op.chunk_size, in_dtype=op._tin, out_dtype=op.dtype).block_until_ready()
        _apply_block(op._vjp, U, chunk_size=op.chunk_size, in_dtype=op._tout, out_dtype=op.dtype).block_until_ready()

    pair()
    walls, cpus = [], []
    for _ in range(reps):
        with Clock() as c:
            pair()
        walls.append(c.wall)
        cpus.append(c.cpu)
    return float(np.median(walls)), float(np.median(cpus))


def run_lanczos(op, k: int, seed: int, b: int, tol: float) -> Run:
    """``lanczos_bidiag_svd`` with block size ``b``: one untimed call compiles (``compile_s`` = its wall minus the
    timed call's), the second is timed. ``extra["overhead"]`` = (wall - steps * t_block_pair) / (steps *
    t_block_pair), the solver's own cost as a fraction of its products' time; ``overhead_cpu`` the same in
    process-CPU seconds (steadier on a loaded machine)."""
    key = jax.random.PRNGKey(seed)
    counts = op.counts()
    with Clock() as cw:
        lanczos_bidiag_svd(op, k, key, tol=tol, block_size=b)
    op.n_jvp, op.n_vjp = counts["n_jvp"], counts["n_vjp"]
    with Clock() as c:
        r = lanczos_bidiag_svd(op, k, key, tol=tol, block_size=b)
    t_pair, t_pair_cpu = _block_pair_seconds(op, b)
    prod_s, prod_cpu = r.iterations * t_pair, r.iterations * t_pair_cpu
    h = r.history[0]
    extra = dict(tol=tol, block_size=b, work_size=h["work_size"], restart_size=h["restart_size"],
                 restarts=h["restarts"], max_rel_residual_in_loop=r.max_relative_residual,
                 compile_s=max(cw.wall - c.wall, 0.0), block_pair_s=t_pair, products_s=prod_s,
                 overhead=(c.wall - prod_s) / prod_s, block_pair_cpu_s=t_pair_cpu, products_cpu_s=prod_cpu,
                 overhead_cpu=(c.cpu - prod_cpu) / prod_cpu)
    return Run(f"ours:lanczos(b={b})", k, _flat(r.u), np.asarray(r.s, np.float64), _flat(r.v), c.wall, c.cpu,
               r.n_jvp, r.n_vjp, 0, r.iterations, r.converged, "jax", extra)


def batched_row(setup: Setup, k: int, n_images: int, seed: int, tol: float, b: int = 1, reps: int = 5) -> dict:
    """``n_images`` noisy inputs (x_t plus 0.1 N(0, 1) each): one ``jit(lanczos_svd_batch_of)`` call (all images in
    one loop) and one ``jit(vmap(lanczos_svd_of))`` call vs ``n_images`` calls of the same jitted single-image
    function (all warm), products per image and σ agreement.

    Timed as ``reps`` back-to-back triples (sequential, batched, vmap); ``speedup`` / ``speedup_cpu`` (batched) and
    ``speedup_vmap`` are the medians of the per-triple ratios (steadier on a shared machine than one run), the
    per-triple ratios are kept.
    """
    f = h_of_x(setup.model, setup.params, setup.t)
    rng = np.random.default_rng(seed + 7)
    xs = jnp.asarray(setup.x[None] + 0.1 * rng.standard_normal((n_images,) + setup.x.shape).astype(np.float32))
    keys = jax.random.split(jax.random.PRNGKey(seed), n_images)
    one = jax.jit(lambda x, key: lanczos_svd_of(f, x, k, key, tol=tol, block_size=b))
    batch = jax.jit(lambda xs, keys: lanczos_svd_batch_of(f, xs, k, keys, tol=tol, block_size=b))
    many = jax.jit(jax.vmap(lambda x, key: lanczos_svd_of(f, x, k, key, tol=tol, block_size=b)))
    jax.block_until_ready(one(xs[0], keys[0]))
    jax.block_until_ready(batch(xs, keys))
    jax.block_until_ready(many(xs, keys))
    runs = []
    for _ in range(max(1, reps)):
        with Clock() as cs:
            seq = [jax.block_until_ready(one(xs[i], keys[i])) for i in range(n_images)]
        with Clock() as cb:
            bat = jax.block_until_ready(batch(xs, keys))
        with Clock() as cv:
            vm = jax.block_until_ready(many(xs, keys))
        runs.append((cs.wall, cs.cpu, cb.wall, cb.cpu, cv.wall, cv.cpu))
    sw, sc, bw, bc, vw, vc = (np.array(a) for a in zip(*runs))
    s_seq = np.stack([np.asarray(r.s, np.float64) for r in seq])
    s_err = float(np.max(np.abs(np.asarray(bat.s, np.float64) - s_seq) / s_seq))
    s_err_vmap = float(np.max(np.abs(np.asarray(vm.s, np.float64) - s_seq) / s_seq))
    prods = [int(r.n_jvp + r.n_vjp) for r in seq]
    med = lambda a: float(np.median(a))  # noqa: E731
    return dict(k=k, block_size=b, n_images=n_images, tol=tol, reps=len(runs),
                sequential_wall_s=med(sw), sequential_cpu_s=med(sc), batched_wall_s=med(bw), batched_cpu_s=med(bc),
                vmap_wall_s=med(vw), vmap_cpu_s=med(vc),
                speedup=med(sw / bw), speedup_cpu=med(sc / bc), speedup_vmap=med(sw / vw),
                speedup_cpu_vmap=med(sc / vc), speedup_reps=(sw / bw).tolist(), speedup_vmap_reps=(sw / vw).tolist(),
                products_per_image=prods, batched_products_per_image=np.asarray(bat.n_jvp + bat.n_vjp).tolist(),
                all_converged=bool(np.all(np.asarray(bat.converged))), max_sigma_rel_diff_batched_vs_seq=s_err,
                max_sigma_rel_diff_vmap_vs_seq=s_err_vmap)


def run_official(setup: Setup, k: int, seed: int, max_iter: int = 50, min_iter: int = 10,
                 chunk_size: int = 25, warmup: bool = True) -> Run:
    """The PyTorch re-implementation; outputs converted to flattened NHWC (u column-normalised).

    The warm-up is one jacfwd chunk and one reverse pass (so first-call allocations are not timed).
    """
    x = setup.x_torch
    if warmup:
        local_encoder_pullback_xt(setup.torch_unet, x, setup.t, pca_rank=min(k, chunk_size),
                                  chunk_size=chunk_size, min_iter=0, max_iter=1, seed=seed + 99)
    with Clock() as clk:
        r = local_encoder_pullback_xt(setup.torch_unet, x, setup.t, pca_rank=k, chunk_size=chunk_size,
                                      min_iter=min_iter, max_iter=max_iter, convergence_threshold=1e-4, seed=seed)
    c, hh, ww = x.shape[1:]
    v = r.vT.numpy().reshape(k, c, hh, ww).transpose(0, 2, 3, 1).reshape(k, -1)
    with torch.no_grad():
        h_shape = get_h(setup.torch_unet, x, setup.t).shape[1:]  # (Cmid, h, w)
    u_raw = r.u.numpy().T.reshape((k,) + tuple(h_shape)).transpose(0, 2, 3, 1).reshape(k, -1)
    # normalised as the callers (enkeejunior1/Diffusion-Pullback@859c012:src/modules/edit.py:746-747)
    u = u_raw / np.linalg.norm(u_raw, axis=1, keepdims=True)
    return Run(f"official(k={k})", k, u.astype(np.float64), r.s.numpy().astype(np.float64), v.astype(np.float64),
               r.wall_s, clk.cpu, r.n_jvp, r.n_vjp, r.n_fwd, r.iterations, r.converged, "torch",
               dict(min_iter=min_iter, max_iter=max_iter, chunk_size=chunk_size, convergence_threshold=1e-4,
                    final_dist=r.dist[-1], min_dist=min(r.dist)))


class _CountingOperator:
    """``scipy.sparse.linalg.LinearOperator`` pieces calling our JAX operator, one column at a time."""

    def __init__(self, op):
        self.op, self.n_jvp, self.n_vjp = op, 0, 0

    def matvec(self, v):
        self.n_jvp += 1
        x = self.op.unflatten_in(jnp.asarray(np.ravel(v), jnp.float32))
        return np.asarray(self.op.flatten_out(self.op.matvec(x)), np.float64)

    def rmatvec(self, u):
        self.n_vjp += 1
        y = self.op.unflatten_out(jnp.asarray(np.ravel(u), jnp.float32))
        return np.asarray(self.op.flatten_in(self.op.rmatvec(y)), np.float64)


def run_svds(op, k: int, seed: int, tol: float = 1e-5) -> Run:
    """``scipy.sparse.linalg.svds`` (ARPACK, float64 driver) with our products; warmed up first."""
    from scipy.sparse.linalg import LinearOperator, svds

    c = _CountingOperator(op)
    c.rmatvec(c.matvec(np.ones(op.dim_in)))  # compile the single-column products
    c.n_jvp = c.n_vjp = 0
    A = LinearOperator(op.shape, matvec=c.matvec, rmatvec=c.rmatvec, dtype=np.float64)
    v0 = np.random.default_rng(seed).standard_normal(min(op.shape))
    with Clock() as clock:
        u, s, vt = svds(A, k=k, tol=tol, v0=v0)  # raises ArpackNoConvergence if it does not converge
    order = np.argsort(s)[::-1]
    return Run("scipy.svds(arpack)", k, u[:, order].T, s[order], vt[order], clock.wall, clock.cpu, c.n_jvp, c.n_vjp, 0,
               0, True, "jax", dict(tol=tol, ncv_default=min(min(op.shape), max(2 * k + 1, 20))))


# ---------------------------------------------------------------------------------------------
# Accuracy
# ---------------------------------------------------------------------------------------------
def _angles_deg(v: np.ndarray, ref: np.ndarray) -> np.ndarray:
    """Per-row angle between ``v_i`` and ``ref_i`` after sign alignment (accurate for tiny angles)."""
    v = v / np.linalg.norm(v, axis=1, keepdims=True)
    ref = ref / np.linalg.norm(ref, axis=1, keepdims=True)
    c = np.abs(np.sum(v * ref, axis=1))
    sgn = np.sign(np.sum(v * ref, axis=1))[:, None]
    sgn[sgn == 0] = 1
    sn = np.linalg.norm(sgn * v - c[:, None] * ref, axis=1)
    return np.degrees(np.arctan2(sn, c))


def evaluate(run: Run, gt: dict, op) -> dict:
    """Accuracy of ``run`` against the ground truth, and explicit two-sided residuals (products not counted)."""
    k = run.k
    s_ref = gt["s"][:k]
    s_err = np.abs(run.s - s_ref) / s_ref
    ang = _angles_deg(run.v, gt["v"][:k])
    sub = math.degrees(principal_angles(run.v, gt["v"][:k]))
    sub_km1 = math.degrees(principal_angles(run.v[: k - 1], gt["v"][: k - 1])) if k > 1 else 0.0
    counts = op.counts()
    res = np.asarray(two_sided_residuals(op, op.unflatten_out(run.u), run.s, op.unflatten_in(run.v)), np.float64)
    jv = np.asarray(op.flatten_out(op.matmat(op.unflatten_in(jnp.asarray(run.v, jnp.float32)))), np.float64)
    op.n_jvp, op.n_vjp = counts["n_jvp"], counts["n_vjp"]
    sign_mismatch = int(np.sum(np.sum(jv * run.u, axis=1) < 0))
    rel_res = res.max(axis=1) / s_ref[0]
    return dict(
        sigma=run.s.tolist(), sigma_rel_err=s_err.tolist(), sigma_rel_err_max=float(s_err.max()),
        angle_deg=ang.tolist(), angle_deg_max=float(ang.max()), subspace_angle_deg=sub,
        subspace_angle_deg_top_km1=sub_km1, rel_residual=rel_res.tolist(), rel_residual_max=float(rel_res.max()),
        uv_sign_mismatches=sign_mismatch,
    )


SIGMA_FLOOR = 1e-6  # per-triplet comparison: errors below these count as equal (float32 round-off level)
ANGLE_FLOOR_DEG = 1e-2


def at_least_as_accurate(acc: dict, target: dict, per_triplet: bool = False) -> bool:
    """Is ``acc`` at least as accurate as ``target``?

    Aggregate (default): max σ error, max angle of v_i and top-k subspace angle all <= the target's.
    ``per_triplet``: for every i, σ_i error <= max(target's, SIGMA_FLOOR) and angle of v_i <=
    max(target's, ANGLE_FLOOR_DEG) -- the official's leading triplets are at float32 round-off.
    """
    if not per_triplet:
        keys = ("sigma_rel_err_max", "angle_deg_max", "subspace_angle_deg")
        return all(acc[key] <= target[key] for key in keys)
    pairs = (("sigma_rel_err", SIGMA_FLOOR), ("angle_deg", ANGLE_FLOOR_DEG))
    return all(a <= max(t, floor) for key, floor in pairs for a, t in zip(acc[key], target[key]))


def _first_sigma_ok(history: list, s_ref: np.ndarray, target: dict, per_triplet: bool) -> Optional[int]:
    """First iteration in a run's history whose singular values meet the target (σ part of the test)."""
    lim = (np.maximum(np.asarray(target["sigma_rel_err"]), SIGMA_FLOOR) if per_triplet
           else target["sigma_rel_err_max"])
    for h in history:
        if np.all(np.abs(np.asarray(h["s"], np.float64) - s_ref) / s_ref <= lim):
            return int(h["iteration"])
    return None


def equal_accuracy_run(op, k: int, seed: int, target: dict, gt: dict, max_iters: int, history: list,
                       name: str = "krylov", per_triplet: bool = False):
    """Our method with the loosest residual tolerance at which it is at least as accurate as ``target``.

    With a fixed key every run is a prefix of the same iteration, so this searches the smallest stopping
    iteration j that meets the target: it starts at the first iteration of ``history`` (a run with the
    same key) whose singular values meet it (σ per iteration is in the history, so that part is free)
    and gallops (j+1, j+2, j+4, ...) then bisects over runs stopped after exactly j iterations. The
    tolerance is then set just above the in-loop residual reached at j, and that tolerance-driven run
    (warm: its shapes were compiled by the probes) is the one reported, with the accuracy it reached.
    Returns ``(run, accuracy, search)``; ``run.extra["reached"]`` says whether the target was met.
    """
    s_ref = gt["s"][:k]
    j0 = _first_sigma_ok(history, s_ref, target, per_triplet) or min(len(history) + 1, max_iters)
    search, runs = [], {}

    def probe(j):
        if j not in runs:
            r = run_ours(op, name, k, seed, warmup=False, tol=0.0, max_iters=j)
            acc = evaluate(r, gt, op)
            runs[j] = (r, at_least_as_accurate(acc, target, per_triplet))
            search.append(dict(iters=j, products=r.n_products, reached=runs[j][1],
                               rel_residual_in_loop=r.extra["max_rel_residual_in_loop"],
                               sigma_rel_err_max=acc["sigma_rel_err_max"], angle_deg_max=acc["angle_deg_max"],
                               subspace_angle_deg=acc["subspace_angle_deg"]))
        return runs[j][1]

    lo, hi, step = j0 - 1, j0, 1  # lo: known (or assumed, from σ) to fail
    while not probe(hi) and hi < max_iters:
        lo, hi, step = hi, min(hi + step, max_iters), 2 * step
    while runs[hi][1] and hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if probe(mid) else (mid, hi)
    tol = runs[hi][0].extra["max_rel_residual_in_loop"] * 1.001
    r = run_ours(op, name, k, seed, warmup=False, tol=tol, max_iters=hi)
    r.method = f"ours:{name}@eq-acc" + ("-per-triplet" if per_triplet else "")
    acc = evaluate(r, gt, op)
    r.extra["reached"] = at_least_as_accurate(acc, target, per_triplet)
    return r, acc, search


# ---------------------------------------------------------------------------------------------
# Report
# ---------------------------------------------------------------------------------------------
def summarize(run: Run, acc: dict, fe: dict, official: Optional[Run]) -> dict:
    """One row of the table / JSON (accuracy, cost, ratios vs the official run with the same k)."""
    fe_s = fe["fe_s_jax"] if run.framework == "jax" else fe["fe_s_torch"]
    row = dict(method=run.method, framework=run.framework, k=run.k, wall_s=run.wall_s, cpu_s=run.cpu_s,
               wall_fe=run.wall_s / fe_s,
               n_jvp=run.n_jvp, n_vjp=run.n_vjp, n_fwd=run.n_fwd, products=run.n_products,
               iterations=run.iterations, converged=run.converged, **run.extra, **acc)
    if official is not None and run is not official:
        row["products_ratio_official_over_this"] = official.n_products / max(run.n_products, 1)
        row["time_ratio_official_over_this"] = official.wall_s / run.wall_s
        row["cpu_ratio_official_over_this"] = official.cpu_s / run.cpu_s
        row["fe_ratio_official_over_this"] = (official.wall_s / fe["fe_s_torch"]) / row["wall_fe"]
    return row


def _fmt(x, spec=".2e"):
    return "-" if x is None else format(x, spec)


def markdown_table(rows: list) -> str:
    """The per-method table; per-triplet lists are in the JSON."""
    head = ("| method | k | stop tol | wall s | cpu s | compile s | wall/FE | JVP+VJP | iters | own test fired | "
            "max σ rel err | max angle v_i (°) | top-k angle (°) | max rel resid | u/v sign mism. | "
            "×products (off/this) | ×wall (off/this) | ×cpu (off/this) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        cells = [
            r["method"], r["k"], _fmt(r.get("tol"), ".1e"), f"{r['wall_s']:.2f}", f"{r['cpu_s']:.2f}",
            _fmt(r.get("compile_s"), ".2f"), f"{r['wall_fe']:.0f}", r["products"], r["iterations"], r["converged"],
            f"{r['sigma_rel_err_max']:.2e}", f"{r['angle_deg_max']:.3g}", f"{r['subspace_angle_deg']:.3g}",
            f"{r['rel_residual_max']:.2e}", r["uv_sign_mismatches"],
            _fmt(r.get("products_ratio_official_over_this"), ".1f"),
            _fmt(r.get("time_ratio_official_over_this"), ".2f"), _fmt(r.get("cpu_ratio_official_over_this"), ".2f"),
        ]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def per_triplet_table(rows: list, gt: dict, k: int) -> str:
    """σ_i (ground truth) and, per method, σ rel err / angle of v_i for i = 1..k."""
    lines = ["| i | σ_i (truth) | " + " | ".join(r["method"] for r in rows if r["k"] == k) + " |",
             "|" + "---|" * (2 + sum(r["k"] == k for r in rows))]
    for i in range(k):
        cells = [f"{r['sigma_rel_err'][i]:.1e} / {r['angle_deg'][i]:.2g}°" for r in rows if r["k"] == k]
        lines.append(f"| {i + 1} | {gt['s'][i]:.5g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def environment(fe: dict) -> dict:
    import diffusers
    import flax
    import scipy

    dev = jax.devices()[0]
    return dict(
        jax_device=f"{dev.platform}:{getattr(dev, 'device_kind', '')}", torch_device="cpu", dtype="float32",
        python=platform.python_version(), machine=platform.processor() or platform.machine(),
        versions=dict(jax=jax.__version__, flax=flax.__version__, torch=torch.__version__,
                      diffusers=diffusers.__version__, scipy=scipy.__version__, numpy=np.__version__),
        threads=dict(cpu_count=os.cpu_count(), cpus_usable=cpus_usable(), torch_num_threads=torch.get_num_threads(),
                     torch_interop_threads=torch.get_num_interop_threads(),
                     xla_flags=os.environ.get("XLA_FLAGS", "")),
        loadavg_start=list(os.getloadavg()), **fe,
    )


# ---------------------------------------------------------------------------------------------
# Driver
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class Options:
    k: int = 8
    seed: int = 0
    tol: float = 1e-3
    krylov_max_iters: int = 25
    subspace_max_iters: int = 50
    official_max_iter: int = 50
    official_min_iter: int = 10
    official_k50: bool = False
    svds: bool = True
    subspace: bool = True
    svds_tol: float = 1e-5
    lanczos_blocks: tuple = (1, 8)
    lanczos_tol: float = 1e-6
    batched: int = 0
    dense_budget_s: float = 300.0
    threads: int = 1
    verbose: bool = True


def _log(opts: Options, msg: str):
    if opts.verbose:
        print(f"[{time.strftime('%H:%M:%S')}] {msg}", flush=True)


def run_methods(setup: Setup, op, k: int, gt: dict, fe: dict, opts: Options, subspace: bool = True) -> list:
    """All methods at one k; returns table rows (official first)."""
    _log(opts, f"k={k}: official (torch)")
    off = run_official(setup, k, opts.seed, opts.official_max_iter, opts.official_min_iter)
    off_acc = evaluate(off, gt, op)
    runs = [(off, off_acc)]
    names = [("krylov", opts.krylov_max_iters)] + ([("subspace", opts.subspace_max_iters)] if subspace else [])
    for name, mi in names:
        _log(opts, f"k={k}: ours {name} (tol {opts.tol})")
        r = run_ours(op, name, k, opts.seed, warmup=True, max_iters=mi, tol=opts.tol)
        runs.append((r, evaluate(r, gt, op)))
        if name == "krylov":
            hist = r.history
    for per_triplet in (False, True):
        _log(opts, f"k={k}: ours krylov at the official's accuracy" + (" (per triplet)" if per_triplet else ""))
        r, acc, search = equal_accuracy_run(op, k, opts.seed, off_acc, gt, opts.krylov_max_iters, hist,
                                            per_triplet=per_triplet)
        r.extra["search"] = search
        runs.append((r, acc))
    for b in opts.lanczos_blocks:
        _log(opts, f"k={k}: ours lanczos b={b} (tol {opts.lanczos_tol})")
        r = run_lanczos(op, k, opts.seed, b, opts.lanczos_tol)
        runs.append((r, evaluate(r, gt, op)))
    if opts.svds and k < min(op.shape) - 1:
        _log(opts, f"k={k}: scipy svds")
        r = run_svds(op, k, opts.seed, opts.svds_tol)
        runs.append((r, evaluate(r, gt, op)))
    return [summarize(r, a, fe, off) for r, a in runs]


def run_benchmark(setup: Setup, opts: Options) -> dict:
    """Everything for one setup; returns the JSON-ready dict (rows, ground truth, environment)."""
    torch.set_num_threads(opts.threads)  # the same count as XLA's pool (XLA_FLAGS, set by main)
    t_start = time.perf_counter()
    _log(opts, f"{setup.name}: checking h agreement")
    h_check = check_h_agree(setup)
    fe = forward_costs(setup)
    env = environment(fe)
    lin = {}
    for which in ("first", "warm"):
        t0 = time.perf_counter()
        op = pullback_operator(setup.model, setup.params, jnp.asarray(setup.x), setup.t)
        lin[which] = time.perf_counter() - t0
    ks = [opts.k] + ([50] if opts.official_k50 and opts.k != 50 else [])
    _log(opts, f"ground truth (n={op.dim_in}, m={op.dim_out})")
    gt = ground_truth(op, max(ks), opts.seed, opts.dense_budget_s)
    rows = []
    for k in ks:  # subspace iteration at k=50 would pay the official's 5000 products again: skipped
        rows += run_methods(setup, op, k, gt, fe, opts, subspace=opts.subspace and k == opts.k)
    res = assemble(setup, opts, op, gt, rows, h_check, env, lin, time.perf_counter() - t_start)
    if opts.batched:
        _log(opts, f"batched: {opts.batched} images, vmapped vs sequential (lanczos b=1, k={opts.k})")
        res["batched"] = batched_row(setup, opts.k, opts.batched, opts.seed, opts.lanczos_tol)
        res["total_wall_s"] = time.perf_counter() - t_start
    return res


def assemble(setup: Setup, opts: Options, op, gt: dict, rows: list, h_check: dict, env: dict, lin: dict,
             total_s: float) -> dict:
    """The result dict written as JSON and rendered by :func:`render_report`."""
    s, kk = gt["s"], opts.k
    env = dict(env, loadavg_end=list(os.getloadavg()))
    return dict(
        config=setup.name, source=setup.source, t=setup.t, k=opts.k, options=dataclasses.asdict(opts),
        sizes=dict(x_shape=list(setup.x.shape), n=op.dim_in, h_shape=list(op.out_shape), m=op.dim_out),
        h_check=h_check, jax_linearize_s=lin, environment=env,
        ground_truth=dict(kind=gt["kind"], wall_s=gt["wall_s"], products=gt["products"],
                          dense_estimate_s=gt.get("dense_estimate_s"), sigma=s.tolist(),
                          sigma_head=gt.get("s_all_head"),
                          gap_k1_over_k=float(s[kk] / s[kk - 1]) if s.size > kk else None,
                          **{k_: gt[k_] for k_ in ("iterations", "converged", "max_rel_residual") if k_ in gt}),
        rows=rows, total_wall_s=total_s,
    )


def render_report(res: dict) -> str:
    """Markdown: header facts, the per-method table and the per-triplet table(s)."""
    gt = res["ground_truth"]
    env = res["environment"]
    s = gt["sigma"]
    head = [
        f"## Jacobian SVD benchmark: {res['config']} ({res['source']}), t={res['t']}",
        f"x {res['sizes']['x_shape']} (n={res['sizes']['n']}), h {res['sizes']['h_shape']} (m={res['sizes']['m']}); "
        f"torch/JAX h max|diff| = {res['h_check']['max_abs_diff']:.1e} (max|h| {res['h_check']['max_abs_h']:.2f})",
        f"ground truth: {gt['kind']} ({gt['wall_s']:.0f} s); σ_1..σ_{len(s)} = "
        + ", ".join(f"{v:.4g}" for v in s[: min(len(s), res['k'] + 1)])
        + (f"; σ_{res['k'] + 1}/σ_{res['k']} = {gt['gap_k1_over_k']:.4f}" if gt["gap_k1_over_k"] else ""),
        f"FE (one encoder forward): torch {env['fe_s_torch'] * 1e3:.1f} ms, JAX {env['fe_s_jax'] * 1e3:.1f} ms; "
        f"JAX linearize {res['jax_linearize_s']['warm']:.2f} s (first {res['jax_linearize_s']['first']:.2f} s); "
        f"threads torch {env['threads']['torch_num_threads']} / cpus usable {env['threads']['cpus_usable']} "
        f"of {env['threads']['cpu_count']}; "
        f"load avg {env['loadavg_start'][0]:.1f}→{env['loadavg_end'][0]:.1f}",
        "",
        markdown_table(res["rows"]),
        "",
    ]
    for k in sorted({r["k"] for r in res["rows"]}):
        if k <= 16:
            head += [f"Per triplet (σ rel err / angle of v_i), k={k}:", "",
                     per_triplet_table(res["rows"], dict(s=np.asarray(s)), k), ""]
    lz = [r for r in res["rows"] if r["method"].startswith("ours:lanczos")]
    if lz:
        head += ["Lanczos solver overhead ((time - steps x block-pair time) / products time), wall and CPU:", "",
                 "| k | method | steps | restarts | block pair ms (cpu ms) | products s (cpu s) | wall s (cpu s) "
                 "| overhead wall | overhead cpu |", "|---|---|---|---|---|---|---|---|---|"]
        head += [f"| {r['k']} | {r['method']} | {r['iterations']} | {r['restarts']} | {r['block_pair_s'] * 1e3:.2f} "
                 f"({r['block_pair_cpu_s'] * 1e3:.2f}) | {r['products_s']:.3f} ({r['products_cpu_s']:.3f}) | "
                 f"{r['wall_s']:.3f} ({r['cpu_s']:.3f}) | {100 * r['overhead']:.0f}% | {100 * r['overhead_cpu']:.0f}% |"
                 for r in lz]
        head.append("")
    if res.get("batched"):
        bt = res["batched"]
        head += [f"Batched (k={bt['k']}, b={bt['block_size']}, {bt['n_images']} images, medians of {bt['reps']}): "
                 f"one lanczos_svd_batch_of call {bt['batched_wall_s']:.2f} s (×{bt['speedup']:.2f}), one "
                 f"jit(vmap) call {bt['vmap_wall_s']:.2f} s (×{bt['speedup_vmap']:.2f}) vs {bt['n_images']} "
                 f"sequential calls {bt['sequential_wall_s']:.2f} s; products per image {bt['products_per_image']}; "
                 f"max σ diff {bt['max_sigma_rel_diff_batched_vs_seq']:.1e}", ""]
    head.append(f"total wall {res['total_wall_s']:.0f} s")
    return "\n".join(head)


def jsonable(o):
    """``o`` with NumPy scalars/arrays turned into Python numbers/lists and non-finite floats into strings
    (what ``json.dump`` needs); shared by the benchmarks."""
    if isinstance(o, dict):
        return {k: jsonable(v) for k, v in o.items()}
    if isinstance(o, (list, tuple)):
        return [jsonable(v) for v in o]
    if isinstance(o, (np.floating, np.integer)):
        return o.item()
    if isinstance(o, np.ndarray):
        return o.tolist()
    if isinstance(o, float) and not math.isfinite(o):
        return str(o)
    return o


def write_json(res: dict, path: str) -> None:
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    with open(path, "w") as fh:
        json.dump(jsonable(res), fh, indent=1)


def parse_args(argv=None):
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--config", choices=sorted(CONFIGS), default="tiny")
    p.add_argument("--k", type=int, default=8)
    p.add_argument("--size", type=int, default=None, help="input resolution (random-init configs)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--tol", type=float, default=1e-3, help="relative residual stop of our methods")
    p.add_argument("--official-max-iter", type=int, default=50)
    p.add_argument("--official-k50", choices=("auto", "yes", "no"), default="auto",
                   help="also run k=50 (auto: on tiny only)")
    p.add_argument("--no-svds", action="store_true")
    p.add_argument("--no-subspace", action="store_true", help="skip our subspace iteration (as costly as the official)")
    p.add_argument("--dense-budget", type=float, default=300.0, help="seconds allowed for the dense ground truth")
    p.add_argument("--threads", type=int, default=1,
                   help="CPUs for both frameworks: torch threads, XLA flags and, when run as a module, the "
                        "process's CPU affinity (set before jax/torch start). Default 1: on a shared, "
                        "oversubscribed machine torch's 2-thread OpenMP pool ran ~10x slower than 1 thread")
    p.add_argument("--svds-tol", type=float, default=1e-5, help="ARPACK (scipy svds) tolerance")
    p.add_argument("--lanczos-blocks", default="1,8", help="block sizes of the Lanczos rows ('' for none)")
    p.add_argument("--lanczos-tol", type=float, default=1e-6, help="per-triplet residual stop of the Lanczos rows")
    p.add_argument("--batched", type=int, default=0, help="also time B images in one vmapped Lanczos call (0: skip)")
    p.add_argument("--out", default=None)
    return p.parse_args(argv)


def main(argv=None) -> int:
    a = parse_args(argv)
    cfg = CONFIGS[a.config]
    setup = build_setup(a.config, a.size, a.seed)
    if setup is None:
        print(f"SKIP: {cfg['folder']} does not exist yet (train and export the SynthFaces DDPM first: "
              "python -m jaxhspace.main --config configs/ddpm_synthfaces.py --workdir runs/ddpm_synthfaces)")
        return 0
    k50 = cfg["official_k50"] if a.official_k50 == "auto" else a.official_k50 == "yes"
    opts = Options(k=a.k, seed=a.seed, tol=a.tol, official_max_iter=a.official_max_iter, official_k50=k50,
                   svds=not a.no_svds, subspace=not a.no_subspace, dense_budget_s=a.dense_budget, threads=a.threads,
                   svds_tol=a.svds_tol, lanczos_tol=a.lanczos_tol, batched=a.batched,
                   lanczos_blocks=tuple(int(v) for v in a.lanczos_blocks.split(",") if v.strip()))
    res = run_benchmark(setup, opts)
    print(render_report(res))
    size_tag = "" if a.size is None or a.size == cfg.get("size") else f"_size{a.size}"
    out = a.out or f"benchmarks/results/jacobian_svd_{a.config}{size_tag}.json"
    write_json(res, out)
    print(f"wrote {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
