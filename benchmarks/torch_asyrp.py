"""A PyTorch re-implementation of the official Asyrp reverse loop and training step (the baseline of
``benchmarks/throughput.py``), on a diffusers ``UNet2DModel``.

Source: kwonminki/Asyrp_official@a6c82dc (``run_training``, ``save_image`` and the UNet ``forward``):

* test-time generation ``save_image`` (kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:499-520): per image
  (bs_test = 1), a Python loop over the reversed grid; each step calls the UNet for ``(et, et_modified)`` and takes
  the asymmetric step (…:utils/diffusion_utils.py:84-97) ``x_{t-1} = √ᾱ_next·P_t(ε̃) + c2·ε + c1·z``, η = 1 where
  t < t_boost (strict, …:diffusion_latent.py:513), η = 0 above; ᾱ_next = 1 after the last step
  (…:utils/diffusion_utils.py:68-71); P_t never clamped. :func:`asyrp_edit_loop`.
* the edit is applied only where t ≥ t_edit (kwonminki/Asyrp_official@a6c82dc:models/ddpm/diffusion.py:510); ε̃ is
  decoded from h + Δh with the unedited skips (…:models/ddpm/diffusion.py:544-559). diffusers has no h-space entry
  point, so Δh is added by a forward hook on ``unet.mid_block`` (:func:`mid_block_delta`); the skips come from the down
  blocks, before it, so they stay unedited.
* training, one step per timestep (kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:294-356): asymmetric step
  with the editor, unedited reference step under no_grad, loss
  λ_CLIP·(−log((1 + cos(ΔI, ΔT))/2)) + λ_L1·cos·mean|P_t^edit − P_t^ref|
  (…:diffusion_latent.py:340-351, …:losses/clip_loss.py:170-180), zero_grad, backward, SGD step. :func:`train_step`.

Cost difference from the official code: its UNet returns ε and ε̃ from ONE encoder pass and two decoder passes;
with a hook on a stock diffusers UNet each is a full forward (two encoder passes per edited step). Where
t < t_edit one forward is made (ε̃ = ε), as the official. Coefficients are float32 tensors in the operation
order of ``jaxhspace.diffusion.ddim._step_core`` (the official order), so the two implementations agree to
float32 rounding.
"""
from __future__ import annotations

import contextlib
from typing import Callable, Optional, Sequence

import numpy as np
import torch
import torch.nn.functional as F

__all__ = ["TorchDeltaBlock", "mid_block_delta", "eps_pair", "asyrp_step", "asyrp_edit_loop", "train_step",
           "clip_image_features"]


class TorchDeltaBlock(torch.nn.Module):
    """The official DDPM DeltaBlock (kwonminki/Asyrp_official@a6c82dc:models/ddpm/diffusion.py:228-263):
    conv1 1×1, + Linear(SiLU(temb)), GroupNorm(G, eps 1e-6), SiLU, conv2 1×1;
    ``(h [B, C, h, w], temb [B, D]) -> Δh [B, C, h, w]``."""

    def __init__(self, channels: int, temb_channels: int, num_groups: int = 32):
        super().__init__()
        self.conv1 = torch.nn.Conv2d(channels, channels, kernel_size=1)
        self.temb_proj = torch.nn.Linear(temb_channels, channels)
        self.norm2 = torch.nn.GroupNorm(num_groups, channels, eps=1e-6, affine=True)
        self.conv2 = torch.nn.Conv2d(channels, channels, kernel_size=1)

    def forward(self, h, temb):
        x = self.conv1(h) + self.temb_proj(F.silu(temb))[:, :, None, None]
        return self.conv2(F.silu(self.norm2(x)))


@contextlib.contextmanager
def mid_block_delta(unet, delta_fn: Callable):
    """Within the block, ``unet(x, t)`` decodes h + ``delta_fn(h)`` (h = the mid-block output [B, C, h, w])."""
    handle = unet.mid_block.register_forward_hook(lambda _m, _inp, out: out + delta_fn(out))
    try:
        yield
    finally:
        handle.remove()


def _temb(unet, t: torch.Tensor) -> torch.Tensor:
    """The UNet's own time embedding ``[B, D]`` (the editor's second input,
    kwonminki/Asyrp_official@a6c82dc:models/ddpm/diffusion.py:477-480)."""
    return unet.time_embedding(unet.time_proj(t).to(unet.dtype))


def eps_pair(unet, x, t: torch.Tensor, delta: Optional[Callable], edit: bool):
    """``(ε, ε̃)`` at ``x [B, C, H, W]``, ``t [B]``: ε̃ = ε(h + Δh) if ``edit`` else ε (no second forward).

    ``delta(h [B,C,h,w], temb [B,D]) -> Δh`` (scale included). No gradients (test time).
    """
    with torch.no_grad():
        eps = unet(x, t).sample
        if not edit or delta is None:
            return eps, eps
        temb = _temb(unet, t)
        with mid_block_delta(unet, lambda h: delta(h, temb)):
            return eps, unet(x, t).sample


def asyrp_step(x, eps, eps_edit, a_t: float, a_next: float, eta: float = 0.0, z=None, return_pred_x0=False):
    """kwonminki/Asyrp_official@a6c82dc:utils/diffusion_utils.py:84-97: P_t = (x − √(1−ᾱ_t)·ε̃)/√ᾱ_t;
    x_next = √ᾱ_next·P_t + c2·ε + c1·z (c1 = σ_η, c2 = √(1−ᾱ_next−c1²)). ``a_t``, ``a_next`` are float32 values
    (ᾱ_next = 1 after the last step)."""
    at = torch.tensor(a_t, dtype=x.dtype)
    an = torch.tensor(a_next, dtype=x.dtype)
    x0 = (x - torch.sqrt(1.0 - at) * eps_edit) / torch.sqrt(at)
    ratio = (1.0 - at / an) * (1.0 - an) / (1.0 - at)
    c1 = torch.tensor(eta, dtype=x.dtype) * torch.sqrt(torch.clamp(ratio, min=0.0))
    c2 = torch.sqrt(torch.clamp((1.0 - an) - c1 ** 2, min=0.0))
    out = torch.sqrt(an) * x0 + c2 * eps
    if eta:
        out = out + c1 * z
    return (out, x0) if return_pred_x0 else out


def asyrp_edit_loop(unet, x_lat: torch.Tensor, delta: Optional[Callable], timesteps: Sequence[int],
                    alphas_cumprod: np.ndarray, t_edit: int, t_boost: int, noise: Optional[np.ndarray] = None,
                    generator: Optional[torch.Generator] = None) -> torch.Tensor:
    """The official test-time loop: per image, per step (Python loops), ``x_lat [B, C, H, W] -> x_0 [B, C, H, W]``.

    Args:
      delta: ``(h, temb) -> Δh`` (scale included) or None (reconstruction).
      timesteps: ``[S]`` descending grid (e.g. ``asyrp_timesteps(n)[::-1]``); step i goes to timesteps[i+1], the
        last one to ᾱ = 1.
      alphas_cumprod: ``[T]`` float32 ᾱ (the same values as the JAX side).
      noise: optional ``[B, S, C, H, W]`` boosting noise (to reproduce another implementation); else
        ``torch.randn`` (``generator``) at every η = 1 step.
    """
    ts = [int(t) for t in timesteps]
    outs = []
    for b in range(x_lat.shape[0]):
        x = x_lat[b:b + 1]
        for i, t in enumerate(ts):
            a_t = float(alphas_cumprod[t])
            a_next = float(alphas_cumprod[ts[i + 1]]) if i + 1 < len(ts) else 1.0
            eta = 1.0 if t < t_boost else 0.0
            eps, eps_e = eps_pair(unet, x, torch.full((1,), t, dtype=torch.long), delta, t >= t_edit)
            z = None
            if eta:
                z = (torch.from_numpy(np.ascontiguousarray(noise[b, i]))[None] if noise is not None
                     else torch.randn(x.shape, generator=generator, dtype=x.dtype))
            x = asyrp_step(x, eps, eps_e, a_t, a_next, eta, z)
        outs.append(x)
    return torch.cat(outs)


def clip_image_features(clip, x: torch.Tensor, size: int) -> torch.Tensor:
    """Projected CLIP image features ``[B, P]`` of ``x [B, 3, H, W]`` in [-1, 1]
    (kwonminki/Asyrp_official@a6c82dc:losses/clip_loss.py:39-41: (x+1)/2, bicubic Resize(size) without antialias,
    CenterCrop(size), CLIP mean/std), differentiable."""
    mean = torch.tensor([0.48145466, 0.4578275, 0.40821073]).view(1, 3, 1, 1)
    std = torch.tensor([0.26862954, 0.26130258, 0.27577711]).view(1, 3, 1, 1)
    x = (x + 1.0) / 2.0
    h, w = x.shape[-2:]
    out_hw = (size, int(size * w / h)) if h <= w else (int(size * h / w), size)
    if tuple(out_hw) != (h, w):
        x = F.interpolate(x, size=out_hw, mode="bicubic", align_corners=False)
    top, left = int(round((x.shape[-2] - size) / 2.0)), int(round((x.shape[-1] - size) / 2.0))
    x = x[..., top:top + size, left:left + size]
    out = clip.get_image_features(pixel_values=(x - mean) / std)
    return out if torch.is_tensor(out) else out.pooler_output  # transformers 5.x returns an output object


def _directional_clip_loss(f_edit, f_src, text_dir):
    """−log((1 + cos(ΔI, ΔT))/2) per example (kwonminki/Asyrp_official@a6c82dc:losses/clip_loss.py:11-28, 170-180),
    ΔI = normalize(n(f_edit) − n(f_src)) (+1e-7)."""
    d = F.normalize(f_edit, dim=-1) - F.normalize(f_src, dim=-1)
    d = d / (d.norm(dim=-1, keepdim=True) + 1e-7)
    cos = F.cosine_similarity(d, text_dir.expand_as(d), dim=-1, eps=1e-8)
    return -torch.log((2.0 - (1.0 - cos)) / 2.0)


def train_step(unet, editor: TorchDeltaBlock, clip, optimizer, x_edit, x_ref, feat_src, text_dir, t: int,
               t_prev: int, alphas_cumprod: np.ndarray, lambda_clip: float, lambda_l1: float, cos: float,
               clip_size: int):
    """One official training step at timestep t (kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:294-356) for a
    batch ``[B, C, H, W]``.

    The UNet and CLIP are frozen (``requires_grad_(False)``); the gradient reaches the editor through the hooked
    decoder pass only. Returns ``(x_edit_next (detached), x_ref_next, loss float)``.
    """
    a_t = float(alphas_cumprod[t])
    a_prev = float(alphas_cumprod[t_prev]) if t_prev >= 0 else 1.0
    tt = torch.full((x_edit.shape[0],), t, dtype=torch.long)
    x = x_edit.detach()
    with torch.no_grad():
        temb = _temb(unet, tt)
        eps = unet(x, tt).sample
        eps_r = unet(x_ref, tt).sample
        x_ref_next, p_ref = asyrp_step(x_ref, eps_r, eps_r, a_t, a_prev, return_pred_x0=True)
    # hs_coeff = (1, 1) in training (kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:207)
    with mid_block_delta(unet, lambda h: editor(h, temb)):
        eps_edit = unet(x, tt).sample
    x_next, p_edit = asyrp_step(x, eps, eps_edit, a_t, a_prev, return_pred_x0=True)
    l_clip = _directional_clip_loss(clip_image_features(clip, p_edit, clip_size), feat_src, text_dir).mean()
    loss = lambda_clip * l_clip + lambda_l1 * cos * (p_edit - p_ref).abs().mean()
    optimizer.zero_grad()
    loss.backward()
    optimizer.step()
    return x_next.detach(), x_ref_next, float(loss.detach())
