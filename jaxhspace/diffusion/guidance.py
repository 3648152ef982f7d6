"""Classifier-free guidance and prediction-type conversion: ``eps_fn`` closures for the DDIM samplers.

The samplers (:mod:`jaxhspace.diffusion.ddim`, :mod:`jaxhspace.diffusion.asyrp`) consume
``eps_fn(x [B,...], t [B]) -> eps``; text conditioning and guidance live in that closure, so sampling,
inversion and the asymmetric step run unchanged on Stable Diffusion latents.

Guidance (Ho & Salimans 2022, eq. 6; diffusers ``StableDiffusionPipeline.__call__``): the model runs once on
the batch ``[x, x]`` with contexts ``[uncond, cond]`` and returns ``out_u + s (out_c − out_u)``. diffusers
guides the *raw* model output and converts it in the scheduler; both conversions below are affine in the
output for fixed (x_t, t), so guiding before or after conversion gives the same ε.

Prediction types (diffusers ``DDIMScheduler.step``), with a = ᾱ_t:
  * ``epsilon``: ε = out;
  * ``v_prediction`` (Salimans & Ho 2022; SD-2.x 768 px): ε = √a·v + √(1−a)·x_t;
  * ``sample``: ε = (x_t − √a·x̂0) / √(1−a).
Methods that need ε of a v-prediction model (pullback edits, Asyrp) go through :func:`as_epsilon_fn`; the
h-space Jacobians (∂h/∂z) do not depend on the prediction type.
"""
from __future__ import annotations

from typing import Callable

import jax
import jax.numpy as jnp

from jaxhspace.diffusion.schedule import Schedule, alpha_bar

PREDICTION_TYPES = ("epsilon", "v_prediction", "sample")
ModelFn = Callable[[jax.Array, jax.Array, jax.Array], jax.Array]


def check_prediction_type(prediction_type: str) -> str:
    """Return ``prediction_type`` if supported, else raise naming the supported ones."""
    if prediction_type not in PREDICTION_TYPES:
        raise ValueError(f"prediction_type={prediction_type!r} is not supported; use one of {PREDICTION_TYPES}")
    return prediction_type


def output_to_epsilon(out: jax.Array, x_t: jax.Array, t: jax.Array, schedule: Schedule,
                      prediction_type: str) -> jax.Array:
    """Convert a model output ``out [B,...]`` at ``(x_t [B,...], t [B])`` to ε (see the module docstring)."""
    check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return out
    a = alpha_bar(schedule, t).astype(x_t.dtype).reshape((-1,) + (1,) * (x_t.ndim - 1))
    if prediction_type == "v_prediction":
        return jnp.sqrt(a) * out + jnp.sqrt(1.0 - a) * x_t
    return (x_t - jnp.sqrt(a) * out) / jnp.sqrt(1.0 - a)


def as_epsilon_fn(model_fn: Callable, schedule: Schedule, prediction_type: str) -> Callable:
    """``(x, t) -> ε`` from ``model_fn(x, t) -> output`` of the given prediction type (identity for ε)."""
    check_prediction_type(prediction_type)
    if prediction_type == "epsilon":
        return model_fn

    def f(x, t):
        return output_to_epsilon(model_fn(x, t), x, t, schedule, prediction_type)

    return f


def guided_eps_fn(model_fn: ModelFn, cond: jax.Array, uncond: jax.Array, guidance_scale: float,
                  schedule: Schedule, prediction_type: str = "epsilon") -> Callable:
    """Classifier-free-guided ``eps_fn(x [B,...], t [B]) -> ε [B,...]``.

    Args:
      model_fn: ``(x [N,...], t [N], context [N, L, D]) -> output [N,...]`` (the conditional UNet).
      cond: ``[1 or B, L, D]`` prompt embeddings; ``uncond``: the same for the negative / empty prompt.
      guidance_scale: s; ``1`` runs only the conditional branch (no doubled batch), ``0`` only the unconditional.
      schedule, prediction_type: to convert the guided output to ε.

    Build it once per (prompt, scale): the samplers jit ``eps_fn`` as a static argument (hash = identity).
    """
    check_prediction_type(prediction_type)
    cond, uncond = jnp.asarray(cond), jnp.asarray(uncond)
    if cond.ndim != 3 or uncond.shape[1:] != cond.shape[1:]:
        raise ValueError(f"cond and uncond must be [B, L, D] with equal L, D; got {cond.shape} and {uncond.shape}")
    s = float(guidance_scale)

    def ctx(c, b):
        if c.shape[0] not in (1, b):
            raise ValueError(f"context batch {c.shape[0]} does not match the latent batch {b}")
        return jnp.broadcast_to(c, (b,) + c.shape[1:])

    def f(x, t):
        b = x.shape[0]
        if s == 1.0:
            out = model_fn(x, t, ctx(cond, b))
        elif s == 0.0:
            out = model_fn(x, t, ctx(uncond, b))
        else:
            both = model_fn(jnp.concatenate([x, x]), jnp.concatenate([t, t]),
                            jnp.concatenate([ctx(uncond, b), ctx(cond, b)]))
            out_u, out_c = both[:b], both[b:]
            out = out_u + s * (out_c - out_u)
        return output_to_epsilon(out, x, t, schedule, prediction_type)

    return f

