"""Asyrp edits of faces on the iDDPM FFHQ model (``ffhq_10m.pt``) with editors trained by configs/ffhq/asyrp_train.py.

    python -m jaxhspace.main --config configs/ffhq/asyrp_edit.py --workdir runs/ffhq_edit \
        --config.model_path=/data/pretrained/ffhq_10m.pt --config.image_paths="('/data/ffhq_test',)" \
        --config.editor_paths="('runs/ffhq_smiling/editor',)"

Only the model differs from configs/celebahq256/asyrp_edit.py (kwonminki/Asyrp_official@a6c82dc
kwonminki/Asyrp_official@a6c82dc:configs/paths_config.py:14; preset ``ffhq``, converted on the fly). No FFHQ editors are
released and no FFHQ LPIPS curves are shipped, so t_edit / t_boost come from the editor's meta (else 500 / 200,
kwonminki/Asyrp_official@a6c82dc:script_train.sh:25-26).
"""
try:
    from jaxhspace.configs.celebahq256.asyrp_edit import get_config as base
except ImportError:  # a source tree used without installing jaxhspace
    from configs.celebahq256.asyrp_edit import get_config as base


def get_config():
    c = base()
    c.model_path = "/path/to/ffhq_10m.pt"      # REQUIRED: the official .pt (or its converted folder)
    c.model_preset = "ffhq"
    return c
