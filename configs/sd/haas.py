"""Haas et al.'s Jacobian directions J = ∂ε/∂h on Stable Diffusion (h = mid_block output), as Δh = s·σ·v.

    python -m jaxhspace.main --config configs/sd/haas.py --workdir runs/sd_haas \
        --config.model_path=/data/stable-diffusion-v1-5 --config.image_paths="('/data/faces',)"

Haas et al. list Stable Diffusion as supported but "not used in the paper"
(renhaa/semantic-diffusion@91f0a15:semanticdiffusion.py:1170); their SD path is the same ∂ε/∂h with the prompt embedding
fixed, as here.
"""
from jaxhspace.configs.haas import get_config as base


def get_config():
    c = base()
    c.model_family = "latent"
    c.model_path = ""          # REQUIRED: a local diffusers pipeline folder
    c.prompt = ""
    c.image_size = 0
    c.n_steps = 10             # Haas: 10 DDIM steps
    c.scales = (-50.0, 50.0)   # Haas' ±50 on a unit v of a 8x8x512 h; h of SD is 8x8x1280
    c.upscale = 1
    return c
