"""Pullback (Park et al., NeurIPS 2023) directions J = ∂h/∂x of your own faces on a real 256×256 DDPM, with the
official CelebA-HQ script's settings (park_official.md; script = src/scripts/main_celeba_hf_local_encoder_pullback.sh,
edit.py / main.py of enkeejunior1/Diffusion-Pullback @ 859c012).

    python -m jaxhspace.main --config configs/celebahq256/pullback.py --workdir runs/celebahq256_pullback \
        --config.model_path=/data/ddpm-ema-celebahq-256 --config.image_paths="('/data/celebahq_test',)"

x ∈ R^{256×256×3} (n = 196,608), h = 8×8×512 (m = 32,768). The edit is the official x-space guidance
x ← x + γ[ε(x + λv) − ε(x)] repeated n_edit_steps times with a fixed unit v, then DDIM down to 0 with η = 1 from
the step nearest t_boost on.

Timesteps as the official (``park_grid = park_inversion = "official"``, jaxhspace/editing/pullback_edit.py): the
float grid t_j = (99 − j)·999/99 (utils.py:1182-1195; the UNet gets the float t, ᾱ is read at ⌊t⌋), edit_t 600 ->
t ≈ 595.36 (edit.py:583), η = 1 from t ≈ 201.8 on (edit.py:584, 1650: 20 noisy steps), the last step to t = 0 with
ᾱ_0 (no extra 0 -> −1 step); x_t comes from the inversion that breaks before its last step (edit.py:645-648, x at
t ≈ 988.9) and is sampled from t = 999 as if it were x_999 down to the edit time (edit.py:703-707). That x_t is not
the exact DDIM inversion of x0 at the edit time; ``--config.park_inversion=to_edit_t`` inverts straight to it, and
``--config.park_grid=asyrp`` uses our integer Asyrp grid (η = 1 where t < 200, 19 noisy steps, then 0 -> −1).
Remaining difference: the SVD is our block Krylov (the official runs 50 iterations of subspace iteration).
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.task = "pullback"
    c.precision = "highest"     # float32 matmuls on TPU/GPU; "high"/"default" faster, less accurate
    c.model_path = "/path/to/ddpm-ema-celebahq-256"   # REQUIRED: diffusers folder or official .ckpt/.pt
    c.model_format = "auto"      # auto | diffusers | ddpm_ckpt | guided_diffusion: a .ckpt/.pt converts into
                                 # workdir/converted (jaxhspace.checkpoints.auto_convert), reused while unchanged
    c.model_preset = ""          # the converter's --preset; "" = inferred from the file's parameter shapes
    c.model_arch_json = ""       # the converter's --arch-json, for checkpoints of other architectures
    c.seed = 0
    c.data_seed = 12345        # unused with image_paths
    c.num_images = 5           # script L4: samples 0-4
    c.image_paths = ()         # REQUIRED: faces to edit (files or folders)
    c.n_steps = 100            # script L14-15: for/inv steps 100
    c.edit_t = 600             # script L2: edit_t ∈ {1.0, 0.8, 0.6}·T (0.6 -> t ≈ 595, edit.py L583)
    c.t_boost = 200            # script L21: performance_boosting_t 0.2 (η = 1 below, edit.py L1650-1653)
    c.park_grid = "official"   # the official float grid, boosting boundary and last step to ᾱ_0 (see above)
    c.park_inversion = "official"   # x_t from the inversion truncated at ≈ 988.9, sampled from 999 (edit.py:648)
    c.k = 2                    # main.py L30-34: pca_rank = 2 for the editing experiment (signature default 50)
    c.svd_method = "krylov"
    c.svd_tol = 1e-3
    c.svd_max_iters = 30
    c.n_dirs = 2               # main.py L30-34: vis_num_pc = 2
    c.gamma = 0.1              # script L18: x_space_guidance_scale 0.1
    c.lam = 1.0                # λ = 1: v of unit norm (edit.py L764)
    c.n_edit_steps = 16        # script L19: x_space_guidance_num_step 16
    c.upscale = 1
    return c
