"""Matrix-free Jacobian operators built once from ``jax.linearize`` and ``jax.linear_transpose``.

The geometry package knows nothing of UNets: it takes a plain function ``f`` mapping an array
shaped ``in_shape`` (e.g. an image ``[H, W, 3]``) to an array shaped ``out_shape`` (e.g. the
bottleneck ``h`` ``[h, w, C]``), and a point ``x``. ``J = df/dx (x)`` is an ``m x n`` matrix with
``n = prod(in_shape)``, ``m = prod(out_shape)``; it is never formed.

* ``jax.linearize(f, x)`` evaluates the primal once and stores the residuals; every JVP after that
  only runs the linear (tangent) part. (The official Pullback code re-runs the primal per
  direction, ``enkeejunior1/Diffusion-Pullback@859c012:src/utils/utils.py:165-249``.)
* ``jax.linear_transpose`` of the linearized function gives ``J^T`` (a VJP that reuses the same
  residuals, no second forward pass).
* Block products act on a leading block axis (``V [b, *in_shape]``) with ``vmap``; ``chunk_size``
  bounds memory by running ``lax.map`` over chunks of ``chunk_size`` vmapped columns.

Every product is counted in columns: ``n_jvp`` (applications of ``J``) and ``n_vjp``
(applications of ``J^T``), so algorithms can report their cost in Jacobian products.
"""
from __future__ import annotations

import functools
from typing import Callable, Optional, Sequence

import jax
import jax.numpy as jnp
import numpy as np

__all__ = ["JacobianOperator"]


@functools.partial(jax.jit, static_argnames=("chunk_size", "in_dtype", "out_dtype"))
def _apply_block(lin, V, *, chunk_size, in_dtype, out_dtype):
    """Apply the linear function ``lin`` (a ``jax.tree_util.Partial``) to every row of ``V``."""

    def one(v):
        return lin(v.astype(in_dtype)).astype(out_dtype)

    if chunk_size is None or chunk_size >= V.shape[0]:
        return jax.vmap(one)(V)
    return jax.lax.map(one, V, batch_size=chunk_size)


def _first(fn):
    """``linear_transpose`` returns a tuple (one cotangent per primal); keep the single entry."""
    return jax.tree_util.Partial(lambda t, u: t(u)[0], fn)


@functools.partial(jax.jit, static_argnames=("f",))
def _linearize_at(f, args, x):
    """``(f(args, x), J, J^T)`` with ``J = d f(args, .)/dx (x)``: one compiled program per (``f``, shapes, dtypes).

    ``J`` and ``J^T`` are returned as ``jax.tree_util.Partial`` s whose leaves are the residuals (outputs of this
    call) and whose functions were made while tracing, so every later call with the same ``f``, shapes and dtypes
    returns the *same* function objects: jitted consumers taking them as arguments (:func:`_apply_block`, the
    Lanczos solver) find their compiled programs in the cache instead of compiling again for every point.
    """
    y, f_jvp = jax.linearize(lambda z: f(args, z), x)
    return y, f_jvp, _first(jax.linear_transpose(f_jvp, x))


class JacobianOperator:
    """The Jacobian ``J = df/dx`` at ``x`` as a counted, matrix-free linear operator.

    Args:
      f: function from an array shaped like ``x`` to one floating array (any shapes); with ``args``, a function
        ``f(args, x)`` instead (see ``args``).
      x: the linearisation point, a floating array without NaN/inf.
      args: optional pytree of arrays (e.g. ``(params, t)``) passed as ``f(args, x)``: the Jacobian is still
        ``d f(args, x)/dx`` (``args`` held fixed), but the linearisation runs as one jitted call with ``args``
        and ``x`` as traced arguments, keyed on ``f`` (static: hashable, compared by ``==``). Building
        operators at new points (new ``x``, ``args`` of the same shapes) with the same ``f`` object then
        re-uses every compiled program (linearisation, block products, the Lanczos solver) instead of compiling
        them again per point, as happens for a fresh closure ``f``. Keep ``f`` itself alive and reuse it.
      chunk_size: if set, block products process at most this many columns at a time
        (``lax.map`` over vmapped chunks) to bound the memory of the tangent pass.
      compute_dtype: optional lower precision, e.g. ``jnp.bfloat16``. ``x`` is cast to it before
        linearising and every tangent / cotangent is cast to it before a product; results are cast
        back to ``self.dtype`` (float32 for float32 ``x``). Whether the arithmetic inside ``f``
        really runs in ``compute_dtype`` depends on ``f`` (parameters kept in float32 promote the
        computation back to float32; a dtype-polymorphic ``f`` runs fully in bfloat16). Expect
        relative errors of order 1e-2 in that case (bfloat16 has an 8-bit mantissa).

    Attributes:
      in_shape, out_shape: shapes of ``x`` and ``f(x)``; ``dim_in = n``, ``dim_out = m``;
      shape: ``(m, n)``; dtype: dtype of every returned product;
      primal_out: ``f(x)`` computed once by ``jax.linearize``;
      n_jvp, n_vjp: numbers of columns multiplied by ``J`` and by ``J^T`` so far.

    Shapes: ``matvec: [*in_shape] -> [*out_shape]``, ``rmatvec: [*out_shape] -> [*in_shape]``,
    ``matmat: [b, *in_shape] -> [b, *out_shape]``, ``rmatmat: [b, *out_shape] -> [b, *in_shape]``.
    """

    def __init__(
        self,
        f: Callable[[jax.Array], jax.Array],
        x,
        *,
        chunk_size: Optional[int] = None,
        compute_dtype=None,
        args=None,
    ):
        if not hasattr(x, "dtype"):
            x = np.asarray(x)
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"x must be a real floating array, got dtype {x.dtype}")
        x = jnp.asarray(x)
        if not bool(jnp.all(jnp.isfinite(x))):
            raise ValueError("x contains NaN or inf; the Jacobian is undefined there")
        if chunk_size is not None and (int(chunk_size) != chunk_size or chunk_size < 1):
            raise ValueError(f"chunk_size must be a positive integer or None, got {chunk_size!r}")

        self.f = f if args is None else functools.partial(f, args)
        self.args = args
        self.x = x
        self.chunk_size = None if chunk_size is None else int(chunk_size)
        self.compute_dtype = None if compute_dtype is None else jnp.dtype(compute_dtype)
        if self.compute_dtype is not None and not jnp.issubdtype(self.compute_dtype, jnp.floating):
            raise ValueError(f"compute_dtype must be a floating dtype, got {compute_dtype}")

        x_lin = x if self.compute_dtype is None else x.astype(self.compute_dtype)
        if args is None:
            y, f_jvp = jax.linearize(f, x_lin)
            f_vjp = None
        else:
            y, f_jvp, f_vjp = _linearize_at(f, args, x_lin)
        if not jnp.issubdtype(y.dtype, jnp.floating):
            raise ValueError(f"f(x) must be a real floating array, got dtype {y.dtype}")
        self._jvp = f_jvp  # jax.tree_util.Partial: the residuals are pytree leaves, not constants
        self._vjp = _first(jax.linear_transpose(f_jvp, x_lin)) if f_vjp is None else f_vjp
        self._tin = x_lin.dtype  # tangent dtype fed to J
        self._tout = y.dtype  # cotangent dtype fed to J^T
        self.dtype = jnp.promote_types(jnp.float32, jnp.promote_types(x.dtype, y.dtype))
        if self.compute_dtype is not None:
            self.dtype = jnp.promote_types(jnp.float32, x.dtype)
        self.primal_out = y.astype(self.dtype)
        self.in_shape = tuple(x.shape)
        self.out_shape = tuple(y.shape)
        self.dim_in = int(np.prod(self.in_shape, dtype=np.int64))
        self.dim_out = int(np.prod(self.out_shape, dtype=np.int64))
        self.n_jvp = 0
        self.n_vjp = 0

    # ------------------------------------------------------------------ bookkeeping
    @property
    def shape(self) -> tuple[int, int]:
        """``(m, n)``: the shape of ``J`` as a matrix."""
        return (self.dim_out, self.dim_in)

    @property
    def n_products(self) -> int:
        """``n_jvp + n_vjp``."""
        return self.n_jvp + self.n_vjp

    def counts(self) -> dict:
        """``{"n_jvp": ..., "n_vjp": ...}`` spent so far."""
        return {"n_jvp": self.n_jvp, "n_vjp": self.n_vjp}

    def reset_counts(self) -> None:
        """Set both product counters to zero."""
        self.n_jvp = 0
        self.n_vjp = 0

    def __repr__(self) -> str:
        return (
            f"JacobianOperator(in_shape={self.in_shape}, out_shape={self.out_shape}, "
            f"chunk_size={self.chunk_size}, compute_dtype={self.compute_dtype}, "
            f"n_jvp={self.n_jvp}, n_vjp={self.n_vjp})"
        )

    # ------------------------------------------------------------------ flattening helpers
    def flatten_in(self, v) -> jax.Array:
        """``[..., *in_shape] -> [..., n]``."""
        return _flatten(v, self.in_shape, "input")

    def flatten_out(self, u) -> jax.Array:
        """``[..., *out_shape] -> [..., m]``."""
        return _flatten(u, self.out_shape, "output")

    def unflatten_in(self, v) -> jax.Array:
        """``[..., n] -> [..., *in_shape]``."""
        v = jnp.asarray(v)
        return v.reshape(v.shape[:-1] + self.in_shape)

    def unflatten_out(self, u) -> jax.Array:
        """``[..., m] -> [..., *out_shape]``."""
        u = jnp.asarray(u)
        return u.reshape(u.shape[:-1] + self.out_shape)

    # ------------------------------------------------------------------ products
    def matvec(self, v) -> jax.Array:
        """``J v``: ``v [*in_shape] -> [*out_shape]`` (one JVP)."""
        v = self._check(v, self.in_shape, "matvec", block=False)
        return self.matmat(v[None])[0]

    def rmatvec(self, u) -> jax.Array:
        """``J^T u``: ``u [*out_shape] -> [*in_shape]`` (one VJP)."""
        u = self._check(u, self.out_shape, "rmatvec", block=False)
        return self.rmatmat(u[None])[0]

    def matmat(self, V) -> jax.Array:
        """``J`` applied to each row: ``V [b, *in_shape] -> [b, *out_shape]`` (b JVPs)."""
        V = self._check(V, self.in_shape, "matmat", block=True)
        self.n_jvp += V.shape[0]
        return _apply_block(
            self._jvp, V, chunk_size=self.chunk_size, in_dtype=self._tin, out_dtype=self.dtype
        )

    def rmatmat(self, U) -> jax.Array:
        """``J^T`` applied to each row: ``U [b, *out_shape] -> [b, *in_shape]`` (b VJPs)."""
        U = self._check(U, self.out_shape, "rmatmat", block=True)
        self.n_vjp += U.shape[0]
        return _apply_block(
            self._vjp, U, chunk_size=self.chunk_size, in_dtype=self._tout, out_dtype=self.dtype
        )

    def matmat_flat(self, V) -> jax.Array:
        """``[b, n] -> [b, m]``: :meth:`matmat` on flattened rows."""
        return self.flatten_out(self.matmat(self.unflatten_in(V)))

    def rmatmat_flat(self, U) -> jax.Array:
        """``[b, m] -> [b, n]``: :meth:`rmatmat` on flattened rows."""
        return self.flatten_in(self.rmatmat(self.unflatten_out(U)))

    def _check(self, a, shape: Sequence[int], name: str, block: bool) -> jax.Array:
        a = jnp.asarray(a)
        got = a.shape[1:] if block else a.shape
        if tuple(got) != tuple(shape) or (block and a.ndim != len(shape) + 1):
            want = "[b, " + ", ".join(map(str, shape)) + "]" if block else str(tuple(shape))
            raise ValueError(f"{name}: expected an array shaped {want}, got {a.shape}")
        if not jnp.issubdtype(a.dtype, jnp.floating):
            raise ValueError(f"{name}: expected a floating array, got dtype {a.dtype}")
        return a


def _flatten(a, shape, what) -> jax.Array:
    a = jnp.asarray(a)
    nd = len(shape)
    if nd and tuple(a.shape[a.ndim - nd:]) != tuple(shape):
        raise ValueError(f"expected trailing {what} shape {tuple(shape)}, got {a.shape}")
    return a.reshape(a.shape[: a.ndim - nd] + (int(np.prod(shape, dtype=np.int64)),))
