"""The UNet as pure functions of arrays, closed over (model, params): what samplers and the Jacobian
engine consume. Nothing here knows about diffusion schedules or editing.

All images are NHWC; ``t`` is ``[B]`` (int or float).

ε of learned-variance models (guided-diffusion ``learn_sigma``: output ``[ε, v]``, 2C channels) is the first
``model.eps_channels`` channels (:func:`eps_part`); DDIM, inversion, Asyrp, pullback, Haas, PCA and HOSVD use only ε
and ignore the variance half, as the official Asyrp code does
(kwonminki/Asyrp_official@a6c82dc:utils/diffusion_utils.py:47-50).
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


def decode_fn(model, params, **model_kwargs) -> Callable:
    """``(h, skips, temb) -> eps`` (ε channels only, see :func:`eps_part`).

    ``model_kwargs`` go to every decode call (e.g. ``encoder_hidden_states`` of a raw text-conditional UNet, whose
    up path attends to the text too; guided-diffusion's labels ``y`` are already inside ``temb``)."""

    def f(h, skips, temb):
        return eps_part(model, model.apply({"params": params}, h, skips, temb, method=model.decode, **model_kwargs))

    return f


# keyword arguments of ``encode`` that the decoder needs as well (the conditional UNet's cross-attention context)
DECODE_KWARGS = ("encoder_hidden_states",)


def eps_pair(model, params, x, t, delta_h, *, scale=None, edit=None, return_delta_h: bool = False, **model_kwargs):
    """ε and the edited ε̃ from ONE encoder pass: ``h, skips, temb = encode(x, t)``, ε = decode(h, skips, temb),
    ε̃ = decode(h + s·Δh, skips, temb) with the *unedited* skips and temb (Asyrp, Kwon et al. 2023, eq. 4; the
    official UNet forward kwonminki/Asyrp_official@a6c82dc:models/ddpm/diffusion.py:544-559). The one place this is
    written: the Asyrp edit (:func:`jaxhspace.editing.asyrp_edit.eps_pair_fn`), the editor training step and the
    Δh collection all call it.

    Args:
      model, params: any UNet family with ``encode``/``decode`` (UNet2DModel, the guided-diffusion UNet,
        :class:`~jaxhspace.models.conditioning.Conditioned`).
      x: ``[B, H, W, C]`` x_t; t: ``[B]`` timesteps.
      delta_h: Δh as an array broadcastable to h (``[h, w, C_mid]`` or ``[B, h, w, C_mid]``), or a callable
        ``(h [B,h,w,C_mid], temb [B,D]) -> Δh [B,h,w,C_mid]`` (e.g. an editor f(h, temb)).
      scale: the coefficient s on Δh (scalar or array broadcastable to h, cast to h's dtype); None: h + Δh exactly.
      edit: optional ``[B]`` (or scalar) bool: where False, h is left unchanged (ε̃ = ε); when no example edits,
        the second decoder pass and a callable Δh are skipped (``lax.cond``).
      return_delta_h: also return the raw (unscaled) Δh ``[B, h, w, C_mid]``, computed outside the cond.
      **model_kwargs: go to ``encode`` (e.g. class labels ``y``); those in :data:`DECODE_KWARGS`
        (``encoder_hidden_states``) to ``decode`` as well.

    Returns:
      ``(eps, eps_edit)``, each ``[B, H, W, C]`` (ε channels only), and Δh if ``return_delta_h``.
    """
    import jax.numpy as jnp

    from jaxhspace.models.bottleneck import add_delta_h

    h, skips, temb = encode_fn(model, params, **model_kwargs)(x, t)
    dec = decode_fn(model, params, **{k: v for k, v in model_kwargs.items() if k in DECODE_KWARGS})
    eps = dec(h, skips, temb)

    def delta_of():
        if callable(delta_h):
            return delta_h(h, temb)
        return jnp.broadcast_to(jnp.asarray(delta_h).astype(h.dtype), h.shape)

    edit_b = None if edit is None else jnp.broadcast_to(jnp.asarray(edit, jnp.bool_).reshape(-1), (h.shape[0],))

    def edited(dh):
        step = dh if scale is None else jnp.asarray(scale, h.dtype) * dh
        if edit_b is not None:
            step = jnp.where(edit_b[:, None, None, None], step, jnp.zeros_like(step))
        return dec(add_delta_h(h, step), skips, temb)

    dh = delta_of() if (return_delta_h or edit_b is None) else None
    if edit_b is None:
        eps_edit = edited(dh)
    else:
        eps_edit = jax.lax.cond(jnp.any(edit_b), lambda _: edited(delta_of() if dh is None else dh), lambda _: eps,
                                None)
    return (eps, eps_edit, dh) if return_delta_h else (eps, eps_edit)


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
