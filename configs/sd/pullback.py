"""Park et al.'s pullback directions J = ∂h/∂z on Stable Diffusion latents, with a fixed prompt embedding inside the
Jacobian and the same prompt in the x-space guidance edits z ← z + γ[ε(z + λv) − ε(z)].

    python -m jaxhspace.main --config configs/sd/pullback.py --workdir runs/sd_pullback \
        --config.model_path=/data/stable-diffusion-2-1-base --config.image_paths="('/data/faces',)"

Official SD defaults (enkeejunior1/Diffusion-Pullback@859c012; E = src/modules/edit.py,
A = src/utils/define_argparser.py, M = src/main.py, S0 / S1 = src/scripts/
main_various_local_encoder_pullback_without_edit_prompt.sh / ..._with_edit_prompt.sh):
  * model stabilityai/stable-diffusion-2-1-base, ε-prediction, fp32 (S0:11; A:22); real images centre-cropped to
    512 px, z = 0.18215 · VAE posterior sample (E:140-146), DDIM-inverted with the prompt "" (A:36) to edit_t;
  * 100 for/inv steps on the float grid t_j = (99 − j)·999/99 (A:40-41); edit_t ∈ {0.7, 0.6}·T (S0:3, S1:1);
  * J = ∂h/∂z, h = mid_block output 8×8×1280, with the edit prompt's embedding (S0: "", S1: "sitting dog",
    "tiger"; E:198-200, 237), k = 2 (M:33), chunk 5, 10–50 iterations, atol 1e-4 (E:236-239);
  * edit: γ = 1 (S0:14, S1:14), λ = 1 (A:70), 16 steps without a prompt, 64 with one (S0:15, S1:15), no CFG in
    the edit (E:493-496); η = 0 everywhere: SD has no quality boosting (A:227: performance_boosting_t ≤ 0).
  * timesteps as the official (``park_grid = park_inversion = "official"``): the float grid, the last step to t = 0
    with ᾱ_0, and z_t from the inversion that runs 98 of 99 float steps (to t ≈ 988.9) sampled back from 999 as if it
    were z_999 (E:152-178, 214); ``--config.park_inversion=to_edit_t`` inverts straight to edit_t instead.
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
    c.prompt = ""              # S0: ""; S1: "sitting dog" / "tiger" (with n_edit_steps = 64)
    c.image_size = 0           # 0 = the pipeline's native size (unet sample_size x VAE factor: 512 for SD)
    c.n_steps = 100            # A:40-41
    c.edit_t = 600             # 0.6 T (S0:3)
    c.t_boost = 0              # no η = 1 boosting on SD (A:227)
    c.park_grid = "official"   # the official float grid, last step to ᾱ_0
    c.park_inversion = "official"   # z_t from the inversion truncated at ≈ 988.9, sampled from 999
    c.gamma = 1.0              # S0:14
    c.lam = 1.0                # A:70
    c.n_edit_steps = 16        # S0:15 (64 with a prompt, S1:15)
    c.k = 2                    # M:33
    c.n_dirs = 2
    c.svd_tol = 1e-4
    c.upscale = 1
    return c
