"""Asyrp edits of your own faces with trained editors on a real 256×256 DDPM (official test-time settings:
``save_image``, kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:499-520; scaling …:diffusion_latent.py:626).

    python -m jaxhspace.main --config configs/celebahq256/asyrp_edit.py --workdir runs/celebahq256_edit \
        --config.model_path=/data/ddpm-ema-celebahq-256 --config.image_paths="('/data/celebahq_test',)" \
        --config.editor_paths="('runs/celebahq256_smiling/editor',)"

``editor_paths``: editors from configs/celebahq256/asyrp_train.py or official checkpoints converted with
``python -m checkpoints_convert.asyrp_editor SRC.pth DST`` (e.g. the released CelebA smiling_..._ninv40_ngen40_0.pth;
n_train_step 40 is then read from the editor's meta). Outputs as configs/asyrp_edit.py (no probe scores at 256 px).

Base model of the official editors: they were trained on SDEdit's ``celeba_hq.ckpt`` (the pesser/pytorch_diffusion
DDPM that Asyrp_official loads), NOT on diffusers' ``google/ddpm-ema-celebahq-256``. That the two hold the same
weights is unverified (it is not stated anywhere, and not checked here), so an official editor on
google/ddpm-ema-celebahq-256 may edit differently from the paper. For the original base convert it with
``python -m checkpoints_convert.ddpm_ckpt celeba_hq.ckpt /data/celeba_hq_ddpm --preset celeba_hq`` (or point
model_path at the .ckpt: it converts into the workdir) and use that folder as model_path.
"""
try:
    from jaxhspace.configs._common import official_checkpoint
    from jaxhspace.configs.asyrp_edit import get_config as base
except ImportError:  # a source tree used without installing jaxhspace
    from configs._common import official_checkpoint
    from configs.asyrp_edit import get_config as base


def get_config():
    c = official_checkpoint(base())
    return c
