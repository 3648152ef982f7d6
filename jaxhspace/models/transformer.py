"""Spatial transformer of Stable Diffusion's UNet, mirroring diffusers ``Transformer2DModel`` (continuous input,
``norm_type="layer_norm"``), ``BasicTransformerBlock``, ``Attention`` (no bias on q/k/v) and ``FeedForward``
(GEGLU) in Flax linen, NHWC.

Attribute names equal the PyTorch state-dict names (``norm``, ``proj_in``, ``transformer_blocks``, ``norm1``,
``attn1``, ``to_q``, ``to_out`` (list: ``to_out_0`` <-> ``to_out.0``), ``ff.net.0.proj``, ``ff.net.2``,
``proj_out``), so checkpoints convert by renaming (``jaxhspace.checkpoints.unet_condition``).

Attention is a plain dot product with the softmax in float32, so ``jax.jvp`` / ``jax.linearize`` /
``jax.vjp`` differentiate through it. ``dtype`` is the compute dtype; params are float32.
"""
from __future__ import annotations

from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxhspace.models.blocks import conv, dense, group_norm

Array = jnp.ndarray


def _layer_norm(dtype: Any) -> nn.LayerNorm:
    """``torch.nn.LayerNorm(dim, eps=1e-5)`` numerics (two-pass variance), float32 params."""
    return nn.LayerNorm(epsilon=1e-5, use_fast_variance=False, dtype=dtype, param_dtype=jnp.float32)


def _attend(q: Array, k: Array, v: Array, upcast: bool) -> Array:
    scale = q.shape[-1] ** -0.5
    if upcast:
        q, k = q.astype(jnp.float32), k.astype(jnp.float32)
    scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) * scale
    probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(v.dtype)
    return jnp.einsum("bhqk,bkhd->bqhd", probs, v)


def dot_product_attention(q: Array, k: Array, v: Array, upcast: bool = False,
                          query_chunk: Optional[int] = None) -> Array:
    """softmax(q kᵀ / √d) v per head, the softmax in float32.

    Args:
      q: ``[B, N, heads, d]``; k, v: ``[B, M, heads, d]``.
      upcast: compute q kᵀ in float32 too (diffusers ``upcast_attention``; matters only for bf16 compute).
      query_chunk: if set and smaller than N, attend ``query_chunk`` queries at a time (``lax.map``, each chunk
        rematerialised in reverse mode), so the ``[B, heads, N, M]`` scores never exist at once. Same math (each
        query's softmax is over all keys); a memory option for 512 px JVP/VJP blocks, off by default.

    Returns:
      ``[B, N, heads, d]`` in v's dtype.
    """
    n = q.shape[1]
    if query_chunk is None or query_chunk >= n:
        return _attend(q, k, v, upcast)
    pad = -n % query_chunk
    q = jnp.pad(q, ((0, 0), (0, pad), (0, 0), (0, 0)))  # padded query rows are dropped below
    qs = jnp.moveaxis(q.reshape(q.shape[0], -1, query_chunk, *q.shape[2:]), 1, 0)  # [chunks, B, chunk, heads, d]
    out = jax.lax.map(jax.checkpoint(lambda qc: _attend(qc, k, v, upcast)), qs)
    return jnp.moveaxis(out, 0, 1).reshape(q.shape[0], -1, *out.shape[3:])[:, :n]


class CrossAttention(nn.Module):
    """diffusers ``Attention(query_dim, cross_attention_dim, heads, dim_head, bias=False)``:
    ``[B, N, query_dim] x [B, M, cross_attention_dim] -> [B, N, query_dim]`` (no residual, no norm).

    ``context=None`` is self-attention (keys/values from ``x``). ``query_chunk``: see :func:`dot_product_attention`.
    """

    query_dim: int
    heads: int
    dim_head: int
    upcast_attention: bool = False
    query_chunk: Optional[int] = None
    dtype: Any = jnp.float32

    def setup(self):
        inner = self.heads * self.dim_head
        self.to_q = nn.Dense(inner, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32)
        self.to_k = nn.Dense(inner, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32)
        self.to_v = nn.Dense(inner, use_bias=False, dtype=self.dtype, param_dtype=jnp.float32)
        self.to_out = [dense(self.query_dim, self.dtype)]

    def __call__(self, x: Array, context: Optional[Array] = None) -> Array:
        context = x if context is None else context
        b, n, _ = x.shape
        split = lambda y: y.reshape(b, y.shape[1], self.heads, self.dim_head)  # noqa: E731
        out = dot_product_attention(split(self.to_q(x)), split(self.to_k(context)), split(self.to_v(context)),
                                    upcast=self.upcast_attention, query_chunk=self.query_chunk)
        return self.to_out[0](out.reshape(b, n, self.heads * self.dim_head))


class GEGLU(nn.Module):
    """diffusers ``GEGLU``: ``proj`` to ``2 * dim_out``, then ``a * gelu(gate)`` (exact erf GELU)."""

    dim_out: int
    dtype: Any = jnp.float32

    def setup(self):
        self.proj = dense(2 * self.dim_out, self.dtype)

    def __call__(self, x: Array) -> Array:
        a, gate = jnp.split(self.proj(x), 2, axis=-1)
        return a * nn.gelu(gate, approximate=False)


class _Identity(nn.Module):
    """Parameter-free placeholder for diffusers' ``nn.Dropout`` at ``ff.net.1`` (inference: identity)."""

    def __call__(self, x: Array) -> Array:
        return x


class FeedForward(nn.Module):
    """diffusers ``FeedForward(dim, activation_fn="geglu", mult=4)``: ``net.0`` GEGLU, ``net.1`` dropout (identity),
    ``net.2`` Linear. ``[..., dim] -> [..., dim]``."""

    dim: int
    mult: int = 4
    dtype: Any = jnp.float32

    def setup(self):
        self.net = [GEGLU(self.dim * self.mult, dtype=self.dtype), _Identity(), dense(self.dim, self.dtype)]

    def __call__(self, x: Array) -> Array:
        for layer in self.net:
            x = layer(x)
        return x


class BasicTransformerBlock(nn.Module):
    """diffusers ``BasicTransformerBlock`` (``norm_type="layer_norm"``, ``attention_bias=False``, GEGLU):
    ``x + attn1(norm1(x))``, ``x + attn2(norm2(x), context)``, ``x + ff(norm3(x))`` on ``[B, N, dim]``.

    ``only_cross_attention=True`` makes ``attn1`` attend to ``context`` as well (both attentions are cross).
    """

    dim: int
    heads: int
    dim_head: int
    only_cross_attention: bool = False
    upcast_attention: bool = False
    query_chunk: Optional[int] = None
    dtype: Any = jnp.float32

    def setup(self):
        attn = lambda: CrossAttention(self.dim, self.heads, self.dim_head, self.upcast_attention,  # noqa: E731
                                      self.query_chunk, dtype=self.dtype)
        self.norm1 = _layer_norm(self.dtype)
        self.attn1 = attn()
        self.norm2 = _layer_norm(self.dtype)
        self.attn2 = attn()
        self.norm3 = _layer_norm(self.dtype)
        self.ff = FeedForward(self.dim, dtype=self.dtype)

    def __call__(self, x: Array, context: Array) -> Array:
        """x ``[B, N, dim]``, context ``[B, M, cross_attention_dim]`` -> ``[B, N, dim]``."""
        x = x + self.attn1(self.norm1(x), context if self.only_cross_attention else None)
        x = x + self.attn2(self.norm2(x), context)
        return x + self.ff(self.norm3(x))


class Transformer2DModel(nn.Module):
    """diffusers ``Transformer2DModel`` on continuous NHWC input: ``[B, H, W, C] x [B, M, D_c] -> [B, H, W, C]``.

    ``GroupNorm(norm_num_groups, eps=1e-6)``, ``proj_in`` (1x1 conv, or Linear when ``use_linear_projection``)
    to ``heads * dim_head``, ``num_layers`` :class:`BasicTransformerBlock`, ``proj_out`` back to ``C``, plus the
    input as residual. ``query_chunk``: see :func:`dot_product_attention`. (In NHWC a 1x1 conv and a Linear on
    flattened pixels compute the same map; they differ only in the stored weight layout, which the converter
    handles.)
    """

    heads: int
    dim_head: int
    in_channels: int
    num_layers: int = 1
    norm_num_groups: int = 32
    use_linear_projection: bool = False
    only_cross_attention: bool = False
    upcast_attention: bool = False
    query_chunk: Optional[int] = None
    dtype: Any = jnp.float32

    def setup(self):
        inner = self.heads * self.dim_head
        self.norm = group_norm(self.norm_num_groups, 1e-6, self.dtype)
        proj = (lambda n: dense(n, self.dtype)) if self.use_linear_projection else (lambda n: conv(n, 1, self.dtype))
        self.proj_in = proj(inner)
        self.transformer_blocks = [
            BasicTransformerBlock(inner, self.heads, self.dim_head, self.only_cross_attention, self.upcast_attention,
                                  self.query_chunk, dtype=self.dtype)
            for _ in range(self.num_layers)
        ]
        self.proj_out = proj(self.in_channels)

    def __call__(self, x: Array, context: Array) -> Array:
        b, hgt, wid, _ = x.shape
        h = self.proj_in(self.norm(x))
        h = h.reshape(b, hgt * wid, h.shape[-1])
        for block in self.transformer_blocks:
            h = block(h, context)
        h = self.proj_out(h.reshape(b, hgt, wid, h.shape[-1]))
        return h + x
