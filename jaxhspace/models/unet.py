"""diffusers ``UNet2DModel`` in Flax linen (NHWC), split at the h-space (the mid-block output).

``eps = model.apply({"params": p}, x, t)`` equals ``decode(*encode(x, t))``; ``delta_h`` is added to h.
Submodule names mirror diffusers (``conv_in``, ``time_proj``, ``time_embedding``, ``down_blocks``,
``mid_block``, ``up_blocks``, ``conv_norm_out``, ``conv_out``) so weights convert by renaming.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Optional, Union

import flax.linen as nn
import jax.numpy as jnp

from jaxhspace.models.bottleneck import Bottleneck
from jaxhspace.models.blocks import (
    SUPPORTED_ACTIVATIONS, AttnDownBlock2D, AttnUpBlock2D, DownBlock2D, UNetMidBlock2D, UpBlock2D, conv, group_norm)
from jaxhspace.models.embeddings import TimestepEmbedding, Timesteps

Array = jnp.ndarray

DOWN_BLOCKS = {"DownBlock2D": DownBlock2D, "AttnDownBlock2D": AttnDownBlock2D}
UP_BLOCKS = {"UpBlock2D": UpBlock2D, "AttnUpBlock2D": AttnUpBlock2D}


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """diffusers ``UNet2DModel`` config (same field names and defaults as diffusers).

    Only the DDPM-style subset is supported: positional time embedding, no class embedding,
    ``DownBlock2D``/``AttnDownBlock2D`` and ``UpBlock2D``/``AttnUpBlock2D``, conv down/upsampling,
    ``UNetMidBlock2D``. Other values raise a ValueError naming the field. ``dropout`` is accepted but
    inference-only (no dropout is applied).
    """

    sample_size: Optional[Union[int, tuple[int, int]]] = None
    in_channels: int = 3
    out_channels: int = 3
    center_input_sample: bool = False
    time_embedding_type: str = "positional"
    time_embedding_dim: Optional[int] = None
    freq_shift: float = 0
    flip_sin_to_cos: bool = True
    down_block_types: tuple[str, ...] = ("DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D")
    mid_block_type: Optional[str] = "UNetMidBlock2D"
    up_block_types: tuple[str, ...] = ("AttnUpBlock2D", "AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D")
    block_out_channels: tuple[int, ...] = (224, 448, 672, 896)
    layers_per_block: int = 2
    mid_block_scale_factor: float = 1
    downsample_padding: int = 1
    downsample_type: str = "conv"
    upsample_type: str = "conv"
    dropout: float = 0.0
    act_fn: str = "silu"
    attention_head_dim: Optional[int] = 8
    norm_num_groups: int = 32
    attn_norm_num_groups: Optional[int] = None
    norm_eps: float = 1e-5
    resnet_time_scale_shift: str = "default"
    add_attention: bool = True
    class_embed_type: Optional[str] = None
    num_class_embeds: Optional[int] = None
    num_train_timesteps: Optional[int] = None

    def __post_init__(self):
        for name in ("down_block_types", "up_block_types", "block_out_channels"):
            object.__setattr__(self, name, tuple(getattr(self, name)))
        if isinstance(self.sample_size, list):
            object.__setattr__(self, "sample_size", tuple(self.sample_size))
        self._validate()

    def _validate(self):
        def bad(field, supported):
            raise ValueError(f"UNetConfig.{field}={getattr(self, field)!r} is not supported; supported: {supported}")

        if self.time_embedding_type != "positional":
            bad("time_embedding_type", "'positional'")
        if self.class_embed_type is not None:
            bad("class_embed_type", "None (no class conditioning)")
        if self.num_class_embeds is not None:
            bad("num_class_embeds", "None (no class conditioning)")
        if self.mid_block_type != "UNetMidBlock2D":
            bad("mid_block_type", "'UNetMidBlock2D' (the h-space is its output)")
        if any(b not in DOWN_BLOCKS for b in self.down_block_types):
            bad("down_block_types", f"sequences of {tuple(DOWN_BLOCKS)}")
        if any(b not in UP_BLOCKS for b in self.up_block_types):
            bad("up_block_types", f"sequences of {tuple(UP_BLOCKS)}")
        if self.downsample_type != "conv":
            bad("downsample_type", "'conv'")
        if self.upsample_type != "conv":
            bad("upsample_type", "'conv'")
        if self.act_fn not in SUPPORTED_ACTIVATIONS:
            bad("act_fn", SUPPORTED_ACTIVATIONS)
        if self.resnet_time_scale_shift not in ("default", "scale_shift"):
            bad("resnet_time_scale_shift", "'default', 'scale_shift'")
        n = len(self.block_out_channels)
        if n == 0 or len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ValueError(
                f"UNetConfig: block_out_channels ({n}), down_block_types ({len(self.down_block_types)}) and "
                f"up_block_types ({len(self.up_block_types)}) must have the same non-zero length")
        if not isinstance(self.layers_per_block, int) or self.layers_per_block < 1:
            bad("layers_per_block", "an int >= 1 (per-block lists are not supported)")
        if not isinstance(self.norm_num_groups, int) or any(c % self.norm_num_groups for c in self.block_out_channels):
            bad("norm_num_groups", f"an int dividing every entry of block_out_channels {self.block_out_channels}")
        if self.attention_head_dim is not None and not (isinstance(self.attention_head_dim, int)
                                                        and self.attention_head_dim > 0):
            bad("attention_head_dim", "None (one head) or a positive int")
        if not isinstance(self.downsample_padding, int) or self.downsample_padding < 0:
            bad("downsample_padding", "an int >= 0 (0 = diffusers' asymmetric (0,1) pad)")

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConfig":
        """Build from a diffusers ``config.json`` dict; ``_``-prefixed keys are ignored, unknown keys warned about."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in d if not k.startswith("_") and k not in names)
        if unknown:
            warnings.warn(f"UNetConfig.from_dict: ignoring unknown config keys {unknown}", stacklevel=2)
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        """JSON-ready dict with diffusers' field names (tuples become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @property
    def num_downsamples(self) -> int:
        """Number of stride-2 downsamples (``len(block_out_channels) - 1``)."""
        return len(self.block_out_channels) - 1

    @property
    def time_embed_dim(self) -> int:
        return self.time_embedding_dim or self.block_out_channels[0] * 4


class UNet2DModel(nn.Module):
    """diffusers ``UNet2DModel`` (DDPM subset), NHWC.

    Attributes:
      config: the :class:`UNetConfig`.
      dtype: compute dtype (float32 default; bfloat16 possible). Params are float32; outputs float32.
    """

    config: UNetConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        boc = c.block_out_channels
        common = dict(groups=c.norm_num_groups, eps=c.norm_eps, act_fn=c.act_fn,
                      time_embedding_norm=c.resnet_time_scale_shift, dtype=self.dtype)
        self.conv_in = conv(boc[0], 3, self.dtype)
        self.time_proj = Timesteps(boc[0], c.flip_sin_to_cos, c.freq_shift)
        self.time_embedding = TimestepEmbedding(c.time_embed_dim, dtype=self.dtype)

        down_blocks, ch = [], boc[0]
        for i, kind in enumerate(c.down_block_types):
            kw = dict(attention_head_dim=c.attention_head_dim) if kind.startswith("Attn") else {}
            down_blocks.append(DOWN_BLOCKS[kind](
                in_channels=ch, out_channels=boc[i], num_layers=c.layers_per_block,
                add_downsample=i < len(boc) - 1, downsample_padding=c.downsample_padding, **kw, **common))
            ch = boc[i]
        self.down_blocks = down_blocks

        attn_groups = c.attn_norm_num_groups
        if attn_groups is None and c.resnet_time_scale_shift == "default":
            attn_groups = c.norm_num_groups
        self.mid_block = UNetMidBlock2D(
            boc[-1], add_attention=c.add_attention, attention_head_dim=c.attention_head_dim,
            attn_groups=attn_groups, output_scale_factor=c.mid_block_scale_factor, **common)

        rev = tuple(reversed(boc))
        up_blocks, prev = [], rev[0]
        for i, kind in enumerate(c.up_block_types):
            kw = dict(attention_head_dim=c.attention_head_dim) if kind.startswith("Attn") else {}
            up_blocks.append(UP_BLOCKS[kind](
                in_channels=rev[min(i + 1, len(boc) - 1)], prev_output_channel=prev, out_channels=rev[i],
                num_layers=c.layers_per_block + 1, add_upsample=i < len(boc) - 1, **kw, **common))
            prev = rev[i]
        self.up_blocks = up_blocks

        self.conv_norm_out = group_norm(c.norm_num_groups, c.norm_eps, self.dtype)
        self.conv_out = conv(c.out_channels, 3, self.dtype)

    # ------------------------------------------------------------------------------------------
    def hspace_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """Shape ``(h, w, C_mid)`` of the h-space for an input of size ``height x width``."""
        f = 2 ** self.config.num_downsamples
        return height // f, width // f, self.config.block_out_channels[-1]

    def _check_inputs(self, x: Array, t) -> tuple[Array, Array]:
        """Validate (static shapes only) and return ``x`` and ``t`` broadcast to ``[B]``."""
        c = self.config
        x = jnp.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"x must be 4-D [B, H, W, C] (NHWC), got shape {x.shape}")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"x must be a float array in [-1, 1], got dtype {x.dtype}")
        if x.shape[-1] != c.in_channels:
            hint = ""
            if x.shape[1] == c.in_channels:
                hint = (" It looks like NCHW (channels first); jaxhspace uses NHWC (channels last): "
                        "pass x.transpose(0, 2, 3, 1).")
            raise ValueError(f"x must have {c.in_channels} channels in the last axis (NHWC [B, H, W, C]), "
                             f"got shape {x.shape}.{hint}")
        f = 2 ** c.num_downsamples
        if x.shape[1] % f or x.shape[2] % f:
            raise ValueError(f"x spatial size {x.shape[1]}x{x.shape[2]} must be divisible by {f} "
                             f"(2**{c.num_downsamples} downsamples)")
        t = jnp.asarray(t)
        if not (jnp.issubdtype(t.dtype, jnp.integer) or jnp.issubdtype(t.dtype, jnp.floating)):
            raise ValueError(f"t must be int or float, got dtype {t.dtype}")
        b = x.shape[0]
        if t.ndim > 1 or (t.ndim == 1 and t.shape[0] not in (1, b)):
            raise ValueError(f"t must be a scalar or of shape [B]=[{b}], got shape {t.shape}")
        return x, jnp.broadcast_to(t.reshape(-1) if t.ndim else t, (b,))

    def encode(self, x: Array, t) -> Bottleneck:
        """Down path and mid block.

        Args:
          x: ``[B, H, W, in_channels]`` float, NHWC, in [-1, 1].
          t: ``[B]`` or scalar timesteps (int or float).

        Returns:
          :class:`Bottleneck` ``(h, skips, temb)``: h ``[B, H/2^n, W/2^n, C_mid]`` (mid-block output), skips (tuple of
          NHWC residual tensors, conv_in output first), temb ``[B, time_embed_dim]``.
        """
        x, t = self._check_inputs(x, t)
        if self.config.center_input_sample:
            x = 2 * x - 1.0
        temb = self.time_embedding(self.time_proj(t).astype(self.dtype))
        h = self.conv_in(x)
        skips = (h,)
        for block in self.down_blocks:
            h, res = block(h, temb)
            skips += res
        h = self.mid_block(h, temb)
        return Bottleneck(h, skips, temb)

    def decode(self, h: Array, skips: tuple[Array, ...], temb: Array) -> Array:
        """Up path from the h-space.

        Args:
          h: ``[B, h, w, C_mid]``; skips, temb: as returned by :meth:`encode`.

        Returns:
          eps ``[B, H, W, out_channels]`` float32.
        """
        c = self.config
        n_skips = 1 + len(c.block_out_channels) * c.layers_per_block + c.num_downsamples
        if len(skips) != n_skips:
            raise ValueError(f"decode expects {n_skips} skip tensors (from encode), got {len(skips)}")
        per_block = c.layers_per_block + 1
        for i, block in enumerate(self.up_blocks):
            h = block(h, skips[len(skips) - per_block * (i + 1): len(skips) - per_block * i], temb)
        h = self.conv_out(nn.silu(self.conv_norm_out(h)))  # diffusers' conv_act is always SiLU
        return h.astype(jnp.float32)

    def __call__(self, x: Array, t, delta_h: Optional[Array] = None) -> Array:
        """Predict eps. x ``[B, H, W, C]`` NHWC in [-1, 1]; t ``[B]`` or scalar; optional ``delta_h``
        (``[B, h, w, C_mid]`` or broadcastable) added to the h-space. Returns eps ``[B, H, W, C_out]``."""
        h, skips, temb = self.encode(x, t)
        if delta_h is not None:
            delta_h = jnp.asarray(delta_h)
            try:
                ok = jnp.broadcast_shapes(h.shape, delta_h.shape) == h.shape
            except ValueError:
                ok = False
            if not ok:
                raise ValueError(f"delta_h of shape {delta_h.shape} does not broadcast to h of shape {h.shape}")
            h = h + delta_h.astype(h.dtype)
        return self.decode(h, skips, temb)
