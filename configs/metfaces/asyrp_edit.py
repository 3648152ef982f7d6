"""Asyrp edits of MetFaces paintings on the P2-weighting model (``metface_p2.pt``) with trained or released editors
(kwonminki/Asyrp_official@a6c82dc).

    python -m jaxhspace.main --config configs/metfaces/asyrp_edit.py --workdir runs/metfaces_edit \
        --config.model_path=/data/pretrained/metface_p2.pt --config.image_paths="('/data/metfaces_test',)" \
        --config.editor_paths="('runs/metfaces_smiling/editor',)"

Released editors (ADM DeltaBlock) convert with ``python -m checkpoints_convert.asyrp_editor
checkpoint/metface_smiling_LC_metfaces_t999_ninv40_ngen40_0.pth DST`` (also metface_angry, _sad, _disgusted).
What differs from configs/celebahq256/asyrp_edit.py: the model
(kwonminki/Asyrp_official@a6c82dc:configs/paths_config.py:18, preset ``metfaces_p2``, converted on the fly) and t_edit /
t_boost as the official inference reads them from the shipped curves
(kwonminki/Asyrp_official@a6c82dc:script_inference.sh:34-36): t_edit 320 (…:utils/metface_LPIPS_distance_x0_t.tsv:320,
LPIPS 0.3), t_boost 180 (…:utils/metface_LPIPS_distance_x.tsv:180, LPIPS 1.2); -1 takes them from the editor's meta
instead.
"""
try:
    from jaxhspace.configs.celebahq256.asyrp_edit import get_config as base
except ImportError:  # a source tree used without installing jaxhspace
    from configs.celebahq256.asyrp_edit import get_config as base


def get_config():
    c = base()
    c.model_path = "/path/to/metface_p2.pt"    # REQUIRED: the official .pt (or its converted folder)
    c.model_preset = "metfaces_p2"
    c.t_edit = 320               # kwonminki/Asyrp_official@a6c82dc:utils/metface_LPIPS_distance_x0_t.tsv:320
    c.t_boost = 180              # kwonminki/Asyrp_official@a6c82dc:utils/metface_LPIPS_distance_x.tsv:180
    return c
