"""Matrix-free HOSVD / Tucker decomposition of a Jacobian viewed as a tensor.

``J = df/dx`` with ``x [*in_shape]`` (e.g. ``[H, W, 3]``) and ``f(x) [*out_shape]`` (e.g.
``[h, w, C]``) is a tensor ``T[o_1..o_Q, i_1..i_P]``. Axes may be grouped into modes, e.g.
``((0, 1), (2,))`` = (spatial, channel). With output modes ``O_1..O_a`` and input modes
``I_1..I_b`` the Tucker model is (De Lathauwer, De Moor & Vandewalle 2000, "A multilinear singular
value decomposition", SIMAX 21(4); and "On the best rank-1 and rank-(R1,...,RN) approximation of
higher-order tensors", SIMAX 21(4) for HOOI)::

    J ~ core x_1 U_1 ... x_a U_a x_{a+1} V_1 ... x_{a+b} V_b,
    core = J x_1 U_1^T ... x_{a+b} V_b^T      (U, V with orthonormal columns)

HOSVD factors are the leading eigenvectors of the mode Gram matrices ``G_n = T_(n) T_(n)^T``.

**Matrix-free mode Grams (the estimator).** For an *output* mode ``n`` the Gram is a partial trace
of ``J J^T`` over the other output modes, and for any orthonormal basis ``{q_j}`` of the input
space ``J J^T = sum_j (J q_j)(J q_j)^T``, hence (exact identity, basis independent)::

    G_n^out = sum_j  mat_n(J q_j) mat_n(J q_j)^T          (mat_n = mode-n unfolding)

Split the input space into ``S = span(V_svd)`` (the top-``p`` right singular vectors from
:func:`~jaxhspace.geometry.svd.randomized_block_krylov`, where ``J v_j = s_j u_j`` is already
known) and its complement, on which a Hutchinson-type estimate is used (variance reduction as in
Hutch++, Meyer, Musco, Musco & Woodruff 2021)::

    G_n^out = sum_{j<=p} s_j^2 mat_n(u_j) mat_n(u_j)^T + E_g[ mat_n(J P g) mat_n(J P g)^T ],
    P = I - V_svd^T V_svd,  g Rademacher (E[g g^T] = I).

The first term is exact and free; the second is unbiased, costs one JVP per probe and only sees
the tail energy ``||J P||_F^2``. So the estimate is **exact** when ``S`` contains the row space
of ``J`` (``p >= rank J``, or the Krylov space filled the input space), **unbiased** otherwise
with error controlled by the tail, and a lower bound (in the PSD order) when ``n_probes = 0``.
Input modes are symmetric: ``G_n^in = sum_j mat_n(J^T w_j) mat_n(J^T w_j)^T`` over an orthonormal
basis ``w`` of the output space, with ``w = u_svd`` (``p`` VJPs, exact) plus probes on the
complement of ``span(u_svd)`` (one VJP each). Every output mode is served by the same JVP
samples and every input mode by the same VJP samples. Factors and mode singular values are the
left singular vectors / singular values of the stacked unfoldings (float64 SVD on the host), so
``G_n`` is never formed even when ``d_n`` is large (e.g. 256x256 spatial).

**Core and HOOI.** ``core`` needs ``J`` on the Kronecker products of the input factors
(``prod(r_in)`` JVPs, projected on the output factors) or ``J^T`` on those of the output factors
(``prod(r_out)`` VJPs); the cheaper side is used. One HOOI sweep (optional) costs
``prod(r_in)`` JVPs (then every output factor is updated, Gauss--Seidel, from the same products)
plus ``prod(r_out)`` VJPs (every input factor updated); ``||core||^2`` never decreases.

**Energy.** ``||J||_F^2 = trace(G_n)``; computed exactly with ``min(m, n)`` products when
``min(m, n) <= exact_norm_max_dim``, otherwise estimated as
``sum s_j^2 + mean ||J P g||^2`` (average of the JVP- and VJP-side estimates).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxhspace.geometry.operators import JacobianOperator
from jaxhspace.geometry.svd import SVDResult, dense_jacobian, randomized_block_krylov

__all__ = [
    "TuckerResult",
    "jacobian_hosvd",
    "resolve_modes",
    "mode_unfold",
    "dense_hosvd_reference",
]

_HI = jax.lax.Precision.HIGHEST
Modes = tuple  # tuple of tuples of axes


# ---------------------------------------------------------------------------------------------
# Mode bookkeeping
# ---------------------------------------------------------------------------------------------
def resolve_modes(spec, shape: Sequence[int]) -> Modes:
    """Normalise a mode specification for an array of ``shape`` into a tuple of axis groups.

    ``spec``: ``None`` or ``"axes"`` (one mode per axis); ``"spatial_channel"`` or
    ``("spatial", "channel")`` (channels-last: ``((0, .., ndim-2), (ndim-1,))``); ``"flat"``
    (one mode = the vectorised array); or an explicit partition such as ``((0, 1), (2,))``.
    """
    nd = len(shape)
    if spec is None or spec == "axes":
        return tuple((i,) for i in range(nd))
    if spec == "flat":
        return (tuple(range(nd)),)
    if spec == "spatial_channel" or (isinstance(spec, (tuple, list)) and
                                     tuple(spec) == ("spatial", "channel")):
        if nd < 2:
            raise ValueError(f"'spatial_channel' modes need an array of rank >= 2, got shape {shape}")
        return (tuple(range(nd - 1)), (nd - 1,))
    try:
        groups = tuple(tuple(int(a) for a in g) for g in spec)
    except TypeError:
        raise ValueError(f"cannot interpret modes {spec!r} for shape {tuple(shape)}") from None
    flat = sorted(a for g in groups for a in g)
    if flat != list(range(nd)) or any(len(g) == 0 for g in groups):
        raise ValueError(
            f"modes {spec!r} must partition the axes 0..{nd - 1} of shape {tuple(shape)} "
            "(each axis exactly once)"
        )
    return groups


def _mode_dims(modes: Modes, shape) -> tuple:
    return tuple(int(np.prod([shape[a] for a in g], dtype=np.int64)) for g in modes)


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _group(a, modes: Modes, shape, nbatch: int = 1):
    """``[*batch, *shape] -> [*batch, d_1, .., d_M]`` (transpose axes into mode order, reshape)."""
    perm = [a_ for g in modes for a_ in g]
    a = jnp.transpose(a, tuple(range(nbatch)) + tuple(nbatch + p for p in perm))
    return a.reshape(a.shape[:nbatch] + _mode_dims(modes, shape))


@functools.partial(jax.jit, static_argnums=(1, 2, 3))
def _ungroup(a, modes: Modes, shape, nbatch: int = 1):
    """Inverse of :func:`_group`."""
    perm = [a_ for g in modes for a_ in g]
    a = a.reshape(a.shape[:nbatch] + tuple(shape[p] for p in perm))
    inv = np.argsort(perm)
    return jnp.transpose(a, tuple(range(nbatch)) + tuple(nbatch + int(i) for i in inv))


def mode_unfold(t, n: int):
    """Mode-n unfolding ``[d_n, prod(other dims)]`` of a tensor (numpy or jax)."""
    xp = np if isinstance(t, np.ndarray) else jnp
    return xp.moveaxis(t, n, 0).reshape(t.shape[n], -1)


def _mode_dot(t, M, axis: int):
    """Contract axis ``axis`` of ``t`` with the first axis of ``M [d, r]`` (result keeps position)."""
    return jnp.moveaxis(jnp.tensordot(t, M, axes=([axis], [0]), precision=_HI), -1, axis)


def _resolve_ranks(ranks, dims, side: str) -> tuple:
    if ranks is None:
        return tuple(dims)
    if isinstance(ranks, (int, np.integer)):
        if ranks < 1:
            raise ValueError(f"{side} rank {ranks} must be >= 1")
        return tuple(min(int(ranks), d) for d in dims)
    ranks = tuple(ranks)
    if len(ranks) != len(dims):
        raise ValueError(f"{side} ranks {ranks} must have one entry per mode (dims {dims})")
    out = []
    for i, (r, d) in enumerate(zip(ranks, dims)):
        r = d if r is None else int(r)
        if r < 1 or r > d:
            raise ValueError(f"{side} mode {i}: rank {r} must satisfy 1 <= rank <= dim {d}")
        out.append(r)
    return tuple(out)


# ---------------------------------------------------------------------------------------------
# Result
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class TuckerResult:
    """Tucker model of ``J``: ``core x_out U x_in V`` with orthonormal factor columns.

    Attributes:
      out_factors / in_factors: one ``[d_n, r_n]`` array per output / input mode.
      core: ``[*out_ranks, *in_ranks]``.
      out_singular_values / in_singular_values: n-mode singular values (``sqrt`` of the
        eigenvalues of the estimated mode Grams), one 1-D array per mode, descending.
      out_modes / in_modes: axis groups; out_shape / in_shape: shapes of ``f(x)`` and ``x``.
      out_mode_energy / in_mode_energy: per mode, ``sum_{i<=r_n} lambda_i / trace(G_n)`` (energy
        kept by truncating that mode alone).
      captured_energy: ``||core||^2 / ||J||_F^2``.
      frobenius_sq: ``||J||_F^2`` (exact if ``frobenius_exact``).
      svd_energy: ``sum_j s_j^2 / ||J||_F^2`` of the SVD stage (the exact part of the Grams).
      n_jvp, n_vjp: products spent (including the SVD stage if run here).
      hooi_history: captured energy after HOSVD and after each HOOI sweep.
    """

    out_factors: list
    in_factors: list
    core: Any
    out_singular_values: list
    in_singular_values: list
    out_modes: Modes
    in_modes: Modes
    out_shape: tuple
    in_shape: tuple
    out_mode_energy: list
    in_mode_energy: list
    captured_energy: float
    frobenius_sq: float
    frobenius_exact: bool
    svd_energy: float
    n_jvp: int
    n_vjp: int
    hooi_history: list

    @property
    def out_ranks(self) -> tuple:
        return tuple(U.shape[1] for U in self.out_factors)

    @property
    def in_ranks(self) -> tuple:
        return tuple(V.shape[1] for V in self.in_factors)

    def apply(self, v):
        """Tucker approximation of ``J v``: ``v [*in_shape] -> [*out_shape]``."""
        return _tucker_apply(self.core, tuple(self.in_factors), tuple(self.out_factors),
                             jnp.asarray(v), self.in_modes, tuple(self.in_shape),
                             self.out_modes, tuple(self.out_shape))

    def rapply(self, u):
        """Tucker approximation of ``J^T u``: ``u [*out_shape] -> [*in_shape]``."""
        return _tucker_rapply(self.core, tuple(self.in_factors), tuple(self.out_factors),
                              jnp.asarray(u), self.in_modes, tuple(self.in_shape),
                              self.out_modes, tuple(self.out_shape))


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7))
def _tucker_apply(core, in_f, out_f, v, in_modes, in_shape, out_modes, out_shape):
    g = _group(v[None], in_modes, in_shape, 1)[0]
    for i, V in enumerate(in_f):
        g = _mode_dot(g, V, i)  # [r_in...]
    y = jnp.tensordot(core, g, axes=g.ndim, precision=_HI)  # [r_out...]
    for i, U in enumerate(out_f):
        y = _mode_dot(y, U.T, i)
    return _ungroup(y[None], out_modes, out_shape, 1)[0]


@functools.partial(jax.jit, static_argnums=(4, 5, 6, 7))
def _tucker_rapply(core, in_f, out_f, u, in_modes, in_shape, out_modes, out_shape):
    g = _group(u[None], out_modes, out_shape, 1)[0]
    for i, U in enumerate(out_f):
        g = _mode_dot(g, U, i)  # [r_out...]
    q = len(out_f)
    y = jnp.tensordot(g, core, axes=(list(range(q)), list(range(q))), precision=_HI)
    for i, V in enumerate(in_f):
        y = _mode_dot(y, V.T, i)
    return _ungroup(y[None], in_modes, in_shape, 1)[0]


# ---------------------------------------------------------------------------------------------
# Internals
# ---------------------------------------------------------------------------------------------
def _rademacher(key, shape, dtype):
    return jax.random.rademacher(key, shape, dtype=dtype)


def _unfoldings(samples, modes: Modes, shape):
    """Stacked mode unfoldings ``[d_n, N * prod(other dims)]`` (float64 numpy), one per mode."""
    g = np.asarray(_group(samples, modes, shape), np.float64)  # [N, d_1..d_M]
    return [np.moveaxis(g, i + 1, 0).reshape(g.shape[i + 1], -1) for i in range(len(modes))]


def _leading(A: np.ndarray, r: int):
    """Left singular vectors ``[d, r]`` and all singular values of ``A [d, c]`` (float64)."""
    if A.shape[1] == 0:
        return np.eye(A.shape[0])[:, :r], np.zeros(0)
    U, s, _ = np.linalg.svd(A, full_matrices=False)
    if U.shape[1] < r:  # fewer samples than the requested rank: complete with an orthonormal fill
        fill = np.linalg.qr(np.concatenate([U, np.eye(A.shape[0])], axis=1))[0]
        U = fill
    return U[:, :r], s


@jax.jit
def _outer_rows(cols):
    """``[c, d_1..d_M]`` row-wise outer products of ``cols[n] [c, d_n]``."""
    rows = cols[0]
    for c in cols[1:]:
        rows = rows[..., None] * c.reshape((c.shape[0],) + (1,) * (rows.ndim - 1) + (c.shape[1],))
    return rows


def _kron_rows(factors, start: int, stop: int, dtype):
    """Rows ``start..stop`` of the Kronecker basis ``[c, d_1..d_M]``: outer products of factor columns."""
    ranks = [F.shape[1] for F in factors]
    idx = np.unravel_index(np.arange(start, stop), ranks)
    return _outer_rows([jnp.asarray(np.asarray(F).T[j], dtype) for F, j in zip(factors, idx)])


def _apply_kron(op: JacobianOperator, factors, src_modes, src_shape, forward: bool, chunk: int):
    """``J`` (forward) or ``J^T`` on every Kronecker product of ``factors``; ``[R, *dst_shape]``."""
    R = int(np.prod([F.shape[1] for F in factors], dtype=np.int64))
    outs = []
    for s0 in range(0, R, chunk):
        rows = _ungroup(_kron_rows(factors, s0, min(R, s0 + chunk), op.dtype), src_modes,
                        tuple(src_shape), 1)
        outs.append(op.matmat(rows) if forward else op.rmatmat(rows))
    return jnp.concatenate(outs, axis=0)


@functools.partial(jax.jit, static_argnames=("skip",))
def _project_all_jit(Yg, factors, skip=None):
    for i, F in enumerate(factors):
        if i != skip:
            Yg = _mode_dot(Yg, F, i + 1)
    return Yg


def _project_all(Yg, factors, skip: Optional[int] = None):
    """Contract mode ``i`` (axis ``i+1``) of ``Yg [R, d_1..d_M]`` with ``factors[i]`` except ``skip``."""
    return _project_all_jit(Yg, [jnp.asarray(np.asarray(F), Yg.dtype) for F in factors], skip=skip)


@jax.jit
def _complement(P, G):
    """Rows of ``G`` projected onto the orthogonal complement of the (orthonormal) rows of ``P``."""
    return G - jnp.matmul(jnp.matmul(G, P.T, precision=_HI), P, precision=_HI)


def _update_factors(Yg, factors, ranks):
    """Gauss--Seidel HOOI update of every mode of one side from ``Yg [R, d_1..d_M]``."""
    factors = list(factors)
    for i, r in enumerate(ranks):
        M = np.asarray(_project_all(Yg, factors, skip=i), np.float64)
        A = np.moveaxis(M, i + 1, 0).reshape(M.shape[i + 1], -1)
        factors[i] = _leading(A, r)[0]
    return factors


# ---------------------------------------------------------------------------------------------
# Main entry
# ---------------------------------------------------------------------------------------------
def jacobian_hosvd(
    op: JacobianOperator,
    out_ranks=None,
    in_ranks=None,
    key=0,
    *,
    out_modes="axes",
    in_modes="axes",
    svd: Optional[SVDResult] = None,
    svd_rank: Optional[int] = 32,
    svd_tol: float = 1e-3,
    n_probes: int = 16,
    hooi_iters: int = 0,
    hooi_tol: float = 1e-6,
    exact_norm_max_dim: int = 512,
    chunk_size: int = 64,
) -> TuckerResult:
    """Matrix-free (truncated) HOSVD of the Jacobian tensor, optionally refined by HOOI.

    Args:
      op: :class:`JacobianOperator` for ``f`` at ``x`` (``f(x) [*out_shape]``, ``x [*in_shape]``).
      out_ranks, in_ranks: Tucker ranks per mode (tuple, int for all modes -- clamped to the
        mode dims --, or ``None`` for full rank).
      key: ``jax.random`` key or int seed (SVD start block and Hutchinson probes).
      out_modes, in_modes: axis grouping, see :func:`resolve_modes` (default: one mode per axis;
        ``"spatial_channel"`` groups ``[H, W, C]`` into ``(H*W, C)``).
      svd: reuse an existing top-p :class:`SVDResult` of the same operator (e.g. the Pullback
        basis); otherwise one is computed with ``randomized_block_krylov(op, svd_rank,
        tol=svd_tol)`` (``svd_rank`` clamped to ``min(m, n)``; ``0``/``None`` skips it).
      n_probes: Rademacher probes on the complement of the SVD subspaces, per side (unbiased
        completion of the Grams; ``0`` gives the truncated, exact-part-only estimate).
      hooi_iters, hooi_tol: HOOI sweeps after HOSVD; stop early when the captured energy grows by
        less than ``hooi_tol`` (relative).
      exact_norm_max_dim: compute ``||J||_F^2`` exactly (``min(m, n)`` products) up to this size.
      chunk_size: Kronecker columns generated per block product.

    Returns:
      :class:`TuckerResult`. Cost: SVD stage + ``p`` VJPs (``J^T u_j``) + ``n_probes`` JVPs and
      VJPs + core (``min(prod r_in, prod r_out)`` products) + per HOOI sweep
      ``prod(r_in)`` JVPs and ``prod(r_out)`` VJPs (+ ``min(m, n)`` for an exact norm).
    """
    if not isinstance(op, JacobianOperator):
        raise TypeError("op must be a JacobianOperator")
    if n_probes < 0 or int(n_probes) != n_probes:
        raise ValueError(f"n_probes must be a non-negative integer, got {n_probes!r}")
    if hooi_iters < 0:
        raise ValueError(f"hooi_iters must be >= 0, got {hooi_iters}")
    key = jax.random.PRNGKey(int(key)) if isinstance(key, (int, np.integer)) else key
    omodes = resolve_modes(out_modes, op.out_shape)
    imodes = resolve_modes(in_modes, op.in_shape)
    odims, idims = _mode_dims(omodes, op.out_shape), _mode_dims(imodes, op.in_shape)
    oranks = _resolve_ranks(out_ranks, odims, "output")
    iranks = _resolve_ranks(in_ranks, idims, "input")
    dt = op.dtype
    j0, v0 = op.n_jvp, op.n_vjp
    k_svd, k_po, k_pi = jax.random.split(key, 3)

    if svd is None and not svd_rank and not n_probes:
        raise ValueError("nothing to estimate the mode Grams from: give svd, svd_rank or n_probes")
    if svd is not None and (tuple(np.shape(svd.v))[1:] != op.in_shape
                            or tuple(np.shape(svd.u))[1:] != op.out_shape):
        raise ValueError(
            f"svd has v {np.shape(svd.v)} / u {np.shape(svd.u)}, expected [p, *{op.in_shape}] / "
            f"[p, *{op.out_shape}]"
        )

    # -- 1. SVD stage: exact part of the Grams ------------------------------------------------
    if svd is None and svd_rank:
        svd = randomized_block_krylov(op, min(int(svd_rank), op.dim_in, op.dim_out), k_svd,
                                      tol=svd_tol)
    if svd is not None:
        Vs = op.flatten_in(jnp.asarray(svd.v, dt))  # [p, n]
        Us = op.flatten_out(jnp.asarray(svd.u, dt))  # [p, m]
        s = jnp.asarray(svd.s, dt)
        out_exact = s[:, None] * Us  # J v_j = s_j u_j (free)
        in_exact = op.flatten_in(op.rmatmat(op.unflatten_out(Us)))  # J^T u_j (p VJPs)
    else:
        Vs = jnp.zeros((0, op.dim_in), dt)
        Us = jnp.zeros((0, op.dim_out), dt)
        out_exact = jnp.zeros((0, op.dim_out), dt)
        in_exact = jnp.zeros((0, op.dim_in), dt)

    # -- 2. Hutchinson completion on the complements --------------------------------------------
    if n_probes:
        g = _complement(Vs, _rademacher(k_po, (n_probes, op.dim_in), dt))
        out_tail = op.flatten_out(op.matmat(op.unflatten_in(g))) / np.sqrt(n_probes)
        h = _complement(Us, _rademacher(k_pi, (n_probes, op.dim_out), dt))
        in_tail = op.flatten_in(op.rmatmat(op.unflatten_out(h))) / np.sqrt(n_probes)
    else:
        out_tail = jnp.zeros((0, op.dim_out), dt)
        in_tail = jnp.zeros((0, op.dim_in), dt)
    out_samples = op.unflatten_out(jnp.concatenate([out_exact, out_tail]))
    in_samples = op.unflatten_in(jnp.concatenate([in_exact, in_tail]))

    # -- 3. ||J||_F^2 -------------------------------------------------------------------------
    svd_sq = float(np.sum(np.asarray(out_exact, np.float64) ** 2))
    if min(op.dim_in, op.dim_out) <= exact_norm_max_dim:
        if op.dim_in <= op.dim_out:
            E = op.matmat(op.unflatten_in(jnp.eye(op.dim_in, dtype=dt)))
        else:
            E = op.rmatmat(op.unflatten_out(jnp.eye(op.dim_out, dtype=dt)))
        frob = float(np.sum(np.asarray(E, np.float64) ** 2))
        frob_exact = True
    else:
        est_o = svd_sq + float(np.sum(np.asarray(out_tail, np.float64) ** 2))
        est_i = float(np.sum(np.asarray(in_exact, np.float64) ** 2)) + float(
            np.sum(np.asarray(in_tail, np.float64) ** 2))
        frob = 0.5 * (est_o + est_i)
        frob_exact = False

    # -- 4. HOSVD factors from the stacked unfoldings ------------------------------------------
    out_f, out_sv, out_en = [], [], []
    for A, r in zip(_unfoldings(out_samples, omodes, op.out_shape), oranks):
        U, sv = _leading(A, r)
        out_f.append(U)
        out_sv.append(sv)
        out_en.append(float(np.sum(sv[:r] ** 2) / max(np.sum(sv**2), 1e-300)))
    in_f, in_sv, in_en = [], [], []
    for A, r in zip(_unfoldings(in_samples, imodes, op.in_shape), iranks):
        V, sv = _leading(A, r)
        in_f.append(V)
        in_sv.append(sv)
        in_en.append(float(np.sum(sv[:r] ** 2) / max(np.sum(sv**2), 1e-300)))

    # -- 5. core (cheaper side) and optional HOOI ----------------------------------------------
    Rin, Rout = int(np.prod(iranks)), int(np.prod(oranks))

    def core_from_jvp(in_f, out_f):
        Y = _group(_apply_kron(op, in_f, imodes, op.in_shape, True, chunk_size), omodes,
                   op.out_shape)  # [Rin, d_out...]
        return Y, _project_all(Y, out_f)  # [Rin, r_out...]

    def core_from_vjp(out_f, in_f):
        X = _group(_apply_kron(op, out_f, omodes, op.out_shape, False, chunk_size), imodes,
                   op.in_shape)  # [Rout, d_in...]
        return X, _project_all(X, in_f)  # [Rout, r_in...]

    def as_core_from_vjp(c):
        return np.asarray(c, np.float64).reshape(oranks + iranks)

    def as_core_from_jvp(c):
        c = np.asarray(c, np.float64).reshape(iranks + oranks)
        q = len(iranks)
        return np.transpose(c, tuple(range(q, c.ndim)) + tuple(range(q)))

    if frob <= 0:
        raise ValueError("the Jacobian is zero at x: no Tucker structure to extract")
    Y = None
    if Rin <= Rout or hooi_iters:
        Y, c = core_from_jvp(in_f, out_f)  # Y is reused by the first HOOI sweep
        core = as_core_from_jvp(c)
    else:
        _, c = core_from_vjp(out_f, in_f)
        core = as_core_from_vjp(c)
    history = [float(np.sum(core**2) / frob)]
    for _ in range(int(hooi_iters)):
        if Y is None:
            Y, _ = core_from_jvp(in_f, out_f)
        out_f = _update_factors(Y, out_f, oranks)
        Y = None
        X, _ = core_from_vjp(out_f, in_f)
        in_f = _update_factors(X, in_f, iranks)
        core = as_core_from_vjp(_project_all(X, in_f))
        history.append(float(np.sum(core**2) / frob))
        if history[-1] - history[-2] <= hooi_tol * max(history[-2], 1e-300):
            break

    return TuckerResult(
        out_factors=[jnp.asarray(U, dt) for U in out_f],
        in_factors=[jnp.asarray(V, dt) for V in in_f],
        core=jnp.asarray(core, dt),
        out_singular_values=out_sv, in_singular_values=in_sv,
        out_modes=omodes, in_modes=imodes, out_shape=op.out_shape, in_shape=op.in_shape,
        out_mode_energy=out_en, in_mode_energy=in_en,
        captured_energy=history[-1], frobenius_sq=frob, frobenius_exact=frob_exact,
        svd_energy=svd_sq / frob if frob > 0 else 0.0,
        n_jvp=op.n_jvp - j0, n_vjp=op.n_vjp - v0, hooi_history=history,
    )


# ---------------------------------------------------------------------------------------------
# Dense reference
# ---------------------------------------------------------------------------------------------
def dense_hosvd_reference(f, x, *, out_modes="axes", in_modes="axes",
                          chunk_size: Optional[int] = None) -> dict:
    """HOSVD of the dense Jacobian tensor (for tests and benchmarks on small maps).

    ``J`` from :func:`~jaxhspace.geometry.svd.dense_jacobian` is reshaped to
    ``[*out_shape, *in_shape]``, grouped into ``[d_out_1.., d_in_1..]`` and every mode-n unfolding
    is factored with ``numpy.linalg.svd`` (float64). Returns a dict with ``tensor`` (grouped),
    ``out_factors`` / ``in_factors`` (full ``[d_n, d_n']`` left singular vectors),
    ``out_singular_values`` / ``in_singular_values``, ``frobenius_sq`` and the modes.
    """
    x = jnp.asarray(x)
    J = dense_jacobian(f, x, chunk_size=chunk_size)
    out_shape = tuple(jax.eval_shape(f, x).shape)
    in_shape = tuple(x.shape)
    omodes, imodes = resolve_modes(out_modes, out_shape), resolve_modes(in_modes, in_shape)
    T = J.reshape(out_shape + in_shape)
    po = [a for g in omodes for a in g]
    pi = [len(out_shape) + a for g in imodes for a in g]
    T = np.transpose(T, po + pi).reshape(_mode_dims(omodes, out_shape) + _mode_dims(imodes, in_shape))
    facs, svs = [], []
    for n in range(T.ndim):
        U, sv, _ = np.linalg.svd(mode_unfold(T, n), full_matrices=False)
        facs.append(U)
        svs.append(sv)
    q = len(omodes)
    return dict(tensor=T, out_factors=facs[:q], in_factors=facs[q:], out_singular_values=svs[:q],
                in_singular_values=svs[q:], frobenius_sq=float(np.sum(J**2)),
                out_modes=omodes, in_modes=imodes)
