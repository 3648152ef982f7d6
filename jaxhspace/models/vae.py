"""diffusers ``AutoencoderKL`` and ``VQModel`` in Flax linen (NHWC): images <-> latents of latent diffusion.

Submodule names mirror diffusers' state-dict keys (``encoder.conv_in``, ``encoder.down_blocks.0.resnets.1.norm2``,
``encoder.mid_block.attentions.0.to_q``, ``quant_conv``, ``quantize.embedding``, ``post_quant_conv``,
``decoder.up_blocks.2.upsamplers.0.conv`` ...), so a checkpoint converts by renaming plus layout transposes
(:mod:`jaxhspace.checkpoints.vae`). The blocks are those of :mod:`jaxhspace.models.blocks` run without a time
embedding (diffusers' ``temb_channels=None``): ``DownEncoderBlock2D`` is a :class:`~jaxhspace.models.blocks.DownBlock2D`
whose downsampler pads (0, 1, 0, 1) before a stride-2 conv (diffusers' ``Encoder`` passes ``downsample_padding=0``),
the mid block is :class:`~jaxhspace.models.blocks.UNetMidBlock2D` with one attention head over all channels, and
every resnet uses ``eps=1e-6`` (hard-coded in diffusers' ``Encoder``/``Decoder``, whatever the config says).

Methods (``vae.apply({"params": p}, x, method=vae.encode)``):

* ``AutoencoderKL.encode(x [B,H,W,C_in]) -> DiagonalGaussian(mean, logvar)``, each ``[B,H/f,W/f,latent_channels]``
  (``logvar`` clamped to [-30, 20] as diffusers' ``DiagonalGaussianDistribution``);
  ``AutoencoderKL.decode(z) -> [B,H,W,C_out]``.
* ``VQModel.encode(x) -> h`` (pre-quantisation latents, ``[B,H/f,W/f,vq_embed_dim]``, diffusers' ``VQModel.encode``);
  ``VQModel.decode(h, force_not_quantize=False)`` quantises to the nearest codebook vector first (diffusers'
  semantics), with a straight-through gradient (``h + stop_gradient(q - h)``) as diffusers' ``VectorQuantizer``.

``f = 2 ** (len(block_out_channels) - 1)``. Scaling by ``scaling_factor`` is the pipeline's job
(:mod:`jaxhspace.checkpoints.pipeline`), as in diffusers.
"""
from __future__ import annotations

import dataclasses
import warnings
from typing import Any, NamedTuple, Optional, Union

import flax.linen as nn
import jax
import jax.numpy as jnp

from jaxhspace.models.blocks import (
    SUPPORTED_ACTIVATIONS, DownBlock2D, ResnetBlock2D, UNetMidBlock2D, Upsample2D, conv, group_norm)

Array = jnp.ndarray

VAE_EPS = 1e-6  # diffusers' Encoder/Decoder hard-code resnet_eps=1e-6 and GroupNorm eps=1e-6
LOGVAR_RANGE = (-30.0, 20.0)  # diffusers' DiagonalGaussianDistribution clamps logvar to this range


class DiagonalGaussian(NamedTuple):
    """The KL autoencoder's latent distribution (diffusers' ``DiagonalGaussianDistribution``), NHWC.

    ``mean``, ``logvar``: ``[B, h, w, latent_channels]`` (``logvar`` already clamped to [-30, 20]).
    """

    mean: Array
    logvar: Array

    @property
    def std(self) -> Array:
        return jnp.exp(0.5 * self.logvar)

    def mode(self) -> Array:
        """The mean (diffusers' ``latent_dist.mode()``)."""
        return self.mean

    def sample(self, key: jax.Array) -> Array:
        """``mean + std * N(0, I)`` with a JAX key (``[B, h, w, latent_channels]``)."""
        return self.mean + self.std * jax.random.normal(key, self.mean.shape, self.mean.dtype)


# ----------------------------------------------------------------------------------------------
# Configs
# ----------------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class _AutoencoderConfigBase:
    """Fields shared by diffusers' ``AutoencoderKL`` and ``VQModel`` configs (diffusers' names)."""

    in_channels: int = 3
    out_channels: int = 3
    down_block_types: tuple[str, ...] = ("DownEncoderBlock2D",)
    up_block_types: tuple[str, ...] = ("UpDecoderBlock2D",)
    block_out_channels: tuple[int, ...] = (64,)
    layers_per_block: int = 1
    act_fn: str = "silu"
    norm_num_groups: int = 32
    sample_size: Optional[Union[int, tuple[int, int]]] = 32
    scaling_factor: float = 0.18215
    mid_block_add_attention: bool = True
    force_upcast: bool = True

    _class_name = "?"

    def __post_init__(self):
        for name in ("down_block_types", "up_block_types", "block_out_channels"):
            v = getattr(self, name)
            if not isinstance(v, (list, tuple)):
                raise ValueError(f"{self._class_name}.{name}={v!r} must be a list")
            object.__setattr__(self, name, tuple(v))
        if isinstance(self.sample_size, list):
            object.__setattr__(self, "sample_size", tuple(self.sample_size))
        self._validate()

    def _bad(self, field: str, supported: str):
        raise ValueError(f"{self._class_name} config {field}={getattr(self, field)!r} is not supported; "
                         f"supported: {supported}")

    def _validate(self):
        n = len(self.block_out_channels)
        if any(b != "DownEncoderBlock2D" for b in self.down_block_types):
            self._bad("down_block_types", "a list of 'DownEncoderBlock2D'")
        if any(b != "UpDecoderBlock2D" for b in self.up_block_types):
            self._bad("up_block_types", "a list of 'UpDecoderBlock2D'")
        if n == 0 or len(self.down_block_types) != n or len(self.up_block_types) != n:
            raise ValueError(f"{self._class_name} config: block_out_channels ({n}), down_block_types "
                             f"({len(self.down_block_types)}) and up_block_types ({len(self.up_block_types)}) must "
                             "have the same non-zero length")
        for name in ("in_channels", "out_channels", "layers_per_block"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                self._bad(name, "an int >= 1")
        if self.act_fn not in SUPPORTED_ACTIVATIONS:
            self._bad("act_fn", str(SUPPORTED_ACTIVATIONS))
        g = self.norm_num_groups
        if isinstance(g, bool) or not isinstance(g, int) or g < 1 or any(c % g for c in self.block_out_channels):
            self._bad("norm_num_groups", f"an int dividing every entry of block_out_channels {self.block_out_channels}")
        if not isinstance(self.scaling_factor, (int, float)) or not self.scaling_factor > 0:
            self._bad("scaling_factor", "a float > 0")

    @classmethod
    def from_dict(cls, d: dict):
        """Build from a diffusers ``config.json`` dict; ``_``-prefixed keys are ignored, unknown keys warned about."""
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in d if not k.startswith("_") and k not in names)
        if unknown:
            warnings.warn(f"{cls._class_name} config: ignoring unknown keys {unknown}", stacklevel=2)
        return cls(**{k: v for k, v in d.items() if k in names})

    def to_dict(self) -> dict:
        """JSON-ready dict with diffusers' field names (tuples become lists)."""
        return {k: (list(v) if isinstance(v, tuple) else v) for k, v in dataclasses.asdict(self).items()}

    @property
    def downsample_factor(self) -> int:
        """Spatial factor ``f`` between image and latent (``2 ** (len(block_out_channels) - 1)``)."""
        return 2 ** (len(self.block_out_channels) - 1)


@dataclasses.dataclass(frozen=True)
class AutoencoderKLConfig(_AutoencoderConfigBase):
    """diffusers ``AutoencoderKL`` config (same names and defaults). ``shift_factor``, ``latents_mean`` and
    ``latents_std`` (SD3/Flux/SDXL-refiner style normalisation) must be None."""

    latent_channels: int = 4
    shift_factor: Optional[float] = None
    latents_mean: Optional[tuple[float, ...]] = None
    latents_std: Optional[tuple[float, ...]] = None
    use_quant_conv: bool = True
    use_post_quant_conv: bool = True

    _class_name = "AutoencoderKL"

    def _validate(self):
        super()._validate()
        for name in ("shift_factor", "latents_mean", "latents_std"):
            if getattr(self, name) is not None:
                self._bad(name, "None (only scaling_factor normalisation, as in SD-1.x/2.x)")
        lc = self.latent_channels
        if isinstance(lc, bool) or not isinstance(lc, int) or lc < 1:
            self._bad("latent_channels", "an int >= 1")


@dataclasses.dataclass(frozen=True)
class VQModelConfig(_AutoencoderConfigBase):
    """diffusers ``VQModel`` config (same names and defaults). ``norm_type`` must be ``'group'`` (MoVQ's
    ``'spatial'`` is not supported) and ``lookup_from_codebook`` False."""

    latent_channels: int = 3
    num_vq_embeddings: int = 256
    vq_embed_dim: Optional[int] = None
    norm_type: str = "group"
    lookup_from_codebook: bool = False
    force_upcast: bool = False

    _class_name = "VQModel"

    def _validate(self):
        super()._validate()
        if self.norm_type != "group":
            self._bad("norm_type", "'group' (the 'spatial' norm of MoVQ decoders is not implemented)")
        if self.lookup_from_codebook:
            self._bad("lookup_from_codebook", "False (decode takes latents, not codebook indices)")
        for name in ("latent_channels", "num_vq_embeddings"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                self._bad(name, "an int >= 1")
        if self.vq_embed_dim is not None and (not isinstance(self.vq_embed_dim, int) or self.vq_embed_dim < 1):
            self._bad("vq_embed_dim", "None (= latent_channels) or an int >= 1")

    @property
    def embed_dim(self) -> int:
        """Codebook vector width (``vq_embed_dim`` or ``latent_channels``)."""
        return self.vq_embed_dim if self.vq_embed_dim is not None else self.latent_channels


# ----------------------------------------------------------------------------------------------
# Encoder / decoder
# ----------------------------------------------------------------------------------------------
class UpDecoderBlock2D(nn.Module):
    """diffusers ``UpDecoderBlock2D`` without time embedding: ``num_layers`` resnets then an optional
    nearest-x2 + conv upsampler. ``[B,H,W,in] -> [B,H',W',out]`` (no skip connections)."""

    in_channels: int
    out_channels: int
    num_layers: int
    add_upsample: bool
    groups: int = 32
    eps: float = VAE_EPS
    act_fn: str = "silu"
    dtype: Any = jnp.float32

    def setup(self):
        self.resnets = [
            ResnetBlock2D(self.in_channels if i == 0 else self.out_channels, self.out_channels, self.groups, self.eps,
                          self.act_fn, dtype=self.dtype)
            for i in range(self.num_layers)
        ]
        if self.add_upsample:
            self.upsamplers = [Upsample2D(self.out_channels, dtype=self.dtype)]

    def __call__(self, x: Array) -> Array:
        for resnet in self.resnets:
            x = resnet(x, None)
        if self.add_upsample:
            x = self.upsamplers[0](x)
        return x


class Encoder(nn.Module):
    """diffusers ``vae.Encoder``: ``[B,H,W,in_channels] -> [B,H/f,W/f,out_channels]`` (``out_channels`` is already
    doubled for the KL autoencoder's mean/logvar)."""

    config: Any  # AutoencoderKLConfig | VQModelConfig
    out_channels: int
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        boc = c.block_out_channels
        common = dict(groups=c.norm_num_groups, eps=VAE_EPS, act_fn=c.act_fn, dtype=self.dtype)
        self.conv_in = conv(boc[0], 3, self.dtype)
        self.down_blocks = [
            DownBlock2D(in_channels=boc[max(i - 1, 0)], out_channels=boc[i], num_layers=c.layers_per_block,
                        add_downsample=i < len(boc) - 1, downsample_padding=0, **common)
            for i in range(len(boc))
        ]
        # one head over all channels (diffusers passes attention_head_dim=block_out_channels[-1])
        self.mid_block = UNetMidBlock2D(boc[-1], add_attention=c.mid_block_add_attention, attention_head_dim=boc[-1],
                                        attn_groups=c.norm_num_groups, **common)
        self.conv_norm_out = group_norm(c.norm_num_groups, VAE_EPS, self.dtype)
        self.conv_out = conv(self.out_channels, 3, self.dtype)

    def __call__(self, x: Array) -> Array:
        h = self.conv_in(x)
        for block in self.down_blocks:
            h, _ = block(h, None)
        h = self.mid_block(h, None)
        return self.conv_out(nn.silu(self.conv_norm_out(h)))  # diffusers' conv_act is always SiLU


class Decoder(nn.Module):
    """diffusers ``vae.Decoder`` (``norm_type='group'``): ``[B,h,w,latent_channels] -> [B,h*f,w*f,out_channels]``."""

    config: Any
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        rev = tuple(reversed(c.block_out_channels))
        common = dict(groups=c.norm_num_groups, eps=VAE_EPS, act_fn=c.act_fn, dtype=self.dtype)
        self.conv_in = conv(rev[0], 3, self.dtype)
        self.mid_block = UNetMidBlock2D(rev[0], add_attention=c.mid_block_add_attention, attention_head_dim=rev[0],
                                        attn_groups=c.norm_num_groups, **common)
        self.up_blocks = [
            UpDecoderBlock2D(rev[max(i - 1, 0)], rev[i], c.layers_per_block + 1, add_upsample=i < len(rev) - 1,
                             **common)
            for i in range(len(rev))
        ]
        self.conv_norm_out = group_norm(c.norm_num_groups, VAE_EPS, self.dtype)
        self.conv_out = conv(c.out_channels, 3, self.dtype)

    def __call__(self, z: Array) -> Array:
        h = self.conv_in(z)
        h = self.mid_block(h, None)
        for block in self.up_blocks:
            h = block(h)
        return self.conv_out(nn.silu(self.conv_norm_out(h)))


def _check_nhwc(x, channels: int, factor: int, what: str) -> Array:
    x = jnp.asarray(x)
    if x.ndim != 4:
        raise ValueError(f"{what} must be 4-D [B, H, W, C] (NHWC), got shape {x.shape}")
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"{what} must be a float array, got dtype {x.dtype}")
    if x.shape[-1] != channels:
        hint = ""
        if x.shape[1] == channels:
            hint = " It looks like NCHW (channels first); jaxhspace uses NHWC: pass x.transpose(0, 2, 3, 1)."
        raise ValueError(f"{what} must have {channels} channels in the last axis (NHWC), got shape {x.shape}.{hint}")
    if x.shape[1] % factor or x.shape[2] % factor:
        raise ValueError(f"{what} spatial size {x.shape[1]}x{x.shape[2]} must be divisible by {factor}")
    return x


# ----------------------------------------------------------------------------------------------
# Autoencoders
# ----------------------------------------------------------------------------------------------
class AutoencoderKL(nn.Module):
    """diffusers ``AutoencoderKL`` (SD-1.x/2.x VAE), NHWC.

    Attributes:
      config: :class:`AutoencoderKLConfig`.
      dtype: compute dtype; params float32, outputs float32.
    """

    config: AutoencoderKLConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        self.encoder = Encoder(c, 2 * c.latent_channels, dtype=self.dtype)
        self.decoder = Decoder(c, dtype=self.dtype)
        if c.use_quant_conv:
            self.quant_conv = conv(2 * c.latent_channels, 1, self.dtype)
        if c.use_post_quant_conv:
            self.post_quant_conv = conv(c.latent_channels, 1, self.dtype)

    def encode(self, x: Array) -> DiagonalGaussian:
        """Image ``[B, H, W, in_channels]`` in [-1, 1] -> :class:`DiagonalGaussian` with ``mean`` and ``logvar``
        ``[B, H/f, W/f, latent_channels]`` (unscaled: multiply by ``scaling_factor`` for the diffusion model)."""
        c = self.config
        x = _check_nhwc(x, c.in_channels, c.downsample_factor, "AutoencoderKL.encode: x")
        moments = self.encoder(x.astype(self.dtype))
        if c.use_quant_conv:
            moments = self.quant_conv(moments)
        moments = moments.astype(jnp.float32)
        mean, logvar = jnp.split(moments, 2, axis=-1)
        return DiagonalGaussian(mean, jnp.clip(logvar, *LOGVAR_RANGE))

    def decode(self, z: Array) -> Array:
        """Unscaled latents ``[B, h, w, latent_channels]`` -> image ``[B, h*f, w*f, out_channels]`` float32
        (not clipped; diffusers' image processor clamps to [-1, 1] afterwards)."""
        c = self.config
        z = _check_nhwc(z, c.latent_channels, 1, "AutoencoderKL.decode: z").astype(self.dtype)
        if c.use_post_quant_conv:
            z = self.post_quant_conv(z)
        return self.decoder(z).astype(jnp.float32)

    def __call__(self, x: Array) -> Array:
        """Reconstruction ``decode(encode(x).mean)`` (diffusers' ``forward`` with ``sample_posterior=False``)."""
        return self.decode(self.encode(x).mean)


class VectorQuantizer(nn.Module):
    """diffusers ``VectorQuantizer`` (``remap=None``, ``legacy=True``): nearest codebook vector per position.

    ``[B, h, w, D] -> (z_q [B, h, w, D], indices [B, h, w] int32)``; ``z_q = z + stop_gradient(e[idx] - z)``
    (straight-through, as diffusers), so JVPs and gradients pass through the quantiser as the identity.
    """

    num_embeddings: int
    embed_dim: int

    def setup(self):
        n = self.num_embeddings
        self.embedding = nn.Embed(n, self.embed_dim, embedding_init=nn.initializers.uniform(2.0 / n),
                                  param_dtype=jnp.float32)

    def __call__(self, z: Array) -> tuple[Array, Array]:
        e = self.embedding.embedding
        zf = z.astype(jnp.float32).reshape(-1, self.embed_dim)
        # ||z - e||^2 = ||z||^2 - 2 z.e + ||e||^2 (diffusers: argmin of torch.cdist, same minimiser)
        d = (jnp.sum(zf ** 2, axis=1, keepdims=True) - 2.0 * jnp.dot(zf, e.T, precision=jax.lax.Precision.HIGHEST)
             + jnp.sum(e ** 2, axis=1)[None, :])
        idx = jnp.argmin(d, axis=1).astype(jnp.int32)
        zq = jnp.take(e, idx, axis=0).reshape(z.shape).astype(z.dtype)
        return z + jax.lax.stop_gradient(zq - z), idx.reshape(z.shape[:-1])


class VQModel(nn.Module):
    """diffusers ``VQModel`` (``norm_type='group'``, e.g. the VQ-f4 of ``CompVis/ldm-celebahq-256``), NHWC.

    Attributes:
      config: :class:`VQModelConfig`.
      dtype: compute dtype; params float32, outputs float32.
    """

    config: VQModelConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        self.encoder = Encoder(c, c.latent_channels, dtype=self.dtype)
        self.quant_conv = conv(c.embed_dim, 1, self.dtype)
        self.quantize = VectorQuantizer(c.num_vq_embeddings, c.embed_dim)
        self.post_quant_conv = conv(c.latent_channels, 1, self.dtype)
        self.decoder = Decoder(c, dtype=self.dtype)

    def encode(self, x: Array) -> Array:
        """Image ``[B, H, W, in_channels]`` in [-1, 1] -> pre-quantisation latents ``[B, H/f, W/f, embed_dim]``
        float32 (diffusers' ``VQModel.encode(x).latents``)."""
        c = self.config
        x = _check_nhwc(x, c.in_channels, c.downsample_factor, "VQModel.encode: x")
        return self.quant_conv(self.encoder(x.astype(self.dtype))).astype(jnp.float32)

    def quantize_latents(self, h: Array) -> tuple[Array, Array]:
        """``h [B, h, w, embed_dim]`` -> ``(z_q [B, h, w, embed_dim], codebook indices [B, h, w] int32)``."""
        h = _check_nhwc(h, self.config.embed_dim, 1, "VQModel.quantize_latents: h")
        zq, idx = self.quantize(h.astype(jnp.float32))
        return zq, idx

    def decode(self, h: Array, force_not_quantize: bool = False) -> Array:
        """Latents ``[B, h, w, embed_dim]`` -> image ``[B, h*f, w*f, out_channels]`` float32.

        Quantises ``h`` first unless ``force_not_quantize`` (diffusers' ``VQModel.decode`` semantics).
        """
        h = _check_nhwc(h, self.config.embed_dim, 1, "VQModel.decode: h").astype(jnp.float32)
        quant = h if force_not_quantize else self.quantize(h)[0]
        return self.decoder(self.post_quant_conv(quant.astype(self.dtype))).astype(jnp.float32)

    def __call__(self, x: Array) -> Array:
        """Reconstruction ``decode(encode(x))`` (diffusers' ``VQModel.forward``)."""
        return self.decode(self.encode(x))


def init_vae_params(vae: nn.Module, rng: jax.Array, image_size: Optional[int] = None) -> dict:
    """Random params (Flax initialisers) for an :class:`AutoencoderKL` or :class:`VQModel`."""
    s = image_size or vae.config.downsample_factor
    x = jnp.zeros((1, s, s, vae.config.in_channels), jnp.float32)
    return vae.init(rng, x)["params"]


def vae_param_shapes(vae: nn.Module) -> dict:
    """Param tree of ``jax.ShapeDtypeStruct`` leaves (no allocation)."""
    return jax.eval_shape(lambda r: init_vae_params(vae, r), jax.random.PRNGKey(0))


__all__ = ["AutoencoderKL", "AutoencoderKLConfig", "VQModel", "VQModelConfig", "DiagonalGaussian", "Encoder",
           "Decoder", "UpDecoderBlock2D", "VectorQuantizer", "init_vae_params", "vae_param_shapes"]
