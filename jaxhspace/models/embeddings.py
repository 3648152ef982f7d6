"""Timestep embeddings, numerically matching diffusers' ``get_timestep_embedding`` / ``Timesteps`` /
``TimestepEmbedding`` (module and attribute names mirror the PyTorch state-dict keys)."""
from __future__ import annotations

import math
from typing import Any

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxhspace.models.blocks import get_activation


def get_timestep_embedding(
    timesteps: jnp.ndarray,
    embedding_dim: int,
    flip_sin_to_cos: bool = False,
    downscale_freq_shift: float = 1.0,
    scale: float = 1.0,
    max_period: int = 10000,
) -> jnp.ndarray:
    """Sinusoidal embedding of (possibly fractional) timesteps, as in DDPM and diffusers.

    Frequencies are ``exp(-log(max_period) * i / (embedding_dim // 2 - downscale_freq_shift))``; the
    output is ``[sin, cos]`` (``[cos, sin]`` with ``flip_sin_to_cos``), zero-padded for odd dims.
    Computed in float32 in the same order of operations as diffusers.

    Args:
      timesteps: ``[B]`` int or float.
      embedding_dim: output width ``D``.

    Returns:
      ``[B, D]`` float32.
    """
    if timesteps.ndim != 1:
        raise ValueError(f"timesteps must be 1-D [B], got shape {timesteps.shape}")
    half_dim = embedding_dim // 2
    exponent = -math.log(max_period) * jnp.arange(half_dim, dtype=jnp.float32)
    exponent = exponent / (half_dim - downscale_freq_shift)
    freqs = jnp.exp(exponent)
    emb = timesteps.astype(jnp.float32)[:, None] * freqs[None, :]
    emb = scale * emb
    emb = jnp.concatenate([jnp.sin(emb), jnp.cos(emb)], axis=-1)
    if flip_sin_to_cos:
        emb = jnp.concatenate([emb[:, half_dim:], emb[:, :half_dim]], axis=-1)
    if embedding_dim % 2 == 1:
        emb = jnp.pad(emb, ((0, 0), (0, 1)))
    return emb


class Timesteps(nn.Module):
    """Parameter-free sinusoidal projection (diffusers ``time_proj``): ``[B] -> [B, num_channels]`` float32."""

    num_channels: int
    flip_sin_to_cos: bool
    downscale_freq_shift: float
    scale: float = 1.0

    def __call__(self, timesteps: jnp.ndarray) -> jnp.ndarray:
        return get_timestep_embedding(
            timesteps, self.num_channels, self.flip_sin_to_cos, self.downscale_freq_shift, self.scale
        )


class TimestepEmbedding(nn.Module):
    """MLP on the sinusoidal embedding (diffusers ``time_embedding``): ``linear_1 -> act -> linear_2``.

    ``[B, D_in] -> [B, time_embed_dim]``.
    """

    time_embed_dim: int
    act_fn: str = "silu"
    dtype: Any = jnp.float32

    def setup(self):
        self.linear_1 = nn.Dense(self.time_embed_dim, dtype=self.dtype, param_dtype=jnp.float32)
        self.linear_2 = nn.Dense(self.time_embed_dim, dtype=self.dtype, param_dtype=jnp.float32)

    def __call__(self, sample: jnp.ndarray) -> jnp.ndarray:
        return self.linear_2(get_activation(self.act_fn)(self.linear_1(sample)))


class GaussianFourierProjection(nn.Module):
    """Random Fourier features of log σ (diffusers ``GaussianFourierProjection`` as ``UNet2DModel`` builds it
    for ``time_embedding_type="fourier"``: ``log=True``, ``flip_sin_to_cos=False``, ``scale=16``).

    ``[B] σ > 0 -> [B, 2 * embedding_size]`` float32: ``[sin(2π W log σ), cos(2π W log σ)]``. ``weight`` is
    a fixed (untrained) buffer in the checkpoint (state-dict key ``time_proj.weight``).
    """

    embedding_size: int = 256
    scale: float = 1.0

    def setup(self):
        self.weight = self.param("weight", lambda k, s: jax.random.normal(k, s, jnp.float32) * self.scale,
                                 (self.embedding_size,))

    def __call__(self, sigmas: jnp.ndarray) -> jnp.ndarray:
        x = jnp.log(sigmas.astype(jnp.float32))
        x_proj = x[:, None] * self.weight[None, :] * 2 * math.pi  # same operation order as diffusers (float32)
        return jnp.concatenate([jnp.sin(x_proj), jnp.cos(x_proj)], axis=-1)
