"""The shipped Asyrp editor assets/editors/red_hair ("a face with black hair" -> "a face with red hair"), trained on
the shipped DDPM with the shipped tiny CLIP; the rest of the settings are configs/asyrp_train.py (the official CelebA
recipe).

    python -m jaxhspace.main --config configs/editor_red_hair.py --workdir runs/editor_red_hair

Re-running resumes; when done the editor is in runs/editor_red_hair/editor (copy it to assets/editors/red_hair).
Differences from the official recipe, both for the tiny CLIP: raw texts without the 79 ImageNet templates
(the tiny CLIP was trained on captions like "a smiling face with red hair", not photo templates), and a
plain λ_L1 L1 weight (5 here) instead of λ_L1·cos(E_T(src), E_T(tgt)) (that cosine is small or negative in the
tiny CLIP's text space, which turns the L1 term off or into a reward for moving away).
"""
from jaxhspace.configs.asyrp_train import get_config as base_config


def get_config():
    c = base_config()
    c.src_text = "a face with black hair"
    c.tgt_text = "a face with red hair"
    c.templates = "none"
    c.l1_use_cos = False
    c.target_factor = "hair_color=red"
    c.lambda_l1 = 5.0            # at the official 3.0 the red spills into the background (probe leakage 0.62)
    return c
