"""Park et al.'s pullback directions J = ∂h/∂z on Stable Diffusion latents, with a fixed prompt embedding inside the
Jacobian and the same prompt in the x-space guidance edits z ← z + γ[ε(z + λv) − ε(z)].

    python -m jaxhspace.main --config configs/sd/pullback.py --workdir runs/sd_pullback \
        --config.model_path=/data/stable-diffusion-2-1-base --config.image_paths="('/data/faces',)"

Official SD settings (park_official.md §4, Diffusion-Pullback ``src/modules/edit.py`` SD branch): γ = 1 (edit.py
SD scripts), 16 edit steps without a prompt (64 with one), edit_t ∈ {0.7, 0.6}·T; the Jacobian of SD uses chunk 5
(edit.py 236-239). Images are VAE-encoded (latent mean × scaling_factor) and DDIM-inverted with the prompt to edit_t.
Differences: our SVD is the matrix-free solver of ``svd_method`` (the official runs subspace iteration); guidance
scale 1 (the conditional branch only) in inversion, Jacobian and edits.
"""
from configs.pullback import get_config as base


def get_config():
    c = base()
    c.model_family = "latent"
    c.model_path = ""          # REQUIRED: a local diffusers pipeline folder (SD-1.5, SD-2.1-base, ...)
    c.prompt = ""              # the fixed prompt inside every UNet call ("" = the unconditional branch)
    c.image_size = 0           # 0 = the pipeline's native size (unet sample_size x VAE factor: 512 for SD)
    c.n_steps = 50
    c.edit_t = 600             # 0.6 T
    c.gamma = 1.0              # SD scripts: x_space_guidance_scale 1
    c.lam = 1.0                # unit v
    c.n_edit_steps = 16        # without a prompt (64 with one)
    c.k = 2
    c.n_dirs = 2
    c.upscale = 1
    return c
