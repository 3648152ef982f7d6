"""The tiny AutoencoderKL of the text-conditioned default (32x32x3 faces -> 8x8x4 latents), trained on SynthFaces.

    python -m jaxhspace.main --config configs/sd_synthfaces/vae.py --workdir runs/sd_vae
    # then the pipeline's vae/ (assemble with configs/sd_synthfaces/unet.py's job, which reads it from here):
    python -m jaxhspace.main --config configs/sd_synthfaces/vae.py --workdir runs/sd_vae \
        --config.export_dir=assets/sd_synthfaces_parts/vae --config.allow_asset_export=True

Re-running resumes; each run stops itself (after saving) at ``max_minutes``.
"""
import ml_collections

try:
    from jaxhspace.configs._common import add_run_fields
except ImportError:  # a source tree used without installing jaxhspace
    from configs._common import add_run_fields


def get_config():
    c = ml_collections.ConfigDict()
    c.task = "vae_train"
    c.seed = 0
    c.image_size = 32
    # diffusers AutoencoderKL config (SD's VAE scaled down: three levels, two downsamplings, 4 latent channels)
    c.vae = dict(
        in_channels=3, out_channels=3, latent_channels=4, sample_size=32,
        down_block_types=["DownEncoderBlock2D"] * 3, up_block_types=["UpDecoderBlock2D"] * 3,
        block_out_channels=[32, 48, 64], layers_per_block=1, norm_num_groups=16, act_fn="silu",
    )
    c.batch_size = 32
    c.lr = 1e-3
    c.final_lr = 5e-5
    c.warmup_steps = 100
    c.grad_clip = 1.0
    c.total_steps = 1200
    c.kl_weight = 1e-4           # per image, on the sum-over-pixels scale of the reconstruction term
    c.perceptual_weight = 0.05   # probe-feature distance (see jaxhspace.training.vae)
    c.probe_path = ""            # '' = the shipped assets/probe
    c.eval_seed = 777
    return add_run_fields(c)  # checkpoints, logging, max_minutes, export, resume policy, loss guard
