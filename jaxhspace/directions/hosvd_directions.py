"""Editing directions from a Tucker / HOSVD model of a UNet Jacobian (keeping the tensor structure).

Park et al. (``J = dh/dx``) and Haas et al. (``J = deps/dh``) vectorise ``x [H, W, 3]`` and
``h [h, w, C]`` and take a matrix SVD. :func:`~jaxhspace.geometry.hosvd.jacobian_hosvd` keeps the
tensor structure instead (De Lathauwer, De Moor & Vandewalle 2000, "A multilinear singular value
decomposition", SIMAX 21(4), 1253-1278; HOOI: "On the best rank-1 and rank-(R1,...,RN)
approximation of higher-order tensors", SIMAX 21(4), 1324-1342)::

    J ~ core x_1 U_1 ... x_a U_a x_{a+1} V_1 ... x_{a+b} V_b

with orthonormal factor columns per *mode* (e.g. ``(spatial, channel)`` or one mode per axis).
This module turns such a :class:`~jaxhspace.geometry.hosvd.TuckerResult` into arrays the existing
editors accept:

* :func:`channel_directions` -- a channel factor column ``c in R^C`` broadcast over every position,
  ``dh[i, j, :] = c / sqrt(h w)`` (unit Frobenius norm): a ``delta_h`` for ``model.apply(...,
  delta_h=s * dh)`` / Asyrp ``ConstantDelta``. For the pullback ``h`` is the *output* side
  (``side="out"``); for Haas it is the *input* side (``side="in"``).
* :func:`separable_directions` -- outer products of one factor column per mode, e.g. the leading
  spatial singular vector (``[H*W]``) times the leading colour vector (``[3]``): unit-norm ``x``
  directions ``[H, W, 3]`` for :func:`~jaxhspace.editing.pullback_edit.edit_steps` (or ``h``
  directions). Distinct index tuples give orthonormal directions.
* :func:`core_ranking` / :func:`top_separable_directions` -- which index tuples to use: the core's
  energy. For an input tuple ``j``, ``sum_o core[o, j]^2 = ||P_U J v_j||^2`` is the Tucker model's
  squared gain along the separable ``v_j = (x)_n V_n[:, j_n]`` (the analogue of ``sigma_i^2`` for a
  right singular vector); ``by="entry"`` ranks single core entries ``|core[o, i]|^2`` (pairs of an
  output and an input separable direction, the Tucker analogue of a singular triplet).
* :func:`hosvd_pullback`, :func:`hosvd_haas` -- the Tucker model of the two Jacobians at
  ``(x_t, t)`` (operators from :func:`~jaxhspace.directions.pullback.pullback_operator` /
  :func:`~jaxhspace.directions.haas.haas_operator`).
* :func:`tucker_num_params`, :func:`svd_num_params`, :func:`matched_svd_rank` -- parameter counts
  for comparing a Tucker model with a rank-k SVD of the same size (``k (m + n + 1)`` vs
  ``sum_n r_n d_n + prod_n r_n``).

Signs of factor columns (and so of every direction here) are arbitrary, as for singular vectors:
apply edits at both signs.
"""
from __future__ import annotations

from typing import Optional, Sequence

import jax.numpy as jnp
import numpy as np

from jaxhspace.geometry.hosvd import TuckerResult, jacobian_hosvd

__all__ = [
    "channel_directions",
    "separable_directions",
    "core_ranking",
    "top_separable_directions",
    "hosvd_pullback",
    "hosvd_haas",
    "tucker_num_params",
    "svd_num_params",
    "matched_svd_rank",
]


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------
def _side(res: TuckerResult, side: str):
    """(factors, modes, shape) of one side of the Tucker model."""
    if side == "out":
        return list(res.out_factors), tuple(res.out_modes), tuple(res.out_shape)
    if side == "in":
        return list(res.in_factors), tuple(res.in_modes), tuple(res.in_shape)
    raise ValueError(f"side must be 'out' or 'in', got {side!r}")


def _ungroup_np(t: np.ndarray, modes, shape) -> np.ndarray:
    """``[d_1, .., d_M]`` (mode order) -> ``[*shape]`` (inverse of the mode grouping)."""
    perm = [a for g in modes for a in g]
    t = t.reshape(tuple(shape[p] for p in perm))
    return np.transpose(t, np.argsort(perm))


def _check_index(idx, ranks, side) -> tuple:
    idx = tuple(int(i) for i in np.atleast_1d(idx))
    if len(idx) != len(ranks):
        raise ValueError(f"{side} index {idx} needs one entry per mode ({len(ranks)} modes, ranks {ranks})")
    for n, (i, r) in enumerate(zip(idx, ranks)):
        if not 0 <= i < r:
            raise ValueError(f"{side} mode {n}: index {i} outside the kept rank {r}")
    return idx


# ---------------------------------------------------------------------------------------------
# (a) channel directions in h, broadcast over positions
# ---------------------------------------------------------------------------------------------
def channel_directions(res: TuckerResult, side: str = "out", indices: Optional[Sequence[int]] = None):
    """H-space channel directions: factor column ``c_j in R^C`` at every position, unit norm.

    Args:
      res: Tucker model whose ``side`` has a mode made of exactly the last (channel) axis (true for
        ``"axes"`` and ``"spatial_channel"`` modes).
      side: ``"out"`` when ``h`` is the Jacobian's output (pullback ``dh/dx``), ``"in"`` when it is
        the input (Haas ``deps/dh``).
      indices: channel-factor columns to use (default: all kept, i.e. ``0..r_C-1``, in order of
        decreasing channel-mode singular value).

    Returns:
      ``[k, h, w, C]`` with ``dh_j[i, l, :] = c_j / sqrt(h w)``; ``||dh_j||_F = 1`` and the ``dh_j``
      are orthonormal. Usable as ``delta_h`` (scale it, e.g. by the gain or an edit strength).
    """
    factors, modes, shape = _side(res, side)
    ch = len(shape) - 1
    try:
        n = modes.index((ch,))
    except ValueError:
        raise ValueError(f"{side} modes {modes} have no mode that is exactly the channel axis {ch}") from None
    F = np.asarray(factors[n], np.float64)  # [C, r]
    idx = range(F.shape[1]) if indices is None else [int(i) for i in indices]
    for i in idx:
        if not 0 <= i < F.shape[1]:
            raise ValueError(f"channel index {i} outside the kept rank {F.shape[1]}")
    cols = F[:, list(idx)].T  # [k, C]
    cols = cols / np.linalg.norm(cols, axis=1, keepdims=True)
    pos = int(np.prod(shape[:-1]))
    d = np.broadcast_to(cols[:, None, :], (cols.shape[0], pos, shape[-1])) / np.sqrt(pos)
    return jnp.asarray(d.reshape((cols.shape[0],) + shape), res.out_factors[0].dtype)


# ---------------------------------------------------------------------------------------------
# (b) separable directions (one factor column per mode)
# ---------------------------------------------------------------------------------------------
def separable_directions(res: TuckerResult, indices, side: str = "in"):
    """Outer products of one factor column per mode, reshaped to the side's array shape.

    Args:
      res: Tucker model.
      indices: one index tuple per direction, ``[(j_1, .., j_M), ...]`` (one entry per mode of
        ``side``), e.g. ``[(0, 0)]`` = leading spatial vector (x) leading colour vector for
        ``"spatial_channel"`` input modes; a single tuple is accepted too.
      side: ``"in"`` (Jacobian input: ``x [H, W, 3]`` for the pullback, ``h`` for Haas) or ``"out"``.

    Returns:
      ``[k, *shape]`` (``shape = res.in_shape`` or ``res.out_shape``): unit-norm, mutually
      orthonormal for distinct tuples. Usable as ``v`` in ``edit_steps`` (``side="in"`` of a
      pullback model) or as ``delta_h``.
    """
    factors, modes, shape = _side(res, side)
    ranks = tuple(F.shape[1] for F in factors)
    if len(indices) and np.ndim(indices[0]) == 0:
        indices = [indices]
    out = []
    for idx in indices:
        idx = _check_index(idx, ranks, side)
        t = np.ones(())
        for F, j in zip(factors, idx):
            t = np.multiply.outer(t, np.asarray(F, np.float64)[:, j])
        t = _ungroup_np(t, modes, shape)
        out.append(t / np.linalg.norm(t))
    if not out:
        raise ValueError("no index tuples given")
    return jnp.asarray(np.stack(out), factors[0].dtype)


# ---------------------------------------------------------------------------------------------
# (c) ranking by core energy
# ---------------------------------------------------------------------------------------------
def core_ranking(res: TuckerResult, k: Optional[int] = None, by: str = "in") -> list:
    """Index tuples of the Tucker core ranked by energy, largest first.

    Args:
      res: Tucker model with ``core [*out_ranks, *in_ranks]``.
      k: how many to return (default all).
      by: ``"in"`` -- input tuples ``j`` by ``sum_o core[o, j]^2`` (= squared Tucker gain
        ``||P_U J v_j||^2`` of the separable input direction ``v_j``); ``"out"`` -- output tuples by
        ``sum_i core[o, i]^2`` (= ``||P_V J^T u_o||^2``); ``"entry"`` -- single entries by
        ``core[o, i]^2``.

    Returns:
      list of dicts, each with ``"in_index"`` and/or ``"out_index"`` (tuples, one entry per mode;
      for ``"spatial_channel"`` modes: ``(spatial j, channel c)``), ``"energy"`` (squared core
      mass), ``"gain"`` (its square root), ``"fraction_core"`` (of ``||core||^2``) and
      ``"fraction_jacobian"`` (of ``||J||_F^2``); for ``"entry"`` also ``"value"`` (signed core
      entry).
    """
    core = np.asarray(res.core, np.float64)
    q = len(res.out_factors)
    total = float(np.sum(core**2))
    if by == "in":
        e = np.sum(core**2, axis=tuple(range(q)))
    elif by == "out":
        e = np.sum(core**2, axis=tuple(range(q, core.ndim)))
    elif by == "entry":
        e = core**2
    else:
        raise ValueError(f"by must be 'in', 'out' or 'entry', got {by!r}")
    order = np.argsort(-e.ravel(), kind="stable")
    if k is not None:
        if int(k) < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        order = order[: int(k)]
    rows = []
    for flat in order:
        idx = tuple(int(i) for i in np.unravel_index(flat, e.shape))
        en = float(e.ravel()[flat])
        row: dict[str, float | tuple[int, ...]]
        row = {"energy": en, "gain": float(np.sqrt(en)), "fraction_core": en / max(total, 1e-300),
               "fraction_jacobian": en / max(res.frobenius_sq, 1e-300)}
        if by == "in":
            row["in_index"] = idx
        elif by == "out":
            row["out_index"] = idx
        else:
            row.update(out_index=idx[:q], in_index=idx[q:], value=float(core[idx]))
        rows.append(row)
    return rows


def top_separable_directions(res: TuckerResult, k: int, side: str = "in", by: Optional[str] = None):
    """The ``k`` separable directions of ``side`` with the most core energy.

    Args:
      res: Tucker model; k: number of directions (clamped to the number of distinct tuples).
      side: ``"in"`` (pullback: ``x [H, W, 3]``) or ``"out"``.
      by: ranking (default ``side``, see :func:`core_ranking`); ``"entry"`` takes the ``side`` tuple
        of each top core entry, skipping repeats.

    Returns:
      ``(directions [k, *shape] (unit norm, orthonormal), ranking rows (list of dicts))``.
    """
    by = side if by is None else by
    key = f"{side}_index"
    if by not in (side, "entry"):
        raise ValueError(f"by must be {side!r} or 'entry' for side={side!r}, got {by!r}")
    rows, seen = [], set()
    for row in core_ranking(res, None, by):
        if row[key] in seen:
            continue
        seen.add(row[key])
        rows.append(row)
        if len(rows) == int(k):
            break
    return separable_directions(res, [r[key] for r in rows], side), rows


# ---------------------------------------------------------------------------------------------
# Convenience wrappers on the two h-space Jacobians
# ---------------------------------------------------------------------------------------------
def hosvd_pullback(model, params, x_t, t, out_ranks=None, in_ranks=None, key=0, *,
                   out_modes="spatial_channel", in_modes="spatial_channel", chunk_size=None,
                   compute_dtype=None, **hosvd_kwargs) -> TuckerResult:
    """Tucker model of Park's ``J = dh/dx`` at one image ``x_t [H, W, 3]`` and scalar ``t``.

    Output side = ``h [h, w, C]``, input side = ``x [H, W, 3]``. ``out_ranks`` / ``in_ranks`` /
    modes / ``hosvd_kwargs`` (``svd``, ``svd_rank``, ``n_probes``, ``hooi_iters``, ...) go to
    :func:`~jaxhspace.geometry.hosvd.jacobian_hosvd` (default modes: ``(spatial, channel)``);
    products are counted in ``res.n_jvp`` / ``res.n_vjp``. Use :func:`top_separable_directions`
    (``side="in"``) for edit directions and :func:`channel_directions` (``side="out"``) for Δh.
    """
    from jaxhspace.directions.pullback import pullback_operator

    op = pullback_operator(model, params, x_t, t, chunk_size, compute_dtype)
    return jacobian_hosvd(op, out_ranks, in_ranks, key, out_modes=out_modes, in_modes=in_modes,
                          **hosvd_kwargs)


def hosvd_haas(model, params, x_t, t, out_ranks=None, in_ranks=None, key=0, *,
               out_modes="spatial_channel", in_modes="spatial_channel", chunk_size=None,
               compute_dtype=None, **hosvd_kwargs) -> TuckerResult:
    """Tucker model of Haas' ``J = deps/dh`` (skips, temb fixed) at the ``h`` of ``x_t [H, W, 3]``.

    Output side = ``eps [H, W, 3]``, input side = ``h [h, w, C]``; arguments as
    :func:`hosvd_pullback`. Use :func:`channel_directions` / :func:`top_separable_directions` with
    ``side="in"`` for Δh directions.
    """
    from jaxhspace.directions.haas import haas_operator

    op = haas_operator(model, params, x_t, t, chunk_size, compute_dtype)
    return jacobian_hosvd(op, out_ranks, in_ranks, key, out_modes=out_modes, in_modes=in_modes,
                          **hosvd_kwargs)


# ---------------------------------------------------------------------------------------------
# Parameter counts
# ---------------------------------------------------------------------------------------------
def tucker_num_params(res_or_dims, ranks=None) -> int:
    """Numbers stored by a Tucker model: ``sum_n r_n d_n + prod_n r_n`` (factors + core).

    Args:
      res_or_dims: a :class:`TuckerResult` (both sides counted), or mode dims ``[d_1..d_N]``
        together with ``ranks [r_1..r_N]``.
    """
    if isinstance(res_or_dims, TuckerResult):
        fs = list(res_or_dims.out_factors) + list(res_or_dims.in_factors)
        dims = [int(F.shape[0]) for F in fs]
        ranks = [int(F.shape[1]) for F in fs]
    else:
        dims = [int(d) for d in res_or_dims]
        ranks = [int(r) for r in ranks]
        if len(dims) != len(ranks):
            raise ValueError(f"dims {dims} and ranks {ranks} differ in length")
    return int(sum(r * d for r, d in zip(ranks, dims)) + np.prod(ranks, dtype=np.int64))


def svd_num_params(m: int, n: int, k: int) -> int:
    """Numbers stored by a rank-``k`` SVD of an ``m x n`` matrix: ``k (m + n + 1)``."""
    return int(k) * (int(m) + int(n) + 1)


def matched_svd_rank(num_params: int, m: int, n: int) -> int:
    """The rank ``k >= 1`` whose SVD size ``k (m + n + 1)`` is nearest ``num_params``."""
    return max(1, int(np.round(num_params / (m + n + 1))))
