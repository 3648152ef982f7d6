"""Pullback (Park et al.) directions J = ∂h/∂x of dog faces on the iDDPM AFHQ-dog model (``afhq_dog_4m.pt``,
h = ``middle_block`` output, 8×8×512; ε = the first 3 of its 6 output channels).

    python -m jaxhspace.main --config configs/afhq_dog/pullback.py --workdir runs/afhq_dog_pullback \
        --config.model_path=/data/pretrained/afhq_dog_4m.pt --config.image_paths="('/data/afhq/val/dog',)"

Park et al. publish pixel-space settings only for CelebA-HQ
(enkeejunior1/Diffusion-Pullback@859c012:src/scripts/main_celeba_hf_local_encoder_pullback.sh:2-21); they are kept here
(edit_t 0.6·T, 100 steps, γ 0.1, 16 guidance steps, boosting below 0.2·T). Only the model differs from
configs/celebahq256/pullback.py (kwonminki/Asyrp_official@a6c82dc:configs/paths_config.py:13, preset ``afhq_dog``,
converted on the fly).
"""
try:
    from jaxhspace.configs.celebahq256.pullback import get_config as base
except ImportError:  # a source tree used without installing jaxhspace
    from configs.celebahq256.pullback import get_config as base


def get_config():
    c = base()
    c.model_path = "/path/to/afhq_dog_4m.pt"   # REQUIRED: the official .pt (or its converted folder)
    c.model_preset = "afhq_dog"
    return c
