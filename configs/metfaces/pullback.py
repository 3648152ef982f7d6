"""Pullback (Park et al.) directions J = ∂h/∂x of MetFaces paintings on the P2-weighting model (``metface_p2.pt``,
h = ``middle_block`` output, 8×8×512).

    python -m jaxhspace.main --config configs/metfaces/pullback.py --workdir runs/metfaces_pullback \
        --config.model_path=/data/pretrained/metface_p2.pt --config.image_paths="('/data/metfaces_test',)"

Park et al.'s CelebA-HQ face settings
(enkeejunior1/Diffusion-Pullback@859c012:src/scripts/main_celeba_hf_local_encoder_pullback.sh:2-21); only the model
differs from configs/celebahq256/pullback.py (kwonminki/Asyrp_official@a6c82dc:configs/paths_config.py:18, preset
``metfaces_p2``).
"""
try:
    from jaxhspace.configs.celebahq256.pullback import get_config as base
except ImportError:  # a source tree used without installing jaxhspace
    from configs.celebahq256.pullback import get_config as base


def get_config():
    c = base()
    c.model_path = "/path/to/metface_p2.pt"    # REQUIRED: the official .pt (or its converted folder)
    c.model_preset = "metfaces_p2"
    return c
