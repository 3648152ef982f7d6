"""The Asyrp editor f_t ("DeltaBlock") in both official variants.

``variant="ddpm"`` (default; kwonminki/Asyrp_official@a6c82dc:models/ddpm/diffusion.py:228-263, the CelebA-HQ / LSUN
editors)::

    Δh = conv2( SiLU( GroupNorm_32,eps1e-6( conv1(h) + temb_proj(SiLU(temb)) ) ) )          conv1, conv2: 1×1, C → C

``variant="adm"`` (kwonminki/Asyrp_official@a6c82dc:models/improved_ddpm/unet.py:776-853 =
…:models/guided_diffusion/unet.py:779-856, the AFHQ-dog / FFHQ / MetFaces editors ``dog_*`` / ``metface_*``; built with
``use_scale_shift_norm=False``, dropout 0)::

    Δh = out_layers( in_layers(h) + emb_layers(temb) )
    in_layers  = [GroupNorm_32,eps1e-5, SiLU, conv 1×1]      emb_layers = [SiLU, Linear(temb_dim → C)]
    out_layers = [GroupNorm_32,eps1e-5, SiLU, Dropout(0), conv 1×1]

i.e. the ADM one has an extra GroupNorm + SiLU *before* the first 1×1 conv and uses torch's default eps 1e-5
(guided-diffusion's ``normalization`` = ``GroupNorm32(32, C)``, computed in float32). One time-conditioned network
shared by all timesteps; its output *is* Δh (no residual, no output scale) in both variants.

**Initialisation** follows PyTorch's defaults for ``nn.Conv2d``/``nn.Linear`` (kaiming-uniform with a = √5,
i.e. weights and biases ~ U(±1/√fan_in)) and ``nn.GroupNorm`` (scale 1, bias 0). Nothing is zero-initialised:
the official code does not zero the output layer (neither variant calls guided-diffusion's ``zero_module``), so at
initialisation Δh is a nonzero random function of (h, temb) (the released checkpoints still show weight std ≈
(1/√512)/√3, the kaiming-uniform value). A "zero-initialised output" guess is therefore *not* followed.

Submodule names are the official state-dict names (``conv1 / temb_proj / norm2 / conv2``; ``in_layers_0 / in_layers_2
/ emb_layers_1 / out_layers_0 / out_layers_3`` for ``in_layers.0`` ...), so a checkpoint converts by renaming plus the
usual layout transposes (OIHW → HWIO, Linear (O, I) → Dense kernel (I, O)).
"""
from __future__ import annotations

import dataclasses
import functools
import math
from typing import Any, Optional

import flax.linen as nn
import jax
import jax.numpy as jnp

Array = jnp.ndarray
VARIANTS = ("ddpm", "adm")
DEFAULT_EPS = {"ddpm": 1e-6, "adm": 1e-5}


def torch_uniform_init(fan_in: int):
    """PyTorch's default init for Conv/Linear weights *and* biases: U(−1/√fan_in, 1/√fan_in).

    (kaiming_uniform_(a=√5) gives bound = √(6/((1+a²)·fan_in)) = 1/√fan_in for the weight; the bias uses
    the same bound.)"""
    bound = 1.0 / math.sqrt(fan_in)

    def init(key, shape, dtype=jnp.float32):
        return jax.random.uniform(key, shape, dtype, -bound, bound)

    return init


@dataclasses.dataclass(frozen=True)
class EditorConfig:
    """Hyper-parameters of a :class:`DeltaBlock`.

    Attributes:
      channels: C, the h-space channels (512 for the 256-px DDPMs; the UNet's ``block_out_channels[-1]``).
      temb_dim: width of the UNet's time embedding (``UNetConfig.time_embed_dim``; 512 for CelebA-HQ).
      num_groups: GroupNorm groups (official: 32; must divide ``channels``).
      eps: GroupNorm epsilon; ``None`` (default) means the variant's official value: 1e-6 for ``"ddpm"``
        (kwonminki/Asyrp_official@a6c82dc:models/ddpm/diffusion.py:69), 1e-5 for ``"adm"`` (torch's default in
        guided-diffusion's ``normalization``).
      variant: ``"ddpm"`` (the DDPM DeltaBlock, default) or ``"adm"`` (the iDDPM / guided-diffusion DeltaBlock).
    """

    channels: int
    temb_dim: int
    num_groups: int = 32
    eps: Optional[float] = None
    variant: str = "ddpm"

    def __post_init__(self):
        for name in ("channels", "temb_dim", "num_groups"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, int) or v < 1:
                raise ValueError(f"EditorConfig.{name} must be a positive int, got {v!r}")
        if self.channels % self.num_groups:
            raise ValueError(f"EditorConfig: num_groups={self.num_groups} must divide channels={self.channels} "
                             "(official: 32 groups over 512 channels)")
        if self.variant not in VARIANTS:
            raise ValueError(f"EditorConfig.variant={self.variant!r} is not supported; choose one of {VARIANTS} "
                             "('ddpm': CelebA-HQ / LSUN editors; 'adm': AFHQ-dog / FFHQ / MetFaces editors)")
        if self.eps is None:
            object.__setattr__(self, "eps", DEFAULT_EPS[self.variant])
        if isinstance(self.eps, bool) or not isinstance(self.eps, (int, float)) or not self.eps > 0:
            raise ValueError(f"EditorConfig.eps must be a positive float, got {self.eps!r}")

    @classmethod
    def from_dict(cls, d: dict) -> "EditorConfig":
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in d if k not in names and not k.startswith("_"))
        if unknown:
            raise ValueError(f"EditorConfig: unknown keys {unknown}; expected {sorted(names)}")
        return cls(**{k: d[k] for k in d if k in names})

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def for_unet(cls, unet_config, **kw) -> "EditorConfig":
        """The config matching a :class:`~jaxhspace.models.unet.UNetConfig` (C = block_out_channels[-1],
        temb_dim = time_embed_dim). With fewer than 32 channels, pass ``num_groups`` explicitly."""
        return cls(channels=int(unet_config.block_out_channels[-1]), temb_dim=int(unet_config.time_embed_dim), **kw)


def _identity(x: Array) -> Array:
    return x


class DeltaBlock(nn.Module):
    """The official DeltaBlock (``config.variant``: DDPM or ADM, see the module docstring):
    ``(h [B, h, w, C] NHWC, temb [B, temb_dim]) -> Δh [B, h, w, C]``.

    Attributes:
      config: :class:`EditorConfig`.
      dtype: compute dtype (params are float32).
    """

    config: EditorConfig
    dtype: Any = jnp.float32

    def setup(self):
        c = self.config
        conv = dict(kernel_size=(1, 1), dtype=self.dtype, kernel_init=torch_uniform_init(c.channels),
                    bias_init=torch_uniform_init(c.channels))
        dense = dict(dtype=self.dtype, kernel_init=torch_uniform_init(c.temb_dim),
                     bias_init=torch_uniform_init(c.temb_dim))
        norm = dict(num_groups=c.num_groups, epsilon=c.eps, use_fast_variance=False, dtype=self.dtype)
        if c.variant == "ddpm":
            self.conv1 = nn.Conv(c.channels, **conv)
            self.temb_proj = nn.Dense(c.channels, **dense)
            self.norm2 = nn.GroupNorm(**norm)
            self.conv2 = nn.Conv(c.channels, **conv)
        else:  # list positions = the official nn.Sequential indices (activations / dropout hold no params)
            self.in_layers = [nn.GroupNorm(**norm), nn.silu, nn.Conv(c.channels, **conv)]
            self.emb_layers = [nn.silu, nn.Dense(c.channels, **dense)]
            self.out_layers = [nn.GroupNorm(**norm), nn.silu, _identity, nn.Conv(c.channels, **conv)]  # Dropout(0)

    def __call__(self, h: Array, temb: Array) -> Array:
        """Δh for h ``[B, h, w, C]`` (the UNet mid-block output) and temb ``[B, temb_dim]`` (the UNet's own
        time embedding, from ``UNet2DModel.encode``). Returns ``[B, h, w, C]`` in h's dtype."""
        c = self.config
        if h.ndim != 4 or h.shape[-1] != c.channels:
            raise ValueError(f"DeltaBlock: h must be [B, h, w, {c.channels}] (NHWC), got shape {h.shape}")
        if temb.ndim != 2 or temb.shape[-1] != c.temb_dim or temb.shape[0] not in (1, h.shape[0]):
            raise ValueError(f"DeltaBlock: temb must be [B={h.shape[0]}, {c.temb_dim}], got shape {temb.shape}")
        if c.variant == "ddpm":
            x = self.conv1(h)
            x = x + self.temb_proj(nn.silu(temb))[:, None, None, :]
            x = nn.silu(self.norm2(x))
            return self.conv2(x).astype(h.dtype)
        x = h
        for layer in self.in_layers:
            x = layer(x)
        e = temb
        for layer in self.emb_layers:
            e = layer(e)
        x = x + e[:, None, None, :]
        for layer in self.out_layers:
            x = layer(x)
        return x.astype(h.dtype)


@functools.lru_cache(maxsize=16)
def _init_fn(editor: DeltaBlock, hw: tuple[int, int]):
    c = editor.config
    # the dummy inputs are built inside the jitted function: built here, a first call under a trace (e.g. from
    # editor_param_shapes' eval_shape) would cache a closure over tracers and leak them into every later call
    return jax.jit(lambda k: editor.init(k, jnp.zeros((1, *hw, c.channels), jnp.float32),
                                         jnp.zeros((1, c.temb_dim), jnp.float32))["params"])


def init_editor(editor: DeltaBlock, key: jax.Array, hw: tuple[int, int] = (1, 1)) -> dict:
    """PyTorch-default-initialised params of ``editor`` (shapes do not depend on ``hw``); jitted, cached per editor."""
    return _init_fn(editor, tuple(hw))(key)


def editor_param_shapes(editor: DeltaBlock) -> dict:
    """Param tree of ``jax.ShapeDtypeStruct`` (no allocation)."""
    return jax.eval_shape(lambda k: init_editor(editor, k), jax.random.PRNGKey(0))
