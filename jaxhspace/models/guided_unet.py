"""openai guided-diffusion ``UNetModel`` (ADM / iDDPM / P2 checkpoints) in Flax linen (NHWC), split at the h-space.

The h-space is the output of ``middle_block`` (ResBlock, AttentionBlock, ResBlock), the tensor Asyrp edits
(kwonminki/Asyrp_official@a6c82dc:models/improved_ddpm/unet.py:692-706). ``model.apply(v, x, t)`` returns the
FULL model output: ``2 * in_channels`` channels when ``learn_sigma`` (ε first, then the variance interpolation
``v``), ``in_channels`` otherwise; :attr:`GuidedUNetModel.eps_channels` says how many leading channels are ε, and
``jaxhspace.models.functional.eps_fn`` slices them.

Submodule names mirror the PyTorch state dict (``time_embed.0``, ``input_blocks.N.M.in_layers.0``,
``middle_block.1.qkv``, ``out.2`` ...): Flax names nested lists ``input_blocks_N_M`` and keeps list positions, so
``[GroupNorm32, silu, conv]`` gives ``in_layers_0`` / ``in_layers_2`` like ``nn.Sequential``.
Numerics follow openai/guided-diffusion@22e0df8 ``guided_diffusion/unet.py`` and ``nn.py``: GroupNorm32 (32 groups,
eps 1e-5, computed in float32), SiLU, timestep embedding ``[cos, sin]`` with frequencies ``exp(-ln(1e4) i / half)``,
attention scaled by ``ch^-1/4`` on q and k, softmax in float32.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, Optional, Union, cast

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxhspace.models.blocks import conv, dense, group_norm
from jaxhspace.models.bottleneck import Bottleneck, add_delta_h
from jaxhspace.models.embeddings import get_timestep_embedding

Array = jnp.ndarray

# guided-diffusion script_util.create_model: channel_mult "" -> per-size default
# (openai/guided-diffusion@22e0df8:guided_diffusion/script_util.py:148-158).
DEFAULT_CHANNEL_MULT = {
    512: (0.5, 1, 1, 2, 2, 4, 4),
    256: (1, 1, 2, 2, 4, 4),
    128: (1, 1, 2, 3, 4),
    64: (1, 2, 3, 4),
}
NUM_CLASSES = 1000  # openai/guided-diffusion@22e0df8:guided_diffusion/script_util.py:8


def _as_str_list(value, field: str) -> str:
    """Accept guided-diffusion's comma strings ("16,8") or a list/tuple of numbers; return the comma string."""
    if isinstance(value, str):
        return value.replace(" ", "")
    if isinstance(value, (list, tuple)):
        return ",".join(str(v) for v in value)
    raise ValueError(f"GuidedUNetConfig.{field}={value!r}: expected a comma string such as \"16,8\" or a list")


@dataclasses.dataclass(frozen=True)
class GuidedUNetConfig:
    """guided-diffusion ``create_model`` keywords (same names, value formats and defaults;
    openai/guided-diffusion@22e0df8:guided_diffusion/script_util.py:130-147).

    ``attention_resolutions`` are *resolutions* ("32,16,8"), turned into downsample rates ``image_size // res``
    as ``create_model`` does; ``channel_mult=""`` picks the per-size default. ``use_checkpoint`` is ignored
    (gradient checkpointing), ``use_fp16`` only records that the torso was trained in float16 (weights are read as
    float32; compute dtype is the module's ``dtype``), ``dropout`` is inference-only (not applied).
    ``in_channels`` and ``num_classes`` are extensions (``create_model`` hard-codes 3 and 1000).
    """

    image_size: int
    num_channels: int
    num_res_blocks: int
    channel_mult: Union[str, tuple] = ""
    learn_sigma: bool = False
    class_cond: bool = False
    use_checkpoint: bool = False
    attention_resolutions: Union[str, tuple] = "16"
    num_heads: int = 1
    num_head_channels: int = -1
    num_heads_upsample: int = -1
    use_scale_shift_norm: bool = False
    dropout: float = 0.0
    resblock_updown: bool = False
    use_fp16: bool = False
    use_new_attention_order: bool = False
    in_channels: int = 3
    num_classes: int = NUM_CLASSES

    def __post_init__(self):
        object.__setattr__(self, "channel_mult", _as_str_list(self.channel_mult, "channel_mult"))
        object.__setattr__(self, "attention_resolutions",
                           _as_str_list(self.attention_resolutions, "attention_resolutions"))
        self._validate()

    def _validate(self):
        def bad(field, why):
            raise ValueError(f"GuidedUNetConfig.{field}={getattr(self, field)!r}: {why}")

        for f in ("image_size", "num_channels", "num_res_blocks", "in_channels", "num_classes"):
            v = getattr(self, f)
            if not isinstance(v, int) or isinstance(v, bool) or v < 1:
                bad(f, "must be a positive int")
        if self.channel_mult == "" and self.image_size not in DEFAULT_CHANNEL_MULT:
            bad("channel_mult", f"\"\" (size default) needs image_size in {sorted(DEFAULT_CHANNEL_MULT)}, got "
                                f"{self.image_size}; give channel_mult explicitly, e.g. \"1,2,2,4\"")
        try:
            mults = self.channel_mult_tuple
        except ValueError:
            bad("channel_mult", "expected comma-separated ints such as \"1,1,2,2,4,4\"")
        if not mults or any(m <= 0 for m in mults):
            bad("channel_mult", "needs at least one positive multiplier")
        try:
            res = [int(r) for r in self.attention_resolutions.split(",")]
        except ValueError:
            bad("attention_resolutions", "expected comma-separated ints (resolutions, e.g. \"32,16,8\")")
        if any(r < 1 or self.image_size % r for r in res):
            bad("attention_resolutions", f"every resolution must divide image_size={self.image_size}")
        widths = [int(m * self.num_channels) for m in mults]
        if any(w % 32 for w in widths):
            bad("num_channels", f"every level width {widths} must be divisible by GroupNorm32's 32 groups")
        # attention runs at the levels whose downsample rate 2**level is listed, and in the middle block
        attn_widths = sorted({w for i, w in enumerate(widths) if 2 ** i in self.attention_ds} | {widths[-1]})
        if self.num_head_channels != -1:
            if self.num_head_channels < 1 or any(w % self.num_head_channels for w in attn_widths):
                bad("num_head_channels", f"must be -1 or divide every attention width {attn_widths}")
        else:
            for f, n in (("num_heads", self.num_heads), ("num_heads_upsample", self.heads_upsample)):
                if n < 1 or any(w % n for w in attn_widths):
                    bad(f, f"must divide every attention width {attn_widths} (or set num_head_channels)")

    @property
    def channel_mult_tuple(self) -> tuple:
        """Level multipliers as ``create_model`` resolves them
        (openai/guided-diffusion@22e0df8:guided_diffusion/script_util.py:148-160)."""
        if self.channel_mult == "":
            return DEFAULT_CHANNEL_MULT[self.image_size]
        return tuple(int(m) for m in cast(str, self.channel_mult).split(","))  # a str after __post_init__

    @property
    def attention_ds(self) -> tuple[int, ...]:
        """Downsample rates with attention: ``image_size // res`` for each resolution
        (openai/guided-diffusion@22e0df8:guided_diffusion/script_util.py:162-164)."""
        return tuple(self.image_size // int(r) for r in cast(str, self.attention_resolutions).split(","))

    @property
    def heads_upsample(self) -> int:
        return self.num_heads if self.num_heads_upsample == -1 else self.num_heads_upsample

    @property
    def out_channels(self) -> int:
        """Channels of the full output (ε and, with ``learn_sigma``, the variance interpolation)."""
        return self.in_channels * (2 if self.learn_sigma else 1)

    @property
    def eps_channels(self) -> int:
        """Leading output channels that are ε."""
        return self.in_channels

    @property
    def time_embed_dim(self) -> int:
        return 4 * self.num_channels

    @property
    def num_downsamples(self) -> int:
        return len(self.channel_mult_tuple) - 1

    @property
    def sample_size(self) -> int:
        """diffusers-style alias of ``image_size`` (what jobs read to size their inputs)."""
        return self.image_size

    @property
    def block_out_channels(self) -> tuple[int, ...]:
        """diffusers-style per-level widths ``int(mult * num_channels)``; the last is the h-space width."""
        return tuple(int(m * self.num_channels) for m in self.channel_mult_tuple)

    @classmethod
    def from_dict(cls, d: dict) -> "GuidedUNetConfig":
        """Build from a ``config.json`` / ARCH.json dict; ``_``-prefixed keys are ignored, unknown keys rejected."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in d if not k.startswith("_") and k not in names)
        diffusion_keys = {"diffusion_steps", "noise_schedule", "timestep_respacing", "use_kl", "predict_xstart",
                          "rescale_timesteps", "rescale_learned_sigmas", "p2_gamma", "p2_k"}
        ignored = [k for k in unknown if k in diffusion_keys]
        if ignored:
            warnings.warn(f"GuidedUNetConfig.from_dict: ignoring diffusion keys {ignored}", stacklevel=2)
        unknown = [k for k in unknown if k not in diffusion_keys]
        if unknown:
            raise ValueError(f"unknown guided-diffusion create_model keys {unknown}; known: {sorted(names)}")
        missing = [k for k in ("image_size", "num_channels", "num_res_blocks") if k not in d]
        if missing:
            raise ValueError(f"guided-diffusion config lacks the required keys {missing}")
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        """JSON-ready dict with create_model's names and value formats (comma strings)."""
        return dataclasses.asdict(self)


def group_norm32() -> nn.GroupNorm:
    """guided-diffusion ``normalization``: GroupNorm(32, eps 1e-5) computed in float32
    (openai/guided-diffusion@22e0df8:guided_diffusion/nn.py:17-19, 93-100).

    Its output is float32; callers cast back to the compute dtype."""
    return group_norm(32, 1e-5, jnp.float32)


def _upsample(x: Array) -> Array:
    return jnp.repeat(jnp.repeat(x, 2, axis=1), 2, axis=2)  # F.interpolate(scale_factor=2, mode="nearest")


def _avgpool(x: Array) -> Array:
    b, h, w, c = x.shape
    return x.reshape(b, h // 2, 2, w // 2, 2, c).mean(axis=(2, 4))  # AvgPool2d(2, 2)


class Downsample(nn.Module):
    """``Downsample(use_conv=True)``: 3x3 conv, stride 2, padding 1 (attribute ``op`` as in torch)."""

    channels: int
    dtype: Any = jnp.float32

    def setup(self):
        self.op = conv(self.channels, 3, self.dtype, stride=2)

    def __call__(self, x: Array) -> Array:
        return self.op(x)


class Upsample(nn.Module):
    """``Upsample(use_conv=True)``: nearest x2 then 3x3 conv (attribute ``conv``)."""

    channels: int
    dtype: Any = jnp.float32

    def setup(self):
        self.conv = conv(self.channels, 3, self.dtype)

    def __call__(self, x: Array) -> Array:
        return self.conv(_upsample(x))


class ResBlock(nn.Module):
    """guided-diffusion ``ResBlock`` (openai/guided-diffusion@22e0df8:guided_diffusion/unet.py:143-260):
    ``[B,H,W,channels] x [B,T] -> [B,H',W',out_channels]``.

    ``use_scale_shift_norm``: ``out_norm(h) * (1 + scale) + shift`` with ``(scale, shift)`` the two halves of
    ``emb_layers(emb)``; else ``h + emb_layers(emb)`` before ``out_layers``. ``up``/``down`` resample h after
    ``in_layers``' SiLU (before its conv) and x the same way (nearest / 2x2 average pool).
    """

    channels: int
    out_channels: int
    use_scale_shift_norm: bool = False
    up: bool = False
    down: bool = False
    dtype: Any = jnp.float32

    def setup(self):
        d = self.dtype
        self.in_layers = [group_norm32(), nn.silu, conv(self.out_channels, 3, d)]
        self.emb_layers = [nn.silu, dense(self.out_channels * (2 if self.use_scale_shift_norm else 1), d)]
        self.out_layers = [group_norm32(), nn.silu, None, conv(self.out_channels, 3, d)]  # [2] is Dropout
        if self.out_channels != self.channels:
            self.skip_connection = conv(self.out_channels, 1, d)

    def __call__(self, x: Array, emb: Array) -> Array:
        h = nn.silu(self.in_layers[0](x).astype(self.dtype))
        if self.up:
            h, x = _upsample(h), _upsample(x)
        elif self.down:
            h, x = _avgpool(h), _avgpool(x)
        h = self.in_layers[2](h)
        emb_out = self.emb_layers[1](nn.silu(emb)).astype(h.dtype)[:, None, None, :]
        if self.use_scale_shift_norm:
            scale, shift = jnp.split(emb_out, 2, axis=-1)
            h = self.out_layers[0](h).astype(h.dtype) * (1 + scale) + shift
        else:
            h = self.out_layers[0](h + emb_out).astype(h.dtype)
        h = self.out_layers[3](nn.silu(h))
        if self.out_channels != self.channels:
            x = self.skip_connection(x)
        return x + h


class AttentionBlock(nn.Module):
    """guided-diffusion ``AttentionBlock`` (openai/guided-diffusion@22e0df8:guided_diffusion/unet.py:259-306):
    ``[B,H,W,C] -> [B,H,W,C]``, ``x + proj_out(attn(qkv(norm(x))))``.

    ``qkv`` and ``proj_out`` are torch Conv1d(k=1) layers, here Dense over channels. Heads: ``num_heads``, or
    ``C // num_head_channels`` when that is not -1. Legacy order (``QKVAttentionLegacy``) splits heads first: the
    ``3C`` qkv channels are ``[head][q|k|v][d]``; the new order (``QKVAttention``) splits q, k, v first:
    ``[q|k|v][head][d]``. Both scale q and k by ``d^-1/4`` and output channels ``[head][d]``.
    """

    channels: int
    num_heads: int = 1
    num_head_channels: int = -1
    use_new_attention_order: bool = False
    dtype: Any = jnp.float32

    @property
    def heads(self) -> int:
        return self.num_heads if self.num_head_channels == -1 else self.channels // self.num_head_channels

    def setup(self):
        self.norm = group_norm32()
        self.qkv = dense(3 * self.channels, self.dtype)
        self.proj_out = dense(self.channels, self.dtype)

    def __call__(self, x: Array) -> Array:
        b, hgt, wid, c = x.shape
        n, d = self.heads, c // self.heads
        qkv = self.qkv(self.norm(x).astype(self.dtype).reshape(b, hgt * wid, c))
        if self.use_new_attention_order:
            qkv = qkv.reshape(b, hgt * wid, 3, n, d)
            q, k, v = qkv[:, :, 0], qkv[:, :, 1], qkv[:, :, 2]
        else:
            qkv = qkv.reshape(b, hgt * wid, n, 3, d)
            q, k, v = qkv[:, :, :, 0], qkv[:, :, :, 1], qkv[:, :, :, 2]
        scale = d ** -0.25
        w = jnp.einsum("btnd,bsnd->bnts", q * scale, k * scale)
        w = jax.nn.softmax(w.astype(jnp.float32), axis=-1).astype(v.dtype)
        a = jnp.einsum("bnts,bsnd->btnd", w, v).reshape(b, hgt * wid, c)
        return x + self.proj_out(a).reshape(b, hgt, wid, c)


class GuidedUNetModel(nn.Module):
    """guided-diffusion ``UNetModel`` (openai/guided-diffusion@22e0df8:guided_diffusion/unet.py:396-660) with the
    jaxhspace bottleneck API, NHWC.

    ``encode(x, t, y=None) -> Bottleneck(h, skips, temb)`` (h = ``middle_block`` output; temb includes the class
    embedding of class-conditional models, so ``decode`` needs no label), ``decode(h, skips, temb)`` and
    ``__call__(x, t, y=None, delta_h=None)`` return the full ``[B,H,W,out_channels]`` output (float32).

    Attributes:
      config: :class:`GuidedUNetConfig`.
      dtype: compute dtype (float32 default); params are float32, GroupNorm and softmax run in float32.
    """

    config: GuidedUNetConfig
    dtype: Any = jnp.float32

    @property
    def eps_channels(self) -> int:
        """Leading output channels that are ε (``jaxhspace.models.functional.eps_fn`` slices them)."""
        return self.config.eps_channels

    def setup(self):
        c, d = self.config, self.dtype
        mc, ted = c.num_channels, c.time_embed_dim
        res = dict(use_scale_shift_norm=c.use_scale_shift_norm, dtype=d)

        def attn(ch, heads):
            return AttentionBlock(ch, heads, c.num_head_channels, c.use_new_attention_order, dtype=d)

        self.time_embed = [dense(ted, d), nn.silu, dense(ted, d)]
        if c.class_cond:
            self.label_emb = nn.Embed(c.num_classes, ted, dtype=d, param_dtype=jnp.float32)

        mults = c.channel_mult_tuple
        ch = int(mults[0] * mc)
        input_blocks, chans, ds = [[conv(ch, 3, d)]], [ch], 1
        for level, mult in enumerate(mults):
            for _ in range(c.num_res_blocks):
                layers = [ResBlock(ch, int(mult * mc), **res)]
                ch = int(mult * mc)
                if ds in c.attention_ds:
                    layers.append(attn(ch, c.num_heads))
                input_blocks.append(layers)
                chans.append(ch)
            if level != len(mults) - 1:
                input_blocks.append([ResBlock(ch, ch, down=True, **res) if c.resblock_updown else Downsample(ch, d)])
                chans.append(ch)
                ds *= 2
        self.input_blocks = input_blocks
        self.middle_block = [ResBlock(ch, ch, **res), attn(ch, c.num_heads), ResBlock(ch, ch, **res)]

        output_blocks = []
        for level, mult in list(enumerate(mults))[::-1]:
            for i in range(c.num_res_blocks + 1):
                layers = [ResBlock(ch + chans.pop(), int(mc * mult), **res)]
                ch = int(mc * mult)
                if ds in c.attention_ds:
                    layers.append(attn(ch, c.heads_upsample))
                if level and i == c.num_res_blocks:
                    layers.append(ResBlock(ch, ch, up=True, **res) if c.resblock_updown else Upsample(ch, d))
                    ds //= 2
                output_blocks.append(layers)
        self.output_blocks = output_blocks
        self.out = [group_norm32(), nn.silu, conv(c.out_channels, 3, d)]

    # ------------------------------------------------------------------------------------------
    def hspace_shape(self, height: int, width: int) -> tuple[int, int, int]:
        """Shape ``(h, w, C_mid)`` of the h-space for an input of size ``height x width``."""
        f = 2 ** self.config.num_downsamples
        return height // f, width // f, self.config.block_out_channels[-1]

    @staticmethod
    def _run(layers, h: Array, emb: Array) -> Array:
        """``TimestepEmbedSequential``: ResBlocks get the embedding, other layers only h."""
        for layer in layers:
            h = layer(h, emb) if isinstance(layer, ResBlock) else layer(h)
        return h

    def _check_inputs(self, x: Array, t, y) -> tuple[Array, Array, Optional[Array]]:
        c = self.config
        x = jnp.asarray(x)
        if x.ndim != 4:
            raise ValueError(f"x must be 4-D [B, H, W, C] (NHWC), got shape {x.shape}")
        if not jnp.issubdtype(x.dtype, jnp.floating):
            raise ValueError(f"x must be a float array in [-1, 1], got dtype {x.dtype}")
        if x.shape[-1] != c.in_channels:
            hint = (" It looks like NCHW; jaxhspace uses NHWC: pass x.transpose(0, 2, 3, 1)."
                    if x.shape[1] == c.in_channels else "")
            raise ValueError(f"x must have {c.in_channels} channels in the last axis (NHWC), "
                             f"got shape {x.shape}.{hint}")
        f = 2 ** c.num_downsamples
        if x.shape[1] % f or x.shape[2] % f:
            raise ValueError(f"x spatial size {x.shape[1]}x{x.shape[2]} must be divisible by {f} "
                             f"(2**{c.num_downsamples} downsamples)")
        b = x.shape[0]
        t = jnp.asarray(t)
        if not (jnp.issubdtype(t.dtype, jnp.integer) or jnp.issubdtype(t.dtype, jnp.floating)):
            raise ValueError(f"t must be int or float, got dtype {t.dtype}")
        if t.ndim > 1 or (t.ndim == 1 and t.shape[0] not in (1, b)):
            raise ValueError(f"t must be a scalar or of shape [B]=[{b}], got shape {t.shape}")
        t = jnp.broadcast_to(t.reshape(-1) if t.ndim else t, (b,))
        if c.class_cond:
            if y is None:
                raise ValueError(f"this model is class-conditional ({c.num_classes} classes): pass labels y "
                                 f"(int scalar or [B]), e.g. model.apply(v, x, t, y=labels)")
            y = jnp.asarray(y)
            if not jnp.issubdtype(y.dtype, jnp.integer):
                raise ValueError(f"y must hold integer class labels, got dtype {y.dtype}")
            if y.ndim > 1 or (y.ndim == 1 and y.shape[0] not in (1, b)):
                raise ValueError(f"y must be a scalar or of shape [B]=[{b}], got shape {y.shape}")
            y = jnp.broadcast_to(y.reshape(-1) if y.ndim else y, (b,))
        elif y is not None:
            raise ValueError("this model is unconditional (class_cond=False): do not pass labels y")
        return x, t, y

    def encode(self, x: Array, t, y=None) -> Bottleneck:
        """Input blocks and middle block.

        Args:
          x: ``[B, H, W, in_channels]`` float, NHWC, in [-1, 1].
          t: ``[B]`` or scalar timesteps (int or float).
          y: class labels (int scalar or ``[B]``), required iff ``class_cond``.

        Returns:
          :class:`Bottleneck` ``(h, skips, temb)``: h ``[B, H/2^n, W/2^n, C_mid]`` (``middle_block`` output), skips
          (tuple of every input block's output, first block first), temb ``[B, 4 * num_channels]`` (time + class).
        """
        x, t, y = self._check_inputs(x, t, y)
        mc = self.config.num_channels
        # [cos, sin]: openai/guided-diffusion@22e0df8:guided_diffusion/nn.py:103-121
        emb = get_timestep_embedding(t, mc, flip_sin_to_cos=True, downscale_freq_shift=0)
        emb = self.time_embed[2](nn.silu(self.time_embed[0](emb.astype(self.dtype))))
        if self.config.class_cond:
            emb = emb + self.label_emb(y)
        h = x.astype(self.dtype)
        skips: tuple[Array, ...] = ()
        for layers in self.input_blocks:
            h = self._run(layers, h, emb)
            skips += (h,)
        h = self._run(self.middle_block, h, emb)
        return Bottleneck(h, skips, emb)

    def decode(self, h: Array, skips: tuple[Array, ...], temb: Array) -> Array:
        """Output blocks from the h-space.

        Args:
          h: ``[B, h, w, C_mid]``; skips, temb: as returned by :meth:`encode`.

        Returns:
          the full output ``[B, H, W, out_channels]`` float32 (ε = first :attr:`eps_channels` channels).
        """
        if len(skips) != len(self.output_blocks):
            raise ValueError(f"decode expects {len(self.output_blocks)} skip tensors (from encode), got {len(skips)}")
        for i, layers in enumerate(self.output_blocks):
            h = self._run(layers, jnp.concatenate([h, skips[-1 - i]], axis=-1), temb)
        h = self.out[2](nn.silu(self.out[0](h).astype(self.dtype)))
        return h.astype(jnp.float32)

    def __call__(self, x: Array, t, y=None, delta_h: Optional[Array] = None) -> Array:
        """Full model output ``[B, H, W, out_channels]`` for x ``[B, H, W, C]`` NHWC in [-1, 1], t ``[B]`` or scalar,
        labels ``y`` iff class-conditional; optional ``delta_h`` (broadcastable to h) is added to the
        ``middle_block`` output and decoded with the unedited skips."""
        h, skips, temb = self.encode(x, t, y)
        h = add_delta_h(h, delta_h)
        return self.decode(h, skips, temb)
