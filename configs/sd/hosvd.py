"""HOSVD/Tucker vs matrix SVD of J = ∂h/∂z on Stable Diffusion: h keeps its [8, 8, 1280] structure and z its
[64, 64, 4] (the seeds' vectorisation example, h ∈ R^{8·8·1280}), energy per parameter, edits, grids.

    python -m jaxhspace.main --config configs/sd/hosvd.py --workdir runs/sd_hosvd \
        --config.model_path=/data/stable-diffusion-v1-5 --config.image_paths="('/data/faces',)"

Edits use the SD pullback settings of configs/sd/pullback.py (γ 1, λ 1, 16 steps, no boosting).
"""
from jaxhspace.configs.hosvd import get_config as base


def get_config():
    c = base()
    c.model_family = "latent"
    c.model_path = ""          # REQUIRED: a local diffusers pipeline folder
    c.prompt = ""
    c.image_size = 0
    c.t_boost = 0
    c.rank_choices = (
        ("spatial_channel", (16, 32), "spatial_channel", (32, 4)),      # (h·w, C) x (H·W, C)
        ("axes", (4, 4, 32), "axes", (16, 16, 4)),                      # (h, w, C) x (H, W, C)
    )
    c.gamma = 1.0
    c.lam = 1.0
    c.upscale = 1
    return c
