"""Haas et al. (FG 2024) Jacobian directions J = ∂ε/∂h of your own faces on a real 256×256 DDPM (their model:
google/ddpm-ema-celebahq-256, semanticdiffusion.py:1193-1194), applied as Δh_t = scale·σ_k(t)·v_k(t_J)
(haas_official.md; files of renhaa/semantic-diffusion @ 91f0a15).

    python -m jaxhspace.main --config configs/celebahq256/haas.py --workdir runs/celebahq256_haas \
        --config.model_path=/data/ddpm-ema-celebahq-256 --config.image_paths="('/data/celebahq_test',)"

Differences: Haas generate from x_T with η = 1 and fixed z's; here real faces are DDIM-inverted, so η = 0
(t_boost = 0) keeps the reconstruction; the grid is the Asyrp grid linspace(0,1,10)·999 instead of diffusers'
[900, ..., 0]; σ_k(t) is taken along the deterministic (η = 0) walk from the inverted x_T; the SVD stops on a
relative residual instead of |Δλ| < 1e-5 of deflated power iteration.
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.task = "haas"
    c.precision = "highest"     # float32 matmuls on TPU/GPU; "high"/"default" faster, less accurate
    c.model_path = "/path/to/ddpm-ema-celebahq-256"   # REQUIRED: diffusers folder or official .ckpt/.pt
    c.model_format = "auto"      # auto | diffusers | ddpm_ckpt | guided_diffusion: a .ckpt/.pt converts into
                                 # workdir/converted (jaxhspace.checkpoints.auto_convert), reused while unchanged
    c.model_preset = ""          # the converter's --preset; "" = inferred from the file's parameter shapes
    c.model_arch_json = ""       # the converter's --arch-json, for checkpoints of other architectures
    c.seed = 0
    c.data_seed = 12345        # unused with image_paths
    c.num_images = 4
    c.image_paths = ()         # REQUIRED: faces to edit (files or folders)
    c.n_steps = 10             # 10 DDIM steps in all README / demo examples
    c.jacobian_t = 500         # README:104-127 uses t_idx 2..8 of 10 steps (mouth: t_idx 4 -> t = 500)
    c.t_edit = 0               # Δh at every step (window=999 / global_at_idx, direction_plotter.py:101-125)
    c.t_boost = 0              # η = 0 on inverted real faces (Haas: η = 1 on generations, see docstring)
    c.symmetric = True         # edited ε in both DDIM terms (Q.asyrp is None, semanticdiffusion.py:854, 867)
    c.sigma_schedule = "per_step"  # σ_k(t) of each step times v_k(t_J) (direction_plotter.py:113-121)
    c.k = 3                    # load_power_dirs: k = 3, max_iters 50 (editing/jacobian.py:170-176)
    c.svd_tol = 1e-3
    c.svd_max_iters = 50
    c.n_dirs = 3
    c.scales = (-50.0, 50.0)   # Jacobian edits: scale 50-100 times σ_k(t) (README:104-127)
    c.upscale = 1
    return c
