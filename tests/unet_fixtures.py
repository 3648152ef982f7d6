"""Shared helpers for the UNet tests: tiny diffusers configs, random-init (perturbed) torch references
saved with save_pretrained, and torch / JAX forwards returning (eps, h) in NHWC."""
from __future__ import annotations

import jax
import jax.numpy as jnp
import numpy as np
import torch

# Attention at two resolutions, single head, asymmetric downsample padding, sin-first embedding.
TINY_ATTN2 = dict(
    sample_size=16, in_channels=3, out_channels=3, block_out_channels=[16, 32, 32], layers_per_block=1,
    down_block_types=["DownBlock2D", "AttnDownBlock2D", "AttnDownBlock2D"],
    up_block_types=["AttnUpBlock2D", "AttnUpBlock2D", "UpBlock2D"],
    norm_num_groups=8, norm_eps=1e-6, attention_head_dim=None, downsample_padding=0,
    flip_sin_to_cos=False, freq_shift=1, act_fn="silu", time_embedding_type="positional",
)
# Multi-head attention (head dim 8), symmetric padding, scale_shift time conditioning (so the mid
# attention has no group_norm), mid_block_scale_factor != 1, centred input, cos-first embedding, mish.
TINY_MULTIHEAD = dict(
    sample_size=16, in_channels=3, out_channels=3, block_out_channels=[16, 32], layers_per_block=2,
    down_block_types=["AttnDownBlock2D", "DownBlock2D"], up_block_types=["UpBlock2D", "AttnUpBlock2D"],
    norm_num_groups=8, norm_eps=1e-5, attention_head_dim=8, downsample_padding=1,
    flip_sin_to_cos=True, freq_shift=0, resnet_time_scale_shift="scale_shift", mid_block_scale_factor=1.414,
    center_input_sample=True, act_fn="mish",
)
TINY_CONFIGS = {"attn2": TINY_ATTN2, "multihead": TINY_MULTIHEAD}

# google/ddpm-ema-celebahq-256 (the Asyrp / Pullback default model).
CELEBAHQ = dict(
    sample_size=256, in_channels=3, out_channels=3, center_input_sample=False, time_embedding_type="positional",
    freq_shift=1, flip_sin_to_cos=False, block_out_channels=[128, 128, 256, 256, 512, 512], layers_per_block=2,
    down_block_types=["DownBlock2D"] * 4 + ["AttnDownBlock2D", "DownBlock2D"],
    up_block_types=["UpBlock2D", "AttnUpBlock2D"] + ["UpBlock2D"] * 4,
    downsample_padding=0, norm_eps=1e-6, norm_num_groups=32, attention_head_dim=None, act_fn="silu",
    mid_block_scale_factor=1,
)


def make_torch_unet(cfg: dict, seed: int = 0):
    """Random-init diffusers UNet2DModel with every parameter perturbed by 0.02*randn (so GroupNorm
    scales/biases are not 1/0), classic AttnProcessor, eval mode."""
    from diffusers import UNet2DModel
    from diffusers.models.attention_processor import Attention, AttnProcessor

    torch.manual_seed(seed)
    model = UNet2DModel(**cfg)
    with torch.no_grad():
        for p in model.parameters():
            p.add_(0.02 * torch.randn_like(p))
    for module in model.modules():
        if isinstance(module, Attention):
            module.set_processor(AttnProcessor())
    return model.eval()


def torch_forward(model, x_nhwc: np.ndarray, t, delta_h_nhwc: np.ndarray | None = None):
    """Torch eps and mid_block output (before any edit), both NHWC NumPy; ``delta_h`` is added to
    the mid_block output by a forward hook."""
    captured = {}

    def hook(_module, _inputs, out):
        captured["h"] = out.detach().clone()
        if delta_h_nhwc is not None:
            return out + torch.from_numpy(np.ascontiguousarray(np.transpose(delta_h_nhwc, (0, 3, 1, 2))))
        return out

    handle = model.mid_block.register_forward_hook(hook)
    try:
        x = torch.from_numpy(np.ascontiguousarray(np.transpose(x_nhwc, (0, 3, 1, 2))))
        tt = torch.from_numpy(np.asarray(t)) if isinstance(t, np.ndarray) else t
        with torch.no_grad():
            eps = model(x, tt).sample
    finally:
        handle.remove()
    return eps.numpy().transpose(0, 2, 3, 1), captured["h"].numpy().transpose(0, 2, 3, 1)


_JITTED = {}


def jax_forward(model, params, x, t, delta_h=None):
    """Jitted JAX eps (``__call__``, with delta_h) and h (``encode``) in one program, as NumPy.

    The jitted function is cached per model so repeated calls with equal shapes do not recompile.
    """
    if id(model) not in _JITTED:

        def f(params, x, t, dh):
            eps = model.apply({"params": params}, x, t, delta_h=dh)
            h = model.apply({"params": params}, x, t, method=model.encode)[0]
            return eps, h

        _JITTED[id(model)] = (model, jax.jit(f))  # keep model alive so its id is not reused
    f = _JITTED[id(model)][1]
    eps, h = f(params, jnp.asarray(x), jnp.asarray(t), None if delta_h is None else jnp.asarray(delta_h))
    return np.asarray(eps), np.asarray(h)


def random_inputs(cfg: dict, batch: int = 2, size: int | None = None, seed: int = 0):
    """x ``[B, S, S, C]`` uniform in [-1, 1] (float32) and distinct int timesteps ``[B]``."""
    rng = np.random.default_rng(seed)
    size = size or cfg["sample_size"]
    x = rng.uniform(-1, 1, (batch, size, size, cfg["in_channels"])).astype(np.float32)
    t = np.linspace(3, 999, batch).astype(np.int64)
    return x, t


def save_torch_unet(model, folder: str) -> str:
    model.save_pretrained(folder)
    return folder


def max_abs(a, b) -> float:
    return float(np.max(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64))))


def check_parity(label: str, got, want, tol: float, regression_tol: float, scale: float = 1.0) -> float:
    """Assert ``max|got - want| / scale`` (float64) against the documented parity contract ``tol`` and the tighter
    ``regression_tol`` (set ~5-10x above the measured error, so a 10x regression fails); prints and returns it.

    ``got`` / ``want``: arrays of one shape (NumPy, JAX or anything ``np.asarray`` takes); ``scale`` > 0 turns the
    bound into a relative one (e.g. the reference's max magnitude for outputs far from unit size).
    """
    assert np.shape(got) == np.shape(want), f"{label}: shapes differ, {np.shape(got)} vs {np.shape(want)}"
    err = max_abs(got, want) / scale
    print(f"\n[{label}] max err {err:.2e} (contract {tol:.2g}, regression bound {regression_tol:.2g})", end="")
    assert err <= tol, f"{label}: parity error {err:.3e} exceeds the documented contract {tol:.2g}"
    assert err <= regression_tol, (f"{label}: parity error {err:.3e} exceeds the regression bound {regression_tol:.2g} "
                                   f"(contract {tol:.2g} still met: something got less accurate)")
    return err


def spy(monkeypatch, module, name, store):
    """Wrap ``module.name`` so that each call appends ``(args, kwargs, result)`` to ``store[name]``."""
    real = getattr(module, name)

    def wrapped(*a, **kw):
        out = real(*a, **kw)
        store.setdefault(name, []).append((a, kw, out))
        return out

    monkeypatch.setattr(module, name, wrapped)
