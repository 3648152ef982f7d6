"""Configs for Stable Diffusion 1.x / 2.x pipeline folders (x = the VAE latent z_t, h = the UNet ``mid_block`` output,
8×8×1280 at 512 px). Each file imports the pixel job's config and overrides only what differs; the job code is the
same (``jaxhspace.tasks.inputs.World`` maps images <-> latents and fixes the prompt embedding inside every UNet
call). ``model_path`` (a local diffusers pipeline folder) and ``image_paths`` are required.
"""
