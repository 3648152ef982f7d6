"""NCSN++ blocks as diffusers stores them (``google/ncsnpp-*``): FIR resampling and the "skip" UNet blocks
(``SkipDownBlock2D``, ``AttnSkipDownBlock2D``, ``SkipUpBlock2D``, ``AttnSkipUpBlock2D``), NHWC.

Mirrors diffusers 0.42 ``models/upsampling.py`` (``upfirdn2d_native``, ``upsample_2d``),
``models/downsampling.py`` (``downsample_2d``), ``models/resnet.py`` (``ResnetBlock2D`` with ``up``/``down``,
``kernel="fir"``, ``groups_out``, ``use_in_shortcut``) and ``models/unets/unet_2d_blocks.py`` (the four skip
blocks). Attribute names equal the state-dict names (``resnets``, ``attentions``, ``resnet_down``,
``resnet_up``, ``skip_conv``, ``skip_norm``); the FIR resamplers (``downsamplers.0``, ``upsampler``) hold no
weights, so they are plain functions here.

Skip blocks carry a second, image-space signal ``skip_sample`` (``in_channels = 3`` wide, hard-coded in diffusers):
the down path FIR-downsamples the input image and adds ``skip_conv(skip_sample)`` to the features; the up path
accumulates ``skip_conv(SiLU(skip_norm(h)))`` image-space residuals, FIR-upsampling them, and the UNet adds the sum
to its output. Resnets and attentions inside skip blocks scale their output by ``1/√2``; GroupNorm sizes are
``min(channels // 4, 32)`` regardless of the UNet's ``norm_num_groups``.
"""
from __future__ import annotations

import math
from typing import Any, Optional

import flax.linen as nn
import jax.numpy as jnp
import numpy as np
from jax import lax

from jaxhspace.models.blocks import Attention, conv, dense, get_activation, group_norm

Array = jnp.ndarray

FIR_KERNEL = (1, 3, 3, 1)  # diffusers' default fir_kernel (FirDownsample2D / FirUpsample2D / ResnetBlock2D)
SKIP_CHANNELS = 3  # diffusers hard-codes the image-space skip width: Conv2d(3, C, 1) down, Conv2d(C, 3, 3) up


def _fir_kernel(kernel=FIR_KERNEL) -> np.ndarray:
    k = np.asarray(kernel, np.float32)
    if k.ndim == 1:
        k = np.outer(k, k)
    return k / np.sum(k)


def upfirdn2d(x: Array, kernel: np.ndarray, up: int = 1, down: int = 1, pad: tuple[int, int] = (0, 0)) -> Array:
    """diffusers ``upfirdn2d_native`` on NHWC: insert ``up - 1`` zeros after every pixel, zero-pad by
    ``pad`` (low, high) on both spatial axes, convolve each channel with ``kernel`` (a true convolution:
    the kernel is flipped), keep every ``down``-th pixel.

    Args:
      x: ``[B, H, W, C]``; kernel: ``[kh, kw]`` NumPy; up, down: ints >= 1; pad: non-negative (low, high).

    Returns:
      ``[B, (H*up + p0 + p1 - kh)//down + 1, (W*up + p0 + p1 - kw)//down + 1, C]``.
    """
    c = x.shape[-1]
    k = np.ascontiguousarray(np.flip(np.asarray(kernel, np.float32), (0, 1)))
    w = jnp.broadcast_to(jnp.asarray(k, x.dtype)[:, :, None, None], (*k.shape, 1, c))
    # lhs_dilation inserts up-1 zeros *between* pixels; diffusers also appends them after the last one.
    padding = ((pad[0], pad[1] + up - 1),) * 2
    return lax.conv_general_dilated(x, w, window_strides=(down, down), padding=padding, lhs_dilation=(up, up),
                                    dimension_numbers=("NHWC", "HWIO", "NHWC"), feature_group_count=c)


def fir_downsample_2d(x: Array, kernel=FIR_KERNEL, factor: int = 2) -> Array:
    """diffusers ``downsample_2d`` / ``FirDownsample2D(use_conv=False)``: ``[B,H,W,C] -> [B,H/2,W/2,C]``."""
    k = _fir_kernel(kernel)
    p = k.shape[0] - factor
    return upfirdn2d(x, k, down=factor, pad=((p + 1) // 2, p // 2))


def fir_upsample_2d(x: Array, kernel=FIR_KERNEL, factor: int = 2) -> Array:
    """diffusers ``upsample_2d`` / ``FirUpsample2D(use_conv=False)``: ``[B,H,W,C] -> [B,2H,2W,C]``."""
    k = _fir_kernel(kernel) * (factor ** 2)
    p = k.shape[0] - factor
    return upfirdn2d(x, k, up=factor, pad=((p + 1) // 2 + factor - 1, p // 2))


def skip_groups(channels: int) -> int:
    """GroupNorm size inside diffusers' skip blocks: ``min(channels // 4, 32)``."""
    return min(channels // 4, 32)


class FirResnetBlock2D(nn.Module):
    """diffusers ``ResnetBlock2D`` with separate ``groups_out``, an optional forced 1x1 ``conv_shortcut``
    (``use_in_shortcut``) and optional FIR ``up``/``down`` resampling of both branches after ``norm1``/act
    (``kernel="fir"``): ``[B,H,W,in] x [B,T] -> [B,H',W',out]``, output ``(shortcut(x) + h) / output_scale_factor``.
    """

    in_channels: int
    out_channels: int
    groups: int
    groups_out: Optional[int] = None
    eps: float = 1e-6
    act_fn: str = "silu"
    time_embedding_norm: str = "default"
    output_scale_factor: float = 1.0
    use_in_shortcut: Optional[bool] = None
    up: bool = False
    down: bool = False
    dtype: Any = jnp.float32

    @property
    def has_shortcut(self) -> bool:
        return self.in_channels != self.out_channels if self.use_in_shortcut is None else self.use_in_shortcut

    def setup(self):
        if self.time_embedding_norm not in ("default", "scale_shift"):
            raise ValueError(f"time_embedding_norm={self.time_embedding_norm!r}; supported: 'default', 'scale_shift'")
        proj = self.out_channels * (2 if self.time_embedding_norm == "scale_shift" else 1)
        self.norm1 = group_norm(self.groups, self.eps, self.dtype)
        self.conv1 = conv(self.out_channels, 3, self.dtype)
        self.time_emb_proj = dense(proj, self.dtype)
        self.norm2 = group_norm(self.groups_out or self.groups, self.eps, self.dtype)
        self.conv2 = conv(self.out_channels, 3, self.dtype)
        if self.has_shortcut:
            self.conv_shortcut = conv(self.out_channels, 1, self.dtype)

    def __call__(self, x: Array, temb: Array) -> Array:
        act = get_activation(self.act_fn)
        h = act(self.norm1(x))
        if self.up:
            x, h = fir_upsample_2d(x), fir_upsample_2d(h)
        elif self.down:
            x, h = fir_downsample_2d(x), fir_downsample_2d(h)
        h = self.conv1(h)
        t = self.time_emb_proj(act(temb))[:, None, None, :]
        if self.time_embedding_norm == "default":
            h = self.norm2(h + t)
        else:
            scale, shift = jnp.split(t, 2, axis=-1)
            h = self.norm2(h) * (1 + scale) + shift
        h = self.conv2(act(h))
        if self.has_shortcut:
            x = self.conv_shortcut(x)
        return (x + h) / self.output_scale_factor


class SkipDownBlock2D(nn.Module):
    """diffusers ``SkipDownBlock2D`` (``AttnSkipDownBlock2D`` with ``add_attention=True``: attention after each
    resnet, 32-group norm, one head unless ``attention_head_dim``).

    ``(x [B,H,W,in], temb, skip_sample [B,H,W,3]) -> (x [B,H',W',out], skips, skip_sample')``: with
    ``add_downsample`` the block ends with a FIR-down resnet (``resnet_down``) plus ``skip_conv`` of the
    FIR-downsampled ``skip_sample``; ``skips`` are the per-layer outputs and the downsampled output.
    """

    in_channels: int
    out_channels: int
    num_layers: int
    add_downsample: bool
    add_attention: bool = False
    attention_head_dim: Optional[int] = None
    eps: float = 1e-6
    act_fn: str = "silu"
    time_embedding_norm: str = "default"
    output_scale_factor: float = math.sqrt(2.0)
    dtype: Any = jnp.float32

    def setup(self):
        out = self.out_channels
        common = dict(eps=self.eps, act_fn=self.act_fn, time_embedding_norm=self.time_embedding_norm,
                      output_scale_factor=self.output_scale_factor, dtype=self.dtype)
        resnets = []
        for i in range(self.num_layers):
            cin = self.in_channels if i == 0 else out
            resnets.append(FirResnetBlock2D(cin, out, groups=skip_groups(cin), groups_out=skip_groups(out), **common))
        self.resnets = resnets
        if self.add_attention:
            self.attentions = [Attention(out, self.attention_head_dim, 32, self.eps, self.output_scale_factor,
                                         dtype=self.dtype) for _ in range(self.num_layers)]
        if self.add_downsample:
            self.resnet_down = FirResnetBlock2D(out, out, groups=skip_groups(out), use_in_shortcut=True, down=True,
                                                **common)
            self.skip_conv = conv(out, 1, self.dtype)

    def __call__(self, x: Array, temb: Array, skip_sample: Array) -> tuple[Array, tuple[Array, ...], Array]:
        skips: tuple[Array, ...] = ()
        for i, resnet in enumerate(self.resnets):
            x = resnet(x, temb)
            if self.add_attention:
                x = self.attentions[i](x)
            skips += (x,)
        if self.add_downsample:
            x = self.resnet_down(x, temb)
            skip_sample = fir_downsample_2d(skip_sample)
            x = self.skip_conv(skip_sample) + x
            skips += (x,)
        return x, skips, skip_sample


class AttnSkipDownBlock2D(SkipDownBlock2D):
    """diffusers ``AttnSkipDownBlock2D``: a :class:`SkipDownBlock2D` with attention after each resnet."""

    add_attention: bool = True


class SkipUpBlock2D(nn.Module):
    """diffusers ``SkipUpBlock2D`` (``AttnSkipUpBlock2D`` with ``add_attention=True``: one attention after the
    last resnet).

    ``(x [B,H,W,prev], skips, temb, skip_sample [B,H/2,W/2,3] or None) -> (x [B,H',W',out], skip_sample')``:
    the incoming ``skip_sample`` is FIR-upsampled (``upsampler``); with ``add_upsample`` the block adds
    ``skip_conv(SiLU(skip_norm(x)))`` to it and ends with a FIR-up resnet (``resnet_up``). ``skip_sample'``
    is ``None`` only when nothing was accumulated (a single block without upsampling).
    """

    in_channels: int
    prev_output_channel: int
    out_channels: int
    num_layers: int
    add_upsample: bool
    add_attention: bool = False
    attention_head_dim: Optional[int] = None
    eps: float = 1e-6
    act_fn: str = "silu"
    time_embedding_norm: str = "default"
    output_scale_factor: float = math.sqrt(2.0)
    dtype: Any = jnp.float32

    def resnet_channels(self, i: int) -> tuple[int, int]:
        """``(hidden, skip)`` channels concatenated at the input of ``resnets[i]``."""
        skip_ch = self.in_channels if i == self.num_layers - 1 else self.out_channels
        return (self.prev_output_channel if i == 0 else self.out_channels), skip_ch

    def resnet_groups(self, i: int) -> int:
        """GroupNorm size of ``resnets[i].norm1``."""
        res_in, skip_ch = self.resnet_channels(i)
        if self.add_attention:
            # diffusers@0.42 unet_2d_blocks.py AttnSkipUpBlock2D: min(res_in + res_skip // 4, 32) (operator precedence
            # as written there), unlike SkipUpBlock2D's min((res_in + res_skip) // 4, 32).
            return min(res_in + skip_ch // 4, 32)
        return skip_groups(res_in + skip_ch)

    def setup(self):
        out = self.out_channels
        common = dict(eps=self.eps, act_fn=self.act_fn, time_embedding_norm=self.time_embedding_norm,
                      output_scale_factor=self.output_scale_factor, dtype=self.dtype)
        resnets = []
        for i in range(self.num_layers):
            resnets.append(FirResnetBlock2D(sum(self.resnet_channels(i)), out, groups=self.resnet_groups(i),
                                            groups_out=skip_groups(out), **common))
        self.resnets = resnets
        if self.add_attention:
            self.attentions = [Attention(out, self.attention_head_dim, 32, self.eps, self.output_scale_factor,
                                         dtype=self.dtype)]
        if self.add_upsample:
            self.resnet_up = FirResnetBlock2D(out, out, groups=skip_groups(out), groups_out=skip_groups(out),
                                              use_in_shortcut=True, up=True, **common)
            self.skip_conv = conv(SKIP_CHANNELS, 3, self.dtype)
            self.skip_norm = group_norm(skip_groups(out), self.eps, self.dtype)

    def __call__(self, x: Array, skips: tuple[Array, ...], temb: Array,
                 skip_sample: Optional[Array]) -> tuple[Array, Optional[Array]]:
        if len(skips) != self.num_layers:
            raise ValueError(f"up block expects {self.num_layers} skip tensors, got {len(skips)}")
        for i, resnet in enumerate(self.resnets):
            x = resnet(jnp.concatenate([x, skips[-1 - i]], axis=-1), temb)
        if self.add_attention:
            x = self.attentions[0](x)
        if skip_sample is not None:
            skip_sample = fir_upsample_2d(skip_sample)
        if self.add_upsample:
            s = self.skip_conv(nn.silu(self.skip_norm(x)))  # diffusers' skip act is always SiLU
            skip_sample = s if skip_sample is None else skip_sample + s
            x = self.resnet_up(x, temb)
        return x, skip_sample


class AttnSkipUpBlock2D(SkipUpBlock2D):
    """diffusers ``AttnSkipUpBlock2D``: a :class:`SkipUpBlock2D` with one attention after its last resnet."""

    add_attention: bool = True
