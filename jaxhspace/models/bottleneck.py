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
