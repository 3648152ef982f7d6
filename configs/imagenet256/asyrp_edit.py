"""Asyrp edits of ImageNet images on the unconditional ADM model (``256x256_diffusion_uncond.pt``) with editors
trained by configs/imagenet256/asyrp_train.py.

    python -m jaxhspace.main --config configs/imagenet256/asyrp_edit.py --workdir runs/imagenet_edit \
        --config.model_path=/data/pretrained/256x256_diffusion_uncond.pt \
        --config.image_paths="('/data/imagenet_oranges_test',)" \
        --config.editor_paths="('runs/imagenet_orange2apple/editor',)"

Only the model differs from configs/celebahq256/asyrp_edit.py
(kwonminki/Asyrp_official@a6c82dc:configs/paths_config.py:16; preset ``imagenet256_uncond``, converted on the fly). No
ImageNet editors or LPIPS curves are released, so t_edit / t_boost come from the editor's meta (else 500 / 200,
kwonminki/Asyrp_official@a6c82dc:script_train.sh:25-26).
"""
try:
    from jaxhspace.configs.celebahq256.asyrp_edit import get_config as base
except ImportError:  # a source tree used without installing jaxhspace
    from configs.celebahq256.asyrp_edit import get_config as base


def get_config():
    c = base()
    c.model_path = "/path/to/256x256_diffusion_uncond.pt"   # REQUIRED: the official .pt (or its converted folder)
    c.model_preset = "imagenet256_uncond"
    return c
