"""Train an Asyrp editor on the iDDPM FFHQ model (``ffhq_10m.pt``) (kwonminki/Asyrp_official@a6c82dc).

    python -m jaxhspace.main --config configs/ffhq/asyrp_train.py --workdir runs/ffhq_smiling \
        --config.model_path=/data/pretrained/ffhq_10m.pt --config.clip_path=/data/clip-vit-base-patch32 \
        --config.image_paths="('/data/ffhq_train100',)"

What differs from configs/celebahq256/asyrp_train.py: the model
(kwonminki/Asyrp_official@a6c82dc:configs/paths_config.py:14 ``pretrained/ffhq_10m.pt``, loaded as i_DDPM with learned
variance, …:diffusion_latent.py:109-115; preset ``ffhq`` = …:models/improved_ddpm/script_util.py:5-22,103-104, converted
on the fly) and the editor, the ADM DeltaBlock (…:models/improved_ddpm/unet.py:776-853). The repository ships no
``utils/ffhq_LPIPS_*.tsv``, so the official code needs ``--user_defined_t_edit 500 --user_defined_t_addnoise 200``
(kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:1341-1351; …:script_train.sh:25-26): t_edit 500, t_boost 200 as in
the base config. Texts, loss weights, lr 0.5, steps and data sizes are the base config's ('face' -> 'smiling face',
kwonminki/Asyrp_official@a6c82dc:utils/text_dic.py:25-26; …:script_train.sh:16-34).
"""
try:
    from jaxhspace.configs.celebahq256.asyrp_train import get_config as base
except ImportError:  # a source tree used without installing jaxhspace
    from configs.celebahq256.asyrp_train import get_config as base


def get_config():
    c = base()
    c.model_path = "/path/to/ffhq_10m.pt"      # REQUIRED: the official .pt (or its converted folder)
    c.model_preset = "ffhq"
    # ADM DeltaBlock: kwonminki/Asyrp_official@a6c82dc:models/improved_ddpm/unet.py:776-853
    c.editor_variant = "adm"
    return c
