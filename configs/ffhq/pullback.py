"""Pullback (Park et al.) directions J = ∂h/∂x of faces on the iDDPM FFHQ model (``ffhq_10m.pt``, h = 8×8×512).

    python -m jaxhspace.main --config configs/ffhq/pullback.py --workdir runs/ffhq_pullback \
        --config.model_path=/data/pretrained/ffhq_10m.pt --config.image_paths="('/data/ffhq_test',)"

Park et al.'s CelebA-HQ face settings
(enkeejunior1/Diffusion-Pullback@859c012:src/scripts/main_celeba_hf_local_encoder_pullback.sh:2-21) carry over to FFHQ
faces unchanged; only the model differs from configs/celebahq256/pullback.py
(kwonminki/Asyrp_official@a6c82dc:configs/paths_config.py:14, preset ``ffhq``).
"""
try:
    from jaxhspace.configs.celebahq256.pullback import get_config as base
except ImportError:  # a source tree used without installing jaxhspace
    from configs.celebahq256.pullback import get_config as base


def get_config():
    c = base()
    c.model_path = "/path/to/ffhq_10m.pt"      # REQUIRED: the official .pt (or its converted folder)
    c.model_preset = "ffhq"
    return c
