"""Train the shipped tiny DDPM on SynthFaces (32x32) and export it to assets/ddpm_synthfaces (diffusers format).

    python -m jaxhspace.main --config configs/ddpm_synthfaces.py --workdir runs/ddpm_synthfaces

Re-running the same command resumes from the newest checkpoint in workdir/checkpoints; each run stops
(after saving) at ``max_minutes``. The export happens once ``total_steps`` are done.
"""
import ml_collections


def get_config():
    c = ml_collections.ConfigDict()
    c.task = "ddpm_train"
    c.seed = 0
    c.image_size = 32
    # diffusers UNet2DModel config: DDPM-style (eps 1e-6, freq_shift 1, no sin/cos flip, padding 0) like
    # google/ddpm-ema-celebahq-256, scaled down: h = mid-block output is 8x8x128.
    c.unet = dict(
        sample_size=32, in_channels=3, out_channels=3,
        block_out_channels=[32, 64, 128], layers_per_block=1,
        down_block_types=["DownBlock2D", "DownBlock2D", "AttnDownBlock2D"],
        up_block_types=["AttnUpBlock2D", "UpBlock2D", "UpBlock2D"],
        attention_head_dim=None, norm_num_groups=16, norm_eps=1e-6,
        flip_sin_to_cos=False, freq_shift=1, downsample_padding=0, act_fn="silu",
    )
    c.beta_schedule = "linear"
    c.beta_start = 1e-4
    c.beta_end = 0.02
    c.num_train_timesteps = 1000
    c.batch_size = 32
    c.lr = 5e-4
    c.warmup_steps = 200
    c.grad_clip = 1.0
    c.ema_decay = 0.995
    c.total_steps = 6000
    c.checkpoint_every = 250
    c.log_every = 25
    c.max_minutes = 55.0
    c.export_dir = "assets/ddpm_synthfaces"
    return c
