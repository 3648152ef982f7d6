"""Asyrp editing (Kwon et al., ICLR 2023): invert real images, then run the asymmetric reverse process with an
h-space edit, vmap-ed over images, edit sources (editors / Δh directions) and scales in one jitted program.

Pieces
------
* **Δh sources** (pytrees, so they can be stacked and vmap-ed): :class:`EditorDelta` (a trained DeltaBlock f_t,
  Δh = f(h, temb)), :class:`ConstantDelta` (one Δh for every t, e.g. the global Δh), :class:`TableDelta`
  (Δh_t per timestep, e.g. Δh_t^mean or Haas' std_t·u_t), :class:`CombinedDelta` (Σ_i c_i/√N·Δh_i).
  Each satisfies the :class:`DeltaSource` protocol: ``delta(h [B,h,w,C], temb [B,D], t [B]) -> Δh [B,h,w,C]``,
  ``delta.validate(h_shape)`` and ``delta.timesteps``.
* :func:`eps_pair_fn`: ``(x, t, edit) -> (ε, ε̃)`` with ONE encoder pass and two decoder passes
  (:func:`jaxhspace.models.functional.eps_pair`): ε = dec(h, skips), ε̃ = dec(h + s·Δh, skips) with the *unedited*
  skips (official kwonminki/Asyrp_official@a6c82dc:models/ddpm/diffusion.py:544-559).
* :func:`asyrp_edit`: DDIM inversion on the Asyrp grid (n_inv) and the asymmetric reverse process
  (n_test, t_edit / t_boost gating via :func:`jaxhspace.diffusion.asyrp.asyrp_reverse`).
* Δh algebra: :func:`collect_delta_h`, :func:`delta_h_mean_over_samples`, :func:`delta_h_global`,
  :func:`combine_delta_h`, :func:`interpolation_scales`, :func:`save_delta_h` / :func:`load_delta_h`.

Scaling: the coefficient applied to a *trained editor's* Δh at test time is
``scaling_factor = n_train_step / n_test_step · scale`` (kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:626;
pass ``n_train_step``); negative scales are allowed (interpolation / extrapolation, …:README.md:220).
Multi-attribute: h + Σ_i (c_i/√N)·s·Δh_i (kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:630-655).

Differences from the official code
----------------------------------
* **External Δh is linear**: h + s·Δh for a supplied Δh array/table (the paper's formula). The released
  ``forward`` routes an externally supplied Δh through the DiffStyle slerp branch
  h2 = slerp(1 − hs_coeff[0], h, ‖h‖·Δh/‖Δh‖) (kwonminki/Asyrp_official@a6c82dc:models/ddpm/diffusion.py:518-539),
  which at hs_coeff_origin_h = 1 is the identity, i.e. the released global-Δh path does not edit at all; only
  ``forward_layer_check`` (…:models/ddpm/diffusion.py:633) is linear. We follow the paper.
* ``hs_coeff_origin_h`` (the coefficient on h) is fixed to 1 (the official default).
* Noise of the η = 1 "boosting" steps is ``fold_in(fold_in(key, image_id), step)``, independent of the batch
  composition and shared across edits/scales (columns of a grid differ only by the edit); the official code uses
  ``torch.randn_like`` per step.
* Images are processed by ``vmap`` over single images (batch 1 per UNet call), equivalent to batching because the
  UNet is per-sample.
"""
from __future__ import annotations

import json
import math
import os
import tempfile
import typing
from functools import partial
from typing import Any, Callable, Optional, Protocol, Sequence, runtime_checkable

import jax
import jax.numpy as jnp
import numpy as np
from flax import struct
from jax import lax

from jaxhspace.diffusion.asyrp import asyrp_reverse, asyrp_step
from jaxhspace.diffusion.ddim import check_values, ddim_invert
from jaxhspace.diffusion.schedule import Schedule, alpha_bar, asyrp_timesteps, sampling_pairs
from jaxhspace.errors import JaxhspaceError
from jaxhspace.models.editor import DeltaBlock
from jaxhspace.models.functional import eps_fn as _eps_fn
from jaxhspace.models.functional import eps_pair

Array = jax.Array


# ----------------------------------------------------------------------------------------------
# Δh sources
# ----------------------------------------------------------------------------------------------
@runtime_checkable
class DeltaSource(Protocol):
    """What :func:`asyrp_edit`, :func:`collect_delta_h` and :func:`eps_pair_fn` need of a Δh source.

    A source is a pytree (a ``flax.struct`` dataclass: arrays as fields, modules and timestep tuples as static
    fields), so it can be a traced argument of the jitted edit and stacked for vmap (:func:`stack_deltas`).

    * ``__call__(h [B,h,w,C], temb [B,D], t [B] int) -> Δh [B,h,w,C]``: the raw (unscaled) Δh at timestep t. The
      time embedding is an argument because a trained editor reads it (f(h, temb)); fixed directions ignore it.
    * ``validate(h_shape, *, stacked=False, temb_dim=None)``: host-side checks against the UNet's h-space
      ``(h, w, C)`` before any work (``stacked``: every leaf has a leading edit axis D); raises
      :class:`~jaxhspace.errors.JaxhspaceError` naming the expected and the given shape.
    * ``timesteps``: the timesteps the source has a Δh for (a per-timestep table), or None for every t;
      :func:`asyrp_edit` checks that every edited grid point is covered.

    The concrete sources: :class:`EditorDelta`, :class:`ConstantDelta`, :class:`TableDelta`, :class:`CombinedDelta`.
    A source without ``validate`` / ``timesteps`` (written before this protocol) is still accepted, unchecked.
    """

    def __call__(self, h: Array, temb: Array, t: Array) -> Array:
        ...

    def validate(self, h_shape: Sequence[int], *, stacked: bool = False, temb_dim: Optional[int] = None) -> None:
        ...

    @property
    def timesteps(self) -> Optional[tuple]:
        ...


def _hspace(h_shape: Sequence[int]) -> tuple[int, int, int]:
    hs = tuple(int(s) for s in h_shape)
    if len(hs) != 3:
        raise JaxhspaceError(f"h_shape must be the h-space (h, w, C) of the UNet (unet.hspace_shape(H, W)), got {hs}")
    return hs[0], hs[1], hs[2]


@struct.dataclass
class EditorDelta:
    """Δh = f(h, temb) from a trained :class:`~jaxhspace.models.editor.DeltaBlock` (raw, unscaled).

    Attributes:
      params: the editor's params (a pytree leaf set; stack several editors' params for vmap).
      module: the DeltaBlock (static).
    """

    params: Any
    module: DeltaBlock = struct.field(pytree_node=False)

    def __call__(self, h: Array, temb: Array, t: Array) -> Array:
        return typing.cast(Array, self.module.apply({"params": self.params}, h, temb))

    @property
    def timesteps(self) -> Optional[tuple]:
        return None

    def validate(self, h_shape: Sequence[int], *, stacked: bool = False, temb_dim: Optional[int] = None) -> None:
        """The editor's channels (and time-embedding width, if ``temb_dim`` is given) must be the UNet's; params
        finite."""
        hs = _hspace(h_shape)
        c = self.module.config
        if c.channels != hs[2] or (temb_dim is not None and c.temb_dim != temb_dim):
            raise JaxhspaceError(f"editor (C={c.channels}, temb_dim={c.temb_dim}) does not fit the UNet (h-space "
                                 f"{hs}: C={hs[2]}, temb_dim={temb_dim})")
        if any(not np.all(np.isfinite(np.asarray(leaf))) for leaf in jax.tree_util.tree_leaves(self.params)):
            raise JaxhspaceError("editor params contain NaN or inf")


@struct.dataclass
class ConstantDelta:
    """The same Δh at every t (the global Δh, a Haas/PCA direction, a supervised mean difference).

    Attributes:
      delta_h: ``[h, w, C]`` (shared by all images) or ``[B, h, w, C]`` (per image; not with vmap over images).
    """

    delta_h: Array

    def __call__(self, h: Array, temb: Array, t: Array) -> Array:
        return jnp.broadcast_to(self.delta_h.astype(h.dtype), h.shape)

    @property
    def timesteps(self) -> Optional[tuple]:
        return None

    def validate(self, h_shape: Sequence[int], *, stacked: bool = False, temb_dim: Optional[int] = None) -> None:
        """``delta_h`` is ``[h, w, C]`` (``[D, h, w, C]`` if stacked) of the h-space, finite. A per-image
        ``[B, h, w, C]`` Δh passes here; :func:`asyrp_edit` (vmap over single images) refuses it itself."""
        hs = _hspace(h_shape)
        a = np.asarray(self.delta_h)
        if stacked:
            if a.ndim < 4:
                raise JaxhspaceError(f"stacked delta_h must be [D, h, w, C] = [D, {hs[0]}, {hs[1]}, {hs[2]}], got "
                                     f"shape {a.shape}")
            for i in range(a.shape[0]):
                check_delta_h(a[i], hs, f"delta_h[{i}]")
        else:
            check_delta_h(a, hs)


@struct.dataclass
class TableDelta:
    """Δh_t looked up by timestep (e.g. Δh_t^mean from :func:`delta_h_mean_over_samples`).

    Attributes:
      table: ``[S, h, w, C]``; row i is used when t == timesteps[i]; Δh = 0 at a t not in the table
        (:func:`asyrp_edit` checks that every edited grid point is covered).
      timesteps: ``S`` ints (static).
    """

    table: Array
    timesteps: tuple = struct.field(pytree_node=False)

    def __call__(self, h: Array, temb: Array, t: Array) -> Array:
        ts = jnp.asarray(self.timesteps, jnp.int32)
        match = jnp.asarray(t, jnp.int32).reshape(-1)[:, None] == ts[None, :]  # [B, S]
        rows = self.table[jnp.argmax(match, axis=1)].astype(h.dtype)  # [B, h, w, C]
        found = jnp.any(match, axis=1)[:, None, None, None]
        return jnp.broadcast_to(jnp.where(found, rows, jnp.zeros_like(rows)), h.shape)

    def validate(self, h_shape: Sequence[int], *, stacked: bool = False, temb_dim: Optional[int] = None) -> None:
        """``table`` is ``[S, h, w, C]`` (``[D, S, h, w, C]`` if stacked) with S = len(timesteps), finite."""
        hs = _hspace(h_shape)
        a = np.asarray(self.table)
        if stacked and a.ndim != 5:
            raise JaxhspaceError(f"stacked Δh table must be [D, S={len(self.timesteps)}, {hs[0]}, {hs[1]}, {hs[2]}], "
                                 f"got shape {a.shape}")
        for i in range(a.shape[0] if stacked else 1):
            check_delta_h(a[i] if stacked else a, hs, "Δh table", timesteps=self.timesteps)


@struct.dataclass
class CombinedDelta:
    """Multi-attribute Δh = Σ_i (c_i/√N)·Δh_i (official weighting,
    kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:630-655; …:models/ddpm/diffusion.py:513-516).

    Attributes:
      parts: tuple of N Δh sources.
      coeffs: ``[N]`` the c_i (``--multiple_hs_coeff``, default 1).
    """

    parts: tuple
    coeffs: Array

    def __call__(self, h: Array, temb: Array, t: Array) -> Array:
        n = len(self.parts)
        out = jnp.zeros_like(h)
        for i, part in enumerate(self.parts):
            out = out + (self.coeffs[i] / math.sqrt(n)).astype(h.dtype) * part(h, temb, t)
        return out

    @property
    def timesteps(self) -> Optional[tuple]:
        """The timesteps every part covers (the intersection of the parts' tables), None if no part is a table."""
        tables = [ts for ts in (getattr(p, "timesteps", None) for p in self.parts) if ts is not None]
        if not tables:
            return None
        common = set(int(t) for t in tables[0]).intersection(*({int(t) for t in ts} for ts in tables[1:]))
        return tuple(sorted(common, reverse=True))

    def validate(self, h_shape: Sequence[int], *, stacked: bool = False, temb_dim: Optional[int] = None) -> None:
        """At least one part, ``coeffs`` of shape ``[N]`` (``[D, N]`` if stacked), every part valid."""
        if len(self.parts) == 0:
            raise JaxhspaceError("CombinedDelta needs at least one part")
        lead = 1 if stacked else 0
        if np.shape(self.coeffs)[lead:] != (len(self.parts),):
            raise JaxhspaceError(f"CombinedDelta.coeffs must have shape [{len(self.parts)}] (one per part), got "
                                 f"{np.shape(self.coeffs)}")
        for i, part in enumerate(self.parts):
            check_delta_type(part, f"CombinedDelta.parts[{i}]")
            _validate_source(part, h_shape, stacked=stacked, temb_dim=temb_dim)


def _validate_source(delta, h_shape: Sequence[int], *, stacked: bool = False, temb_dim: Optional[int] = None) -> None:
    """``delta.validate(...)`` for a :class:`DeltaSource`; a source without ``validate`` is not checked."""
    if isinstance(delta, DeltaSource):
        delta.validate(h_shape, stacked=stacked, temb_dim=temb_dim)


def _source_timesteps(delta) -> Optional[tuple]:
    """``delta.timesteps`` of a :class:`DeltaSource`, None (every t) for a source without it."""
    return delta.timesteps if isinstance(delta, DeltaSource) else None


def stack_deltas(deltas: Sequence[DeltaSource]) -> DeltaSource:
    """Stack D Δh sources of identical structure (same class, same static fields, same shapes) along a new
    leading axis, for ``asyrp_edit(..., stacked=True)`` (vmap over the D edits)."""
    deltas = list(deltas)
    if not deltas:
        raise ValueError("stack_deltas: nothing to stack")
    defs = {jax.tree_util.tree_structure(d) for d in deltas}
    if len(defs) != 1:
        raise ValueError("stack_deltas: all Δh sources must have the same type and static fields "
                         "(e.g. the same DeltaBlock config, the same table timesteps)")
    shapes = {tuple(np.shape(leaf) for leaf in jax.tree_util.tree_leaves(d)) for d in deltas}
    if len(shapes) != 1:
        raise ValueError(f"stack_deltas: leaf shapes differ between sources: {sorted(shapes)}")
    return jax.tree_util.tree_map(lambda *a: jnp.stack([jnp.asarray(x) for x in a]), *deltas)


def check_delta_h(delta_h, hspace_shape: tuple[int, int, int], name: str = "delta_h",
                  timesteps: Optional[Sequence[int]] = None) -> np.ndarray:
    """Validate a Δh array: ``[h, w, C]`` or ``[B, h, w, C]`` (or ``[S, h, w, C]`` with ``timesteps`` of length S),
    finite. Returns it as a float32 NumPy array.

    Raises:
      JaxhspaceError (a ValueError) naming the expected shape, or saying it contains NaN/inf.
    """
    a = np.asarray(delta_h, dtype=np.float32)
    hs = tuple(int(s) for s in hspace_shape)
    if timesteps is not None:
        s = len(timesteps)
        if a.shape != (s,) + hs:
            raise JaxhspaceError(f"{name} must be a per-timestep table [S={s}, {hs[0]}, {hs[1]}, {hs[2]}] (h-space "
                                 f"{hs}), got shape {a.shape}")
    elif a.ndim not in (3, 4) or a.shape[-3:] != hs:
        raise JaxhspaceError(f"{name} must be [h, w, C] = {list(hs)} or [B, {hs[0]}, {hs[1]}, {hs[2]}] (the UNet's "
                             f"h-space for this image size, NHWC), got shape {a.shape}")
    if not np.all(np.isfinite(a)):
        raise JaxhspaceError(f"{name} contains NaN or inf ({int(np.sum(~np.isfinite(a)))} entries)")
    return a


_DELTA_KINDS = ("EditorDelta(params, module), ConstantDelta(delta_h [h,w,C]), TableDelta(table [S,h,w,C], timesteps), "
                "CombinedDelta(parts, coeffs), or a flax.struct dataclass with __call__(h, temb, t) -> Δh")


def check_delta_type(delta, name: str = "delta") -> None:
    """Raise a :class:`jaxhspace.errors.JaxhspaceError` unless ``delta`` is a Δh source: callable as
    ``delta(h, temb, t)`` and a pytree whose leaves are arrays (it is a traced argument of the jitted edit).
    Shapes are checked by the source's own :meth:`DeltaSource.validate`."""
    if isinstance(delta, (tuple, list)):
        hint = (" A (module, params) / (params, module) pair from load_editor is passed as "
                "EditorDelta(params=params, module=editor); several sources go in stack_deltas([...]) with "
                "stacked=True or in CombinedDelta.")
        raise JaxhspaceError(f"{name} is a {type(delta).__name__} of {len(delta)} items, not a Δh source; pass one of "
                             f"{_DELTA_KINDS}.{hint}")
    if isinstance(delta, (np.ndarray, jax.Array, np.generic, int, float)):
        raise JaxhspaceError(f"{name} is an array of shape {np.shape(delta)}, not a Δh source: wrap a Δh [h, w, C] "
                             "in ConstantDelta(delta_h), or a per-timestep table [S, h, w, C] in TableDelta(table, "
                             "timesteps).")
    if not callable(delta):
        raise JaxhspaceError(f"{name} of type {type(delta).__name__} is not a Δh source; pass one of {_DELTA_KINDS}.")
    bad = [type(leaf).__name__ for leaf in jax.tree_util.tree_leaves(delta)
           if not isinstance(leaf, (np.ndarray, jax.Array, np.generic, int, float, bool))]
    if bad:
        kinds = ", ".join(sorted(set(bad)))
        raise JaxhspaceError(f"{name} of type {type(delta).__name__} has non-array leaves ({kinds}): a plain "
                             "function or object cannot be a traced argument of the jitted edit; pass one of "
                             f"{_DELTA_KINDS} (arrays as fields, modules as static fields).")


def _check_edit_times(schedule: Schedule, **times) -> None:
    """``t_edit`` / ``t_boost`` must be finite numbers in [0, num_train_timesteps] (T itself: never / always)."""
    T = int(schedule.num_train_timesteps)
    for name, t in times.items():
        if isinstance(t, bool) or not isinstance(t, (int, float, np.integer, np.floating)) or not 0 <= t <= T:
            raise JaxhspaceError(f"{name} must be a timestep in [0, {T}] (the schedule's num_train_timesteps; "
                                 f"official t_edit 500, t_boost 200, t_boost = 0 disables boosting), got {t!r}")


# ----------------------------------------------------------------------------------------------
# ε pairs
# ----------------------------------------------------------------------------------------------
def eps_pair_fn(unet, params, delta: DeltaSource | Callable[[Array, Array, Array], Array], scale=1.0) -> Callable:
    """``(x [B,H,W,C], t [B] int, edit [B] bool) -> (ε, ε̃)`` for :func:`~jaxhspace.diffusion.asyrp.asyrp_reverse`.

    :func:`jaxhspace.models.functional.eps_pair`: one ``encode`` (h, skips, temb), then ε = decode(h) and
    ε̃ = decode(h + scale·Δh) with the same skips and temb, Δh = ``delta(h, temb, t)``. Where ``edit`` is False, h is
    left unchanged (ε̃ = ε, the official ``t >= t_edit`` gate); if no example edits, the second decoder pass is
    skipped (``lax.cond``).

    Args:
      unet, params: :class:`~jaxhspace.models.unet.UNet2DModel` (or another UNet family) and its params.
      delta: a :class:`DeltaSource` or any callable ``(h, temb, t) -> Δh [B,h,w,C]``.
      scale: the coefficient on Δh (scalar; for a trained editor use :func:`scaling_factor`).
    """

    def f(x, t, edit):
        tb = jnp.broadcast_to(jnp.asarray(t).reshape(-1), (x.shape[0],))
        return eps_pair(unet, params, x, t, lambda h, temb: delta(h, temb, tb), scale=scale, edit=edit)

    return f


def editor_eps_pair_fn(unet, params, editor: DeltaBlock, editor_params, scale=1.0) -> Callable:
    """:func:`eps_pair_fn` with Δh = f(h, temb) from a DeltaBlock: ε̃ = dec(h + scale·f(h, temb), skips)."""
    return eps_pair_fn(unet, params, EditorDelta(editor_params, editor), scale)


def delta_h_eps_pair_fn(unet, params, delta_h, scale=1.0, timesteps: Optional[Sequence[int]] = None) -> Callable:
    """:func:`eps_pair_fn` with a fixed Δh: ``[h,w,C]``/``[B,h,w,C]`` at every t, or a per-timestep table
    ``[S,h,w,C]`` when ``timesteps`` (S ints) is given. Linear h + scale·Δh (the paper), see the module docstring
    for the official slerp no-op this deliberately does not reproduce."""
    src: DeltaSource
    if timesteps is not None:
        src = TableDelta(jnp.asarray(delta_h), tuple(int(t) for t in timesteps))
    else:
        src = ConstantDelta(jnp.asarray(delta_h))
    return eps_pair_fn(unet, params, src, scale)


def scaling_factor(scale, n_test_step: int, n_train_step: Optional[int] = None):
    """Official test-time coefficient on a trained editor's Δh: ``n_train_step / n_test_step · scale``
    (kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:626).

    ``n_train_step=None`` (externally supplied directions, no training grid) returns ``scale`` unchanged.
    Works elementwise on arrays of scales.
    """
    if n_train_step is None:
        return scale
    if n_test_step < 1 or n_train_step < 1:
        raise ValueError(f"n_train_step ({n_train_step}) and n_test_step ({n_test_step}) must be >= 1")
    return (float(n_train_step) / float(n_test_step)) * np.asarray(scale, np.float32)


# ----------------------------------------------------------------------------------------------
# Inversion and the edit
# ----------------------------------------------------------------------------------------------
@partial(jax.jit, static_argnames=("unet", "ts"))
def _invert_jit(params, schedule, x0, *, unet, ts):
    return ddim_invert(_eps_fn(unet, params), x0, np.asarray(ts), schedule)


def invert(unet, params, schedule: Schedule, x0, n_inv: int = 40) -> Array:
    """DDIM inversion (η = 0) of images ``x0 [B,H,W,C]`` in [-1, 1] along the Asyrp grid ``asyrp_timesteps(n_inv)``,
    from t = 0 (ᾱ_0 = 0.9999) to t = 999; returns x_lat ``[B,H,W,C]`` (official
    kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:1034-1044). Jitted with the params traced (one compile per
    shape and n_inv)."""
    x0 = _check_images(unet, x0, "x0")
    ts = tuple(int(t) for t in asyrp_timesteps(n_inv, schedule.num_train_timesteps - 1))
    return _invert_jit(params, schedule, x0, unet=unet, ts=ts)


def _check_images(unet, x, name):
    x = jnp.asarray(x, jnp.float32)
    c = unet.config
    if x.ndim != 4 or x.shape[-1] != c.in_channels:
        raise ValueError(f"{name} must be [B, H, W, {c.in_channels}] (NHWC), got shape {x.shape}")
    check_values(x, name, images=name == "x0")  # NaN / inf; x0 given as 0..255 (host-side, once per call)
    return x


def _check_delta(delta, hs: Sequence[int], stacked: bool, temb_dim: int, edited_ts: Sequence[int],
                 where: str = "", single_images: bool = True) -> None:
    """A Δh source against the h-space ``hs`` (its own :meth:`DeltaSource.validate`) and, for a per-timestep
    source, against the edited grid points ``edited_ts``; host-side, before any work. ``single_images``: the caller
    vmaps over single images, so a per-image ``[B, h, w, C]`` ConstantDelta cannot be used."""
    _validate_source(delta, hs, stacked=stacked, temb_dim=temb_dim)
    if single_images and isinstance(delta, ConstantDelta) and np.ndim(delta.delta_h) - (1 if stacked else 0) == 4:
        raise JaxhspaceError("asyrp_edit vmaps over single images: pass one Δh [h, w, C] per edit (not per image "
                             f"[B, h, w, C], shape {np.shape(delta.delta_h)})")
    covered = _source_timesteps(delta)
    if covered is not None:
        missing = sorted(set(int(t) for t in edited_ts) - set(int(t) for t in covered))
        if missing:
            raise JaxhspaceError(f"Δh table has no rows for edited timesteps {missing[:8]}"
                                 f"{' ...' if len(missing) > 8 else ''}{where}; build it on the same grid")


@partial(jax.jit, static_argnames=("unet", "ts", "t_edit", "t_boost", "eta", "boost_eta", "stacked", "symmetric"))
def _edit_jit(params, schedule, delta, coeffs, x_lat, keys, *, unet, ts, t_edit, t_boost, eta, boost_eta, stacked,
              symmetric):
    grid = np.asarray(ts, np.int64)

    def one(delta_i, c, x_i, key_i):  # x_i [H, W, C]
        pair = eps_pair_fn(unet, params, delta_i, c)
        out = asyrp_reverse(pair, x_i[None], grid, schedule, t_edit, t_boost, key=key_i, eta=eta,
                            boost_eta=boost_eta, symmetric=symmetric)
        return out[0]

    f = jax.vmap(one, in_axes=(None, None, 0, 0))  # images
    f = jax.vmap(f, in_axes=(None, 0, None, None))  # scales
    if stacked:
        f = jax.vmap(f, in_axes=(0, None, None, None))  # edit sources
    return f(delta, coeffs, x_lat, keys)


def asyrp_edit(
    unet,
    params,
    schedule: Schedule,
    x0: Optional[Array] = None,
    delta: Optional[DeltaSource] = None,
    scales: Sequence[float] | Array = (1.0,),
    *,
    x_lat: Optional[Array] = None,
    n_inv: int = 40,
    n_test: int = 40,
    t_edit: int = 500,
    t_boost: int = 200,
    n_train_step: Optional[int] = None,
    stacked: bool = False,
    eta: float = 0.0,
    boost_eta: float = 1.0,
    symmetric: bool = False,
    key: Optional[Array] = None,
    image_ids: Optional[Sequence[int]] = None,
    return_latent: bool = False,
):
    """Edit real images: DDIM inversion x0 → x_T (``n_inv``), then the asymmetric reverse process (``n_test``).

    The reverse walks ``asyrp_timesteps(n_test)[::-1]``; where t ≥ ``t_edit``, P_t uses ε̃ = ε(h + c·Δh) and the
    direction term the unedited ε (η = ``eta``); where t < ``t_boost``, η = ``boost_eta`` (quality boosting).
    Everything after the inversion is one jitted program: ``vmap`` over images × scales (× edit sources).

    Args:
      unet, params, schedule: the UNet2DModel, its params, the noise schedule.
      x0: ``[B, H, W, C]`` images in [-1, 1] (inverted here), or None if ``x_lat`` is given.
      delta: a Δh source (:class:`EditorDelta`, :class:`ConstantDelta`, :class:`TableDelta`,
        :class:`CombinedDelta`); with ``stacked=True`` every leaf has a leading axis D (:func:`stack_deltas`).
        None = no edit (reconstruction).
      scales: ``[K]`` user scales s (negative allowed). The coefficient on Δh is
        :func:`scaling_factor` ``(s, n_test, n_train_step)``: n_train_step/n_test·s for a trained editor.
      x_lat: ``[B, H, W, C]`` precomputed latents (skips the inversion).
      n_inv, n_test: inversion / generation grid sizes (official 40 / 40).
      t_edit, t_boost: edit where t ≥ t_edit; η = boost_eta where t < t_boost (official README: 500 / 200;
        t_boost = 0 disables boosting).
      n_train_step: grid size the editor was trained with (None: no step-count scaling, e.g. for Δh directions).
      stacked: vmap over the leading axis of ``delta``.
      eta, boost_eta, symmetric: see :func:`~jaxhspace.diffusion.asyrp.asyrp_reverse`.
      key: PRNG key of the boosting noise (default PRNGKey(0)); image b uses ``fold_in(key, image_ids[b])``.
      image_ids: ``[B]`` ints (default ``arange(B)``), so a subset edited alone gets the same noise.
      return_latent: also return x_lat.

    Returns:
      edits ``[K, B, H, W, C]`` (``[D, K, B, H, W, C]`` if stacked), and x_lat if ``return_latent``.

    Raises:
      ValueError: wrong image / Δh shapes, NaN in Δh, a table missing an edited timestep, bad grids; a
      JaxhspaceError (a ValueError) before the inversion for a ``delta`` that is not a Δh source (e.g. a tuple),
      NaN / inf in ``x0`` / ``x_lat``, or ``x0`` in 0..255.
    """
    if delta is not None:
        check_delta_type(delta)  # before the inversion
    _check_edit_times(schedule, t_edit=t_edit, t_boost=t_boost)
    src = x0 if x_lat is None else x_lat
    if src is None:
        raise ValueError("pass x0 (images to invert) or x_lat (precomputed latents)")
    grid = asyrp_timesteps(n_test, schedule.num_train_timesteps - 1)[::-1]
    edited_ts = [int(t) for t in grid if t >= t_edit]
    if delta is None:
        stacked = False
    elif np.ndim(src) == 4 and np.shape(src)[-1] == unet.config.in_channels:  # else _check_images names the shape
        _check_delta(delta, unet.hspace_shape(*np.shape(src)[1:3]), stacked, unet.config.time_embed_dim, edited_ts,
                     f" (t_edit={t_edit}, n_test={n_test})")
    if x_lat is None:
        x_lat = invert(unet, params, schedule, x0, n_inv)
    x_lat = _check_images(unet, x_lat, "x_lat")
    b, hh, ww, _ = x_lat.shape
    hs = unet.hspace_shape(hh, ww)
    if delta is None:
        delta = ConstantDelta(jnp.zeros(hs, jnp.float32))
    scale_arr = np.asarray(scales, np.float32).reshape(-1)
    if scale_arr.size == 0 or not np.all(np.isfinite(scale_arr)):
        raise ValueError(f"scales must be a non-empty list of finite numbers, got {scale_arr}")
    coeffs = jnp.asarray(scaling_factor(scale_arr, n_test, n_train_step), jnp.float32).reshape(-1)
    key = jax.random.PRNGKey(0) if key is None else key
    ids = np.arange(b) if image_ids is None else np.asarray(image_ids, np.int64).reshape(-1)
    if ids.shape != (b,):
        raise ValueError(f"image_ids must have {b} entries, got {ids.shape}")
    keys = jax.vmap(lambda i: jax.random.fold_in(key, i))(jnp.asarray(ids, jnp.uint32))
    out = _edit_jit(params, schedule, delta, coeffs, x_lat, keys, unet=unet, ts=tuple(int(t) for t in grid),
                    t_edit=int(t_edit), t_boost=int(t_boost), eta=float(eta), boost_eta=float(boost_eta),
                    stacked=bool(stacked), symmetric=bool(symmetric))
    return (out, x_lat) if return_latent else out


# ----------------------------------------------------------------------------------------------
# Δh algebra
# ----------------------------------------------------------------------------------------------
@partial(jax.jit, static_argnames=("unet", "ts", "tps"))
def _collect_jit(params, schedule, delta, coeff, x_lat, *, unet, ts, tps):
    def body(x, inp):
        t, a_t, a_prev = inp
        tb = jnp.full((x.shape[0],), t, jnp.int32)
        eps, eps_e, dh = eps_pair(unet, params, x, tb, lambda h, temb: delta(h, temb, tb), scale=coeff,
                                  return_delta_h=True)
        return asyrp_step(x, eps, eps_e, a_t, a_prev), dh

    per = (jnp.asarray(ts, jnp.int32), alpha_bar(schedule, np.asarray(ts)), alpha_bar(schedule, np.asarray(tps)))
    _, dhs = lax.scan(body, x_lat, per)
    return jnp.swapaxes(dhs, 0, 1)  # [B, S, h, w, C]


def collect_delta_h(unet, params, schedule: Schedule, delta: DeltaSource, x_lat: Array, n_test: int = 40,
                    t_edit: int = 500, scale: float = 1.0, n_train_step: Optional[int] = None):
    """Raw Δh along the edited trajectories (official ``--num_mean_of_delta_hs``,
    kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:612-623, 811-835).

    Runs the asymmetric reverse (η = 0) from ``x_lat [N,H,W,C]`` over the grid points t ≥ t_edit with coefficient
    ``scaling_factor(scale, n_test, n_train_step)`` and records the *unscaled* Δh = delta(h, temb, t) at each t.

    Returns:
      ``(delta_hs [N, S, h, w, C], timesteps [S])`` with timesteps descending (the edited grid points).
    """
    check_delta_type(delta)
    _check_edit_times(schedule, t_edit=t_edit)
    x_lat = _check_images(unet, x_lat, "x_lat")
    grid = asyrp_timesteps(n_test, schedule.num_train_timesteps - 1)[::-1]
    ts, tps = sampling_pairs(grid)
    sel = ts >= t_edit
    if not np.any(sel):
        raise ValueError(f"no grid point of n_test={n_test} is >= t_edit={t_edit}")
    _check_delta(delta, unet.hspace_shape(*x_lat.shape[1:3]), False, unet.config.time_embed_dim, ts[sel].tolist(),
                 f" (t_edit={t_edit}, n_test={n_test})", single_images=False)
    coeff = jnp.asarray(scaling_factor(float(scale), n_test, n_train_step), jnp.float32)
    dhs = _collect_jit(params, schedule, delta, coeff, x_lat, unet=unet, ts=tuple(int(t) for t in ts[sel]),
                       tps=tuple(int(t) for t in tps[sel]))
    return dhs, ts[sel].copy()


def delta_h_mean_over_samples(delta_hs) -> Array:
    """Δh_t^mean: ``[N, S, h, w, C] -> [S, h, w, C]`` (mean over the N samples, per timestep)."""
    a = jnp.asarray(delta_hs)
    if a.ndim != 5:
        raise ValueError(f"delta_hs must be [N, S, h, w, C] (samples, timesteps, h-space), got shape {a.shape}")
    return jnp.mean(a, axis=0)


def delta_h_global(delta_hs, timesteps: Optional[Sequence[int]] = None, t_edit: Optional[int] = None) -> Array:
    """Global Δh: the mean over samples and over the timesteps t ≥ t_edit.

    Args:
      delta_hs: ``[N, S, h, w, C]`` (per sample) or ``[S, h, w, C]`` (already Δh_t^mean).
      timesteps: ``[S]`` timesteps of the rows (needed with ``t_edit``).
      t_edit: keep only rows with t ≥ t_edit (None: all rows, as in the official code, which only accumulates
        t ≥ t_edit in the first place).

    Returns:
      ``[h, w, C]``.
    """
    a = jnp.asarray(delta_hs)
    if a.ndim == 5:
        a = jnp.mean(a, axis=0)
    if a.ndim != 4:
        raise ValueError(f"delta_hs must be [N, S, h, w, C] or [S, h, w, C], got shape {a.shape}")
    if t_edit is not None:
        if timesteps is None or len(timesteps) != a.shape[0]:
            raise ValueError(f"t_edit needs timesteps with one entry per row ({a.shape[0]})")
        keep = np.asarray(timesteps) >= t_edit
        if not np.any(keep):
            raise ValueError(f"no timestep >= t_edit={t_edit} in {list(timesteps)}")
        a = a[np.nonzero(keep)[0]]
    return jnp.mean(a, axis=0)


def combine_delta_h(delta_hs, coeffs: Optional[Sequence[float]] = None, scale: float = 1.0) -> Array:
    """Multi-attribute combination Σ_i (c_i/√N)·s·Δh_i (official weighting): ``[N, ...] -> [...]``.

    ``coeffs`` defaults to all ones (``--multiple_hs_coeff`` default). Linear in each Δh_i and in ``scale``.
    """
    a = jnp.asarray(delta_hs)
    n = a.shape[0]
    c = jnp.ones((n,), a.dtype) if coeffs is None else jnp.asarray(coeffs, a.dtype).reshape(-1)
    if c.shape != (n,):
        raise ValueError(f"coeffs must have {n} entries, got {c.shape}")
    return jnp.tensordot(c * (scale / math.sqrt(n)), a, axes=(0, 0), precision=lax.Precision.HIGHEST)


def interpolation_scales(min_delta: float = -1.0, max_delta: float = 1.0, num: int = 5) -> np.ndarray:
    """Scales of the official ``--delta_interpolation`` (linspace(min_delta, max_delta, num_delta),
    kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:726-755). Negative values edit in the opposite direction.
    ``[num]`` float32."""
    if num < 1:
        raise ValueError(f"num must be >= 1, got {num}")
    return np.linspace(min_delta, max_delta, num).astype(np.float32)


def save_delta_h(path: str, delta_h, timesteps: Optional[Sequence[int]] = None, meta: Optional[dict] = None) -> str:
    """Save a Δh (``[h,w,C]``, ``[S,h,w,C]`` with ``timesteps``, or ``[N,S,h,w,C]``) as ``.npz`` atomically
    (temp file + rename). ``meta``: JSON-serialisable extras (source texts, t_edit, scale, ...). Returns path."""
    a = np.asarray(delta_h, np.float32)
    if not np.all(np.isfinite(a)):
        raise ValueError("delta_h contains NaN or inf; refusing to save")
    arrays: dict[str, Any] = {"delta_h": a, "meta": np.asarray(json.dumps(meta or {}))}
    if timesteps is not None:
        arrays["timesteps"] = np.asarray(timesteps, np.int64).reshape(-1)
    folder = os.path.dirname(os.path.abspath(path))
    os.makedirs(folder, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=".delta_h.", suffix=".npz.tmp", dir=folder)
    try:
        with os.fdopen(fd, "wb") as f:
            np.savez(f, **arrays)
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    return path


def load_delta_h(path: str) -> tuple[np.ndarray, Optional[np.ndarray], dict]:
    """Load :func:`save_delta_h` output: ``(delta_h, timesteps or None, meta)``.

    Raises:
      ValueError: missing file, missing ``delta_h`` array, NaN/inf, timesteps not matching the rows.
    """
    if not os.path.isfile(path):
        raise ValueError(f"{path} not found")
    with np.load(path, allow_pickle=False) as z:
        if "delta_h" not in z:
            raise ValueError(f"{path} has no 'delta_h' array (keys: {list(z.keys())})")
        a = np.asarray(z["delta_h"], np.float32)
        ts = np.asarray(z["timesteps"]) if "timesteps" in z else None
        meta = json.loads(str(z["meta"])) if "meta" in z else {}
    if not np.all(np.isfinite(a)):
        raise ValueError(f"{path}: delta_h contains NaN or inf")
    if ts is not None and (a.ndim < 4 or a.shape[-4] != ts.size):
        raise ValueError(f"{path}: {ts.size} timesteps but delta_h has shape {a.shape}")
    return a, ts, meta
