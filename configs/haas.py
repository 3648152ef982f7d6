"""Haas et al. Jacobian directions (J = ∂ε/∂h) on test faces, applied as Δh_t = scale·σ_k(t)·v_k(t_J).

    python -m jaxhspace.main --config configs/haas.py --workdir runs/haas

Official: k = 3 directions per image and timestep, 10 DDIM steps, symmetric edits, scales 50-100 (for
unit v at 512x8x8, i.e. scale·σ); here the unit vector lives in the tiny model's 8x8x128 h-space.
"""
try:
    from jaxhspace.configs._common import editing_job
except ImportError:  # a source tree used without installing jaxhspace
    from configs._common import editing_job


def get_config():
    c = editing_job("haas")
    c.n_steps = 20
    c.jacobian_t = 600         # where J = dε/dh is taken (Haas: one of the 10 grid steps)
    c.t_edit = 0               # apply at every step (Haas 'window=999'); set e.g. 500 for Asyrp-style
    c.t_boost = 0
    c.symmetric = True         # Haas default; False = Asyrp's asymmetric step
    c.sigma_schedule = "per_step"  # official: Δh_t = scale·σ_k(t)·v_k(t_J); "constant": σ_k(t_J) at every step
    c.k = 3
    c.svd_tol = 1e-3
    c.svd_max_iters = 30
    c.svd_batch_steps = 1      # per_step: SVDs solved together in one batched Lanczos loop (GPU/TPU; memory x this)
    c.n_dirs = 3
    c.scales = (-100.0, 100.0)  # Δh = scale·σ·v: on the shipped DDPM σ ≈ 0.1, so |Δh| ≈ 10 (PC std of h: 15-46)
    return c
