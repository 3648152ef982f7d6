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

from jaxhspace.models.bottleneck import Bottleneck, add_delta_h
from jaxhspace.models.blocks import (
    SUPPORTED_ACTIVATIONS, AttnDownBlock2D, AttnUpBlock2D, DownBlock2D, UNetMidBlock2D, UpBlock2D, conv, group_norm)
from jaxhspace.models.embeddings import GaussianFourierProjection, TimestepEmbedding, Timesteps
from jaxhspace.models.skip_blocks import (
    SKIP_CHANNELS, AttnSkipDownBlock2D, AttnSkipUpBlock2D, SkipDownBlock2D, SkipUpBlock2D, skip_groups)

Array = jnp.ndarray

DOWN_BLOCKS: dict[str, type[nn.Module]] = {"DownBlock2D": DownBlock2D, "AttnDownBlock2D": AttnDownBlock2D}
UP_BLOCKS: dict[str, type[nn.Module]] = {"UpBlock2D": UpBlock2D, "AttnUpBlock2D": AttnUpBlock2D}
# NCSN++ (google/ncsnpp-*): FIR resampling plus an image-space skip signal; see jaxhspace.models.skip_blocks.
SKIP_DOWN_BLOCKS = {"SkipDownBlock2D": SkipDownBlock2D, "AttnSkipDownBlock2D": AttnSkipDownBlock2D}
SKIP_UP_BLOCKS = {"SkipUpBlock2D": SkipUpBlock2D, "AttnSkipUpBlock2D": AttnSkipUpBlock2D}
DOWN_BLOCKS.update(SKIP_DOWN_BLOCKS)
UP_BLOCKS.update(SKIP_UP_BLOCKS)


@dataclasses.dataclass(frozen=True)
class UNetConfig:
    """diffusers ``UNet2DModel`` config (same field names and defaults as diffusers).

    Supported: the DDPM-style subset (positional time embedding, no class embedding,
    ``DownBlock2D``/``AttnDownBlock2D`` and ``UpBlock2D``/``AttnUpBlock2D``, conv down/upsampling,
    ``UNetMidBlock2D``) and NCSN++ as diffusers stores it (``google/ncsnpp-*``: ``time_embedding_type="fourier"``,
    all blocks ``SkipDownBlock2D``/``AttnSkipDownBlock2D`` and ``SkipUpBlock2D``/``AttnSkipUpBlock2D``,
    ``norm_num_groups=None`` meaning ``min(channels // 4, 32)``). Other values raise a ValueError naming the field.
    ``dropout`` is accepted but inference-only (no dropout is applied).
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

        if self.time_embedding_type not in ("positional", "fourier"):
            bad("time_embedding_type", "'positional', 'fourier' (NCSN++: t is the noise level sigma > 0)")
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
        if self.uses_skip_blocks:
            self._validate_skip_blocks()
        elif self.norm_num_groups is None:
            bad("norm_num_groups", "an int (None only with the NCSN++ Skip*Block2D blocks)")
        if self.norm_num_groups is not None and (not isinstance(self.norm_num_groups, int)
                                                 or any(c % self.norm_num_groups for c in self.block_out_channels)):
            bad("norm_num_groups", f"an int dividing every entry of block_out_channels {self.block_out_channels}"
                                   + (" or None" if self.uses_skip_blocks else ""))
        if self.attention_head_dim is not None and not (isinstance(self.attention_head_dim, int)
                                                        and self.attention_head_dim > 0):
            bad("attention_head_dim", "None (one head) or a positive int")
        if not isinstance(self.downsample_padding, int) or self.downsample_padding < 0:
            bad("downsample_padding", "an int >= 0 (0 = diffusers' asymmetric (0,1) pad)")

    @property
    def uses_skip_blocks(self) -> bool:
        """True for NCSN++ configs (any ``Skip*Block2D``; validation requires all blocks to be skip blocks)."""
        return any(b in SKIP_DOWN_BLOCKS for b in self.down_block_types) or any(
            b in SKIP_UP_BLOCKS for b in self.up_block_types)

    def _validate_skip_blocks(self):
        """The constraints diffusers' skip blocks impose (they fail later, inside torch, otherwise)."""
        kinds = (("down_block_types", SKIP_DOWN_BLOCKS), ("up_block_types", SKIP_UP_BLOCKS))
        n_skip = {f: sum(b in skip for b in getattr(self, f)) for f, skip in kinds}
        # name a field that mixes skip and plain blocks, else the one without skip blocks
        order = sorted(kinds, key=lambda fk: (n_skip[fk[0]] in (0, len(getattr(self, fk[0]))), n_skip[fk[0]] > 0))
        for field, skip in order:
            if any(b not in skip for b in getattr(self, field)):
                raise ValueError(
                    f"UNetConfig.{field}={list(getattr(self, field))!r} is not supported with skip blocks: "
                    f"Skip*Block2D blocks carry an image-space skip signal through every block, so all down/up blocks "
                    f"must be skip blocks ({tuple(skip)}), or none")
        if self.in_channels != SKIP_CHANNELS or self.out_channels != SKIP_CHANNELS:
            raise ValueError(f"UNetConfig: skip blocks need in_channels = out_channels = {SKIP_CHANNELS} (diffusers "
                             f"hard-codes the skip convs' width), got {self.in_channels} / {self.out_channels}")
        boc, n = self.block_out_channels, len(self.block_out_channels)
        norms = []  # (where, channels, groups) of every GroupNorm in the skip blocks
        for i, kind in enumerate(self.down_block_types):
            cin = boc[max(i - 1, 0)]
            norms.append((f"down_blocks.{i}.resnets.0.norm1", cin, skip_groups(cin)))
            norms.append((f"down_blocks.{i}", boc[i], 32 if kind.startswith("Attn") else skip_groups(boc[i])))
        rev = tuple(reversed(boc))
        for i, kind in enumerate(self.up_block_types):
            block = SKIP_UP_BLOCKS[kind](rev[min(i + 1, n - 1)], rev[i - 1] if i else rev[0], rev[i],
                                         self.layers_per_block + 1, i < n - 1)
            for j in range(self.layers_per_block + 1):
                norms.append((f"up_blocks.{i}.resnets.{j}.norm1", sum(block.resnet_channels(j)),
                              block.resnet_groups(j)))
            norms.append((f"up_blocks.{i}", rev[i], 32 if kind.startswith("Attn") else skip_groups(rev[i])))
        bad = [f"{where}: {c} channels / {g} groups" for where, c, g in norms if g < 1 or c % g]
        if bad:
            raise ValueError(f"UNetConfig: these skip-block GroupNorms do not divide their channels "
                             f"(diffusers uses min(C // 4, 32) groups, 32 next to attention): {bad[:8]}; "
                             "use block_out_channels that are multiples of 32")

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
    """diffusers ``UNet2DModel`` (DDPM subset and NCSN++), NHWC.

    For NCSN++ (``time_embedding_type="fourier"``) ``t`` is the noise level σ and the output is the score-like
    ``model(x, σ)`` that diffusers' ``ScoreSdeVePipeline`` consumes (ε = −σ·output; see
    :mod:`jaxhspace.diffusion.ve_sde`).

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
        if c.time_embedding_type == "fourier":
            self.time_proj = GaussianFourierProjection(boc[0], scale=16)  # as diffusers' UNet2DModel builds it
        else:
            self.time_proj = Timesteps(boc[0], c.flip_sin_to_cos, c.freq_shift)
        self.time_embedding = TimestepEmbedding(c.time_embed_dim, dtype=self.dtype)

        down_blocks, ch = [], boc[0]
        skip_common = dict(eps=c.norm_eps, act_fn=c.act_fn, time_embedding_norm=c.resnet_time_scale_shift,
                           dtype=self.dtype)  # skip blocks size their GroupNorms themselves
        for i, kind in enumerate(c.down_block_types):
            kw = dict(attention_head_dim=c.attention_head_dim) if kind.startswith("Attn") else {}
            if kind in SKIP_DOWN_BLOCKS:
                down_blocks.append(SKIP_DOWN_BLOCKS[kind](
                    in_channels=ch, out_channels=boc[i], num_layers=c.layers_per_block,
                    add_downsample=i < len(boc) - 1, **kw, **skip_common))
                ch = boc[i]
                continue
            down_blocks.append(DOWN_BLOCKS[kind](
                in_channels=ch, out_channels=boc[i], num_layers=c.layers_per_block,
                add_downsample=i < len(boc) - 1, downsample_padding=c.downsample_padding, **kw, **common))
            ch = boc[i]
        self.down_blocks = down_blocks

        # norm_num_groups=None (NCSN++): diffusers' mid block and conv_norm_out use min(C // 4, 32) groups
        mid_groups = c.norm_num_groups if c.norm_num_groups is not None else skip_groups(boc[-1])
        attn_groups = c.attn_norm_num_groups
        if attn_groups is None and c.resnet_time_scale_shift == "default":
            attn_groups = mid_groups
        self.mid_block = UNetMidBlock2D(
            boc[-1], add_attention=c.add_attention, attention_head_dim=c.attention_head_dim,
            attn_groups=attn_groups, output_scale_factor=c.mid_block_scale_factor, **{**common, "groups": mid_groups})

        rev = tuple(reversed(boc))
        up_blocks, prev = [], rev[0]
        for i, kind in enumerate(c.up_block_types):
            kw = dict(attention_head_dim=c.attention_head_dim) if kind.startswith("Attn") else {}
            if kind in SKIP_UP_BLOCKS:
                up_blocks.append(SKIP_UP_BLOCKS[kind](
                    in_channels=rev[min(i + 1, len(boc) - 1)], prev_output_channel=prev, out_channels=rev[i],
                    num_layers=c.layers_per_block + 1, add_upsample=i < len(boc) - 1, **kw, **skip_common))
                prev = rev[i]
                continue
            up_blocks.append(UP_BLOCKS[kind](
                in_channels=rev[min(i + 1, len(boc) - 1)], prev_output_channel=prev, out_channels=rev[i],
                num_layers=c.layers_per_block + 1, add_upsample=i < len(boc) - 1, **kw, **common))
            prev = rev[i]
        self.up_blocks = up_blocks

        out_groups = c.norm_num_groups if c.norm_num_groups is not None else skip_groups(boc[0])
        self.conv_norm_out = group_norm(out_groups, c.norm_eps, self.dtype)
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
          t: ``[B]`` or scalar timesteps (int or float); for ``time_embedding_type="fourier"`` (NCSN++) the noise
            level σ > 0 itself (VE-SDE, see :mod:`jaxhspace.diffusion.ve_sde`).

        Returns:
          :class:`Bottleneck` ``(h, skips, temb)``: h ``[B, H/2^n, W/2^n, C_mid]`` (mid-block output), skips (tuple of
          NHWC residual tensors, conv_in output first), temb ``[B, time_embed_dim]``. For ``"fourier"`` configs the
          last element of skips is σ as ``[B, 1, 1, 1]`` float32: diffusers divides the output by it, so
          :meth:`decode` needs it. (The skip blocks' down-path image signal is not needed: diffusers restarts
          the up path's skip signal from zero.)
        """
        x, t = self._check_inputs(x, t)
        if self.config.center_input_sample:
            x = 2 * x - 1.0
        temb = self.time_embedding(self.time_proj(t).astype(self.dtype))
        skip_sample = x  # NCSN++ image-space skip signal (after centering, as in diffusers)
        h = self.conv_in(x)
        skips: tuple[Array, ...] = (h,)
        for block in self.down_blocks:
            if isinstance(block, SkipDownBlock2D):
                h, res, skip_sample = block(h, temb, skip_sample)
            else:
                h, res = block(h, temb)
            skips += res
        h = self.mid_block(h, temb)
        if self.config.time_embedding_type == "fourier":
            skips += (t.astype(jnp.float32).reshape(-1, 1, 1, 1),)
        return Bottleneck(h, skips, temb)

    def decode(self, h: Array, skips: tuple[Array, ...], temb: Array) -> Array:
        """Up path from the h-space.

        Args:
          h: ``[B, h, w, C_mid]``; skips, temb: as returned by :meth:`encode`.

        Returns:
          eps ``[B, H, W, out_channels]`` float32.

        Raises:
          ValueError (at trace time) naming the expected and given shapes if ``skips`` / ``temb`` do not match
          what :meth:`encode` returns for an image of ``h``'s size.
        """
        c = self.config
        fourier = c.time_embedding_type == "fourier"
        n_skips = 1 + len(c.block_out_channels) * c.layers_per_block + c.num_downsamples + int(fourier)
        if len(skips) != n_skips:
            raise ValueError(f"decode expects {n_skips} skip tensors (from encode), got {len(skips)}")
        self._check_decode_shapes(h, skips, temb)
        if fourier:
            skips, sigma = skips[:-1], skips[-1]
        per_block = c.layers_per_block + 1
        skip_sample = None
        for i, block in enumerate(self.up_blocks):
            res = skips[len(skips) - per_block * (i + 1): len(skips) - per_block * i]
            if isinstance(block, SkipUpBlock2D):
                h, skip_sample = block(h, res, temb, skip_sample)
            else:
                h = block(h, res, temb)
        h = self.conv_out(nn.silu(self.conv_norm_out(h)))  # diffusers' conv_act is always SiLU
        if skip_sample is not None:
            h = h + skip_sample
        h = h.astype(jnp.float32)
        if fourier:
            h = h / sigma  # diffusers UNet2DModel.forward: sample / timesteps for "fourier"
        return h

    def _check_decode_shapes(self, h: Array, skips: tuple[Array, ...], temb: Array) -> None:
        """Static shape check of :meth:`decode`'s inputs against what :meth:`encode` returns for an image of
        ``h``'s size (trace-time only; costs nothing at run time). Raises a ValueError naming the expected and given
        shapes."""
        c = self.config
        if jnp.ndim(h) != 4 or h.shape[-1] != c.block_out_channels[-1]:
            raise ValueError(f"decode: h must be [B, h, w, {c.block_out_channels[-1]}] (the mid-block output), got "
                             f"shape {tuple(jnp.shape(h))}")
        b, f = h.shape[0], 2 ** c.num_downsamples
        size = (h.shape[1] * f, h.shape[2] * f)
        expected = [(b, size[0], size[1], c.block_out_channels[0])]  # conv_in
        for i, ch in enumerate(c.block_out_channels):
            res = (size[0] // 2 ** i, size[1] // 2 ** i)
            expected += [(b, res[0], res[1], ch)] * c.layers_per_block
            if i < len(c.block_out_channels) - 1:
                expected.append((b, res[0] // 2, res[1] // 2, ch))  # the downsampler's output
        if c.time_embedding_type == "fourier":
            expected.append((b, 1, 1, 1))  # σ
        bad = [f"skips[{i}]: expected {e}, got {tuple(jnp.shape(s))}" for i, (e, s) in enumerate(zip(expected, skips))
               if tuple(jnp.shape(s)) != e]
        if bad:
            raise ValueError(f"decode: skip shapes do not match h of shape {tuple(h.shape)} (an image of "
                             f"{size[0]}x{size[1]}): {'; '.join(bad[:6])}{' ...' if len(bad) > 6 else ''}. Pass the "
                             "skips and temb that encode returned for the same x (same batch and image size).")
        if jnp.ndim(temb) != 2 or temb.shape[1] != c.time_embed_dim or temb.shape[0] not in (1, b):
            raise ValueError(f"decode: temb must be [B, time_embed_dim] = {(b, c.time_embed_dim)} (from encode), got "
                             f"{tuple(jnp.shape(temb))}")

    def __call__(self, x: Array, t, delta_h: Optional[Array] = None) -> Array:
        """Predict eps. x ``[B, H, W, C]`` NHWC in [-1, 1]; t ``[B]`` or scalar; optional ``delta_h``
        (``[B, h, w, C_mid]`` or broadcastable) added to the h-space. Returns eps ``[B, H, W, C_out]``."""
        h, skips, temb = self.encode(x, t)
        h = add_delta_h(h, delta_h)
        return self.decode(h, skips, temb)
