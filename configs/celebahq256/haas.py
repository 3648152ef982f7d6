"""Haas et al. (FG 2024) Jacobian directions J = ∂ε/∂h of your own faces on a real 256×256 DDPM (their model:
google/ddpm-ema-celebahq-256, renhaa/semantic-diffusion@91f0a15:semanticdiffusion.py:1193-1194), applied as
Δh_t = scale·σ_k(t)·v_k(t_J) (renhaa/semantic-diffusion@91f0a15:editing/direction_plotter.py:113-121).

    python -m jaxhspace.main --config configs/celebahq256/haas.py --workdir runs/celebahq256_haas \
        --config.model_path=/data/ddpm-ema-celebahq-256 --config.image_paths="('/data/celebahq_test',)"

Differences: Haas generate from x_T with η = 1 and fixed z's; here real faces are DDIM-inverted, so η = 0
(t_boost = 0) keeps the reconstruction; the grid is the Asyrp grid linspace(0,1,10)·999 instead of diffusers'
[900, ..., 0]; σ_k(t) is taken along the deterministic (η = 0) walk from the inverted x_T; the SVD stops on a
relative residual instead of |Δλ| < 1e-5 of deflated power iteration.
"""
try:
    from jaxhspace.configs._common import official_checkpoint
    from jaxhspace.configs.haas import get_config as base
except ImportError:  # a source tree used without installing jaxhspace
    from configs._common import official_checkpoint
    from configs.haas import get_config as base


def get_config():
    c = official_checkpoint(base())
    c.n_steps = 10             # 10 DDIM steps in all README / demo examples
    # renhaa/semantic-diffusion@91f0a15:README.md:104-127 uses t_idx 2..8 of 10 steps (mouth: t_idx 4 -> t = 500)
    c.jacobian_t = 500
    # load_power_dirs: k = 3, max_iters 50 (renhaa/semantic-diffusion@91f0a15:editing/jacobian.py:170-176)
    c.svd_max_iters = 50
    # Jacobian edits: scale 50-100 times σ_k(t) (renhaa/semantic-diffusion@91f0a15:README.md:104-127)
    c.scales = (-50.0, 50.0)
    return c
