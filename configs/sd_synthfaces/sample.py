"""Prompt following of the text-conditioned default (assets/sd_synthfaces): 256 prompts from random SynthFaces factor
combinations, CFG DDIM at guidance 1, 3, 5, read back by the probe, beside the data and a random-init UNet.

    python -m jaxhspace.main --config configs/sd_synthfaces/sample.py --workdir runs/sd_sample
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.task = "prompt_sample"
    c.precision = "highest"
    c.model_path = "assets/sd_synthfaces"
    c.seed = 0
    c.prompt_seed = 4242
    c.num_prompts = 256
    c.batch_size = 64
    c.n_steps = 20
    c.guidance_scales = (1.0, 3.0, 5.0)
    c.random_init_baseline = True
    c.random_init_guidance = 3.0
    c.grid_cols = 8
    c.upscale = 3
    return c
