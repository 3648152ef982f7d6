"""Pullback (Park et al., NeurIPS 2023) directions J = ∂h/∂x of your own faces on a real 256×256 DDPM, with the
official CelebA-HQ script's settings (enkeejunior1/Diffusion-Pullback@859c012:src/main.py:30-34,
…:src/scripts/main_celeba_hf_local_encoder_pullback.sh:1-26).

    python -m jaxhspace.main --config configs/celebahq256/pullback.py --workdir runs/celebahq256_pullback \
        --config.model_path=/data/ddpm-ema-celebahq-256 --config.image_paths="('/data/celebahq_test',)"

x ∈ R^{256×256×3} (n = 196,608), h = 8×8×512 (m = 32,768). The edit is the official x-space guidance
x ← x + γ[ε(x + λv) − ε(x)] repeated n_edit_steps times with a fixed unit v, then DDIM down to 0 with η = 1 from
the step nearest t_boost on.

Timesteps as the official (``park_grid = park_inversion = "official"``, jaxhspace/editing/pullback_edit.py): the
float grid t_j = (99 − j)·999/99 (enkeejunior1/Diffusion-Pullback@859c012:src/utils/utils.py:1182-1195; the UNet
gets the float t, ᾱ is read at ⌊t⌋), edit_t 600 -> t ≈ 595.36 (…:src/modules/edit.py:583), η = 1 from t ≈ 201.8 on
(…:src/modules/edit.py:584, 1650: 20 noisy steps), the last step to t = 0 with ᾱ_0 (no extra 0 -> −1 step); x_t
comes from the inversion that breaks before its last step
(enkeejunior1/Diffusion-Pullback@859c012:src/modules/edit.py:645-648, x at t ≈ 988.9) and is sampled from t = 999
as if it were x_999 down to the edit time (…:src/modules/edit.py:703-707). That x_t is not the exact DDIM inversion
of x0 at the edit time; ``--config.park_inversion=to_edit_t`` inverts straight to it, and ``--config.park_grid=asyrp``
uses our integer Asyrp grid (η = 1 where t < 200, 19 noisy steps, then 0 -> −1).
Remaining difference: the SVD is our block Krylov (the official runs 50 iterations of subspace iteration).
"""
try:
    from jaxhspace.configs._common import official_checkpoint
    from jaxhspace.configs.pullback import get_config as base
except ImportError:  # a source tree used without installing jaxhspace
    from configs._common import official_checkpoint
    from configs.pullback import get_config as base


def get_config():
    c = official_checkpoint(base())
    # samples 0-4 and for/inv steps 100:
    # enkeejunior1/Diffusion-Pullback@859c012:src/scripts/main_celeba_hf_local_encoder_pullback.sh:4, 14-15
    c.num_images = 5
    c.n_steps = 100
    c.park_grid = "official"   # the official float grid, boosting boundary and last step to ᾱ_0 (see above)
    # x_t from the inversion truncated at ≈ 988.9, sampled from 999
    # (enkeejunior1/Diffusion-Pullback@859c012:src/modules/edit.py:648)
    c.park_inversion = "official"
    # pca_rank = 2 for the editing experiment (signature default 50) and vis_num_pc = 2:
    # enkeejunior1/Diffusion-Pullback@859c012:src/main.py:33
    c.k = 2
    c.n_dirs = 2
    # x_space_guidance_scale 0.1:
    # enkeejunior1/Diffusion-Pullback@859c012:src/scripts/main_celeba_hf_local_encoder_pullback.sh:18
    c.gamma = 0.1
    # λ = 1: v of unit norm (enkeejunior1/Diffusion-Pullback@859c012:src/modules/edit.py:764)
    c.lam = 1.0
    return c
