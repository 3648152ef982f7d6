"""Pullback (Park et al.) directions J = ∂h/∂x on the unconditional ADM ImageNet 256 model
(``256x256_diffusion_uncond.pt``, h = ``middle_block`` output, 8×8×1024, m = 65,536).

    python -m jaxhspace.main --config configs/imagenet256/pullback.py --workdir runs/imagenet_pullback \
        --config.model_path=/data/pretrained/256x256_diffusion_uncond.pt --config.image_paths="('/data/imagenet_test',)"

Park et al. publish pixel-space settings only for CelebA-HQ
(enkeejunior1/Diffusion-Pullback@859c012:src/scripts/main_celeba_hf_local_encoder_pullback.sh:2-21); they are kept. Only
the model differs from configs/celebahq256/pullback.py (kwonminki/Asyrp_official@a6c82dc:configs/paths_config.py:16,
preset ``imagenet256_uncond``). The model has 552.8M parameters (5.9x the 93.6M of the 128-channel afhq_dog / ffhq /
metfaces_p2 presets).
"""
try:
    from jaxhspace.configs.celebahq256.pullback import get_config as base
except ImportError:  # a source tree used without installing jaxhspace
    from configs.celebahq256.pullback import get_config as base


def get_config():
    c = base()
    c.model_path = "/path/to/256x256_diffusion_uncond.pt"   # REQUIRED: the official .pt (or its converted folder)
    c.model_preset = "imagenet256_uncond"
    return c
