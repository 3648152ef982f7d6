"""Pullback (Park et al.) directions J = ∂h/∂x on test faces and edits along the top ones.

    python -m jaxhspace.main --config configs/pullback.py --workdir runs/pullback

Defaults follow the official CelebA-HQ script where they carry over (γ = 0.1-style small steps, 16
steps, boosting below t = 200); the direction length λ is larger because x here has 32·32·3 = 3,072
dims instead of 196,608, so a unit v is ~8x larger per pixel here than at 256x256.
"""
try:
    from jaxhspace.configs._common import editing_job
except ImportError:  # a source tree used without installing jaxhspace
    from configs._common import editing_job


def get_config():
    c = editing_job("pullback")
    c.n_steps = 50             # Asyrp grid for inversion / sampling
    c.edit_t = 600             # official edit_t in {1.0, 0.8, 0.6} x T
    c.t_boost = 200            # eta = 1 below this (official performance_boosting_t = 0.2)
    c.park_grid = "asyrp"      # integer Asyrp grid; "official": Park's float grid (configs/celebahq256/pullback.py)
    c.park_inversion = "to_edit_t"   # invert up to edit_t; "official": Park's truncated inversion, then down from T
    c.k = 8
    c.svd_method = "krylov"
    c.svd_tol = 1e-3
    c.svd_max_iters = 30
    c.n_dirs = 3
    c.gamma = 0.5
    c.lam = 10.0
    c.n_edit_steps = 16
    return c
