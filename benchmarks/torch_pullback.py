"""A faithful PyTorch re-implementation of the official Diffusion-Pullback local basis (the baseline).

Source: enkeejunior1/Diffusion-Pullback@859c012:src/utils/utils.py (HEAD 859c0122b5cb1c8e6488dede29959c785af9aed1);
in this module "L<n>" is line n of enkeejunior1/Diffusion-Pullback@859c012:src/utils/utils.py:

* ``get_h_uncond`` (L114-163): time embedding -> ``conv_in`` -> every down block -> ``mid_block``;
  the mid-block output is returned (L157-161); the up path never runs.  -> :func:`get_h`
* ``local_encoder_pullback_xt`` (L165-249): block subspace iteration on ``J^T J`` with
  ``J = dh/dx``.  -> :func:`local_encoder_pullback_xt`. Step by step:

  - L178 ``num_chunk = ceil(pca_rank / chunk_size)``;
  - L184-186 one forward of h, only to read its shape;
  - L194-197 ``vT = randn(n, k)`` (float32) -> ``torch.linalg.qr`` -> ``v = vT.T`` (k orthonormal rows);
  - L200 ``for i in range(max_iter)``; L202 ``v_prev = v.detach().cpu().clone()``;
  - L206-216 ``U = J V``: per chunk ``torch.func.jacfwd(g, argnums=0, randomness='error')(a)`` with
    ``g(a) = get_h(x + a * v_chunk)`` and the scalar ``a = 0`` (one forward-mode pass over a batch of
    |chunk| copies of x; the primal is recomputed per direction);
  - L225-231 ``W = U^T J``: ``torch.autograd.functional.jacobian(g, x)`` with
    ``g(x) = einsum(u, get_h(x), 'b c w h, i c w h -> b')`` (defaults: reverse mode, vectorize=False,
    i.e. 1 forward + k backward passes = k VJPs);
  - L233 ``_, s, v = torch.linalg.svd(v_, full_matrices=False)``;
  - L237 ``torch.dist(v_prev, v)`` (only printed); L240-242 stop if
    ``torch.allclose(v_prev, v, atol=convergence_threshold) and i > min_iter``;
  - L248 return ``u = U.reshape(-1, m).T`` (m x k, *unnormalised*, J applied to the *pre-SVD*
    iterate), ``s = sqrt(svals(W))``, ``vT = V`` (k x n).

* Call-site defaults (enkeejunior1/Diffusion-Pullback@859c012:src/modules/edit.py:727 etc.): ``pca_rank`` from
  the caller (50 for transport / sampling), ``chunk_size=25``, ``min_iter=10``, ``max_iter=50``,
  ``convergence_threshold=1e-4``. The signature defaults (L167) are max_iter=100, threshold 1e-3.

Two changes are needed for torch 2.13 / diffusers 0.42 (neither changes the numbers), applied by
:func:`make_jvp_friendly`: the classic ``AttnProcessor`` (SDPA has no forward-AD formula for the CPU
flash kernel) and a forward pre-hook that makes every GroupNorm input contiguous (group_norm's
forward-AD formula calls ``.view``, which fails on the channels-last strided tensor leaving the
attention block when the batch is > 1).

Cost accounting: per iteration k JVPs + k VJPs + 1 plain forward, plus the
initial probe forward.
"""
from __future__ import annotations

import dataclasses
import time
from typing import Optional

import torch

__all__ = ["make_jvp_friendly", "get_h", "OfficialResult", "local_encoder_pullback_xt"]


def _contiguous_pre_hook(_module, inputs):
    return tuple(a.contiguous() if torch.is_tensor(a) else a for a in inputs)


def make_jvp_friendly(unet):
    """Classic ``AttnProcessor`` on every attention module and contiguous GroupNorm inputs.

    ``UNet2DModel`` has no ``set_attn_processor``, so the processor is set per module. Idempotent
    (the hook is registered once per module). Returns ``unet`` (modified in place).
    """
    from diffusers.models.attention_processor import Attention, AttnProcessor

    for module in unet.modules():
        if isinstance(module, Attention):
            module.set_processor(AttnProcessor())
        if isinstance(module, torch.nn.GroupNorm) and not getattr(module, "_jvp_friendly", False):
            module.register_forward_pre_hook(_contiguous_pre_hook)
            module._jvp_friendly = True
    return unet


def get_h(unet, x: torch.Tensor, t) -> torch.Tensor:
    """``get_h_uncond`` (enkeejunior1/Diffusion-Pullback@859c012:src/utils/utils.py:114-163) for op='mid', block_idx=0:
    ``x [B,C,H,W] -> h [B,Cmid,h,w]``.

    ``t``: python int/float or a tensor; an int becomes a long tensor as in L129-130.
    """
    timesteps = t
    if not torch.is_tensor(timesteps):  # L129-130
        timesteps = torch.tensor([timesteps], dtype=torch.long, device=x.device)
    elif timesteps.ndim == 0:  # L131-132
        timesteps = timesteps[None].to(x.device)
    timesteps = timesteps * torch.ones(x.shape[0], dtype=timesteps.dtype, device=timesteps.device)  # L135
    emb = unet.time_embedding(unet.time_proj(timesteps).to(dtype=unet.dtype))  # L136-138
    skip_sample = x
    x = unet.conv_in(x)  # L142
    for block in unet.down_blocks:  # L145-153
        if hasattr(block, "skip_conv"):
            x, _, skip_sample = block(hidden_states=x, temb=emb, skip_sample=skip_sample)
        else:
            x, _ = block(hidden_states=x, temb=emb)
    return unet.mid_block(x, emb)  # L156-161


@dataclasses.dataclass
class OfficialResult:
    """What ``local_encoder_pullback_xt`` returns, plus the bookkeeping the benchmark reports.

    u: ``[m, k]`` unnormalised (``J`` applied to the pre-SVD iterate), s: ``[k]``, vT: ``[k, n]``;
    iterations run, whether the official convergence test fired, product counts (columns) and
    ``dist`` = ``torch.dist(v_prev, v)`` per iteration (what the official code prints).
    """

    u: torch.Tensor
    s: torch.Tensor
    vT: torch.Tensor
    iterations: int
    converged: bool
    n_jvp: int
    n_vjp: int
    n_fwd: int
    dist: list
    wall_s: float

    @property
    def n_products(self) -> int:
        return self.n_jvp + self.n_vjp


def local_encoder_pullback_xt(
    unet,
    x: torch.Tensor,
    t,
    pca_rank: int = 50,
    chunk_size: int = 25,
    min_iter: int = 10,
    max_iter: int = 50,
    convergence_threshold: float = 1e-4,
    seed: Optional[int] = 0,
    callback=None,
) -> OfficialResult:
    """The official loop (enkeejunior1/Diffusion-Pullback@859c012:src/utils/utils.py:165-249) with the call-site
    defaults (…:src/modules/edit.py:727).

    Args:
      unet: a diffusers ``UNet2DModel`` passed through :func:`make_jvp_friendly`.
      x: ``[1, C, H, W]`` float32, the point x_t. t: the timestep (python int as in the official
        scripts' integer indices, or float).
      pca_rank .. convergence_threshold: as the official code.
      seed: ``torch.manual_seed`` before the ``randn`` start (None: leave the global RNG alone).
      callback: optional ``callback(i, vT)`` after each iteration (for diagnostics only).
    """
    if seed is not None:
        torch.manual_seed(seed)
    t0 = time.perf_counter()
    num_chunk = pca_rank // chunk_size if pca_rank % chunk_size == 0 else pca_rank // chunk_size + 1  # L178
    h_shape = get_h(unet, x, t).shape  # L184-186: probe forward (graph built and discarded, as there)
    n_fwd = 1
    c_i, w_i, h_i = x.size(1), x.size(2), x.size(3)
    c_o, w_o, h_o = h_shape[1], h_shape[2], h_shape[3]
    a = torch.tensor(0.0, device=x.device, dtype=x.dtype)  # L191

    vT = torch.randn(c_i * w_i * h_i, pca_rank, device=x.device, dtype=torch.float)  # L194
    vT, _ = torch.linalg.qr(vT)  # L195
    v = vT.T.reshape(-1, c_i, w_i, h_i)  # L196-197
    n_jvp = n_vjp = 0
    dist, converged, i = [], False, -1
    for i in range(max_iter):  # L200
        v = v.to(device=x.device, dtype=x.dtype)
        v_prev = v.detach().cpu().clone()  # L202
        u = []
        for vi in list(v.chunk(num_chunk)):  # L206-216: U = J V, forward mode
            g = lambda a, vi=vi: get_h(unet, x + a * vi, t)  # noqa: E731
            ui = torch.func.jacfwd(g, argnums=0, has_aux=False, randomness="error")(a)
            u.append(ui.detach().cpu().clone())
            n_jvp += vi.shape[0]
        u = torch.cat(u, dim=0).to(x.device, x.dtype)

        def g(x_):  # L225-229
            return torch.einsum("bcwh,icwh->b", u, get_h(unet, x_, t))

        v_ = torch.autograd.functional.jacobian(g, x)  # L230: 1 forward + k backward passes
        n_fwd += 1
        n_vjp += u.shape[0]
        v_ = v_.reshape(-1, c_i * w_i * h_i)  # L231 (view)

        _, s, v = torch.linalg.svd(v_, full_matrices=False)  # L233
        v = v.view(-1, c_i, w_i, h_i)
        u = u.view(-1, c_o, w_o, h_o)
        dist.append(torch.dist(v_prev, v.detach().cpu()).item())  # L237
        if callback is not None:
            callback(i, v.reshape(-1, c_i * w_i * h_i))
        if torch.allclose(v_prev, v.detach().cpu(), atol=convergence_threshold) and (i > min_iter):  # L240
            converged = True
            break
    wall = time.perf_counter() - t0
    u_out = u.reshape(-1, c_o * w_o * h_o).T.detach()  # L248
    return OfficialResult(
        u=u_out, s=s.sqrt().detach(), vT=v.reshape(-1, c_i * w_i * h_i).detach(), iterations=i + 1,
        converged=converged, n_jvp=n_jvp, n_vjp=n_vjp, n_fwd=n_fwd, dist=dist, wall_s=wall,
    )
