"""UNet building blocks mirroring diffusers (``resnet.py``, ``attention_processor.py``,
``downsampling.py``, ``upsampling.py``, ``unet_2d_blocks.py``) in Flax linen, NHWC throughout.

Attribute names equal the PyTorch state-dict names (``norm1``, ``conv1``, ``time_emb_proj``, ``to_q``,
``to_out`` (list, so ``to_out_0`` <-> ``to_out.0``), ``resnets``, ``attentions``, ``downsamplers`` ...),
so checkpoints convert by renaming (see ``jaxhspace.checkpoints.common``).

``dtype`` is the compute dtype (e.g. ``jnp.bfloat16``); parameters are always float32, GroupNorm
statistics and the attention softmax are computed in float32.
"""
from __future__ import annotations

from typing import Any, Callable, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jnp.ndarray

_ACTIVATIONS: dict[str, Callable[[Array], Array]] = {
    "silu": nn.silu,
    "swish": nn.silu,
    "mish": lambda x: x * jnp.tanh(jax.nn.softplus(x)),
    "gelu": lambda x: nn.gelu(x, approximate=False),  # torch.nn.GELU() default is the exact erf form
    "relu": nn.relu,
}
SUPPORTED_ACTIVATIONS = tuple(_ACTIVATIONS)


def get_activation(name: str) -> Callable[[Array], Array]:
    """Activation by diffusers name (``silu``/``swish``, ``mish``, ``gelu``, ``relu``)."""
    if name not in _ACTIVATIONS:
        raise ValueError(f"act_fn={name!r} is not supported; supported: {SUPPORTED_ACTIVATIONS}")
    return _ACTIVATIONS[name]


def group_norm(groups: int, eps: float, dtype: Any) -> nn.GroupNorm:
    """GroupNorm with torch numerics (two-pass variance), float32 params."""
    return nn.GroupNorm(num_groups=groups, epsilon=eps, use_fast_variance=False, dtype=dtype, param_dtype=jnp.float32)


def conv(features: int, kernel: int, dtype: Any, stride: int = 1, padding: Any = None) -> nn.Conv:
    """Conv2d like ``torch.nn.Conv2d(k, stride, padding=k // 2)`` unless ``padding`` is given (NHWC)."""
    if padding is None:
        padding = ((kernel // 2, kernel // 2),) * 2
    return nn.Conv(features, (kernel, kernel), strides=(stride, stride), padding=padding,
                   dtype=dtype, param_dtype=jnp.float32)


def dense(features: int, dtype: Any) -> nn.Dense:
    return nn.Dense(features, dtype=dtype, param_dtype=jnp.float32)


class ResnetBlock2D(nn.Module):
    """diffusers ``ResnetBlock2D`` (pre-norm, no up/down): ``[B,H,W,in] x [B,T] -> [B,H,W,out]``.

    ``time_embedding_norm``: ``"default"`` adds ``time_emb_proj(act(temb))`` before ``norm2``;
    ``"scale_shift"`` applies ``norm2(h) * (1 + scale) + shift``. Output is
    ``(shortcut(x) + h) / output_scale_factor``.
    """

    in_channels: int
    out_channels: int
    groups: int = 32
    eps: float = 1e-6
    act_fn: str = "silu"
    time_embedding_norm: str = "default"
    output_scale_factor: float = 1.0
    dtype: Any = jnp.float32

    def setup(self):
        if self.time_embedding_norm not in ("default", "scale_shift"):
            raise ValueError(f"time_embedding_norm={self.time_embedding_norm!r}; supported: 'default', 'scale_shift'")
        proj = self.out_channels * (2 if self.time_embedding_norm == "scale_shift" else 1)
        self.norm1 = group_norm(self.groups, self.eps, self.dtype)
        self.conv1 = conv(self.out_channels, 3, self.dtype)
        self.time_emb_proj = dense(proj, self.dtype)
        self.norm2 = group_norm(self.groups, self.eps, self.dtype)
        self.conv2 = conv(self.out_channels, 3, self.dtype)
        if self.in_channels != self.out_channels:
            self.conv_shortcut = conv(self.out_channels, 1, self.dtype)

    def __call__(self, x: Array, temb: Optional[Array]) -> Array:
        """``temb=None``: no time embedding (diffusers ``temb_channels=None``, VAE blocks; ``time_emb_proj`` is
        never called, so it has no params)."""
        act = get_activation(self.act_fn)
        h = self.conv1(act(self.norm1(x)))
        t = None if temb is None else self.time_emb_proj(act(temb))[:, None, None, :]
        if self.time_embedding_norm == "default":
            h = self.norm2(h if t is None else h + t)
        elif t is None:
            raise ValueError(f"temb=None needs time_embedding_norm='default', got {self.time_embedding_norm!r}")
        else:
            scale, shift = jnp.split(t, 2, axis=-1)
            h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(act(h))
        if self.in_channels != self.out_channels:
            x = self.conv_shortcut(x)
        return (x + h) / self.output_scale_factor


class Attention(nn.Module):
    """Spatial self-attention of UNet2DModel (diffusers ``Attention`` built with
    ``_from_deprecated_attn_block=True``): ``[B,H,W,C] -> [B,H,W,C]``.

    ``attention_head_dim=None`` means one head over all channels; otherwise
    ``heads = channels // attention_head_dim`` (as diffusers computes it) and the inner width is
    ``heads * attention_head_dim``. Output ``(to_out(attn(group_norm(x))) + x) / rescale_output_factor``.
    ``norm_groups=None`` means no ``group_norm`` (diffusers' mid block with ``scale_shift``).
    """

    channels: int
    attention_head_dim: Optional[int] = None
    norm_groups: Optional[int] = 32
    eps: float = 1e-6
    rescale_output_factor: float = 1.0
    dtype: Any = jnp.float32

    @property
    def head_dim(self) -> int:
        return self.attention_head_dim if self.attention_head_dim is not None else self.channels

    @property
    def heads(self) -> int:
        return self.channels // self.head_dim

    def setup(self):
        if self.heads < 1:
            raise ValueError(f"attention_head_dim={self.attention_head_dim} exceeds the {self.channels} channels")
        inner = self.heads * self.head_dim
        if self.norm_groups is not None:
            self.group_norm = group_norm(self.norm_groups, self.eps, self.dtype)
        self.to_q = dense(inner, self.dtype)
        self.to_k = dense(inner, self.dtype)
        self.to_v = dense(inner, self.dtype)
        self.to_out = [dense(self.channels, self.dtype)]

    def __call__(self, x: Array) -> Array:
        b, hgt, wid, c = x.shape
        h = self.group_norm(x) if self.norm_groups is not None else x
        h = h.reshape(b, hgt * wid, c)
        split = lambda y: y.reshape(b, hgt * wid, self.heads, self.head_dim)  # noqa: E731
        q, k, v = split(self.to_q(h)), split(self.to_k(h)), split(self.to_v(h))
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) * (self.head_dim ** -0.5)
        probs = jax.nn.softmax(scores.astype(jnp.float32), axis=-1).astype(v.dtype)  # upcast_softmax=True
        out = jnp.einsum("bhqk,bkhd->bqhd", probs, v).reshape(b, hgt * wid, self.heads * self.head_dim)
        out = self.to_out[0](out).reshape(b, hgt, wid, c)
        return (out + x) / self.rescale_output_factor


class Downsample2D(nn.Module):
    """Stride-2 3x3 conv (diffusers ``Downsample2D(use_conv=True)``): ``[B,H,W,C] -> [B,H/2,W/2,C]``.

    ``padding=0`` pads asymmetrically (bottom/right by one) before a VALID conv, as diffusers does;
    otherwise symmetric ``padding``.
    """

    channels: int
    padding: int = 1
    dtype: Any = jnp.float32

    def setup(self):
        pad = ((0, 1), (0, 1)) if self.padding == 0 else ((self.padding, self.padding),) * 2
        self.conv = conv(self.channels, 3, self.dtype, stride=2, padding=pad)

    def __call__(self, x: Array) -> Array:
        return self.conv(x)


class Upsample2D(nn.Module):
    """Nearest-neighbour x2 then 3x3 conv (diffusers ``Upsample2D(use_conv=True)``): ``[B,H,W,C] -> [B,2H,2W,C]``."""

    channels: int
    dtype: Any = jnp.float32

    def setup(self):
        self.conv = conv(self.channels, 3, self.dtype)

    def __call__(self, x: Array) -> Array:
        x = jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)
        return self.conv(x)


class DownBlock2D(nn.Module):
    """``num_layers`` resnets (+ optional attention after each) then an optional Downsample2D.

    ``[B,H,W,in] x [B,T] -> (h [B,H',W',out], skips)`` where ``skips`` holds each layer's output and,
    if downsampling, the downsampled tensor (diffusers ``output_states``). With
    ``add_attention=True`` this is diffusers' ``AttnDownBlock2D``.
    """

    in_channels: int
    out_channels: int
    num_layers: int
    add_downsample: bool
    downsample_padding: int = 1
    add_attention: bool = False
    attention_head_dim: Optional[int] = None
    groups: int = 32
    eps: float = 1e-6
    act_fn: str = "silu"
    time_embedding_norm: str = "default"
    dtype: Any = jnp.float32

    def setup(self):
        self.resnets = [
            ResnetBlock2D(self.in_channels if i == 0 else self.out_channels, self.out_channels, self.groups, self.eps,
                          self.act_fn, self.time_embedding_norm, dtype=self.dtype)
            for i in range(self.num_layers)
        ]
        if self.add_attention:
            self.attentions = [
                Attention(self.out_channels, self.attention_head_dim, self.groups, self.eps, dtype=self.dtype)
                for _ in range(self.num_layers)
            ]
        if self.add_downsample:
            self.downsamplers = [Downsample2D(self.out_channels, self.downsample_padding, dtype=self.dtype)]

    def __call__(self, x: Array, temb: Array) -> tuple[Array, tuple[Array, ...]]:
        skips: tuple[Array, ...] = ()
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.add_attention:
                x = self.attentions[i](x)
            skips += (x,)
        if self.add_downsample:
            x = self.downsamplers[0](x)
            skips += (x,)
        return x, skips


class AttnDownBlock2D(DownBlock2D):
    """diffusers ``AttnDownBlock2D``: a :class:`DownBlock2D` with attention after each resnet."""

    add_attention: bool = True


class UpBlock2D(nn.Module):
    """``num_layers`` resnets on ``concat([h, skip])`` (+ optional attention) then an optional Upsample2D.

    ``[B,H,W,prev] x skips x [B,T] -> [B,H',W',out]``; skips are consumed from the end of the tuple,
    as in diffusers. ``in_channels`` is the channel count of the last skip (diffusers' naming). With
    ``add_attention=True`` this is diffusers' ``AttnUpBlock2D``.
    """

    in_channels: int
    prev_output_channel: int
    out_channels: int
    num_layers: int
    add_upsample: bool
    add_attention: bool = False
    attention_head_dim: Optional[int] = None
    groups: int = 32
    eps: float = 1e-6
    act_fn: str = "silu"
    time_embedding_norm: str = "default"
    dtype: Any = jnp.float32

    def setup(self):
        resnets = []
        for i in range(self.num_layers):
            skip_ch = self.in_channels if i == self.num_layers - 1 else self.out_channels
            res_in = self.prev_output_channel if i == 0 else self.out_channels
            resnets.append(ResnetBlock2D(res_in + skip_ch, self.out_channels, self.groups, self.eps, self.act_fn,
                                         self.time_embedding_norm, dtype=self.dtype))
        self.resnets = resnets
        if self.add_attention:
            self.attentions = [
                Attention(self.out_channels, self.attention_head_dim, self.groups, self.eps, dtype=self.dtype)
                for _ in range(self.num_layers)
            ]
        if self.add_upsample:
            self.upsamplers = [Upsample2D(self.out_channels, dtype=self.dtype)]

    def __call__(self, x: Array, skips: tuple[Array, ...], temb: Array) -> Array:
        if len(skips) != self.num_layers:
            raise ValueError(f"up block expects {self.num_layers} skip tensors, got {len(skips)}")
        for i, resnet in enumerate(self.resnets):
            x = jnp.concatenate([x, skips[-1 - i]], axis=-1)
            x = resnet(x, temb)
            if self.add_attention:
                x = self.attentions[i](x)
        if self.add_upsample:
            x = self.upsamplers[0](x)
        return x


class AttnUpBlock2D(UpBlock2D):
    """diffusers ``AttnUpBlock2D``: an :class:`UpBlock2D` with attention after each resnet."""

    add_attention: bool = True


class UNetMidBlock2D(nn.Module):
    """diffusers ``UNetMidBlock2D``: resnet, then ``num_layers`` x (attention, resnet).

    ``[B,h,w,C] x [B,T] -> [B,h,w,C]``; its output is the h-space. ``attn_groups=None`` means no
    GroupNorm in the attention (diffusers' choice when ``resnet_time_scale_shift != "default"``).
    """

    channels: int
    num_layers: int = 1
    add_attention: bool = True
    attention_head_dim: Optional[int] = None
    attn_groups: Optional[int] = 32
    groups: int = 32
    eps: float = 1e-6
    act_fn: str = "silu"
    time_embedding_norm: str = "default"
    output_scale_factor: float = 1.0
    dtype: Any = jnp.float32

    def setup(self):
        self.resnets = [
            ResnetBlock2D(self.channels, self.channels, self.groups, self.eps, self.act_fn, self.time_embedding_norm,
                          self.output_scale_factor, dtype=self.dtype)
            for _ in range(self.num_layers + 1)
        ]
        if self.add_attention:
            self.attentions = [
                Attention(self.channels, self.attention_head_dim, self.attn_groups, self.eps,
                          self.output_scale_factor, dtype=self.dtype)
                for _ in range(self.num_layers)
            ]

    def __call__(self, x: Array, temb: Array) -> Array:
        x = self.resnets[0](x, temb)
        for i in range(self.num_layers):
            if self.add_attention:
                x = self.attentions[i](x)
            x = self.resnets[i + 1](x, temb)
        return x
