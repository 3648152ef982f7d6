"""DDIM samples from the shipped SynthFaces sampler DDPM (assets/ddpm_synthfaces_refined; or any diffusers UNet
folder via model_path).

    python -m jaxhspace.main --config configs/sample.py --workdir runs/sample
    # its best setting here (README: 92% of 512 samples have every factor in range, probe FD 2.7, data floor 1.0):
    python -m jaxhspace.main --config configs/sample.py --workdir runs/sample --config.clip_sample=True --config.eta=1.0
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.task = "sample"
    c.precision = "highest"     # float32 matmuls on TPU/GPU; "high"/"default" faster, less accurate
    c.model_path = "assets/ddpm_synthfaces_refined"  # the sampler DDPM; "" = assets/ddpm_synthfaces (the editing
                                                     # world's 6000-step model); or a diffusers UNet2DModel folder
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
