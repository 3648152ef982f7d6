"""Prompt edits on the text-conditioned default (the baseline of the latent demo stage): invert with "a face",
sample with "a smiling face" (and red hair, glasses), score against the reconstruction.

    python -m jaxhspace.main --config configs/sd_synthfaces/prompt_edit.py --workdir runs/sd_prompt_edit
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.task = "prompt_edit"
    c.precision = "highest"
    c.model_path = "assets/sd_synthfaces"
    c.seed = 0
    c.data_seed = 12345
    c.num_images = 8
    c.image_paths = ()
    c.n_steps = 20
    c.source_prompt = "a face"
    c.edits = (("a smiling face", "smile"), ("a face with red hair", "hair_color=red"),
               ("a face with glasses", "glasses"))
    c.guidance_scale = 3.0
    c.upscale = 3
    return c
