"""DDIM samples from a real 256×256 DDPM (google/ddpm-ema-celebahq-256 as a diffusers folder).

    python -m jaxhspace.main --config configs/celebahq256/sample.py --workdir runs/celebahq256_sample \
        --config.model_path=/data/ddpm-ema-celebahq-256

The folder is what ``huggingface-cli download google/ddpm-ema-celebahq-256 --local-dir ...`` (or
``UNet2DModel.save_pretrained``) writes: config.json + diffusion_pytorch_model.{safetensors,bin} (or a pipeline
folder with unet/); its scheduler_config.json (linear β 1e-4..0.02, T = 1000) is read if present. DDIM here never
clamps x0 (diffusers' DDPM scheduler config has clip_sample=True; Asyrp never clamps:
kwonminki/Asyrp_official@a6c82dc:utils/diffusion_utils.py:84-97).
"""
try:
    from jaxhspace.configs._common import official_checkpoint
    from jaxhspace.configs.sample import get_config as base
except ImportError:  # a source tree used without installing jaxhspace
    from configs._common import official_checkpoint
    from configs.sample import get_config as base


def get_config():
    c = official_checkpoint(base())
    c.image_size = 256         # only used when the model config has no sample_size
    c.num_samples = 4
    c.grid_cols = 4
    # Asyrp test grid n_test = 40 (kwonminki/Asyrp_official@a6c82dc:main.py:159-164; released ngen40: …:main.py:235)
    c.n_steps = 40
    return c
