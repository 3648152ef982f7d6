"""Precision and memory options: bfloat16 compute with float32 params, and rematerialisation (``jax.checkpoint``).

**bf16 compute.** ``with_compute_dtype(model, jnp.bfloat16)`` returns the same UNet with every conv / dense /
GroupNorm computing in bfloat16 while the params stay float32 (cast on use; the same params pytree works for
both). ``eps`` is returned in float32, so the DDIM / Asyrp state and the schedule arithmetic stay float32;
``encode`` returns h and the skips in bfloat16. For Jacobian products build the operator from the bf16 model
(``JacobianOperator(h_of_x(bf16_model, params, t), x_t)``; the products come back in float32).

Measured on the tiny parity fixture (tests/test_precision.py, random-init UNet 16×16, perturbed weights, CPU):
``max|ε_bf16 − ε_f32| / max|ε_f32|`` ≈ 1e-2 (asserted < ``BF16_EPS_RTOL`` = 5e-2); a 4-step DDIM sample drifts
by a similar relative amount (asserted < ``BF16_SAMPLE_RTOL``); Jacobian products ``J v`` of ∂h/∂x likewise
(< ``BF16_JVP_RTOL``). bfloat16 has an 8-bit mantissa (eps 7.8e-3): expect errors of that order per layer; use
float32 for parity checks and convergence-critical SVD residuals, bf16 for throughput (TPU MXU native).

**Remat.** :func:`remat_apply` wraps ``model.apply`` in ``jax.checkpoint``: the backward pass recomputes the UNet
forward instead of keeping its activations from the forward pass. Loss and gradients are identical (tested
≤ 1e-6). What it saves: activations of a UNet call are not held while *other* work runs between that call's
forward and its backward (e.g. the Asyrp loss: one encoder, two decoder passes and CLIP; a DDPM loss over several
micro-batches). A single UNet call still materialises all its activations during its own backward; per-block
remat needs ``nn.remat`` on the UNet blocks (if ``UNet2DModel`` grows a boolean ``remat`` field, :func:`remat_apply`
uses it). **Donation**: the train steps (``training.ddpm.make_train_step``, the Asyrp editor step) already donate
the state buffers (``donate_argnums=(0,)``); the wrappers in :mod:`jaxhspace.parallel` keep that.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Callable, Optional

import jax
import jax.numpy as jnp

BF16_EPS_RTOL = 5e-2
BF16_SAMPLE_RTOL = 5e-2
BF16_JVP_RTOL = 5e-2

__all__ = ["with_compute_dtype", "remat_apply", "RematModel", "relative_max_error",
           "BF16_EPS_RTOL", "BF16_SAMPLE_RTOL", "BF16_JVP_RTOL", "MATMUL_PRECISIONS", "set_matmul_precision",
           "current_matmul_precision"]

# jax_default_matmul_precision values. float32 matmuls / convolutions on accelerators: "highest" = full float32
# (slowest; what the CPU parity, inversion and Jacobian accuracy were measured with); "high" = 3-pass bf16 on TPU /
# TF32 on GPU (~1e-4 relative); "default" = 1-pass bf16 on TPU, TF32 on GPU (~1e-3 to 1e-2 relative, fastest).
# CPU always computes in float32.
MATMUL_PRECISIONS = ("highest", "high", "default", "float32", "tensorfloat32", "bfloat16", "bfloat16_3x",
                     "tensorfloat32_3x", "fastest")


def set_matmul_precision(config_or_name: Any = None) -> str:
    """Set ``jax_default_matmul_precision`` process-wide from ``config.precision`` (a ConfigDict / dict with an
    optional ``precision`` field, or the name itself; default ``"highest"``). Called by ``jaxhspace.main`` before
    the job runs; every job's metrics.json records it (``tasks.common.write_metrics``).

    Returns:
      the name that was set. Raises JaxhspaceError (a ValueError) on an unknown name (listing
      :data:`MATMUL_PRECISIONS`).
    """
    if config_or_name is None or isinstance(config_or_name, str):
        name = config_or_name or "highest"
    else:
        name = config_or_name.get("precision", "highest") or "highest"
    if name not in MATMUL_PRECISIONS:
        from jaxhspace.errors import JaxhspaceError

        raise JaxhspaceError(f"config.precision={name!r} is not a matmul precision; choose one of {MATMUL_PRECISIONS} "
                         "('highest' = float32 on every accelerator)")
    jax.config.update("jax_default_matmul_precision", name)
    return name


def current_matmul_precision() -> str:
    """The matmul precision in effect (``jax_default_matmul_precision``; ``"default"`` if unset)."""
    # jax's Config defines its options as dynamic attributes, which its type hints do not declare
    return jax.config.jax_default_matmul_precision or "default"  # type: ignore[attr-defined]


def with_compute_dtype(model, dtype=jnp.bfloat16):
    """The same model (same params pytree, float32) computing in ``dtype``: ``model.clone(dtype=dtype)``.

    Works for any flax module with a ``dtype`` field (UNet2DModel, ...). Returns ``model`` itself when the dtype
    already matches. Outputs of ``__call__`` / ``decode`` are float32; ``encode`` returns ``dtype`` tensors.
    """
    base = getattr(model, "model", model)  # unwrap a RematModel
    if not hasattr(base, "dtype"):
        raise ValueError(f"{type(base).__name__} has no `dtype` field to set the compute dtype")
    dtype = jnp.dtype(dtype)
    new = base if jnp.dtype(base.dtype) == dtype else base.clone(dtype=dtype)
    return RematModel(new, model.policy) if isinstance(model, RematModel) else new


def relative_max_error(a, ref) -> float:
    """``max|a − ref| / max|ref|`` in float64 (the tolerance measure used for bf16 vs float32)."""
    a = jnp.asarray(a, jnp.float32)
    ref = jnp.asarray(ref, jnp.float32)
    return float(jnp.max(jnp.abs(a - ref)) / jnp.maximum(jnp.max(jnp.abs(ref)), 1e-30))


@dataclasses.dataclass(frozen=True)
class RematModel:
    """``model`` with ``apply`` wrapped in ``jax.checkpoint`` (duck-types a flax module for ``.apply`` users).

    Attributes:
      model: the wrapped module (``config``, ``encode``, ``decode``, ``hspace_shape`` ... are forwarded).
      policy: a ``jax.checkpoint_policies`` entry (None = save nothing, recompute everything).
    """

    model: Any
    policy: Optional[Callable] = None

    def __getattr__(self, name):  # forwarded: config, dtype, encode, decode, init, hspace_shape, ...
        if name in ("model", "policy"):
            raise AttributeError(name)
        return getattr(self.model, name)

    def __hash__(self):
        return hash((RematModel, self.model, self.policy))

    def apply(self, variables, *args, method=None, **kwargs):
        """``model.apply(variables, *args, method=method, **kwargs)`` under ``jax.checkpoint``.

        Array keyword arguments (e.g. ``delta_h``) are passed through the checkpoint as traced inputs.
        """
        names = tuple(sorted(kwargs))
        n = len(args)

        def f(v, *flat):
            return self.model.apply(v, *flat[:n], method=method, **dict(zip(names, flat[n:])))

        return jax.checkpoint(f, policy=self.policy)(variables, *args, *(kwargs[k] for k in names))


def remat_apply(model, policy: Optional[Callable] = None):
    """Rematerialised model for training through the UNet (same params, same numbers).

    If the module has a boolean ``remat`` field (per-block ``nn.remat``), returns ``model.clone(remat=True)``;
    otherwise a :class:`RematModel` whose ``apply`` is one ``jax.checkpoint`` region. Pass the result wherever a
    model is used for ``.apply`` (e.g. ``training.ddpm.make_train_step(remat_apply(model), ...)``).
    """
    fields = getattr(type(model), "__dataclass_fields__", {})
    if "remat" in fields and policy is None:
        return model.clone(remat=True)
    return RematModel(model, policy)
