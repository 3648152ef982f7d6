"""The haas job on the LDM (CompVis/ldm-celebahq-256): x = the VQ-VAE latent, h = the UNet mid-block output.

    python -m jaxhspace.main --config configs/ldm/haas.py --workdir runs/ldm_haas \
        --config.model_path=/data/ldm-celebahq-256 --config.image_paths="('/data/celebahq_test',)"
"""
from jaxhspace.configs.sd.haas import get_config as base


def get_config():
    c = base()
    del c.prompt               # unconditional: no text encoder
    return c
