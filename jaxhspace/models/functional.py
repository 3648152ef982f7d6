"""The UNet as pure functions of arrays, closed over (model, params): what samplers and the Jacobian
engine consume. Nothing here knows about diffusion schedules or editing.

All images are NHWC; ``t`` is ``[B]`` (int or float).

ε of learned-variance models (guided-diffusion ``learn_sigma``: output ``[ε, v]``, 2C channels) is the first
``model.eps_channels`` channels (:func:`eps_part`); DDIM, inversion, Asyrp, pullback, Haas, PCA and HOSVD use only ε
and ignore the variance half, as the official Asyrp code does (utils/diffusion_utils.py:47-50).
"""
from __future__ import annotations

from typing import Callable

import jax


def eps_part(model, out):
    """ε from a UNet output: its first ``model.eps_channels`` channels when the model has that attribute (learned
    variance), else ``out`` unchanged. ``out [B,H,W,C_out] -> [B,H,W,C]``."""
    n = getattr(model, "eps_channels", None)
    return out if n is None or out.shape[-1] == n else out[..., :n]


def eps_fn(model, params, **model_kwargs) -> Callable:
    """``(x [B,H,W,C], t [B]) -> eps [B,H,W,C]`` (the variance half of learned-variance models is dropped).

    ``model_kwargs`` (e.g. ``y=labels`` of a class-conditional guided-diffusion model) go to every call."""

    def f(x, t):
        return eps_part(model, model.apply({"params": params}, x, t, **model_kwargs))

    return f


def eps_delta_fn(model, params, **model_kwargs) -> Callable:
    """``(x, t, delta_h [B,h,w,Cmid]) -> eps`` with h + delta_h decoded with the unedited skips (ε channels only)."""

    def f(x, t, delta_h):
        return eps_part(model, model.apply({"params": params}, x, t, delta_h=delta_h, **model_kwargs))

    return f


def conditional_model_fn(model, params) -> Callable:
    """``(x [B,H,W,C], t [B], context [B,L,D]) -> output`` of a text-conditional UNet
    (``encoder_hidden_states=context``); the ``model_fn`` of :func:`jaxhspace.diffusion.guidance.guided_eps_fn`."""

    def f(x, t, context):
        return model.apply({"params": params}, x, t, encoder_hidden_states=context)

    return f


def encode_fn(model, params, **model_kwargs) -> Callable:
    """``(x, t) -> (h [B,h,w,Cmid], skips, temb)``; h is the mid-block output.

    ``model_kwargs`` as in :func:`eps_fn`."""

    def f(x, t):
        return model.apply({"params": params}, x, t, method=model.encode, **model_kwargs)

    return f


def decode_fn(model, params) -> Callable:
    """``(h, skips, temb) -> eps`` (ε channels only, see :func:`eps_part`)."""

    def f(h, skips, temb):
        return eps_part(model, model.apply({"params": params}, h, skips, temb, method=model.decode))

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
