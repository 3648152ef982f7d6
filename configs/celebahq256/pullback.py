"""Pullback (Park et al., NeurIPS 2023) directions J = ∂h/∂x of your own faces on a real 256×256 DDPM, with the
official CelebA-HQ script's settings (park_official.md; script = src/scripts/main_celeba_hf_local_encoder_pullback.sh,
edit.py / main.py of enkeejunior1/Diffusion-Pullback @ 859c012).

    python -m jaxhspace.main --config configs/celebahq256/pullback.py --workdir runs/celebahq256_pullback \
        --config.model_path=/data/ddpm-ema-celebahq-256 --config.image_paths="('/data/celebahq_test',)"

x ∈ R^{256×256×3} (n = 196,608), h = 8×8×512 (m = 32,768). The edit is the official x-space guidance
x ← x + γ[ε(x + λv) − ε(x)] repeated n_edit_steps times with a fixed unit v, then DDIM down to 0 with η = 1 below
t_boost. Differences: the SVD is our block Krylov (the official runs 50 iterations of subspace iteration); the
inversion stops at edit_t on our integer Asyrp grid instead of inverting to x_T and sampling back down on the
official float grid t_j = (99 − j)·999/99 (the same point up to the inversion error).
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
