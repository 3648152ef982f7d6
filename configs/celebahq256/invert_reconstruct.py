"""DDIM inversion + reconstruction error of your own face images with a real 256×256 DDPM.

    python -m jaxhspace.main --config configs/celebahq256/invert_reconstruct.py --workdir runs/celebahq256_invert \
        --config.model_path=/data/ddpm-ema-celebahq-256 --config.image_paths="('/data/celebahq_test',)"

``image_paths``: image files and/or folders of images (centre-cropped, resized to 256 bicubic, mapped to [-1, 1]
as the official loaders, kwonminki/Asyrp_official@a6c82dc:datasets/data_utils.py:39-60). Inversion starts from the
clean image at t = 0 (ᾱ_0 = 0.9999) and never clamps x0
(kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:1034-1044).
"""
try:
    from jaxhspace.configs._common import official_checkpoint
    from jaxhspace.configs.invert_reconstruct import get_config as base
except ImportError:  # a source tree used without installing jaxhspace
    from configs._common import official_checkpoint
    from configs.invert_reconstruct import get_config as base


def get_config():
    c = official_checkpoint(base())
    c.num_images = 4
    c.n_steps_list = (10, 20, 40, 100)   # 40 = Asyrp n_inv (released ninv40), 100 = Pullback for/inv steps
    return c
