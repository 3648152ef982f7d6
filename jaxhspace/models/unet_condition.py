"""diffusers ``UNet2DConditionModel`` (Stable Diffusion 1.x / 2.x) in Flax linen (NHWC), split at the h-space
(the ``mid_block`` output), with the same bottleneck API as :class:`jaxhspace.models.unet.UNet2DModel`.

``eps = model.apply({"params": p}, z, t, encoder_hidden_states=c)`` equals
``decode(*encode(z, t, c), c)``; ``delta_h`` is added to h. The text embeddings ``c`` are not part of the
:class:`Bottleneck`: they enter ``decode`` again, so an ``eps_fn`` closure holds them fixed.
Submodule names mirror diffusers (``conv_in``, ``time_proj``, ``time_embedding``, ``down_blocks``,
``mid_block``, ``up_blocks``, ``conv_norm_out``, ``conv_out``; ``attentions.N`` are ``Transformer2DModel``).
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Optional, Union

import flax.linen as nn
import jax.numpy as jnp

from jaxhspace.models.blocks import (
    SUPPORTED_ACTIVATIONS, DownBlock2D, Downsample2D, ResnetBlock2D, UpBlock2D, Upsample2D, conv, get_activation,
    group_norm)
from jaxhspace.models.bottleneck import Bottleneck, add_delta_h
from jaxhspace.models.embeddings import TimestepEmbedding, Timesteps
from jaxhspace.models.transformer import Transformer2DModel

Array = jnp.ndarray

# Fields the port does not implement: each must keep diffusers' default (the value shown) or the config is rejected.
_MUST_BE_DEFAULT = {
    "num_attention_heads": None,  # diffusers itself refuses it; `attention_head_dim` holds the number of heads
    "dual_cross_attention": False,
    "reverse_transformer_layers_per_block": None,
    "encoder_hid_dim": None,
    "encoder_hid_dim_type": None,
    "class_embed_type": None,
    "addition_embed_type": None,
    "addition_time_embed_dim": None,
    "num_class_embeds": None,
    "resnet_skip_time_act": False,
    "resnet_out_scale_factor": 1.0,
    "time_embedding_type": "positional",
    "time_embedding_act_fn": None,
    "timestep_post_act": None,
    "time_cond_proj_dim": None,
    "projection_class_embeddings_input_dim": None,
    "attention_type": "default",
    "class_embeddings_concat": False,
    "mid_block_only_cross_attention": None,
    "cross_attention_norm": None,
    "addition_embed_type_num_heads": 64,
}


@dataclasses.dataclass(frozen=True)
class UNetConditionConfig:
    """diffusers ``UNet2DConditionModel`` config (same field names and defaults as diffusers 0.42).

    Supported: ``CrossAttnDownBlock2D``/``DownBlock2D``, ``UNetMidBlock2DCrossAttn``, ``CrossAttnUpBlock2D``/
    ``UpBlock2D``; ``attention_head_dim`` (int or per block; as in diffusers it is the NUMBER OF HEADS, the head
    width being ``channels // heads``), ``cross_attention_dim`` (int, or per block with equal values),
    ``layers_per_block``, ``transformer_layers_per_block`` and ``only_cross_attention`` (int/bool or per block),
    ``use_linear_projection``, ``upcast_attention``, ``flip_sin_to_cos``/``freq_shift``, ``downsample_padding``,
    ``act_fn``, ``norm_num_groups``, ``norm_eps``, ``resnet_time_scale_shift``, ``mid_block_scale_factor``,
    ``center_input_sample``, ``time_embedding_dim``, ``conv_in_kernel``/``conv_out_kernel``. Any other field with a
    non-default value (class/addition embeddings, SDXL conditioning, ``time_cond_proj_dim``, ...) raises a
    ValueError naming it. ``dropout`` is accepted but inference-only.
    """

    sample_size: Optional[Union[int, tuple[int, int]]] = None
    in_channels: int = 4
    out_channels: int = 4
    center_input_sample: bool = False
    flip_sin_to_cos: bool = True
    freq_shift: float = 0
    down_block_types: tuple[str, ...] = ("CrossAttnDownBlock2D", "CrossAttnDownBlock2D", "CrossAttnDownBlock2D",
                                         "DownBlock2D")
    mid_block_type: Optional[str] = "UNetMidBlock2DCrossAttn"
    up_block_types: tuple[str, ...] = ("UpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D", "CrossAttnUpBlock2D")
    only_cross_attention: Union[bool, tuple[bool, ...]] = False
    block_out_channels: tuple[int, ...] = (320, 640, 1280, 1280)
    layers_per_block: Union[int, tuple[int, ...]] = 2
    downsample_padding: int = 1
    mid_block_scale_factor: float = 1
    dropout: float = 0.0
    act_fn: str = "silu"
    norm_num_groups: Optional[int] = 32
    norm_eps: float = 1e-5
    cross_attention_dim: Union[int, tuple[int, ...]] = 1280
    transformer_layers_per_block: Union[int, tuple[int, ...]] = 1
    reverse_transformer_layers_per_block: Any = None
    encoder_hid_dim: Optional[int] = None
    encoder_hid_dim_type: Optional[str] = None
    attention_head_dim: Union[int, tuple[int, ...]] = 8
    num_attention_heads: Any = None
    dual_cross_attention: bool = False
    use_linear_projection: bool = False
    class_embed_type: Optional[str] = None
    addition_embed_type: Optional[str] = None
    addition_time_embed_dim: Optional[int] = None
    num_class_embeds: Optional[int] = None
    upcast_attention: bool = False
    resnet_time_scale_shift: str = "default"
    resnet_skip_time_act: bool = False
    resnet_out_scale_factor: float = 1.0
    time_embedding_type: str = "positional"
    time_embedding_dim: Optional[int] = None
    time_embedding_act_fn: Optional[str] = None
    timestep_post_act: Optional[str] = None
    time_cond_proj_dim: Optional[int] = None
    conv_in_kernel: int = 3
    conv_out_kernel: int = 3
    projection_class_embeddings_input_dim: Optional[int] = None
    attention_type: str = "default"
    class_embeddings_concat: bool = False
    mid_block_only_cross_attention: Optional[bool] = None
    cross_attention_norm: Optional[str] = None
    addition_embed_type_num_heads: int = 64

    def __post_init__(self):
        for name in ("down_block_types", "up_block_types", "block_out_channels", "only_cross_attention",
                     "layers_per_block", "cross_attention_dim", "transformer_layers_per_block", "attention_head_dim",
                     "sample_size"):
            if isinstance(getattr(self, name), list):
                object.__setattr__(self, name, tuple(getattr(self, name)))
        self._validate()

    def _validate(self):
        def bad(field, supported):
            raise ValueError(f"UNetConditionConfig.{field}={getattr(self, field)!r} is not supported; "
                             f"supported: {supported}")

        for field, default in _MUST_BE_DEFAULT.items():
            if getattr(self, field) != default:
                bad(field, f"{default!r} only (diffusers' default; this port implements SD-1.x / SD-2.x UNets)")
        if self.mid_block_type != "UNetMidBlock2DCrossAttn":
            bad("mid_block_type", "'UNetMidBlock2DCrossAttn' (the h-space is its output)")
        n = len(self.block_out_channels)
        if n == 0 or len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ValueError(
                f"UNetConditionConfig: block_out_channels ({n}), down_block_types ({len(self.down_block_types)}) "
                f"and up_block_types ({len(self.up_block_types)}) must have the same non-zero length")
        if any(b not in DOWN_BLOCKS for b in self.down_block_types):
            bad("down_block_types", f"sequences of {tuple(DOWN_BLOCKS)}")
        if any(b not in UP_BLOCKS for b in self.up_block_types):
            bad("up_block_types", f"sequences of {tuple(UP_BLOCKS)}")
        if self.act_fn not in SUPPORTED_ACTIVATIONS:
            bad("act_fn", SUPPORTED_ACTIVATIONS)
        if self.resnet_time_scale_shift not in ("default", "scale_shift"):
            bad("resnet_time_scale_shift", "'default', 'scale_shift'")
        if not isinstance(self.norm_num_groups, int) or any(c % self.norm_num_groups for c in self.block_out_channels):
            bad("norm_num_groups", f"an int dividing every entry of block_out_channels {self.block_out_channels}")
        if not isinstance(self.downsample_padding, int) or self.downsample_padding < 0:
            bad("downsample_padding", "an int >= 0 (0 = diffusers' asymmetric (0,1) pad)")
        for field in ("conv_in_kernel", "conv_out_kernel"):
            if not isinstance(getattr(self, field), int) or getattr(self, field) % 2 == 0:
                bad(field, "an odd int")

        def per_block(field, kind, ok):
            v = getattr(self, field)
            if isinstance(v, tuple):
                if len(v) != n or not all(isinstance(e, kind) and ok(e) for e in v):
                    bad(field, f"a valid {kind.__name__} or a tuple of {n} of them (one per block)")
            elif not (isinstance(v, kind) and ok(v)):
                bad(field, f"a valid {kind.__name__} or a tuple of {n} of them (one per block)")

        per_block("only_cross_attention", bool, lambda v: True)
        per_block("layers_per_block", int, lambda v: v >= 1)
        per_block("transformer_layers_per_block", int, lambda v: v >= 1)
        per_block("attention_head_dim", int, lambda v: v >= 1)
        per_block("cross_attention_dim", int, lambda v: v >= 1)
        if len(set(self.per_block("cross_attention_dim"))) != 1:
            bad("cross_attention_dim", "one width for every block (a single encoder_hidden_states tensor feeds them)")
        for i, (c, heads) in enumerate(zip(self.block_out_channels, self.per_block("attention_head_dim"))):
            if c % heads:
                raise ValueError(f"UNetConditionConfig.attention_head_dim: block {i} has {c} channels, not divisible "
                                 f"by its {heads} heads (diffusers' attention_head_dim is the number of heads)")

    @classmethod
    def from_dict(cls, d: dict) -> "UNetConditionConfig":
        """Build from a diffusers ``config.json`` dict; ``_``-prefixed keys are ignored; unknown keys are ignored
        with a warning when None/False, and raise otherwise (an unknown field may change the architecture)."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in d if not k.startswith("_") and k not in names)
        bad = [k for k in unknown if d[k] not in (None, False)]
        if bad:
            raise ValueError(f"UNetConditionConfig: unknown config fields {bad} (values "
                             f"{[d[k] for k in bad]}); this port implements the UNet2DConditionModel fields of "
                             f"diffusers 0.42 for SD-1.x / SD-2.x")
        if unknown:
            warnings.warn(f"UNetConditionConfig.from_dict: ignoring unknown config keys {unknown} (None/False)",
                          stacklevel=2)
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        """JSON-ready dict with diffusers' field names (tuples become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    def per_block(self, field: str) -> tuple:
        """``field`` (int/bool or per-block tuple) as a tuple with one entry per down block."""
        v = getattr(self, field)
        return tuple(v) if isinstance(v, tuple) else (v,) * len(self.block_out_channels)

    @property
    def num_downsamples(self) -> int:
        """Number of stride-2 downsamples (``len(block_out_channels) - 1``)."""
        return len(self.block_out_channels) - 1

    @property
    def time_embed_dim(self) -> int:
        return self.time_embedding_dim or self.block_out_channels[0] * 4

    @property
    def context_dim(self) -> int:
        """Width the ``encoder_hidden_states`` must have (``cross_attention_dim``)."""
        return self.per_block("cross_attention_dim")[0]

    @property
    def num_skips(self) -> int:
        """Number of skip tensors ``encode`` returns."""
        return 1 + sum(self.per_block("layers_per_block")) + self.num_downsamples


class CrossAttnDownBlock2D(nn.Module):
    """diffusers ``CrossAttnDownBlock2D``: ``num_layers`` x (resnet, Transformer2DModel), then an optional
    Downsample2D. ``[B,H,W,in] x [B,T] x [B,M,D] -> (h [B,H',W',out], skips)`` as :class:`DownBlock2D`."""

    in_channels: int
    out_channels: int
    num_layers: int
    add_downsample: bool
    heads: int
    transformer_layers: int = 1
    downsample_padding: int = 1
    use_linear_projection: bool = False
    only_cross_attention: bool = False
    upcast_attention: bool = False
    query_chunk: Optional[int] = None
    groups: int = 32
    eps: float = 1e-5
    act_fn: str = "silu"
    time_embedding_norm: str = "default"
    dtype: Any = jnp.float32

    def setup(self):
        self.resnets = [
            ResnetBlock2D(self.in_channels if i == 0 else self.out_channels, self.out_channels, self.groups, self.eps,
                          self.act_fn, self.time_embedding_norm, dtype=self.dtype)
            for i in range(self.num_layers)
        ]
        self.attentions = [
            Transformer2DModel(self.heads, self.out_channels // self.heads, self.out_channels, self.transformer_layers,
                               self.groups, self.use_linear_projection, self.only_cross_attention,
                               self.upcast_attention, self.query_chunk, dtype=self.dtype)
            for _ in range(self.num_layers)
        ]
        if self.add_downsample:
            self.downsamplers = [Downsample2D(self.out_channels, self.downsample_padding, dtype=self.dtype)]

    def __call__(self, x: Array, temb: Array, context: Array) -> tuple[Array, tuple[Array, ...]]:
        skips: tuple[Array, ...] = ()
        for resnet, attn in zip(self.resnets, self.attentions):
            x = attn(resnet(x, temb), context)
            skips += (x,)
        if self.add_downsample:
            x = self.downsamplers[0](x)
            skips += (x,)
        return x, skips


class CrossAttnUpBlock2D(nn.Module):
    """diffusers ``CrossAttnUpBlock2D``: ``num_layers`` x (resnet on ``concat([h, skip])``, Transformer2DModel),
    then an optional Upsample2D. ``[B,H,W,prev] x skips x [B,T] x [B,M,D] -> [B,H',W',out]``; skips are consumed
    from the end; ``in_channels`` is the channel count of the last skip (diffusers' naming)."""

    in_channels: int
    prev_output_channel: int
    out_channels: int
    num_layers: int
    add_upsample: bool
    heads: int
    transformer_layers: int = 1
    use_linear_projection: bool = False
    only_cross_attention: bool = False
    upcast_attention: bool = False
    query_chunk: Optional[int] = None
    groups: int = 32
    eps: float = 1e-5
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
        self.attentions = [
            Transformer2DModel(self.heads, self.out_channels // self.heads, self.out_channels, self.transformer_layers,
                               self.groups, self.use_linear_projection, self.only_cross_attention,
                               self.upcast_attention, self.query_chunk, dtype=self.dtype)
            for _ in range(self.num_layers)
        ]
        if self.add_upsample:
            self.upsamplers = [Upsample2D(self.out_channels, dtype=self.dtype)]

    def __call__(self, x: Array, skips: tuple[Array, ...], temb: Array, context: Array) -> Array:
        if len(skips) != self.num_layers:
            raise ValueError(f"up block expects {self.num_layers} skip tensors, got {len(skips)}")
        for i, (resnet, attn) in enumerate(zip(self.resnets, self.attentions)):
            x = attn(resnet(jnp.concatenate([x, skips[-1 - i]], axis=-1), temb), context)
        if self.add_upsample:
            x = self.upsamplers[0](x)
        return x


class UNetMidBlock2DCrossAttn(nn.Module):
    """diffusers ``UNetMidBlock2DCrossAttn``: resnet, then (Transformer2DModel, resnet).
    ``[B,h,w,C] x [B,T] x [B,M,D] -> [B,h,w,C]``; its output is the h-space. (diffusers never passes
    ``only_cross_attention`` to this block.)"""

    channels: int
    heads: int
    transformer_layers: int = 1
    use_linear_projection: bool = False
    upcast_attention: bool = False
    query_chunk: Optional[int] = None
    output_scale_factor: float = 1.0
    groups: int = 32
    eps: float = 1e-5
    act_fn: str = "silu"
    time_embedding_norm: str = "default"
    dtype: Any = jnp.float32

    def setup(self):
        self.resnets = [
            ResnetBlock2D(self.channels, self.channels, self.groups, self.eps, self.act_fn, self.time_embedding_norm,
                          self.output_scale_factor, dtype=self.dtype)
            for _ in range(2)
        ]
        self.attentions = [
            Transformer2DModel(self.heads, self.channels // self.heads, self.channels, self.transformer_layers,
                               self.groups, self.use_linear_projection, False, self.upcast_attention, self.query_chunk,
                               dtype=self.dtype)
        ]

    def __call__(self, x: Array, temb: Array, context: Array) -> Array:
        x = self.resnets[0](x, temb)
        return self.resnets[1](self.attentions[0](x, context), temb)


DOWN_BLOCKS = {"CrossAttnDownBlock2D": CrossAttnDownBlock2D, "DownBlock2D": DownBlock2D}
UP_BLOCKS = {"CrossAttnUpBlock2D": CrossAttnUpBlock2D, "UpBlock2D": UpBlock2D}


class UNet2DConditionModel(nn.Module):
    """diffusers ``UNet2DConditionModel`` (SD-1.x / SD-2.x subset), NHWC.

    Attributes:
      config: the :class:`UNetConditionConfig`.
      dtype: compute dtype (float32 default; bfloat16 possible). Params are float32; outputs float32.
      attention_query_chunk: None (default: plain attention) or a query chunk size (e.g. 1024) bounding the
        attention scores' memory at 512 px (``jaxhspace.models.transformer.dot_product_attention``); same params,
        so ``model.clone(attention_query_chunk=1024)`` switches a loaded model.
    """

    config: UNetConditionConfig
    dtype: Any = jnp.float32
    attention_query_chunk: Optional[int] = None

    def setup(self):
        c = self.config
        boc = c.block_out_channels
        n = len(boc)
        common = dict(groups=c.norm_num_groups, eps=c.norm_eps, act_fn=c.act_fn,
                      time_embedding_norm=c.resnet_time_scale_shift, dtype=self.dtype)
        heads, layers = c.per_block("attention_head_dim"), c.per_block("layers_per_block")
        tlayers, only_cross = c.per_block("transformer_layers_per_block"), c.per_block("only_cross_attention")
        attn = dict(use_linear_projection=c.use_linear_projection, upcast_attention=c.upcast_attention,
                    query_chunk=self.attention_query_chunk)

        self.conv_in = conv(boc[0], c.conv_in_kernel, self.dtype)
        self.time_proj = Timesteps(boc[0], c.flip_sin_to_cos, c.freq_shift)
        self.time_embedding = TimestepEmbedding(c.time_embed_dim, act_fn=c.act_fn, dtype=self.dtype)

        down_blocks, ch = [], boc[0]
        for i, kind in enumerate(c.down_block_types):
            kw = dict(in_channels=ch, out_channels=boc[i], num_layers=layers[i], add_downsample=i < n - 1,
                      downsample_padding=c.downsample_padding, **common)
            if kind == "CrossAttnDownBlock2D":
                kw.update(heads=heads[i], transformer_layers=tlayers[i], only_cross_attention=only_cross[i], **attn)
            down_blocks.append(DOWN_BLOCKS[kind](**kw))
            ch = boc[i]
        self.down_blocks = down_blocks

        self.mid_block = UNetMidBlock2DCrossAttn(boc[-1], heads[-1], tlayers[-1],
                                                 output_scale_factor=c.mid_block_scale_factor, **attn, **common)

        rev = tuple(reversed(boc))
        up_blocks, prev = [], rev[0]
        for i, kind in enumerate(c.up_block_types):
            kw = dict(in_channels=rev[min(i + 1, n - 1)], prev_output_channel=prev, out_channels=rev[i],
                      num_layers=layers[::-1][i] + 1, add_upsample=i < n - 1, **common)
            if kind == "CrossAttnUpBlock2D":
                kw.update(heads=heads[::-1][i], transformer_layers=tlayers[::-1][i],
                          only_cross_attention=only_cross[::-1][i], **attn)
            up_blocks.append(UP_BLOCKS[kind](**kw))
            prev = rev[i]
        self.up_blocks = up_blocks

        self.conv_norm_out = group_norm(c.norm_num_groups, c.norm_eps, self.dtype)
        self.conv_out = conv(c.out_channels, c.conv_out_kernel, self.dtype)

    # ------------------------------------------------------------------------------------------
    def hspace_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """Shape ``(h, w, C_mid)`` of the h-space for a latent of size ``height x width`` (e.g. 64x64 -> 8x8x1280)."""
        f = 2 ** self.config.num_downsamples
        return height // f, width // f, self.config.block_out_channels[-1]

    def _check_context(self, context: Optional[Array], batch: int) -> Array:
        """Validate ``encoder_hidden_states`` ``[B or 1, M, cross_attention_dim]``; return it as ``[B, M, D]``."""
        d = self.config.context_dim
        if context is None:
            raise ValueError(f"encoder_hidden_states is required: pass the text embeddings [B, M, {d}] (e.g. the CLIP "
                             f"text encoder's last hidden state) as encoder_hidden_states=...")
        context = jnp.asarray(context)
        if context.ndim != 3:
            raise ValueError(f"encoder_hidden_states must be 3-D [B, M, {d}], got shape {context.shape}")
        if context.shape[-1] != d:
            raise ValueError(f"encoder_hidden_states has width {context.shape[-1]} but this UNet's "
                             f"cross_attention_dim is {d}: use the text encoder this UNet was trained with "
                             f"(SD-1.x: CLIP ViT-L/14, 768; SD-2.x: OpenCLIP ViT-H, 1024)")
        if context.shape[0] not in (1, batch):
            raise ValueError(f"encoder_hidden_states batch {context.shape[0]} must be 1 or the latent batch {batch}")
        if not jnp.issubdtype(context.dtype, jnp.floating):
            raise ValueError(f"encoder_hidden_states must be float, got dtype {context.dtype}")
        return jnp.broadcast_to(context, (batch, *context.shape[1:])).astype(self.dtype)

    def _check_inputs(self, x: Array, t) -> tuple[Array, Array]:
        """Validate (static shapes only) and return ``x`` and ``t`` broadcast to ``[B]``."""
        c = self.config
        x = jnp.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"z must be 4-D [B, H, W, C] (NHWC), got shape {x.shape}")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"z must be a float array, got dtype {x.dtype}")
        if x.shape[-1] != c.in_channels:
            hint = ""
            if x.shape[1] == c.in_channels:
                hint = (" It looks like NCHW (channels first); jaxhspace uses NHWC (channels last): "
                        "pass z.transpose(0, 2, 3, 1).")
            raise ValueError(f"z must have {c.in_channels} latent channels in the last axis (NHWC [B, H, W, C]), "
                             f"got shape {x.shape}.{hint}")
        f = 2 ** c.num_downsamples
        if x.shape[1] % f or x.shape[2] % f:
            raise ValueError(f"z spatial size {x.shape[1]}x{x.shape[2]} must be divisible by {f} "
                             f"(2**{c.num_downsamples} downsamples)")
        t = jnp.asarray(t)
        if not (jnp.issubdtype(t.dtype, jnp.integer) or jnp.issubdtype(t.dtype, jnp.floating)):
            raise ValueError(f"t must be int or float, got dtype {t.dtype}")
        b = x.shape[0]
        if t.ndim > 1 or (t.ndim == 1 and t.shape[0] not in (1, b)):
            raise ValueError(f"t must be a scalar or of shape [B]=[{b}], got shape {t.shape}")
        return x, jnp.broadcast_to(t.reshape(-1) if t.ndim else t, (b,))

    def encode(self, x: Array, t, encoder_hidden_states: Optional[Array] = None) -> Bottleneck:
        """Down path and mid block.

        Args:
          x: latent ``z_t`` ``[B, H, W, in_channels]`` float, NHWC (e.g. ``[B, 64, 64, 4]`` at 512 px).
          t: ``[B]`` or scalar timesteps (int or float).
          encoder_hidden_states: ``[B or 1, M, cross_attention_dim]`` text embeddings (e.g. ``[B, 77, 768]``).

        Returns:
          :class:`Bottleneck` ``(h, skips, temb)``: h ``[B, H/2^n, W/2^n, C_mid]`` (``mid_block`` output), skips
          (tuple of NHWC residual tensors, conv_in output first), temb ``[B, time_embed_dim]``.
        """
        x, t = self._check_inputs(x, t)
        context = self._check_context(encoder_hidden_states, x.shape[0])
        if self.config.center_input_sample:
            x = 2 * x - 1.0
        temb = self.time_embedding(self.time_proj(t).astype(self.dtype))
        h = self.conv_in(x)
        skips = (h,)
        for block in self.down_blocks:
            h, res = block(h, temb, context) if isinstance(block, CrossAttnDownBlock2D) else block(h, temb)
            skips += res
        h = self.mid_block(h, temb, context)
        return Bottleneck(h, skips, temb)

    def decode(self, h: Array, skips: tuple[Array, ...], temb: Array,
               encoder_hidden_states: Optional[Array] = None) -> Array:
        """Up path from the h-space.

        Args:
          h: ``[B, h, w, C_mid]``; skips, temb: as returned by :meth:`encode`.
          encoder_hidden_states: ``[B or 1, M, cross_attention_dim]``, the same text embeddings as for encode
            (or others: conditioning the up path differently is allowed).

        Returns:
          eps ``[B, H, W, out_channels]`` float32.
        """
        c = self.config
        if len(skips) != c.num_skips:
            raise ValueError(f"decode expects {c.num_skips} skip tensors (from encode), got {len(skips)}")
        context = self._check_context(encoder_hidden_states, h.shape[0])
        end = len(skips)
        for block in self.up_blocks:
            res, end = skips[end - block.num_layers: end], end - block.num_layers
            h = block(h, res, temb, context) if isinstance(block, CrossAttnUpBlock2D) else block(h, res, temb)
        h = self.conv_out(get_activation(c.act_fn)(self.conv_norm_out(h)))
        return h.astype(jnp.float32)

    def __call__(self, x: Array, t, encoder_hidden_states: Optional[Array] = None,
                 delta_h: Optional[Array] = None) -> Array:
        """Predict eps. x ``[B, H, W, C]`` NHWC latent; t ``[B]`` or scalar; ``encoder_hidden_states``
        ``[B or 1, M, cross_attention_dim]``; optional ``delta_h`` (``[B, h, w, C_mid]`` or broadcastable) added to
        the h-space. Returns eps ``[B, H, W, C_out]`` float32."""
        h, skips, temb = self.encode(x, t, encoder_hidden_states)
        h = add_delta_h(h, delta_h)
        return self.decode(h, skips, temb, encoder_hidden_states)
