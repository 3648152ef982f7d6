"""Matrix-free top-k singular triplets of a Jacobian: randomized block Krylov and subspace iteration.

Both methods take a :class:`~jaxhspace.geometry.operators.JacobianOperator` ``op`` (``J``, ``m x n``)
and return an :class:`SVDResult` with sign-consistent triplets ``J v_i = sigma_i u_i`` (``u`` is
obtained from ``v`` through ``J``, never from an independent sign choice), two-sided residuals and
the number of Jacobian products spent.

* :func:`randomized_block_krylov` -- block Krylov space ``span{Omega, (J^T J) Omega, (J^T J)^2
  Omega, ...}`` with full re-orthogonalisation and Rayleigh--Ritz extraction (Musco & Musco 2015,
  "Randomized Block Krylov Methods for Stronger and Faster Approximate Singular Value
  Decomposition", NeurIPS; Tropp & Webber 2023, "Randomized algorithms for low-rank matrix
  approximation: Design, analysis, and applications", arXiv:2306.12418, section on block Krylov).
  Its error decays like ``1 / T_q(1 + gap)`` (Chebyshev) instead of ``(1 + gap)^{-2q}``, i.e.
  ~``1/sqrt(gap)`` instead of ~``1/gap`` iterations.
* :func:`subspace_iteration` -- plain block power iteration on ``J^T J`` (what the official
  Pullback code does), with QR and Rayleigh--Ritz and a residual stop.
* :func:`dense_svd_reference`, :func:`dense_jacobian` -- dense ground truth for small maps.
* :func:`principal_angles`, :func:`align_signs`, :func:`two_sided_residuals` -- checks.

All dense linear algebra on the n- and m-sized blocks is done with ``Precision.HIGHEST``
(on TPU the default float32 matmul uses bfloat16 passes, which would destroy orthogonality).
"""
from __future__ import annotations

import dataclasses
import functools
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp
import numpy as np

from jaxhspace.geometry.operators import JacobianOperator

__all__ = [
    "SVDResult",
    "randomized_block_krylov",
    "subspace_iteration",
    "two_sided_residuals",
    "dense_jacobian",
    "dense_svd_reference",
    "principal_angles",
    "align_signs",
]

_HI = jax.lax.Precision.HIGHEST


def _mm(a, b):
    return jnp.matmul(a, b, precision=_HI)


# ---------------------------------------------------------------------------------------------
# Result container
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class SVDResult:
    """Top-k singular triplets of ``J`` (``m x n``), ``J v_i = s_i u_i``, ``s`` descending.

    Attributes:
      u: ``[k, *out_shape]`` left singular vectors (orthonormal, ``u_i = J v_i / s_i``).
      s: ``[k]`` singular values, descending.
      v: ``[k, *in_shape]`` right singular vectors (orthonormal).
      residuals: ``[k, 2]``: column 0 ``||J v_i - s_i u_i||``, column 1 ``||J^T u_i - s_i v_i||``
        (absolute; divide by ``s[0]`` for the relative test). For the iterative methods these are
        the cheap in-loop values (see each method for how they are obtained);
        :func:`two_sided_residuals` recomputes them with explicit products.
      n_jvp, n_vjp: Jacobian products (columns) spent by the call.
      iterations: iterations run; converged: whether the residual test passed.
      history: one dict per iteration (``iteration``, ``n_jvp``, ``n_vjp``, ``s``,
        ``max_rel_residual``).
      method: name of the method that produced the result.
    """

    u: Any
    s: Any
    v: Any
    residuals: Any
    n_jvp: int
    n_vjp: int
    iterations: int
    converged: bool
    history: list
    method: str = ""

    @property
    def k(self) -> int:
        return int(self.s.shape[0])

    @property
    def n_products(self) -> int:
        """``n_jvp + n_vjp``."""
        return self.n_jvp + self.n_vjp

    @property
    def relative_residuals(self):
        """``residuals / s[0]``, shape ``[k, 2]``."""
        return self.residuals / self.s[0]

    @property
    def max_relative_residual(self) -> float:
        return float(jnp.max(self.residuals) / self.s[0])

    def aligned_to(self, ref: "SVDResult") -> "SVDResult":
        """Copy with each pair ``(u_i, v_i)`` flipped so that ``<v_i, ref.v_i> >= 0``."""
        _, signs = align_signs(self.v, ref.v[: self.k])
        sh_u = (-1,) + (1,) * (self.u.ndim - 1)
        sh_v = (-1,) + (1,) * (self.v.ndim - 1)
        return dataclasses.replace(
            self, u=self.u * signs.reshape(sh_u), v=self.v * signs.reshape(sh_v)
        )


# ---------------------------------------------------------------------------------------------
# Validation helpers
# ---------------------------------------------------------------------------------------------
def _check_k(op: JacobianOperator, k) -> int:
    if isinstance(k, bool) or int(k) != k:
        raise ValueError(f"k must be an integer, got {k!r}")
    k = int(k)
    lim = min(op.dim_in, op.dim_out)
    if k < 1 or k > lim:
        raise ValueError(
            f"k={k} must satisfy 1 <= k <= min(dim_in={op.dim_in}, dim_out={op.dim_out}) = {lim}"
        )
    return k


def _as_key(key):
    if isinstance(key, (int, np.integer)):
        return jax.random.PRNGKey(int(key))
    return key


def _initial_block(op: JacobianOperator, key, b: int, init) -> jax.Array:
    """``[b, n]`` starting block: ``init`` (validated) or a standard Gaussian sketch."""
    if init is None:
        return jax.random.normal(_as_key(key), (b, op.dim_in), dtype=op.dtype)
    init = jnp.asarray(init)
    if init.ndim != len(op.in_shape) + 1 or tuple(init.shape[1:]) != op.in_shape:
        raise ValueError(
            f"init must be shaped [b, *in_shape] = [b, {', '.join(map(str, op.in_shape))}], "
            f"got {init.shape}"
        )
    if not jnp.issubdtype(init.dtype, jnp.floating):
        raise ValueError(f"init must be floating, got dtype {init.dtype}")
    flat = op.flatten_in(init).astype(op.dtype)
    if not bool(jnp.all(jnp.isfinite(flat))):
        raise ValueError("init contains NaN or inf")
    norms = jnp.linalg.norm(flat, axis=1)
    if bool(jnp.any(norms == 0)):
        bad = np.flatnonzero(np.asarray(norms == 0)).tolist()
        raise ValueError(f"init has zero-norm directions at rows {bad}")
    return flat


def _check_budget(max_products, b):
    if max_products is not None and max_products < 2 * b:
        raise ValueError(
            f"max_products={max_products} cannot pay one iteration (2 * block_size = {2 * b} "
            "products: block_size JVPs + block_size VJPs)"
        )


@functools.partial(jax.jit, static_argnames=("keep",))
def _expand_basis(Q: jax.Array, Z: jax.Array, keep: Optional[int] = None):
    """Block classical Gram--Schmidt, applied twice (BCGS2), in row form.

    ``Q [cap, d]`` holds orthonormal rows followed by zero rows (a growing basis in a
    preallocated buffer), ``Z [b, d]``. Returns ``(Qn, C, R)`` with ``Z = C Q + R Qn``,
    ``Qn [c, d]`` orthonormal rows orthogonal to ``Q``, ``C [b, cap]`` (zero on the padding),
    ``R [b, c]``; ``c = b``, or ``c = keep < b`` when the complement of ``Q`` has only ``keep``
    dimensions left (then an SVD keeps its leading directions; the rest of ``Z`` is round-off).
    The second pass restores the orthogonality that one pass loses to cancellation in float32.
    Shapes stay fixed while the basis grows inside its buffer, so this compiles once per buffer
    size rather than once per iteration.
    """
    C1 = _mm(Z, Q.T)
    W = Z - _mm(C1, Q)
    if keep is not None:
        uu, ss, vt = jnp.linalg.svd(W.T, full_matrices=False)
        Q1, R1 = uu[:, :keep].T, (ss[:keep, None] * vt[:keep]).T  # W ~ R1 Q1
    else:
        q, r = jnp.linalg.qr(W.T)
        Q1, R1 = q.T, r.T  # W = R1 Q1
    C2 = _mm(Q1, Q.T)
    q2, r2 = jnp.linalg.qr((Q1 - _mm(C2, Q)).T)
    Qn, R2 = q2.T, r2.T  # Q1 = C2 Q + R2 Qn
    # Z = C1 Q + R1 Q1 = (C1 + R1 C2) Q + (R1 R2) Qn
    return Qn, C1 + _mm(R1, C2), _mm(R1, R2)


class _Basis:
    """Orthonormal rows ``[p, d]`` stored in a zero-padded buffer that doubles when full."""

    def __init__(self, d: int, cap: int, dtype):
        self.d, self.p = d, 0
        self.buf = jnp.zeros((max(1, min(cap, d)), d), dtype)  # grows by doubling

    def expand(self, Z: jax.Array):
        """``Z = C Q + R Qn``; appends ``Qn``. Returns ``(C [b, p_old], R [b, c], Qn [c, d])``
        with ``C`` and ``R`` as float64 numpy (small) and ``Qn`` on device (``None`` if full)."""
        b = Z.shape[0]
        room = self.d - self.p
        if room <= 0:
            C = np.asarray(_mm(Z, self.buf.T), np.float64)[:, : self.p]
            return C, np.zeros((b, 0)), None
        keep = room if room < b else None
        while self.buf.shape[0] < min(self.p + b, self.d):
            grow = min(self.buf.shape[0], self.d - self.buf.shape[0])
            self.buf = jnp.concatenate([self.buf, jnp.zeros((grow, self.d), self.buf.dtype)])
        if self.p == 0:
            Qn, R = _orth_rows_r(Z, keep)
            C = np.zeros((b, 0))
        else:
            Qn, C, R = _expand_basis(self.buf, Z, keep)
            C = np.asarray(C, np.float64)[:, : self.p]
        self.buf = jax.lax.dynamic_update_slice(self.buf, Qn, (self.p, 0))
        self.p += Qn.shape[0]
        return C, np.asarray(R, np.float64), Qn


@functools.partial(jax.jit, static_argnames=("keep",))
def _orth_rows_r(Z: jax.Array, keep: Optional[int] = None):
    """``Z = R Qn`` with orthonormal rows ``Qn`` (QR, or truncated SVD if ``keep`` is set)."""
    if keep is not None:
        uu, ss, vt = jnp.linalg.svd(Z.T, full_matrices=False)
        return uu[:, :keep].T, (ss[:keep, None] * vt[:keep]).T
    q, r = jnp.linalg.qr(Z.T)
    return q.T, r.T


@jax.jit
def _fix_signs(u, v):
    """Deterministic signs: the largest-magnitude entry of each ``v_i`` is positive (u flips too)."""
    idx = jnp.argmax(jnp.abs(v), axis=1)
    sg = jnp.sign(jnp.take_along_axis(v, idx[:, None], axis=1))[:, 0]
    sg = jnp.where(sg == 0, 1.0, sg).astype(v.dtype)
    return u * sg[:, None], v * sg[:, None]


def _left_floor(s, dtype):
    # Left residuals are obtained by dividing ||J^T J v - s^2 v|| by s; for numerically zero s
    # (below sqrt(eps) * s_1) that division only amplifies round-off, so it is floored there.
    return jnp.maximum(jnp.maximum(s, jnp.sqrt(jnp.finfo(dtype).eps) * s[0]),
                       jnp.finfo(dtype).tiny)


# ---------------------------------------------------------------------------------------------
# Randomized block Krylov
# ---------------------------------------------------------------------------------------------
def randomized_block_krylov(
    op: JacobianOperator,
    k: int,
    key,
    *,
    block_size: Optional[int] = None,
    oversampling: int = 8,
    max_iters: int = 25,
    min_iters: int = 1,
    tol: float = 1e-4,
    max_products: Optional[int] = None,
    init=None,
    verbose: bool = False,
) -> SVDResult:
    """Top-k singular triplets of ``J`` by randomized block Krylov iteration on ``J^T J``.

    Algorithm (Musco & Musco 2015, Alg. 2; Tropp & Webber 2023, block Krylov with
    Rayleigh--Ritz). With ``Omega [b, n]`` Gaussian (or ``init``):

    1. ``Q_1 = orth(Omega)``.
    2. Iteration ``j``: ``Y_j = J Q_j`` (b JVPs), ``Z_j = J^T Y_j`` (b VJPs).
       Expand the basis: ``Z_j = C_j Q_{<=j} + R_{j+1} Q_{j+1}`` with ``Q_{j+1}`` orthonormal to
       all previous blocks (block Gram--Schmidt applied twice, float32-safe). ``Q_{j+1}`` is the
       next Krylov block ``(J^T J)^j Omega`` orthonormalised. ``Y_j`` is folded into an
       incremental QR of ``B = J Q_{<=j}`` (``B = T P``, ``P`` orthonormal rows in output space,
       ``T`` a small ``p x p`` host matrix) -- the same kind of expansion in output space.
    3. Rayleigh--Ritz on ``Q = Q_{<=j}`` (``p = j b`` vectors): the float64 SVD of the small
       ``T = W S X^T`` gives ``s``, ``v_i = Q^T w_i`` and ``u_i = P^T x_i = J v_i / s_i``
       (sign-consistent by construction; never an SVD of an ``m x p`` matrix).
    4. Residual stop, free of products: ``J^T u_i - s_i v_i = (J^T J Q^T w_i)/s_i - s_i Q^T w_i``
       and ``J^T J Q^T = [Z_1..Z_j]^T`` lies in ``span(Q_{<=j+1})`` with the block-Arnoldi
       coefficients of step 2 (block-Hessenberg, equal to ``B B^T`` on ``Q_{<=j}`` up to
       round-off); ``w_i`` is an eigenvector of ``B B^T`` so only the last term survives:
       ``||J^T u_i - s_i v_i|| = ||w_i^{(j)} R_{j+1}|| / s_i`` where ``w_i^{(j)}`` are the entries
       of ``w_i`` on the last block (the classical Lanczos residual). Cost: ``O(b^2 k)`` flops,
       no products and no extra storage. ``||J v_i - s_i u_i|| = ||T^T w_i - s_i x_i||`` is zero
       up to round-off. Stop when ``max_i max(residuals_i) <= tol * s_1`` (after
       ``min_iters``), when the Krylov space fills the input space (then the result is exact),
       or when it becomes invariant (``R_{j+1} ~ 0``). Float32 limits the left residual of
       a triplet to roughly ``eps * s_1^2 / s_i``.

    Per iteration: ``b`` JVPs + ``b`` VJPs. Memory: ``Q`` (``n x jb``) and ``P`` (``m x jb``),
    kept in zero-padded buffers that double when full (fixed shapes, few recompilations);
    ``max_iters`` bounds them. Compared with subspace iteration at the same block size the cost
    per iteration is the same, but the Rayleigh--Ritz space keeps all previous blocks, which
    for slowly decaying spectra saves most iterations (Chebyshev-like acceleration).

    Args:
      op: the Jacobian operator (``m x n``).
      k: number of triplets, ``1 <= k <= min(m, n)``.
      key: ``jax.random`` key (or an int seed) for the Gaussian start block.
      block_size: columns per Krylov block; default ``k + oversampling``. Blocks smaller than
        ``k`` are allowed (Tropp & Webber 2023 discuss them); Rayleigh--Ritz starts once the
        basis has ``k`` columns.
      oversampling: extra columns of the default block.
      max_iters, min_iters: iteration bounds (one iteration = one block of JVPs and VJPs).
      tol: stop when every two-sided residual of the top-k triplets is ``<= tol * s_1``.
      max_products: optional budget on ``n_jvp + n_vjp`` for this call; the loop stops (with
        ``converged=False``) rather than exceed it.
      init: optional start block ``[b, *in_shape]`` (overrides ``key`` and ``block_size``).
      verbose: print the residual per iteration.

    Returns:
      :class:`SVDResult` with ``u [k, *out_shape]``, ``s [k]``, ``v [k, *in_shape]``.

    Note: for a numerically rank-deficient request (``s_k`` below ``~sqrt(eps) s_1``) the left
    residual of the null triplets cannot be certified in float32 unless the Krylov space becomes
    invariant or complete; such runs may end at ``max_iters`` with ``converged=False``.
    """
    k = _check_k(op, k)
    n, m = op.dim_in, op.dim_out
    if init is not None:
        Omega = _initial_block(op, key, 0, init)
        b = Omega.shape[0]
    else:
        b = int(block_size) if block_size is not None else k + int(oversampling)
        if b < 1:
            raise ValueError(f"block_size must be >= 1, got {b}")
        b = min(b, n)
        Omega = _initial_block(op, key, b, None)
    if max_iters * b < k and max_iters * b < n:
        raise ValueError(
            f"max_iters={max_iters} blocks of {b} columns cannot reach k={k} basis vectors"
        )
    _check_budget(max_products, b)
    j0, v0 = op.n_jvp, op.n_vjp
    dt = op.dtype

    eps = float(jnp.finfo(dt).eps)
    Qb = _Basis(n, 8 * b, dt)  # input-space Krylov basis Q (rows)
    Pb = _Basis(m, 8 * b, dt)  # output-space basis P of range(J Q) (rows)
    _, _, Qcur = Qb.expand(Omega)
    T = np.zeros((0, 0))  # host, float64: B = J Q (rows J q_r) = T @ P
    history = []
    converged = False
    out = None
    it = 0
    for it in range(1, max_iters + 1):
        bc = Qcur.shape[0]
        spent = (op.n_jvp - j0) + (op.n_vjp - v0)
        if max_products is not None and spent + 2 * bc > max_products:
            if out is None:
                raise ValueError(
                    f"max_products={max_products} is exhausted before the Krylov basis reaches "
                    f"k={k} vectors (block_size={b})"
                )
            it -= 1
            break
        Y = op.matmat_flat(Qcur)  # [bc, m]
        Z = op.rmatmat_flat(Y)  # [bc, n] rows J^T J q
        # Output side: keep B = T P with orthonormal P (an incremental QR of B^T), so that
        # Rayleigh--Ritz only needs a small float64 host SVD of T, not an SVD of an m x p matrix.
        D, E, _ = Pb.expand(Y)
        T = np.block([[T, np.zeros((T.shape[0], E.shape[1]))], [D, E]])
        p = Qb.p
        _, R, Qnext = Qb.expand(Z)  # Z = C Q + R Q_next
        z_norm = float(jnp.linalg.norm(Z))
        invariant = Qnext is None or np.linalg.norm(R) <= 100 * eps * z_norm

        if p >= k:
            wl, sv, xt = np.linalg.svd(T, full_matrices=False)  # T = wl diag(sv) xt
            s = sv[:k]
            w, x = wl[:, :k].T, xt[:k]  # [k, p], [k, p_out]
            res_r = np.linalg.norm(w @ T - s[:, None] * x, axis=1)
            floor = np.maximum(np.maximum(s, np.sqrt(eps) * s[0]), np.finfo(np.float64).tiny)
            res_l = np.zeros(k) if invariant else np.linalg.norm(w[:, p - bc:] @ R, axis=1) / floor
            res = np.stack([res_r, res_l], axis=1)
            rel = float(res.max() / s[0]) if s[0] > 0 else 0.0  # s_1 = 0: J Q = 0, invariant
            out = (w, x, s, res, p, Pb.p)
            history.append(
                dict(iteration=it, n_jvp=op.n_jvp - j0, n_vjp=op.n_vjp - v0,
                     s=s.astype(np.float32), max_rel_residual=rel)
            )
            if verbose:
                print(f"[block-krylov] it={it} p={p} max rel residual={rel:.3e}")
            if (rel <= tol and it >= min_iters) or invariant:
                converged = True
                break
        if Qnext is None:
            break
        Qcur = Qnext

    if out is None:  # pragma: no cover - guarded by the max_iters check above
        raise RuntimeError("block Krylov ended before its basis reached k vectors")
    w, x, s, res, p, pp = out
    # Zero-pad the coefficients to the buffer sizes (fixed shapes, no recompilation).
    wpad = np.zeros((k, Qb.buf.shape[0]))
    wpad[:, :p] = w
    xpad = np.zeros((k, Pb.buf.shape[0]))
    xpad[:, :pp] = x
    v = _mm(jnp.asarray(wpad, dt), Qb.buf)  # v_i = Q^T w_i
    u = _mm(jnp.asarray(xpad, dt), Pb.buf)  # u_i = (B^T w_i) / s_i = P^T x_i
    u, v = _fix_signs(u, v)
    return SVDResult(
        u=op.unflatten_out(u), s=jnp.asarray(s, dt), v=op.unflatten_in(v),
        residuals=jnp.asarray(res, dt), n_jvp=op.n_jvp - j0, n_vjp=op.n_vjp - v0,
        iterations=it, converged=converged, history=history, method="randomized_block_krylov",
    )


# ---------------------------------------------------------------------------------------------
# Subspace iteration
# ---------------------------------------------------------------------------------------------
def subspace_iteration(
    op: JacobianOperator,
    k: int,
    key,
    *,
    block_size: Optional[int] = None,
    max_iters: int = 50,
    min_iters: int = 1,
    tol: float = 1e-4,
    max_products: Optional[int] = None,
    init=None,
    verbose: bool = False,
) -> SVDResult:
    """Top-k singular triplets by block power (subspace) iteration on ``J^T J``.

    ``V_0 = orth(Omega)``; iteration ``i``: ``Y = J V_i^T`` (b JVPs), Rayleigh--Ritz on
    ``span(V_i)`` (thin SVD ``Y = U_Y S W^T``, ``v = W^T V_i``, ``u = U_Y = J v / s``),
    ``Z = J^T Y`` (b VJPs), ``V_{i+1} = orth(W^T Z)``. The left residual
    ``||J^T u_l - s_l v_l|| = ||w_l^T Z / s_l - s_l v_l||`` uses ``Z``, which the next iterate
    needs anyway, so the stopping test costs no products (``O(b^2 n)`` flops). Converges like
    ``(s_{b+1}/s_l)^2`` per iteration for triplet ``l`` (Golub & Van Loan, section 8.2.4).

    Contrast with the official Pullback loop
    (``enkeejunior1/Diffusion-Pullback@859c012:src/utils/utils.py:165-249``): it re-orthonormalises with an SVD
    and stops on ``torch.allclose(V_prev, V, atol)``, an element-wise test on signed vectors. The SVD returns
    each vector with an arbitrary sign, so the test practically never fires and the loop pays all ``max_iter``
    iterations; its ``u`` is ``J V`` of the pre-SVD iterate, so u/v pairs carry random relative signs. Here the
    test is the sign-invariant two-sided residual and ``u = J v / s``.

    Args: as :func:`randomized_block_krylov`; ``block_size`` defaults to ``k`` (the official
    choice). Returns an :class:`SVDResult`.
    """
    k = _check_k(op, k)
    n = op.dim_in
    if init is not None:
        Omega = _initial_block(op, key, 0, init)
        b = Omega.shape[0]
    else:
        b = int(block_size) if block_size is not None else k
        Omega = _initial_block(op, key, max(1, min(b, n)), None)
    lim = min(n, op.dim_out)
    if b < k or b > lim:
        raise ValueError(
            f"block_size={b} must satisfy k={k} <= block_size <= min(dim_in={n}, "
            f"dim_out={op.dim_out}) = {lim}"
        )
    _check_budget(max_products, b)
    j0, v0 = op.n_jvp, op.n_vjp
    dt = op.dtype
    V = _orth_rows_r(Omega)[0]
    history = []
    converged = False
    out = None
    it = 0
    for it in range(1, max_iters + 1):
        spent = (op.n_jvp - j0) + (op.n_vjp - v0)
        if max_products is not None and spent + 2 * b > max_products:
            it -= 1
            break
        Y = op.matmat_flat(V)  # [b, m]
        ub, sb, wt = jnp.linalg.svd(Y.T, full_matrices=False)
        Z = op.rmatmat_flat(Y)  # [b, n] = rows J^T J v
        vr = _mm(wt, V)  # Ritz vectors, [b, n]
        WZ = _mm(wt, Z)  # rows J^T J v_l
        s = sb[:k]
        u = ub[:, :k].T
        res_r = jnp.linalg.norm(_mm(wt[:k], Y) - s[:, None] * u, axis=1)
        res_l = jnp.linalg.norm(WZ[:k] - (s**2)[:, None] * vr[:k], axis=1) / _left_floor(s, dt)
        res = jnp.stack([res_r, res_l], axis=1)
        rel = float(jnp.max(res) / s[0]) if float(s[0]) > 0 else 0.0  # J V = 0: J = 0 here
        out = (u, s, vr[:k], res)
        history.append(
            dict(iteration=it, n_jvp=op.n_jvp - j0, n_vjp=op.n_vjp - v0,
                 s=np.asarray(s), max_rel_residual=rel)
        )
        if verbose:
            print(f"[subspace] it={it} max rel residual={rel:.3e}")
        if rel <= tol and it >= min_iters:
            converged = True
            break
        V = _orth_rows_r(WZ)[0]
    if out is None:  # pragma: no cover
        raise RuntimeError("subspace iteration ran no iteration")
    u, s, v, res = out
    u, v = _fix_signs(u, v)
    return SVDResult(
        u=op.unflatten_out(u), s=s, v=op.unflatten_in(v), residuals=res,
        n_jvp=op.n_jvp - j0, n_vjp=op.n_vjp - v0, iterations=it, converged=converged,
        history=history, method="subspace_iteration",
    )


# ---------------------------------------------------------------------------------------------
# Checks and references
# ---------------------------------------------------------------------------------------------
def two_sided_residuals(op: JacobianOperator, u, s, v) -> jax.Array:
    """Explicit residuals ``[k, 2]``: ``||J v_i - s_i u_i||`` and ``||J^T u_i - s_i v_i||``.

    ``u [k, *out_shape]``, ``s [k]``, ``v [k, *in_shape]``. Costs ``k`` JVPs and ``k`` VJPs
    (counted on ``op``).
    """
    u = jnp.asarray(u, op.dtype)
    v = jnp.asarray(v, op.dtype)
    s = jnp.asarray(s, op.dtype)
    ju = op.flatten_out(op.matmat(v)) - s[:, None] * op.flatten_out(u)
    jtv = op.flatten_in(op.rmatmat(u)) - s[:, None] * op.flatten_in(v)
    return jnp.stack([jnp.linalg.norm(ju, axis=1), jnp.linalg.norm(jtv, axis=1)], axis=1)


def dense_jacobian(f: Callable, x, *, chunk_size: Optional[int] = None) -> np.ndarray:
    """Dense Jacobian ``[m, n]`` (float64 numpy) of ``f`` at ``x`` by forward mode.

    ``chunk_size=None`` uses ``jax.jacfwd``; otherwise the ``n`` basis JVPs are run through
    ``lax.map`` in chunks of ``chunk_size`` (same numbers, bounded memory). For tests and
    benchmarks on small maps only.
    """
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"x must be a real floating array, got dtype {x.dtype}")
    if not bool(jnp.all(jnp.isfinite(x))):
        raise ValueError("x contains NaN or inf")
    n = x.size
    if chunk_size is None:
        J = jax.jacfwd(f)(x)
        m = J.size // n
    else:
        eye = jnp.eye(n, dtype=x.dtype).reshape((n,) + x.shape)
        tangent = lambda t: jax.jvp(f, (x,), (t,))[1]  # noqa: E731
        J = jax.lax.map(tangent, eye, batch_size=int(chunk_size))  # [n, *out]
        m = J.size // n
        J = J.reshape(n, m).T
    return np.asarray(J, dtype=np.float64).reshape(m, n)


def dense_svd_reference(f: Callable, x, k: Optional[int] = None, *,
                        chunk_size: Optional[int] = None) -> SVDResult:
    """Ground truth: dense ``J`` (:func:`dense_jacobian`) and ``numpy.linalg.svd`` in float64.

    Returns an :class:`SVDResult` (float64 numpy arrays) with ``u [k, *out_shape]``,
    ``s [k]``, ``v [k, *in_shape]``, ``u_i = J v_i / s_i`` and exact residuals;
    ``n_jvp = n`` (one JVP per input basis vector). ``k`` defaults to ``min(m, n)``.
    Reusable for any small map (analytic test maps, tiny UNets).
    """
    x = jnp.asarray(x)
    J = dense_jacobian(f, x, chunk_size=chunk_size)
    m, n = J.shape
    out_shape = tuple(jax.eval_shape(f, x).shape)
    lim = min(m, n)
    k = lim if k is None else int(k)
    if k < 1 or k > lim:
        raise ValueError(f"k={k} must satisfy 1 <= k <= min(dim_in={n}, dim_out={m}) = {lim}")
    U, S, Vt = np.linalg.svd(J, full_matrices=False)
    u, s, v = U[:, :k].T, S[:k], Vt[:k]
    res = np.stack(
        [np.linalg.norm(v @ J.T - s[:, None] * u, axis=1),
         np.linalg.norm(u @ J - s[:, None] * v, axis=1)], axis=1)
    return SVDResult(
        u=u.reshape((k,) + out_shape), s=s, v=v.reshape((k,) + tuple(x.shape)), residuals=res,
        n_jvp=n, n_vjp=0, iterations=0, converged=True, history=[], method="dense",
    )


def principal_angles(A, B, *, reduce: Optional[str] = "max"):
    """Principal angles (radians) between ``span{A_i}`` and ``span{B_j}``.

    ``A [ka, ...]``, ``B [kb, ...]`` are stacks of vectors along the leading axis (as in
    ``SVDResult.u`` / ``.v``): the subspaces are the column spaces of ``A.reshape(ka, -1).T`` and
    ``B.reshape(kb, -1).T``. Computed in float64 with the sine/cosine combination of
    Knyazev & Argentati (2002) so that small angles are accurate (plain ``arccos`` loses them
    below ~1e-8 rad). ``reduce="max"`` returns the largest angle (a float); ``None`` returns all
    ``min(ka, kb)`` angles, ascending.
    """
    A = np.asarray(A, dtype=np.float64)
    B = np.asarray(B, dtype=np.float64)
    A = A.reshape(A.shape[0], -1).T
    B = B.reshape(B.shape[0], -1).T
    if A.shape[0] != B.shape[0]:
        raise ValueError(f"vectors of different lengths: {A.shape[0]} vs {B.shape[0]}")
    if not (np.all(np.isfinite(A)) and np.all(np.isfinite(B))):
        raise ValueError("principal_angles: inputs contain NaN or inf")
    for name, M in (("A", A), ("B", B)):
        if np.any(np.linalg.norm(M, axis=0) == 0):
            raise ValueError(f"principal_angles: {name} has a zero-norm vector")
    qa, _ = np.linalg.qr(A)
    qb, _ = np.linalg.qr(B)
    if qa.shape[1] > qb.shape[1]:
        qa, qb = qb, qa
    cos = np.linalg.svd(qa.T @ qb, compute_uv=False)
    sin = np.linalg.svd(qa - qb @ (qb.T @ qa), compute_uv=False)  # sines, descending
    ang_c = np.arccos(np.clip(cos, -1.0, 1.0))  # ascending
    ang_s = np.arcsin(np.clip(sin[::-1], -1.0, 1.0))  # ascending
    ang = np.where(ang_c < np.pi / 4, ang_s, ang_c)
    ang = np.sort(ang)
    return float(ang[-1]) if reduce == "max" else ang


def align_signs(a, ref):
    """Flip rows of ``a [k, ...]`` so that ``<a_i, ref_i> >= 0``.

    Returns ``(a_aligned, signs)`` with ``signs [k]`` in ``{-1, +1}`` (same array type as ``a``).
    Apply the same ``signs`` to the partner vectors of a triplet (see
    :meth:`SVDResult.aligned_to`) to keep ``J v = s u``.
    """
    xp = np if isinstance(a, np.ndarray) else jnp
    a_f = xp.reshape(a, (a.shape[0], -1))
    r_f = xp.reshape(xp.asarray(ref), (ref.shape[0], -1))
    if r_f.shape != a_f.shape:
        raise ValueError(f"align_signs: shapes differ: {a.shape} vs {ref.shape}")
    dots = xp.sum(a_f * r_f.astype(a_f.dtype), axis=1)
    signs = xp.where(dots < 0, -1.0, 1.0).astype(a_f.dtype)
    return a * signs.reshape((-1,) + (1,) * (a.ndim - 1)), signs
