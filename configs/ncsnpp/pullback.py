"""Pullback (Park et al.) directions J = ∂h/∂x on the NCSN++ FFHQ score model (``google/ncsnpp-ffhq-256``, VE-SDE,
h = the mid block's 4×4×256 output at 256 px), edits along the top ones, then predictor-corrector sampling.

    python -m jaxhspace.main --config configs/ncsnpp/pullback.py --workdir runs/ncsnpp_pullback \
        --config.model_path=/data/ncsnpp-ffhq-256 --config.image_paths="('/data/ffhq_test',)"

``model_path`` is the diffusers folder (model_index.json + unet/ + scheduler/, or a UNet folder with the
``ScoreSdeVeScheduler`` scheduler_config.json beside it). What differs from the DDPM job (configs/pullback.py):

* no inversion: x_σ = x0 + σ z (x0 in [0, 1], z ~ N(0, I) from a fixed key), the VE forward process, as score-SDE /
  SDEdit editing noises an image; ``edit_sigma`` replaces ``edit_t``. σ = 3 is about Park's edit_t = 0.6 T of the
  CelebA-HQ DDPM: x_t / √ᾱ_t = x0 + √((1−ᾱ_t)/ᾱ_t) ε with √((1−ᾱ_600)/ᾱ_600) ≈ 6.2 for [-1, 1] data, halved for [0, 1];
* J = ∂h/∂x at (x_σ, σ); edits x ← x + γ[ε(x + λv) − ε(x)] with ε = −σ·score;
* sampling: ``n_steps`` predictor-corrector steps over the whole σ grid (σ_max → σ_min; the model's scheduler uses
  2000), starting at the step nearest ``edit_sigma``; ``snr`` and ``correct_steps`` as google/ncsnpp-ffhq-256's
  scheduler_config.json (0.15, 1). No η / ``t_boost``: the VE sampler is stochastic throughout.

Park et al.'s official code (``CelebA_HQ_HF`` -> ``google/ddpm-ema-celebahq-256`` at
enkeejunior1/Diffusion-Pullback@859c012:src/utils/utils.py:72-73, loaded as a diffusers UNet2DModel) only covers the
DDPM models (google/ddpm-ema-celebahq-256 and others), so every VE setting here is ours: γ = 0.3 and λ = 3 are the
official γ = 0.1, λ = 1 carried through x_σ = x_t / (2√ᾱ_t) at ᾱ_600 ≈ 0.026 (1 / (2√ᾱ) ≈ 3.1); k = 2 as the
official editing script. n_steps = 1000 halves the published 2000 steps (≈ 545 steps below σ = 3, 2 UNet calls each).
"""
try:
    from jaxhspace.configs.pullback import get_config as base
except ImportError:  # a source tree used without installing jaxhspace
    from configs.pullback import get_config as base


def get_config():
    c = base()
    c.model_path = "/path/to/ncsnpp-ffhq-256"   # REQUIRED: the diffusers google/ncsnpp-ffhq-256 folder
    c.image_paths = ()                          # REQUIRED for 256 px (SynthFaces renders 32/64 px only)
    c.num_images = 4
    del c.edit_t, c.t_boost                    # DDIM-only (inversion time, η = 1 boosting)
    c.edit_sigma = 3.0                          # noise level σ of the edit (t is σ for VE models)
    c.n_steps = 1000                            # predictor-corrector steps over the whole σ range
    c.snr = 0.15                                # corrector signal-to-noise ratio (scheduler_config.json)
    c.correct_steps = 1                         # Langevin corrector steps per step (scheduler_config.json)
    c.k = 2
    c.n_dirs = 2
    c.gamma = 0.3
    c.lam = 3.0
    c.n_edit_steps = 16
    c.upscale = 1
    return c
