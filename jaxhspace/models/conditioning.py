"""A text-conditional UNet with its conditioning fixed, so every h-space method sees an unconditional model.

Park et al. compute the pullback of Stable Diffusion "with a fixed prompt embedding inside the Jacobian"
(``local_encoder_pullback_zt``, enkeejunior1/Diffusion-Pullback@859c012:src/utils/utils.py:722-816):
J = ∂h/∂z at (z_t, t, c) with c held constant. :class:`Conditioned` does exactly that for every method at once:
``pullback``, ``haas_jacobian``, ``collect_h``, the samplers and the Asyrp step only ever call ``model.apply(v, x, t)``,
``model.apply(v, x, t, method=model.encode)``, ``model.apply(v, h, skips, temb, method=model.decode)`` and
``model.apply(v, x, t, delta_h=dh)``; here each of them gets ``encoder_hidden_states=c`` added (broadcast
from batch 1 to the batch of ``x`` / ``h``). Classifier-free guidance is a sampler matter, not a model one:
see :mod:`jaxhspace.diffusion.guidance`.

For a model that does not predict ε (SD-2.x 768 px: ``v_prediction``) pass ``to_epsilon(out, x, t) -> ε``
(e.g. :func:`jaxhspace.diffusion.guidance.output_to_epsilon` closed over the schedule): the full call then
returns ε, so samplers, inversion, pullback edits and the Asyrp step see ε. ``decode`` has no x_t and returns
the raw output: for v-prediction ∂v/∂h = ∂ε/∂h / √ᾱ_t (ε = √ᾱ v + √(1−ᾱ) x_t with x_t fixed), so Haas
directions are the same and their σ are scaled by 1/√ᾱ_t.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax.numpy as jnp


@dataclasses.dataclass(frozen=True, eq=False)  # hashed by identity: a static argument of jit-compiled samplers
class Conditioned:
    """``model`` (e.g. ``UNet2DConditionModel``) with ``encoder_hidden_states`` fixed to ``context``.

    Attributes:
      model: the conditional Linen module (its ``encode``/``decode``/``__call__`` take ``encoder_hidden_states``).
      context: ``[1, L, D]`` or ``[B, L, D]`` text embeddings (e.g. ``encode_prompt(pipe, [""])``), or None for an
        unconditional model that only needs ``to_epsilon``.
      to_epsilon: optional ``(out, x, t) -> ε`` applied to the full call's output (see the module docstring).
    """

    model: Any
    context: Any
    to_epsilon: Optional[Callable] = None

    def __post_init__(self):
        if self.context is not None:
            c = jnp.asarray(self.context)
            if c.ndim != 3:
                raise ValueError(f"context must be [B, L, D] text embeddings, got shape {c.shape}")
            object.__setattr__(self, "context", c)

    def __getattr__(self, name):  # forwarded: config, dtype, hspace_shape, init, eps_channels, ...
        if name in ("model", "context", "to_epsilon"):
            raise AttributeError(name)
        return getattr(self.model, name)

    # Sentinels: ``method=conditioned.encode`` selects the wrapped module's method in :meth:`apply`.
    def encode(self, *args, **kwargs):  # pragma: no cover - never called directly
        raise TypeError("call conditioned.apply(variables, x, t, method=conditioned.encode)")

    def decode(self, *args, **kwargs):  # pragma: no cover - never called directly
        raise TypeError("call conditioned.apply(variables, h, skips, temb, method=conditioned.decode)")

    def _context_for(self, batch: int) -> dict:
        c = self.context
        if c is None:
            return {}
        if c.shape[0] not in (1, batch):
            raise ValueError(f"context batch {c.shape[0]} does not match the input batch {batch} (use 1 or {batch})")
        return {"encoder_hidden_states": jnp.broadcast_to(c, (batch,) + c.shape[1:])}

    def apply(self, variables, *args, method=None, **kwargs):
        """``model.apply`` with ``encoder_hidden_states`` added; ``method`` is ``None``, ``self.encode`` or
        ``self.decode`` (or the wrapped module's own methods)."""
        m = self.model
        if method is None or method == m.__call__:
            out = m.apply(variables, *args, **self._context_for(args[0].shape[0]), **kwargs)
            return out if self.to_epsilon is None else self.to_epsilon(out, args[0], args[1])
        if self.context is not None and (method == self.encode or method == m.encode):
            return m.apply(variables, *args, **self._context_for(args[0].shape[0]), method=m.encode, **kwargs)
        if self.context is not None and (method == self.decode or method == m.decode):
            return m.apply(variables, *args, **self._context_for(args[0].shape[0]), method=m.decode, **kwargs)
        if method == self.encode or method == self.decode:
            method = getattr(m, method.__name__)
        return m.apply(variables, *args, method=method, **kwargs)
