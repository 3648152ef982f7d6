"""DDIM samples from the shipped SynthFaces DDPM (or any diffusers UNet folder via model_path).

    python -m jaxhspace.main --config configs/sample.py --workdir runs/sample
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.task = "sample"
    c.model_path = ""          # "" = assets/ddpm_synthfaces; or a diffusers UNet2DModel folder
    c.seed = 0
    c.image_size = 32          # only used when the model config has no sample_size
    c.num_samples = 16
    c.grid_cols = 8
    c.n_steps = 50
    c.spacing = "asyrp"        # "asyrp" | "leading" | "trailing" | "linspace"
    c.eta = 0.0
    c.clip_sample = False      # True: clip the predicted x0 to [-1, 1] each step (diffusers clip_sample=True)
    c.upscale = 4
    return c
