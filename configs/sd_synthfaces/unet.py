"""The text-conditioned embedded default: a tiny Stable-Diffusion-format UNet on the SynthFaces VAE's 8x8x4 latents,
cross-attending to the shipped CLIP's text tower; the export is the whole pipeline folder.

    # 1. the VAE (configs/sd_synthfaces/vae.py), then 2. this job, which writes the pipeline folder:
    python -m jaxhspace.main --config configs/sd_synthfaces/unet.py --workdir runs/sd_unet \
        --config.export_dir=assets/sd_synthfaces --config.allow_asset_export=True

Re-running resumes; each run stops itself (after saving) at ``max_minutes``.
"""
import ml_collections

try:
    from jaxhspace.configs._common import add_run_fields
except ImportError:  # a source tree used without installing jaxhspace
    from configs._common import add_run_fields


def get_config():
    c = ml_collections.ConfigDict()
    c.task = "latent_ddpm_train"
    c.seed = 0
    c.image_size = 32
    c.vae_path = "runs/sd_vae/export"          # a diffusers AutoencoderKL folder (the VAE job's export)
    c.clip_path = "assets/clip_synthfaces"     # its text tower (frozen) and tokenizer become the pipeline's
    # diffusers UNet2DConditionModel config: SD-1.x's layout scaled down. h = mid-block output is 4x4x64.
    c.unet = dict(
        sample_size=8, in_channels=4, out_channels=4,
        down_block_types=["CrossAttnDownBlock2D", "CrossAttnDownBlock2D"],
        up_block_types=["CrossAttnUpBlock2D", "CrossAttnUpBlock2D"],
        block_out_channels=[32, 64], layers_per_block=1, attention_head_dim=4, cross_attention_dim=64,
        norm_num_groups=8,
    )
    # Stable Diffusion's schedule
    c.beta_schedule = "scaled_linear"
    c.beta_start = 0.00085
    c.beta_end = 0.012
    c.num_train_timesteps = 1000
    c.caption_dropout = 0.1      # empty prompt: the unconditional branch of classifier-free guidance
    c.caption_keep_prob = 0.6    # each attribute of the caption kept with this probability ...
    c.caption_full_prob = 0.3    # ... or the full caption
    c.batch_size = 64
    c.lr = 7e-4
    c.warmup_steps = 200
    c.grad_clip = 1.0
    c.ema_decay = 0.999
    c.total_steps = 5000
    return add_run_fields(c)  # checkpoints, logging, max_minutes, export, resume policy, loss guard
