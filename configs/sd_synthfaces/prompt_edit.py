"""Prompt edits on the text-conditioned default (the baseline of the latent demo stage): invert with "a face",
sample with "a smiling face" (and red hair, glasses), score against the reconstruction.

    python -m jaxhspace.main --config configs/sd_synthfaces/prompt_edit.py --workdir runs/sd_prompt_edit
"""
try:
    from jaxhspace.configs._common import editing_job
except ImportError:  # a source tree used without installing jaxhspace
    from configs._common import editing_job


def get_config():
    c = editing_job("prompt_edit", num_images=8, model_path="assets/sd_synthfaces")
    c.n_steps = 20
    c.source_prompt = "a face"
    c.edits = (("a smiling face", "smile"), ("a face with red hair", "hair_color=red"),
               ("a face with glasses", "glasses"))
    c.guidance_scale = 3.0
    return c
