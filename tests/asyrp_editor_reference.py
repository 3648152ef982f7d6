"""Independent PyTorch re-implementations of the two official Asyrp editor ("DeltaBlock") variants, written from
kwonminki/Asyrp_official@a6c82dc (nothing here is derived from jaxhspace):

* DDPM variant, ``models/ddpm/diffusion.py:228-263``: conv1 (1x1) -> + temb_proj(swish(temb)) -> GroupNorm(32, eps
  1e-6) -> swish -> conv2 (1x1). State-dict keys ``conv1.*``, ``temb_proj.*``, ``norm2.*``, ``conv2.*``.
* ADM variant (used with the iDDPM / guided-diffusion bases: AFHQ-dog, FFHQ, MetFaces), identical in
  ``models/improved_ddpm/unet.py:776-853`` and ``models/guided_diffusion/unet.py:779-856``, built by
  ``setattr_layers`` with ``DeltaBlock(channels=ch, emb_channels=model_channels * 4, dropout=0.0)`` (so
  ``use_scale_shift_norm=False``): ``in_layers`` = [GroupNorm32(32, C) (torch default eps 1e-5, computed in float32),
  SiLU, conv 1x1], ``emb_layers`` = [SiLU, Linear(emb, C)], ``out_layers`` = [GroupNorm32, SiLU, Dropout, conv 1x1];
  ``h = in_layers(x) + emb_layers(emb)[..., None, None]; return out_layers(h)``.
"""
from __future__ import annotations

import torch
import torch.nn as nn


def swish(x):
    return x * torch.sigmoid(x)


class DDPMDeltaBlock(nn.Module):
    """models/ddpm/diffusion.py:228-263 (``forward(x, temb=None)``)."""

    def __init__(self, in_channels, temb_channels=512):
        super().__init__()
        self.conv1 = nn.Conv2d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)
        self.temb_proj = nn.Linear(temb_channels, in_channels)
        self.norm2 = nn.GroupNorm(num_groups=32, num_channels=in_channels, eps=1e-6, affine=True)
        self.conv2 = nn.Conv2d(in_channels, in_channels, kernel_size=1, stride=1, padding=0)

    def forward(self, x, temb=None):
        h = self.conv1(x)
        if temb is not None:
            h = h + self.temb_proj(swish(temb))[:, :, None, None]
        h = swish(self.norm2(h))
        return self.conv2(h)


class GroupNorm32(nn.GroupNorm):
    """models/improved_ddpm/nn.py:17-19."""

    def forward(self, x):
        return super().forward(x.float()).type(x.dtype)


class ADMDeltaBlock(nn.Module):
    """models/improved_ddpm/unet.py:776-853 with use_scale_shift_norm=False, dims=2, dropout=0."""

    def __init__(self, channels, emb_channels, dropout=0.0):
        super().__init__()
        self.in_layers = nn.Sequential(GroupNorm32(32, channels), nn.SiLU(),
                                       nn.Conv2d(channels, channels, 1, padding=0))
        self.emb_layers = nn.Sequential(nn.SiLU(), nn.Linear(emb_channels, channels))
        self.out_layers = nn.Sequential(GroupNorm32(32, channels), nn.SiLU(), nn.Dropout(p=dropout),
                                        nn.Conv2d(channels, channels, 1, padding=0))

    def forward(self, x, emb=None):
        h = self.in_layers(x)
        if emb is not None:
            emb_out = self.emb_layers(emb).type(h.dtype)
            while len(emb_out.shape) < len(h.shape):
                emb_out = emb_out[..., None]
            h = h + emb_out
        return self.out_layers(h)


def perturb_(module: nn.Module, scale: float = 0.3, seed: int = 0) -> nn.Module:
    """Add ``scale * randn`` to every GroupNorm affine parameter (away from 1 / 0) so a wrong norm mapping shows."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for m in module.modules():
            if isinstance(m, nn.GroupNorm):
                m.weight.add_(scale * torch.randn(m.weight.shape, generator=g))
                m.bias.add_(scale * torch.randn(m.bias.shape, generator=g))
    return module.eval()


def official_pth(path, module: nn.Module) -> None:
    """Save like the official training loop (diffusion_latent.py:378/404):
    ``{'0': state_dict, 'optimizer': SGD state, 'scheduler': StepLR state}``."""
    opt = torch.optim.SGD(module.parameters(), lr=0.5, momentum=0, weight_decay=0)
    sch = torch.optim.lr_scheduler.StepLR(opt, step_size=20, gamma=0.9)
    torch.save({"0": module.state_dict(), "optimizer": opt.state_dict(), "scheduler": sch.state_dict()}, path)
