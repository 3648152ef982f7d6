"""The UNet as pure functions of arrays, closed over (model, params): what samplers and the Jacobian
engine consume. Nothing here knows about diffusion schedules or editing.

All images are NHWC; ``t`` is ``[B]`` (int or float).
"""
from __future__ import annotations

from typing import Callable

import jax


def eps_fn(model, params) -> Callable:
    """``(x [B,H,W,C], t [B]) -> eps [B,H,W,C]``."""

    def f(x, t):
        return model.apply({"params": params}, x, t)

    return f


def eps_delta_fn(model, params) -> Callable:
    """``(x, t, delta_h [B,h,w,Cmid]) -> eps`` with h + delta_h decoded with the unedited skips."""

    def f(x, t, delta_h):
        return model.apply({"params": params}, x, t, delta_h=delta_h)

    return f


def encode_fn(model, params) -> Callable:
    """``(x, t) -> (h [B,h,w,Cmid], skips, temb)``; h is the mid-block output."""

    def f(x, t):
        return model.apply({"params": params}, x, t, method=model.encode)

    return f


def decode_fn(model, params) -> Callable:
    """``(h, skips, temb) -> eps``."""

    def f(h, skips, temb):
        return model.apply({"params": params}, h, skips, temb, method=model.decode)

    return f


def h_of_x(model, params, t) -> Callable:
    """Park et al.'s map for one image: ``x [H,W,C] -> h [h,w,Cmid]`` at fixed timestep ``t`` (scalar).

    Only the encoder path (down blocks + mid block) runs, as in the official ``get_h_uncond``.
    """
    enc = encode_fn(model, params)

    def f(x):
        h, _, _ = enc(x[None], jax.numpy.full((1,), t))
        return h[0]

    return f


def eps_of_h(model, params, skips, temb) -> Callable:
    """Haas et al.'s map for one image: ``h [h,w,Cmid] -> eps [H,W,C]`` with the skips and temb fixed
    (from ``encode`` at the same x_t, t; batch size 1)."""
    dec = decode_fn(model, params)

    def f(h):
        return dec(h[None], skips, temb)[0]

    return f
