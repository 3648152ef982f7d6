"""Park et al.'s pullback directions J = ∂h/∂z on Stable Diffusion latents, with a fixed prompt embedding inside the
Jacobian and the same prompt in the x-space guidance edits z ← z + γ[ε(z + λv) − ε(z)].

    python -m jaxhspace.main --config configs/sd/pullback.py --workdir runs/sd_pullback \
        --config.model_path=/data/stable-diffusion-2-1-base --config.image_paths="('/data/faces',)"

Official SD defaults (enkeejunior1/Diffusion-Pullback@859c012; the scripts are
src/scripts/main_various_local_encoder_pullback_without_edit_prompt.sh and ..._with_edit_prompt.sh):

  * model stabilityai/stable-diffusion-2-1-base, ε-prediction, fp32
    (enkeejunior1/Diffusion-Pullback@859c012:src/scripts/main_various_local_encoder_pullback_without_edit_prompt.sh:11,
    …:src/utils/define_argparser.py:22); real images centre-cropped to 512 px, z = 0.18215 · VAE posterior sample
    (…:src/modules/edit.py:140-146), DDIM-inverted with the prompt "" (…:src/utils/define_argparser.py:36) to edit_t;
  * 100 for/inv steps on the float grid t_j = (99 − j)·999/99
    (enkeejunior1/Diffusion-Pullback@859c012:src/utils/define_argparser.py:40-41); edit_t ∈ {0.7, 0.6}·T
    (…:src/scripts/main_various_local_encoder_pullback_without_edit_prompt.sh:3,
    …:src/scripts/main_various_local_encoder_pullback_with_edit_prompt.sh:1);
  * J = ∂h/∂z, h = mid_block output 8×8×1280, with the edit prompt's embedding (without / with edit prompt: "", "sitting
    dog", "tiger"; enkeejunior1/Diffusion-Pullback@859c012:src/modules/edit.py:198-200, 237), k = 2 (…:src/main.py:33),
    chunk 5, 10–50 iterations, atol 1e-4 (…:src/modules/edit.py:236-239);
  * edit: γ = 1
    (enkeejunior1/Diffusion-Pullback@859c012:src/scripts/main_various_local_encoder_pullback_without_edit_prompt.sh:14,
    …:src/scripts/main_various_local_encoder_pullback_with_edit_prompt.sh:14), λ = 1
    (…:src/utils/define_argparser.py:70), 16 steps without a prompt, 64 with one
    (…:src/scripts/main_various_local_encoder_pullback_without_edit_prompt.sh:15,
    …:src/scripts/main_various_local_encoder_pullback_with_edit_prompt.sh:15), no CFG in the edit
    (…:src/modules/edit.py:493-496); η = 0 everywhere: SD has no quality boosting (…:src/utils/define_argparser.py:227:
    performance_boosting_t ≤ 0).
  * timesteps as the official (``park_grid = park_inversion = "official"``): the float grid, the last step to t = 0 with
    ᾱ_0, and z_t from the inversion that runs 98 of 99 float steps (to t ≈ 988.9) sampled back from 999 as if it were
    z_999 (enkeejunior1/Diffusion-Pullback@859c012:src/modules/edit.py:152-178, 214);
    ``--config.park_inversion=to_edit_t`` inverts straight to edit_t instead.

Differences: our SVD is ``svd_method`` (matrix-free, tolerance-stopped; the official runs subspace iteration); the
latent is the VAE posterior *mean* (deterministic; the official samples it with seed 0); one ``prompt`` serves
inversion, Jacobian, edits and decoding (the official inverts and decodes with "" and uses the edit prompt for the
Jacobian and the edit: identical with the default "").
"""
from jaxhspace.configs.pullback import get_config as base


def get_config():
    c = base()
    c.model_family = "latent"
    c.model_path = ""          # REQUIRED: a local diffusers pipeline folder (SD-2.1-base as the official, SD-1.5, ...)
    # "" without an edit prompt; "sitting dog" / "tiger" (with n_edit_steps = 64) with one
    # (enkeejunior1/Diffusion-Pullback@859c012:src/main.py:33 passes edit_prompt;
    # …:src/scripts/main_various_local_encoder_pullback_without_edit_prompt.sh:13,
    # …:src/scripts/main_various_local_encoder_pullback_with_edit_prompt.sh:5, 13)
    c.prompt = ""
    c.image_size = 0           # 0 = the pipeline's native size (unet sample_size x VAE factor: 512 for SD)
    c.n_steps = 100            # enkeejunior1/Diffusion-Pullback@859c012:src/utils/define_argparser.py:40-41
    # 0.6 T (enkeejunior1/Diffusion-Pullback@859c012:src/main.py:30-34 run with
    # …:src/scripts/main_various_local_encoder_pullback_without_edit_prompt.sh:3)
    c.edit_t = 600
    # no η = 1 boosting on SD (enkeejunior1/Diffusion-Pullback@859c012:src/utils/define_argparser.py:227)
    c.t_boost = 0
    c.park_grid = "official"   # the official float grid, last step to ᾱ_0
    c.park_inversion = "official"   # z_t from the inversion truncated at ≈ 988.9, sampled from 999
    # γ = 1 and 16 steps (enkeejunior1/Diffusion-Pullback@859c012:src/main.py:30-34 run with
    # …:src/scripts/main_various_local_encoder_pullback_without_edit_prompt.sh:14-15;
    # 64 steps with a prompt: …:src/scripts/main_various_local_encoder_pullback_with_edit_prompt.sh:14-15)
    c.gamma = 1.0
    c.lam = 1.0                # enkeejunior1/Diffusion-Pullback@859c012:src/utils/define_argparser.py:70
    c.n_edit_steps = 16
    c.k = 2                    # enkeejunior1/Diffusion-Pullback@859c012:src/main.py:33
    c.n_dirs = 2
    c.svd_tol = 1e-4
    c.upscale = 1
    return c
