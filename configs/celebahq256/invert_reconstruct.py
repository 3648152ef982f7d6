"""DDIM inversion + reconstruction error of your own face images with a real 256×256 DDPM.

    python -m jaxhspace.main --config configs/celebahq256/invert_reconstruct.py --workdir runs/celebahq256_invert \
        --config.model_path=/data/ddpm-ema-celebahq-256 --config.image_paths="('/data/celebahq_test',)"

``image_paths``: image files and/or folders of images (centre-cropped, resized to 256 bicubic, mapped to [-1, 1]
as the official loaders, asyrp_official.md §6). Inversion starts from the clean image at t = 0 (ᾱ_0 = 0.9999) and
never clamps x0 (asyrp_official.md §1, DL:1034-1044).
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.task = "invert_reconstruct"
    c.precision = "highest"     # float32 matmuls on TPU/GPU; "high"/"default" faster, less accurate
    c.model_path = "/path/to/ddpm-ema-celebahq-256"   # REQUIRED: diffusers folder or official .ckpt/.pt
    c.model_format = "auto"      # auto | diffusers | ddpm_ckpt | guided_diffusion: a .ckpt/.pt converts into
                                 # workdir/converted (jaxhspace.checkpoints.auto_convert), reused while unchanged
    c.model_preset = ""          # the converter's --preset; "" = inferred from the file's parameter shapes
    c.model_arch_json = ""       # the converter's --arch-json, for checkpoints of other architectures
    c.seed = 0
    c.data_seed = 12345        # unused with image_paths (SynthFaces renders only 32/64 px)
    c.num_images = 4
    c.image_paths = ()         # REQUIRED: your face images (files or folders)
    c.n_steps_list = (10, 20, 40, 100)   # 40 = Asyrp n_inv (released ninv40), 100 = Pullback for/inv steps
    c.spacing = "asyrp"
    c.upscale = 1
    return c
