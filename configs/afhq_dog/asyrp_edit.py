"""Asyrp edits of dog faces on the iDDPM AFHQ-dog model (``afhq_dog_4m.pt``) with trained or released editors
(kwonminki/Asyrp_official@a6c82dc).

    python -m jaxhspace.main --config configs/afhq_dog/asyrp_edit.py --workdir runs/afhq_dog_edit \
        --config.model_path=/data/pretrained/afhq_dog_4m.pt --config.image_paths="('/data/afhq/val/dog',)" \
        --config.editor_paths="('runs/afhq_dog_happy/editor',)"

Released editors (ADM DeltaBlock) convert with ``python -m checkpoints_convert.asyrp_editor
checkpoint/dog_happy_LC_dog_t999_ninv40_ngen40_0.pth DST`` (also dog_angry, dog_sleepy, dog_wolf, dog_yorkshire). What
differs from configs/celebahq256/asyrp_edit.py: the model (kwonminki/Asyrp_official@a6c82dc:configs/paths_config.py:13,
preset ``afhq_dog``, converted on the fly) and t_edit / t_boost, set to the AFHQ values the official inference
(…:script_inference.sh:34-36: ``--add_noise_from_xt --lpips_addnoise_th 1.2 --lpips_edit_th 0.33``) reads from the
shipped curves: t_edit 444 (…:utils/t_edit_dic.py:5, …:utils/afhq_LPIPS_distance_x0_t.tsv:444), t_boost 167
(…:utils/afhq_LPIPS_distance_x.tsv:167); -1 takes them from the editor's meta instead.
"""
try:
    from jaxhspace.configs.celebahq256.asyrp_edit import get_config as base
except ImportError:  # a source tree used without installing jaxhspace
    from configs.celebahq256.asyrp_edit import get_config as base


def get_config():
    c = base()
    c.model_path = "/path/to/afhq_dog_4m.pt"   # REQUIRED: the official .pt (or its converted folder)
    c.model_preset = "afhq_dog"
    c.t_edit = 444               # kwonminki/Asyrp_official@a6c82dc:utils/t_edit_dic.py:5
    c.t_boost = 167              # kwonminki/Asyrp_official@a6c82dc:utils/afhq_LPIPS_distance_x.tsv:167
    return c
