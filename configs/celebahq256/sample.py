"""DDIM samples from a real 256×256 DDPM (google/ddpm-ema-celebahq-256 as a diffusers folder).

    python -m jaxhspace.main --config configs/celebahq256/sample.py --workdir runs/celebahq256_sample \
        --config.model_path=/data/ddpm-ema-celebahq-256

The folder is what ``huggingface-cli download google/ddpm-ema-celebahq-256 --local-dir ...`` (or
``UNet2DModel.save_pretrained``) writes: config.json + diffusion_pytorch_model.{safetensors,bin} (or a pipeline
folder with unet/); its scheduler_config.json (linear β 1e-4..0.02, T = 1000) is read if present. DDIM here never
clamps x0 (diffusers' DDPM scheduler config has clip_sample=True; Asyrp never clamps: asyrp_official.md §0).
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.task = "sample"
    c.precision = "highest"     # float32 matmuls on TPU/GPU; "high"/"default" faster, less accurate
    c.model_path = "/path/to/ddpm-ema-celebahq-256"   # REQUIRED: diffusers folder or official .ckpt/.pt
    c.model_format = "auto"      # auto | diffusers | ddpm_ckpt | guided_diffusion: a .ckpt/.pt converts into
                                 # workdir/converted (jaxhspace.checkpoints.auto_convert), reused while unchanged
    c.model_preset = ""          # the converter's --preset; "" = inferred from the file's parameter shapes
    c.model_arch_json = ""       # the converter's --arch-json, for checkpoints of other architectures
    c.seed = 0
    c.image_size = 256         # only used when the model config has no sample_size
    c.num_samples = 4
    c.grid_cols = 4
    c.n_steps = 40             # Asyrp test grid n_test = 40 (asyrp_official.md §1, MAIN:159-164 / released ngen40)
    c.spacing = "asyrp"        # official Asyrp grid linspace(0, 1, n)·999 (DL:955-957)
    c.eta = 0.0
    c.clip_sample = False      # diffusers clip_sample (x0 clipped to [-1, 1] each step); the official codes do not clip
    c.upscale = 1
    return c
