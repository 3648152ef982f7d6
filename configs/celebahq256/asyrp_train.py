"""Train an Asyrp editor (DeltaBlock f_t, 512×8×8 h) on a real 256×256 DDPM with the official released-run
settings (``run_training``, kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:129-410; released runs:
…:script_train.sh:10-38).

    python -m jaxhspace.main --config configs/celebahq256/asyrp_train.py --workdir runs/celebahq256_smiling \
        --config.model_path=/data/ddpm-ema-celebahq-256 --config.clip_path=/data/clip-vit-base-patch32 \
        --config.image_paths="('/data/celebahq_train100',)"

Required: ``model_path`` (diffusers UNet folder), ``clip_path`` (HF CLIPModel folder with its tokenizer files,
e.g. openai/clip-vit-base-patch32; the official --clip_model_name default is ViT-B/16,
kwonminki/Asyrp_official@a6c82dc:main.py:212), and
``image_paths`` (training faces: files or a folder; the official scripts use 100 CelebA-HQ images). Re-running the
same command resumes from workdir/checkpoints; the editor is exported to workdir/editor when all epochs are done.
Then edit with configs/celebahq256/asyrp_edit.py.
"""
try:
    from jaxhspace.configs._common import official_checkpoint
    from jaxhspace.configs.asyrp_train import get_config as base
except ImportError:  # a source tree used without installing jaxhspace
    from configs._common import official_checkpoint
    from configs.asyrp_train import get_config as base


def get_config():
    c = official_checkpoint(base())
    c.clip_path = "/path/to/clip-vit-base-patch32"    # REQUIRED: HF CLIPModel folder with tokenizer files
    # bs > 1: -log(batch-mean L_dir), last x0 as source
    # (kwonminki/Asyrp_official@a6c82dc:losses/clip_loss.py:180, …:diffusion_latent.py:343)
    c.clip_batch = "official"
    # official: LPIPS(alex) (kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:1191-1303); needs lpips_path
    # (only used if t_edit < 0)
    c.t_select_metric = "lpips"
    c.t_select_images = 100      # official n_train_img = 100 images for the LPIPS curves
    c.t_select_steps = 1000      # official: 1000-step inversion for the curves
    return c
