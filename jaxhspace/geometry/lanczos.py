"""Top-k singular triplets of a matrix-free Jacobian by thick-restart Golub--Kahan--Lanczos bidiagonalisation.

The whole iteration runs inside one ``lax.while_loop`` with fixed-size buffers, so it is ``jit``-compiled once and
never returns to the host per step. :func:`lanczos_svd_batch_of` runs B images (or timesteps) in that one loop: each
block step is one batched product for all of them, each image stops on its own residual and, once finished, keeps
its state while the others go on. ``jax.vmap`` of the single-image :func:`lanczos_svd_of` gives the same results,
but vmap of a ``while_loop`` selects between whole carried buffers at every step and runs both sides of every
``cond`` for all images; the batched loop updates only the rows a step writes and takes a ``cond`` when any image
needs it. Measured on the shipped DDPM (k = 8, 8 images, one pinned CPU core, two runs of 5 back-to-back timings): the
batched loop ×1.14-1.15 faster than 8 sequential calls (every timing ×1.13-1.15), ``jax.vmap`` ×1.05-1.06, with the
same products and the same σ per image (``benchmarks/jacobian_svd.py --batched 8``).

Algorithm (Baglama & Reichel 2005, "Augmented implicitly restarted Lanczos bidiagonalization methods", SIAM J.
Sci. Comput. 27(1), the IRLBA method; block form as in Hallman 2022, "A block bidiagonalization method for
fixed-accuracy low-rank matrix approximation", SIMAX 43(2)). With ``b`` the block size, ``p`` the work size
(Lanczos vectors per cycle) and ``r`` the restart size (Ritz vectors kept, ``k <= r < p``):

1. ``V`` holds orthonormal rows in input space, ``P`` in output space, ``B = P J V^T`` (``p x p``) is built from
   the Gram--Schmidt coefficients, so ``J V_{:q}^T = P_{:q}^T B_{:q,:q}`` holds by construction.
   One step: ``Y = J V_blk`` (``b`` JVPs), orthonormalise against all of ``P`` (new rows of ``P``, one column of
   blocks of ``B``); ``Z = J^T P_blk`` (``b`` VJPs), orthonormalise against all of ``V`` (next block of ``V``;
   its coefficients ``E`` on the new rows are the residual). Both orthogonalisations are full classical
   Gram--Schmidt applied twice (Giraud et al. 2005, "twice is enough"), column by column; a column that
   vanishes (an invariant subspace: rank-deficient ``J`` or a complete space) is replaced by a random vector
   orthogonal to the buffer with coefficient 0, so the relations stay exact and the null directions come out
   with ``s = 0``.
2. Ritz triplets from the SVD of the small ``B = X S Y^T``: ``v_i = Y_i^T V``, ``u_i = X_i^T P``, so
   ``J v_i = s_i u_i`` up to round-off (the right residual), and
   ``J^T u_i - s_i v_i = (x_i^{last block})^T E V_next``, whose norm is the left residual (IRLBA's stop, no
   products). Triplet ``i`` has converged when ``max(residuals_i) <= tol * s_1``; the run stops when the top
   ``k`` have.
3. Thick restart when the work space is full: ``V <- [v_1..v_r; V_next]``, ``P <- [u_1..u_r]``,
   ``B <- diag(s_1..s_r)``; the first step after it fills the "arrowhead" row of ``B`` (Baglama & Reichel
   eq. 3.8) through the same Gram--Schmidt.

Precision: the Lanczos vectors and products are in the operator's dtype (float32). The small projected problems
(the ``p x p`` SVDs of ``B``, the Ritz residuals) are float64 by default, traced under a local
``jax.enable_x64`` scope with x64 left off everywhere else (``projected_dtype``; float32 on a TPU, where float64
is emulated). In float32 a backward-stable SVD of ``B`` is off by ``c eps ||B|| = c eps s_1``, which relative to
the smaller ``s_i`` is several float32 ulps, and its singular vectors are orthonormal only to ~1e-6; through the
restarts (``V <- Y_k V``) that loss of orthonormality carries into the basis. Measured on the shipped DDPM
(k = 50, tol 1e-6, 238 products either way): float32 small SVDs gave σ to 9.3e-7 relative (1.4e-6 in an earlier
run) with ``|u_i|, |v_i|`` off 1 by 8e-7; float64 small SVDs give 1.4e-7 with unit vectors to 7e-8, the float32
round-off of the products (a float64 Rayleigh quotient ``u^T J v`` of the same vectors: 9e-8; ARPACK, which
keeps float64 vectors: 9e-8). The padded part of the buffer is given singular value ``c > ||B||_2`` so that it
never mixes with (possibly zero) singular values of the real part.

Cost on CPU (``benchmarks/lanczos_overhead.py``, shipped DDPM, one pinned core, process-CPU time, four runs on a
shared machine): XLA's CPU compiler puts convolution kernels in canonical order only in the entry computation, so
the VJP's convolutions (transposed, ``01oi`` kernels) in a ``while_loop`` body missed the fast kernels and a JVP +
VJP pair took 30-32 ms there vs 8.4-11.9 ms as a standalone jitted call. The products are therefore applied with
their convolution kernels made canonical once, before the loop (:func:`_hoist_conv_kernels`): 7.0-8.6 ms per pair
in the loop. The solver's own work (Gram--Schmidt, Ritz SVDs, restarts) is 2-4% (k = 8) and 8-15% (k = 50) of the
product time with float32 small SVDs, 3% and 12-13% with float64 ones; timed back to back with its block steps'
worth of standalone JVP + VJP pairs (the products of a host-driven solver), the whole solver takes 11-16% (k = 8)
and 2-8% (k = 50) less CPU time (runs with either). At 256 px (celebahq-256
architecture, ``benchmarks/jacobian_svd_256.py``) it spends 1.62 s of CPU per product against 1.79 s for a
standalone JVP/VJP.

Libraries evaluated before writing this (``pip install`` on 2026-11-29):

* ``matfree`` 0.6.3 (``decomp.bidiag(num_matvecs)`` + ``eig.svd_partial``): a fixed-depth Golub--Kahan
  bidiagonalisation with full re-orthogonalisation that jits and vmaps, but it has no restart (a cycle cannot
  start from an augmented Ritz basis: it starts from one vector), no residual or tolerance stop (the depth is
  fixed in advance), no block size, and no breakdown handling for rank-deficient operators. Using it would mean
  running one deep bidiagonalisation without restart: memory ``O((m + n) depth)`` and no early stop.
* ``lineax`` 0.1.1: linear operators and linear solves (including a dense SVD solver); no partial or iterative
  SVD or eigensolver.
* ``jax.experimental.sparse.linalg.lobpcg_standard``: block, jit-able, with a tolerance, but for a symmetric
  eigenproblem: on ``J^T J`` it squares the condition number (float32 eigenvalues of the Gram lose the small
  singular values), it requires ``5 k < n``, has no per-triplet stop (its fixed criterion is
  ``tol * 10 * n * (lambda + |Av|)``), and LOBPCG spends ``k`` products per iteration (a block method without
  Lanczos' single-vector product efficiency).

None does restart + tolerance + block + jit + vmap, so the solver is written here on ``jax.lax`` only (no new
dependency).
"""
from __future__ import annotations

import functools
from typing import Callable, NamedTuple, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxhspace.geometry.operators import JacobianOperator
from jaxhspace.geometry.svd import SVDResult, _as_key, _check_k

__all__ = ["LanczosSVD", "lanczos_bidiag_svd", "lanczos_svd_batch_of", "lanczos_svd_core", "lanczos_svd_of",
           "lanczos_sizes"]

_HI = jax.lax.Precision.HIGHEST
# A Gram--Schmidt remainder below this fraction of max(||z||, running ||J|| estimate) is an invariant subspace
# (breakdown); float32 round-off of two CGS passes is ~1e-7 of ||z||.
_BREAKDOWN = 1e-5


class LanczosSVD(NamedTuple):
    """Arrays returned by :func:`lanczos_svd_core` / :func:`lanczos_svd_of` (a pytree: jit/vmap friendly).

    Shapes (add a leading batch axis under ``vmap``): ``u [k, m]``, ``s [k]``, ``v [k, n]`` (flattened;
    :func:`lanczos_svd_of` returns them in the function's shapes), ``residuals [k, 2]`` (``||J v_i - s_i u_i||``,
    ``||J^T u_i - s_i v_i||``, absolute), ``converged [k]`` (per-triplet residual test), ``zero [k]`` (numerically
    zero singular value, ``s`` set to 0), ``n_jvp``, ``n_vjp``, ``steps`` (block steps), ``restarts`` (int32
    scalars) and ``nan`` (the operator returned NaN/inf; the iteration stopped and the triplets are invalid).
    """

    u: jax.Array
    s: jax.Array
    v: jax.Array
    residuals: jax.Array
    converged: jax.Array
    zero: jax.Array
    n_jvp: jax.Array
    n_vjp: jax.Array
    steps: jax.Array
    restarts: jax.Array
    nan: jax.Array


def _projected_dtype(projected_dtype: Optional[str]) -> str:
    """Resolve the small problems' dtype name: ``"float64"`` unless asked otherwise or on a TPU (no fast f64)."""
    if projected_dtype is None:
        return "float32" if jax.default_backend() == "tpu" else "float64"
    if projected_dtype not in ("float32", "float64"):
        raise ValueError(f"projected_dtype must be 'float32', 'float64' or None (auto), got {projected_dtype!r}")
    return projected_dtype


def _i32(*idx):
    """Slice indices as int32 (``dynamic_slice`` wants one integer type; Python ints are int64 under x64)."""
    return tuple(jnp.asarray(i, jnp.int32) for i in idx)


def lanczos_sizes(k: int, n: int, m: int, block_size: int = 1, work_size: Optional[int] = None,
                  restart_size: Optional[int] = None) -> tuple:
    """Resolve ``(b, p, r)``: block size, work size (rows of ``P``) and restart size (Ritz vectors kept).

    Defaults: ``p = max(2k + 2b, k + 24, k + 6b)`` rounded up to a multiple of ``b`` (ARPACK's ``ncv`` is
    ``max(2k + 1, 20)``; ``k + 6b`` leaves blocks at least 3 steps per cycle), ``r = k + (p - k) // 2`` rounded up
    to a multiple of ``b``; both are clamped so that the
    buffers fit ``min(m, n)``. Raises ``ValueError`` for sizes that cannot work.
    """
    b = int(block_size)
    if b < 1:
        raise ValueError(f"block_size must be >= 1, got {block_size}")
    d = min(n, m)
    if b > d:
        raise ValueError(f"block_size={b} exceeds min(dim_in={n}, dim_out={m}) = {d}")
    up = lambda a: -(-a // b) * b  # noqa: E731
    p = up(max(2 * k + 2 * b, k + 24, k + 6 * b)) if work_size is None else int(work_size)
    if work_size is not None and (p % b or p <= k):
        raise ValueError(f"work_size={p} must be a multiple of block_size={b} and larger than k={k}")
    p = min(p, (d // b) * b)
    if restart_size is None:
        r = up(k + (p - k) // 2)
        r = min(r, p - b)
    else:
        r = int(restart_size)
        if r % b or r < k or r >= p:
            raise ValueError(f"restart_size={r} must be a multiple of block_size={b} with k={k} <= restart_size "
                             f"< work_size={p}")
    if r < k or r >= p or p < b:
        raise ValueError(f"k={k} with block_size={b} does not fit a Lanczos work space in min(m, n) = {d}: "
                         "use a smaller k or block_size")
    return b, p, r


def _each(fn: Callable) -> Callable:
    """``jax.vmap(fn)`` over a leading image axis; with one image, ``fn`` on it directly, so that a single SVD
    compiles to plain slices and matmuls (vmap would give gathers, scatters and batched dot_generals)."""
    def g(*args):
        if jax.tree.leaves(args)[0].shape[0] == 1:
            return jax.tree.map(lambda a: a[None], fn(*jax.tree.map(lambda a: a[0], args)))
        return jax.vmap(fn)(*args)
    return g


def _take_rows(buf, start, size: int):
    """Rows ``start[i] .. start[i] + size`` of each ``buf[i]`` (``buf [B, cap, ...]``, ``start [B]``; the start is
    clamped into range as in ``lax.dynamic_slice``, and :func:`_put_rows` clamps it the same way)."""
    if buf.shape[0] == 1:  # slice the batched array itself: no reshape of a loop-carried buffer
        return jax.lax.dynamic_slice_in_dim(buf, start[0], size, axis=1)
    return jax.vmap(lambda a, t: jax.lax.dynamic_slice_in_dim(a, t, size))(buf, start)


def _put_rows(buf, start, rows):
    """``buf`` with rows ``start[i] ..`` of each ``buf[i]`` replaced by ``rows[i]`` (a row-sized update, in place)."""
    if buf.shape[0] == 1:
        return jax.lax.dynamic_update_slice_in_dim(buf, rows, start[0], axis=1)
    return jax.vmap(lambda a, t, r: jax.lax.dynamic_update_slice_in_dim(a, r, t, 0))(buf, start, rows)


def _orth_into(buf, start, Z, keys, scale):
    """Per image, write orthonormal rows for ``Z [B, b, d]`` into ``buf [B, cap, d]`` at rows ``start .. start + b``.

    Column-by-column classical Gram--Schmidt against the whole buffer (zero rows contribute nothing), applied
    twice. Returns ``(buf, coef [B, b, cap])`` with ``Z_i = coef_i @ buf`` per image (including the coefficient on
    its own new row). A breakdown column gets a random row orthogonal to the buffer and a zero coefficient (or a
    zero row when the buffer already spans the space); those extra passes run only when some image breaks down.
    """
    _, cap, d = buf.shape

    @_each
    def project(buf, z):  # z minus its components along buf's rows, and those components
        c = jnp.matmul(buf, z, precision=_HI)
        return z - jnp.matmul(c, buf, precision=_HI), c

    def replacement(buf, i):  # [B, d]: random unit rows orthogonal to buf (zero where buf spans the space)
        g = _each(lambda key: jax.random.normal(jax.random.fold_in(key, i), (d,), buf.dtype))(keys)
        ng0 = jnp.linalg.norm(g, axis=1)
        for _ in range(2):
            g = project(buf, g)[0]
        ng = jnp.linalg.norm(g, axis=1)
        room = ng > 1e-3 * ng0
        return jnp.where(room[:, None], g / jnp.where(room, ng, 1.0)[:, None], 0.0)

    coefs = []
    for i in range(Z.shape[1]):
        z = Z[:, i]
        w, c1 = project(buf, z)
        w, c2 = project(buf, w)
        nw = jnp.linalg.norm(w, axis=1)
        bad = nw <= _BREAKDOWN * jnp.maximum(jnp.linalg.norm(z, axis=1), scale)
        q = w / jnp.where(bad, 1.0, nw)[:, None]
        q = jax.lax.cond(jnp.any(bad), lambda: jnp.where(bad[:, None], replacement(buf, i), q), lambda: q)
        buf = _put_rows(buf, start + i, q[:, None])
        c = _put_rows(c1 + c2, start + i, jnp.where(bad, 0.0, nw)[:, None].astype(c1.dtype))
        coefs.append(c)
    return buf, jnp.stack(coefs, 1)


# Primitives allowed on the path from the closed-over residuals to a convolution kernel when that kernel is
# precomputed by :func:`_hoist_conv_kernels` (layout-only operations: no arithmetic, no size growth).
_KERNEL_PATH_PRIMS = frozenset({"rev", "transpose", "reshape", "convert_element_type", "squeeze", "expand_dims",
                                "copy"})


def _hoist_conv_kernels(fn: Callable, example) -> Callable:
    """``fn`` (a linear map of one array, e.g. a VJP) with its convolution kernels made canonical and computed now.

    The transpose rule of ``lax.conv_general_dilated`` (the VJP of a convolution) uses the spatially reversed
    kernel with its input and output feature dimensions swapped (``dim_labels ..._01oi``). XLA's CPU compiler
    rewrites such convolutions to the canonical kernel order (spatial, in, out) only in the entry computation
    (``openxla/xla:xla/service/cpu/conv_canonicalization.cc``: it iterates ``module->entry_computation()``), so
    inside a ``while_loop`` body they miss the fast YNNPACK/Eigen kernels: measured on the shipped DDPM (one core),
    a JVP + VJP pair took 30-32 ms of CPU as a loop body vs 8-12 ms standalone. Here every convolution of ``fn``'s
    jaxpr whose kernel depends only on closed-over values (through layout-only operations) gets that kernel
    transposed to canonical order once, at the call of this function (outside the loop), and the convolution's
    dimension numbers changed to match; the result is the same linear map (same sums, same order) and the loop
    body's convolutions are canonical (measured: 7-9 ms per pair in the loop). Convolutions inside nested ``jit``
    calls of ``fn`` are left as they are. Returns ``fn`` itself when there is nothing to rewrite.

    Args:
      fn: a function of one array (shape and dtype of ``example``) returning one array; traceable.
      example: an array (or ``jax.ShapeDtypeStruct``) with ``fn``'s input shape and dtype.
    """
    from jax.extend.core import Literal

    closed = jax.make_jaxpr(fn)(example)
    jaxpr, consts = closed.jaxpr, closed.consts
    if len(jaxpr.invars) != 1 or len(jaxpr.outvars) != 1:
        return fn
    producer = {v: e for e in jaxpr.eqns for v in e.outvars}
    known = dict(zip(jaxpr.constvars, consts))

    def value(v):  # the value of v if it is computable from the consts by layout-only operations, else None
        if isinstance(v, Literal):
            return v.val
        if v in known:
            return known[v]
        e = producer.get(v)
        if e is None or e.effects or e.primitive.name not in _KERNEL_PATH_PRIMS or e.primitive.multiple_results:
            return None
        ins = [value(a) for a in e.invars]
        if any(a is None for a in ins):
            return None
        known[v] = e.primitive.bind(*ins, **e.primitive.get_bind_params(e.params))
        return known[v]

    kernels = {}
    for i, e in enumerate(jaxpr.eqns):
        if e.primitive.name != "conv_general_dilated":
            continue
        dn = e.params["dimension_numbers"]
        out_f, in_f, *spatial = dn.rhs_spec
        perm = (*spatial, in_f, out_f)
        nd = len(perm)
        if perm == tuple(range(nd)):
            continue
        w = value(e.invars[1])
        if w is not None:
            kernels[i] = (jnp.transpose(w, perm), dn._replace(rhs_spec=(nd - 1, nd - 2, *range(nd - 2))))
    if not kernels:
        return fn

    def run(a):
        env = dict(zip(jaxpr.constvars, consts))
        env[jaxpr.invars[0]] = a
        read = lambda v: v.val if isinstance(v, Literal) else env[v]  # noqa: E731
        for i, e in enumerate(jaxpr.eqns):
            params = e.primitive.get_bind_params(e.params)
            ins = [read(v) for v in e.invars]
            if i in kernels:
                ins[1] = kernels[i][0]
                params = dict(params, dimension_numbers=kernels[i][1])
            out = e.primitive.bind(*ins, **params)
            env.update(zip(e.outvars, out if e.primitive.multiple_results else [out]))
        return read(jaxpr.outvars[0])

    return run


class _State(NamedTuple):  # every field has a leading image axis [NB]
    V: jax.Array  # [NB, p + b, n]
    P: jax.Array  # [NB, p, m]
    B: jax.Array  # [NB, p, p]   B[q, c] = <P_q, J V_c>
    E: jax.Array  # [NB, b, b]   E[i, j] = <V_{nv + j}, J^T P_{nv - b + i}>
    nv: jax.Array  # [NB] rows of V (and P) in B
    key: jax.Array  # [NB] keys
    scale: jax.Array  # running max of ||J v|| and ||J^T p|| (estimate of s_1)
    n_jvp: jax.Array
    n_vjp: jax.Array
    steps: jax.Array
    restarts: jax.Array
    done: jax.Array
    nan: jax.Array


def _ritz(st: _State, kk: int, p: int, b: int, projected: str):
    """Top-``kk`` Ritz triplets of each image's ``B``: ``(s [NB, kk], X [NB, p, kk], Yt [NB, kk, p],
    res [NB, kk, 2], ok [NB, kk])``.

    Computed in ``projected`` (``"float64"``: traced under a local ``jax.enable_x64``, so it works with x64 off)
    and returned in ``B``'s dtype.
    """
    wdt = st.B.dtype
    sdt = jnp.float32 if projected == "float32" else jnp.float64
    one = _each(lambda B, E, nv: _ritz_in(B, E, nv, kk, p, b, sdt, wdt))
    return one(st.B, st.E, st.nv) if projected == "float32" else _x64_scoped(one)(st.B, st.E, st.nv)


def _x64_scoped(fn: Callable) -> Callable:
    """``fn`` (arrays in, a pytree of arrays out) traced under a local ``jax.enable_x64`` scope, so float64 works
    inside it with x64 off outside.

    A transformation that re-binds an already traced jaxpr (``vmap`` of the enclosing ``while_loop``) would do so
    with x64 off and turn the float64 operations back into float32 ones (and fail on mixed dtypes). So the piece
    is a ``custom_vmap`` whose rule traces ``vmap(fn)`` under the same scope, wrapped again: every level of nested
    ``vmap`` (images x timesteps) meets a ``custom_vmap`` call instead of float64 operations.
    """
    def impl(*args):
        with jax.enable_x64(True):
            return fn(*args)

    scoped = jax.custom_batching.custom_vmap(impl)

    @scoped.def_vmap
    def _(axis_size, in_batched, *args):
        args = [a if bt else jnp.broadcast_to(a, (axis_size,) + a.shape) for a, bt in zip(args, in_batched)]
        out = _x64_scoped(jax.vmap(fn))(*args)
        return out, jax.tree.map(lambda _: True, out)

    return scoped


def _ritz_in(B, E, nv, kk: int, p: int, b: int, sdt, wdt):
    B = B.astype(sdt)
    idx = jnp.arange(p)
    real = idx < nv
    # Padded rows/columns get a diagonal c > ||B||_2, so they form their own block and sort first.
    bound = jnp.sqrt(jnp.max(jnp.sum(jnp.abs(B), 0)) * jnp.max(jnp.sum(jnp.abs(B), 1)))
    c = 1.5 * bound + 1.0
    Bp = B + jnp.diag(jnp.where(real, 0.0, c).astype(sdt))
    X, S, Yt = jnp.linalg.svd(Bp, full_matrices=False)
    off = p - nv  # the first (p - nv) singular values are the padding
    s = jax.lax.dynamic_slice(S, _i32(off), (kk,))
    Xk = jax.lax.dynamic_slice(X, _i32(0, off), (p, kk))
    Yk = jax.lax.dynamic_slice(Yt, _i32(off, 0), (kk, p))
    res_r = jnp.linalg.norm(jnp.matmul(B, Yk.T, precision=_HI) - Xk * s[None], axis=0)
    x_last = jax.lax.dynamic_slice(Xk, _i32(nv - b, 0), (b, kk))  # rows of the last P block
    res_l = jnp.linalg.norm(jnp.matmul(E.astype(sdt).T, x_last, precision=_HI), axis=0)
    ok = jnp.arange(kk) < nv
    res = jnp.stack([res_r, res_l], 1)
    return s.astype(wdt), Xk.astype(wdt), Yk.astype(wdt), res.astype(wdt), ok


def lanczos_svd_core(matmat: Callable, rmatmat: Callable, n: int, m: int, k: int, key, *, dtype=jnp.float32,
                     tol: float = 1e-6, block_size: int = 1, work_size: Optional[int] = None,
                     restart_size: Optional[int] = None, max_restarts: int = 100, max_steps: Optional[int] = None,
                     check_every: int = 1, zero_tol: Optional[float] = None, v0=None,
                     projected_dtype: Optional[str] = None) -> LanczosSVD:
    """Thick-restart block Golub--Kahan--Lanczos SVD of a matrix-free ``J`` (``m x n``); pure and jit/vmap-able.

    Args:
      matmat: ``[b, n] -> [b, m]`` (``J`` on rows); rmatmat: ``[b, m] -> [b, n]`` (``J^T`` on rows); both traceable.
      n, m, k: input and output dimensions, number of triplets (static).
      key: PRNG key for the start block (and breakdown replacements).
      tol: triplet ``i`` is converged when ``max(||J v_i - s_i u_i||, ||J^T u_i - s_i v_i||) <= tol * s_1``.
      block_size, work_size, restart_size: ``b``, ``p``, ``r`` of :func:`lanczos_sizes`.
      max_restarts: restart cycles allowed after the first (the run ends unconverged after them).
      max_steps: optional cap on block steps (each ``b`` JVPs + ``b`` VJPs); may be a traced int32 scalar.
      check_every: block steps between two Ritz checks (a ``p x p`` SVD); cycle ends are always checked.
      zero_tol: singular values ``<= zero_tol * s_1`` are returned as exact zeros and flagged (default
        ``1000 * eps`` of float32: ~1.2e-4, the float32 noise floor of the basis).
      v0: optional start block ``[b, n]`` (else Gaussian from ``key``).
      projected_dtype: dtype of the small ``p x p`` SVDs: ``"float64"`` (traced under a local
        ``jax.enable_x64``; x64 stays off elsewhere), ``"float32"``, or None: float64 except on a TPU.

    Returns:
      :class:`LanczosSVD` with flattened ``u [k, m]``, ``v [k, n]``.
    """
    out = _lanczos_batch(lambda R: matmat(R[0])[None], lambda R: rmatmat(R[0])[None], n, m, k, key[None],
                         dtype=dtype, tol=tol, block_size=block_size, work_size=work_size,
                         restart_size=restart_size, max_restarts=max_restarts, max_steps=max_steps,
                         check_every=check_every, zero_tol=zero_tol, projected_dtype=projected_dtype,
                         v0=None if v0 is None else jnp.asarray(v0)[None])
    return jax.tree.map(lambda a: a[0], out)


def _lanczos_batch(matmat: Callable, rmatmat: Callable, n: int, m: int, k: int, keys, *, dtype=jnp.float32,
                   tol: float = 1e-6, block_size: int = 1, work_size: Optional[int] = None,
                   restart_size: Optional[int] = None, max_restarts: int = 100, max_steps: Optional[int] = None,
                   check_every: int = 1, zero_tol: Optional[float] = None, v0=None,
                   projected_dtype: Optional[str] = None) -> LanczosSVD:
    """:func:`lanczos_svd_core` for ``NB`` independent operators in one loop (``keys [NB]``).

    ``matmat: [NB, b, n] -> [NB, b, m]`` and ``rmatmat: [NB, b, m] -> [NB, b, n]`` apply each image's ``J`` /
    ``J^T`` to its own rows. The loop runs while any image is unfinished; a finished image (or one that has
    reached its next Ritz check) keeps its state: its rows of ``V`` / ``P`` are written back as they were (a
    row-sized update), where ``jax.vmap`` of the single-image loop would select between whole buffers at every
    step. Returns a :class:`LanczosSVD` with a leading image axis on every field.
    """
    b, p, r = lanczos_sizes(k, n, m, block_size, work_size, restart_size)
    if not tol > 0:
        raise ValueError(f"tol must be > 0, got {tol}")
    check_every = max(1, int(check_every))
    zero_tol = 1000 * float(jnp.finfo(jnp.float32).eps) if zero_tol is None else float(zero_tol)
    projected = _projected_dtype(projected_dtype)
    step_budget = jnp.asarray(np.iinfo(np.int32).max if max_steps is None else max_steps, jnp.int32)
    nb = keys.shape[0]
    k0, keys = jnp.moveaxis(_each(jax.random.split)(keys), 1, 0)
    if v0 is None:
        G = _each(lambda key: jax.random.normal(key, (b, n), dtype))(k0)
    else:
        G = jnp.asarray(v0, dtype).reshape(nb, b, n)
    zero = jnp.zeros((nb,), dtype)
    i32 = lambda a: jnp.full((nb,), a, jnp.int32)  # noqa: E731
    V, _ = _orth_into(jnp.zeros((nb, p + b, n), dtype), i32(0), G, _each(lambda a: jax.random.fold_in(a, 1))(k0),
                      zero)
    st = _State(V=V, P=jnp.zeros((nb, p, m), dtype), B=jnp.zeros((nb, p, p), dtype), E=jnp.zeros((nb, b, b), dtype),
                nv=i32(0), key=keys, scale=zero, n_jvp=i32(0), n_vjp=i32(0), steps=i32(0), restarts=i32(0),
                done=jnp.zeros((nb,), bool), nan=jnp.zeros((nb,), bool))

    mm = _each(lambda a, c: jnp.matmul(a, c, precision=_HI))

    def where(mask, new, old):  # per-image select, mask [NB]; one image only steps or restarts when its mask is set
        return new if nb == 1 else jnp.where(mask.reshape((nb,) + (1,) * (new.ndim - 1)), new, old)

    def keep_rows(go, new, old, start):
        """``new`` with rows ``start .. start + b`` taken from ``old`` where not ``go`` (a row-sized update). A
        finished image with a full buffer (nv = p) would otherwise get its last basis rows overwritten, since
        the clamped writes of its (discarded) step land there."""
        if nb == 1:
            return new
        return _put_rows(new, start, where(go, _take_rows(new, start, b), _take_rows(old, start, b)))

    def step(st: _State, go) -> _State:
        """One block step for the images in ``go [NB]``; the others keep their state."""
        split = _each(lambda a: jax.random.split(a, 3))(st.key)
        key, ka, kb = split[:, 0], split[:, 1], split[:, 2]
        Vb = _take_rows(st.V, st.nv, b)
        Y = matmat(Vb).astype(dtype)
        scale = jnp.maximum(st.scale, jnp.max(jnp.linalg.norm(Y, axis=2), axis=1))
        P, cy = _orth_into(st.P, st.nv, Y, ka, scale)
        P = keep_rows(go, P, st.P, st.nv)
        Bm = _each(lambda a, c, t: jax.lax.dynamic_update_slice_in_dim(a, c.T, t, 1))(st.B, cy, st.nv)
        Pb = _take_rows(P, st.nv, b)
        Z = rmatmat(Pb).astype(dtype)
        scale = jnp.maximum(scale, jnp.max(jnp.linalg.norm(Z, axis=2), axis=1))
        V, cz = _orth_into(st.V, st.nv + b, Z, kb, scale)
        V = keep_rows(go, V, st.V, st.nv + b)
        E = _each(lambda c, t: jax.lax.dynamic_slice_in_dim(c, t, b, 1))(cz, st.nv + b)
        bad = ~(jnp.all(jnp.isfinite(Y), axis=(1, 2)) & jnp.all(jnp.isfinite(Z), axis=(1, 2)))
        gi = go.astype(jnp.int32)
        return st._replace(V=V, P=P, B=where(go, Bm, st.B), E=where(go, E, st.E), nv=st.nv + b * gi,
                           key=where(go, key, st.key), scale=where(go, scale, st.scale), n_jvp=st.n_jvp + b * gi,
                           n_vjp=st.n_vjp + b * gi, steps=st.steps + gi, nan=st.nan | (go & bad))

    def restart(st: _State, s, Xk, Yk, now) -> _State:
        """Thick restart of the images in ``now [NB]`` (the others keep their state)."""
        Vn = jnp.zeros_like(st.V)
        Vn = Vn.at[:, :r].set(mm(Yk[:, :r].astype(dtype), st.V[:, :p]))
        Vn = Vn.at[:, r:r + b].set(st.V[:, p:p + b])
        Pn = jnp.zeros_like(st.P).at[:, :r].set(
            mm(jnp.swapaxes(Xk[:, :, :r], 1, 2).astype(dtype), st.P))
        Bn = jnp.zeros_like(st.B).at[:, jnp.arange(r), jnp.arange(r)].set(s[:, :r].astype(dtype))
        return st._replace(V=where(now, Vn, st.V), P=where(now, Pn, st.P), B=where(now, Bn, st.B),
                           nv=jnp.where(now, r, st.nv), restarts=st.restarts + now.astype(jnp.int32))

    def converged_mask(s, res, ok):
        return ok[:, :k] & (jnp.max(res[:, :k], axis=2) <= tol * s[:, :1])

    k_min = -(-k // b) * b  # no triplet can pass before the basis holds k vectors: no Ritz check before that

    def outer(st: _State) -> _State:
        active = ~st.done
        target = jnp.minimum(jnp.maximum(st.nv + check_every * b, k_min), p)
        target = jnp.minimum(target, st.nv + b * jnp.clip(step_budget - st.steps, 0, p))  # clip: no int32 overflow
        go = lambda s_: active & (s_.nv < target) & ~s_.nan  # noqa: E731
        st = jax.lax.while_loop(lambda s_: jnp.any(go(s_)), lambda s_: step(s_, go(s_)), st)
        s, Xk, Yk, res, ok = _ritz(st, r, p, b, projected)
        conv = converged_mask(s, res, ok)
        full = st.nv >= p
        out_of_budget = (st.steps >= step_budget) | (full & (st.restarts >= max_restarts))
        done = st.done | jnp.all(conv, axis=1) | out_of_budget | st.nan
        now = full & ~done  # (done includes the images that were already done)
        st = st._replace(done=done)
        # cond on the batch: the restart's buffer rewrites run only when some image restarts
        return jax.lax.cond(jnp.any(now), lambda a: restart(a, s, Xk, Yk, now), lambda a: a, st)

    st = jax.lax.while_loop(lambda s_: ~jnp.all(s_.done), outer, st)
    s, Xk, Yk, res, ok = _ritz(st, k, p, b, projected)
    conv = converged_mask(s, res, ok)
    v = mm(Yk.astype(dtype), st.V[:, :p])
    u = mm(jnp.swapaxes(Xk, 1, 2).astype(dtype), st.P)
    zero_mask = s <= zero_tol * s[:, :1]
    s = jnp.where(zero_mask, 0.0, s)
    # Deterministic signs: the largest-magnitude entry of each v_i is positive (u flips with it).
    sg = jnp.sign(jnp.take_along_axis(v, jnp.argmax(jnp.abs(v), axis=2)[..., None], axis=2))[..., 0]
    sg = jnp.where(sg == 0, 1.0, sg).astype(dtype)
    return LanczosSVD(u=u * sg[..., None], s=s.astype(dtype), v=v * sg[..., None], residuals=res.astype(dtype),
                      converged=conv, zero=zero_mask, n_jvp=st.n_jvp, n_vjp=st.n_vjp, steps=st.steps,
                      restarts=st.restarts, nan=st.nan)


def lanczos_svd_of(f: Callable, x, k: int, key, **kwargs) -> LanczosSVD:
    """Top-k SVD of ``J = df/dx`` at ``x`` (any shapes), pure: ``jax.jit`` / ``jax.vmap`` it over ``x`` and keys.

    ``jax.linearize`` evaluates ``f`` once; ``jax.linear_transpose`` gives ``J^T``. Returns a :class:`LanczosSVD`
    with ``u [k, *out_shape]``, ``v [k, *in_shape]``; ``kwargs`` go to :func:`lanczos_svd_core` (plus
    ``chunk_size`` to bound the memory of block products). For B images in one compiled call,
    :func:`lanczos_svd_batch_of` (one loop) is faster than, and returns what, this gives under ``jax.vmap``::

        res = jax.jit(jax.vmap(lambda x, key: lanczos_svd_of(f, x, 8, key, tol=1e-6)))(xs, keys)
    """
    chunk = kwargs.pop("chunk_size", None)
    y, jvp = jax.linearize(f, x)
    vjp = jax.linear_transpose(jvp, x)
    n, m = int(np.prod(x.shape)), int(np.prod(y.shape))
    dt = jnp.promote_types(jnp.float32, jnp.promote_types(x.dtype, y.dtype))
    mm = _row_applier(lambda v: jvp(v), x.shape, x.dtype, dt, chunk)
    rm = _row_applier(lambda u: vjp(u)[0], y.shape, y.dtype, dt, chunk)
    res = lanczos_svd_core(mm, rm, n, m, k, key, dtype=dt, **kwargs)
    return res._replace(u=res.u.reshape((k,) + y.shape), v=res.v.reshape((k,) + x.shape))


def lanczos_svd_batch_of(f: Callable, xs, k: int, keys, args=None, **kwargs) -> LanczosSVD:
    """Top-k SVDs of ``J_i = df/dx`` at each ``xs[i]`` (``xs [NB, *in_shape]``), all in one loop; pure, jit-able.

    The batched counterpart of :func:`lanczos_svd_of`, for many images (or timesteps) at once: one
    ``jax.linearize`` of ``vmap(f)``, each block step one batched product for all images, each image stopping on
    its own residuals (a finished image keeps its state; its products are still evaluated, masked). It returns
    what ``jax.vmap(lanczos_svd_of)`` returns (leading image axis on every field; ``u [NB, k, *out_shape]``,
    ``v [NB, k, *in_shape]``) but keeps the iteration's bookkeeping per step row-sized: vmap of the
    single-image loop selects between whole ``V`` / ``P`` buffers at every step and runs the breakdown and restart
    branches for all images (at the shipped DDPM's sizes on one CPU core, with a free operator: 0.4 ms per
    image-step here, 1.0 ms under vmap, 0.2 ms sequentially, against 8 ms of UNet products; B = 8 on the DDPM:
    ×1.15 vs sequential calls, vmap ×1.06). ``keys``: ``NB`` PRNG keys, or one key to split. ``args``: optional
    per-image arguments (a pytree of arrays with a leading ``NB`` axis), then ``J_i = d f(x, args_i) / dx`` at
    ``xs[i]`` (e.g. each timestep's skips and temb). ``kwargs`` as :func:`lanczos_svd_of`. Example::

        res = jax.jit(lambda xs, key: lanczos_svd_batch_of(f, xs, 8, key, tol=1e-6))(xs, key)
    """
    chunk = kwargs.pop("chunk_size", None)
    xs = jnp.asarray(xs)
    nb = xs.shape[0]
    if jnp.ndim(keys) == (0 if jnp.issubdtype(jnp.asarray(keys).dtype, jax.dtypes.prng_key) else 1):
        keys = jax.random.split(keys, nb)
    fb = jax.vmap(f) if args is None else (lambda xs_: jax.vmap(f)(xs_, args))
    ys, jvp = jax.linearize(fb, xs)
    vjp = jax.linear_transpose(jvp, xs)
    n, m = int(np.prod(xs.shape[1:])), int(np.prod(ys.shape[1:]))
    dt = jnp.promote_types(jnp.float32, jnp.promote_types(xs.dtype, ys.dtype))
    mm = _per_image(_row_applier(lambda v: jvp(v), xs.shape, xs.dtype, dt, chunk), nb)
    rm = _per_image(_row_applier(lambda u: vjp(u)[0], ys.shape, ys.dtype, dt, chunk), nb)
    res = _lanczos_batch(mm, rm, n, m, k, keys, dtype=dt, **kwargs)
    return res._replace(u=res.u.reshape((nb, k) + ys.shape[1:]), v=res.v.reshape((nb, k) + xs.shape[1:]))


def _per_image(apply: Callable, nb: int) -> Callable:
    """``[NB, b, d_in] -> [NB, b, d_out]`` from ``apply: [b, NB * d_in] -> [b, NB * d_out]`` (a block-diagonal
    linear map on the stacked images, applied to ``b`` rows)."""
    def g(R):
        _, b, d = R.shape
        out = apply(jnp.swapaxes(R, 0, 1).reshape(b, nb * d))
        return jnp.swapaxes(out.reshape(b, nb, -1), 0, 1)
    return g


def _row_applier(lin: Callable, shape: tuple, dtype_in, dtype_out, chunk: Optional[int]) -> Callable:
    """``[b, d_in] -> [b, d_out]``: the linear map ``lin`` (one array of ``shape``/``dtype_in`` in, one out) on every
    row, with its convolution kernels made canonical outside any loop it is later used in
    (:func:`_hoist_conv_kernels`); rows in one ``vmap``, or ``lax.map`` batches of ``chunk``."""
    lin = _hoist_conv_kernels(lin, jax.ShapeDtypeStruct(tuple(shape), dtype_in))

    def g(row):
        return lin(row.reshape(shape).astype(dtype_in)).reshape(-1).astype(dtype_out)

    return lambda R: jax.vmap(g)(R) if chunk is None or chunk >= R.shape[0] else jax.lax.map(g, R, batch_size=chunk)


@functools.partial(jax.jit, static_argnames=("k", "opts", "chunk_size", "tin", "tout", "dt", "n", "m"))
def _run_operator(jvp, vjp, key, v0, max_steps, *, k, opts, chunk_size, tin, tout, dt, n, m):
    in_shape, out_shape = opts[-2], opts[-1]
    matmat = _row_applier(lambda v: jvp(v), in_shape, tin, dt, chunk_size)
    rmatmat = _row_applier(lambda u: vjp(u), out_shape, tout, dt, chunk_size)
    return lanczos_svd_core(matmat, rmatmat, n, m, k, key, dtype=dt, v0=v0, max_steps=max_steps,
                            **dict(opts[:-2]))


_CORE_OPTIONS = ("tol", "block_size", "work_size", "restart_size", "max_restarts", "check_every", "zero_tol",
                 "projected_dtype")
# Keywords of the other SVD methods (randomized_block_krylov / subspace_iteration), accepted and ignored so that
# callers can switch methods by name.
_OTHER_METHODS_ONLY = ("oversampling", "min_iters", "verbose")


def solver_options(caller: str, max_iters=None, **kwargs) -> dict:
    """The keywords of :func:`lanczos_svd_core` among ``kwargs`` (the method-agnostic keywords of
    ``directions._solve.top_k_svd``): ``max_iters`` (the other methods' iteration budget) becomes
    ``max_restarts = max_iters - 1`` (restart cycles after the first); the other methods' own keywords are dropped;
    anything else raises ``TypeError`` naming ``caller``."""
    unknown = set(kwargs) - set(_CORE_OPTIONS) - set(_OTHER_METHODS_ONLY)
    if unknown:
        raise TypeError(f"{caller} got unexpected keyword arguments {sorted(unknown)}")
    out = {n: v for n, v in kwargs.items() if n in _CORE_OPTIONS}
    if max_iters is not None:
        out["max_restarts"] = max(int(max_iters) - 1, 0)
    return out


def lanczos_bidiag_svd(
    op: JacobianOperator,
    k: int,
    key,
    *,
    tol: float = 1e-6,
    block_size: int = 1,
    work_size: Optional[int] = None,
    restart_size: Optional[int] = None,
    max_restarts: int = 100,
    max_products: Optional[int] = None,
    check_every: int = 1,
    zero_tol: Optional[float] = None,
    projected_dtype: Optional[str] = None,
    init=None,
    max_iters: Optional[int] = None,
    **ignored,
) -> SVDResult:
    """Top-k singular triplets of ``op`` by thick-restart Lanczos bidiagonalisation (one jitted call).

    Args:
      op: :class:`~jaxhspace.geometry.operators.JacobianOperator` (``m x n``); its counters grow by the products
        spent.
      k: number of triplets, ``1 <= k <= min(m, n)`` (a ``ValueError`` otherwise).
      key: ``jax.random`` key or int seed.
      tol: per-triplet stop ``max(||J v_i - s_i u_i||, ||J^T u_i - s_i v_i||) <= tol * s_1``; must be > 0.
      block_size: ``b`` (1: fewest products; ``b > 1``: each step is one batched ``vmap`` of ``b`` products).
      work_size, restart_size, check_every, zero_tol, projected_dtype: see :func:`lanczos_sizes` /
        :func:`lanczos_svd_core`.
      max_restarts: restart cycles after the first; ``max_iters`` (the other methods' keyword) sets it too.
      max_products: optional budget on ``n_jvp + n_vjp`` (rounded down to whole block steps).
      init: optional start block ``[b, *in_shape]`` (its row count sets ``b``).
      **ignored: keywords of the other methods that have no meaning here (``oversampling``, ``min_iters``,
        ``verbose``) are accepted and ignored, so callers can switch methods by name.

    Returns:
      :class:`~jaxhspace.geometry.svd.SVDResult` (``u [k, *out_shape]``, ``s [k]``, ``v [k, *in_shape]``,
      ``residuals [k, 2]``, product counts, ``iterations`` = block steps, ``converged`` = all top-k triplets
      passed); ``history`` holds one dict with the per-triplet ``converged`` and ``zero`` masks, ``restarts``.

    Raises:
      ValueError: bad ``k``/``tol``/sizes before any product; ``FloatingPointError`` after the call if the
      operator returned NaN or inf.
    """
    solver_options("lanczos_bidiag_svd", **ignored)  # only the other methods' keywords may be left
    k = _check_k(op, k)
    if not (isinstance(tol, (int, float, np.floating)) and tol > 0):
        raise ValueError(f"tol must be a positive number, got {tol!r}")
    if max_iters is not None:
        max_restarts = solver_options("lanczos_bidiag_svd", max_iters=max_iters)["max_restarts"]
    n, m = op.dim_in, op.dim_out
    v0 = None
    if init is not None:
        from jaxhspace.geometry.svd import _initial_block
        v0 = _initial_block(op, key, 0, init)
        block_size = v0.shape[0]
    b, p, r = lanczos_sizes(k, n, m, block_size, work_size, restart_size)
    max_steps = np.iinfo(np.int32).max  # an argument, not static: a new budget does not recompile
    if max_products is not None:
        max_steps = int(max_products) // (2 * b)
        if max_steps * b < k:
            raise ValueError(f"max_products={max_products} cannot reach k={k} Lanczos vectors with block_size={b}")
    opts = (("tol", float(tol)), ("block_size", b), ("work_size", p), ("restart_size", r),
            ("max_restarts", int(max_restarts)), ("check_every", int(check_every)),
            ("zero_tol", zero_tol), ("projected_dtype", _projected_dtype(projected_dtype)), op.in_shape, op.out_shape)
    out = _run_operator(op._jvp, op._vjp, _as_key(key), v0, np.int32(max_steps), k=k, opts=opts,
                        chunk_size=op.chunk_size, tin=op._tin, tout=op._tout, dt=op.dtype, n=n, m=m)
    nj, nvj = int(out.n_jvp), int(out.n_vjp)
    op.n_jvp += nj
    op.n_vjp += nvj
    if bool(out.nan):
        raise FloatingPointError(
            "the Jacobian operator returned NaN or inf during the Lanczos iteration (after "
            f"{nj} JVPs / {nvj} VJPs); check the function and the linearisation point")
    return SVDResult(
        u=op.unflatten_out(out.u), s=out.s, v=op.unflatten_in(out.v), residuals=out.residuals,
        n_jvp=nj, n_vjp=nvj, iterations=int(out.steps), converged=bool(jnp.all(out.converged)),
        history=[dict(converged=np.asarray(out.converged), zero=np.asarray(out.zero), restarts=int(out.restarts),
                      block_size=b, work_size=p, restart_size=r)],
        method="lanczos_bidiag_svd",
    )
