"""The h-space bottleneck every UNet family exposes: ``encode(x, t, ...) -> Bottleneck``.

A NamedTuple, so ``h, skips, temb = model.apply(..., method=model.encode)`` keeps working, and
``b.h`` names the part researchers edit.
"""
from __future__ import annotations

from typing import NamedTuple

import jax.numpy as jnp


class Bottleneck(NamedTuple):
    """``h [B, h, w, C_mid]`` (mid-block output), ``skips`` (tuple of NHWC residuals, conv_in output
    first), ``temb [B, D]`` (the time embedding the up path consumes; conditional families may also
    carry their conditioning in the decode call, not here)."""

    h: jnp.ndarray
    skips: tuple
    temb: jnp.ndarray


def add_delta_h(h: jnp.ndarray, delta_h) -> jnp.ndarray:
    """``h + delta_h`` (Asyrp's edit of the bottleneck); ``delta_h`` must broadcast to ``h``'s shape, else ValueError.
    ``None`` returns ``h`` unchanged."""
    if delta_h is None:
        return h
    delta_h = jnp.asarray(delta_h)
    try:
        ok = jnp.broadcast_shapes(h.shape, delta_h.shape) == h.shape
    except ValueError:
        ok = False
    if not ok:
        raise ValueError(f"delta_h of shape {delta_h.shape} does not broadcast to h of shape {h.shape}")
    return h + delta_h.astype(h.dtype)
