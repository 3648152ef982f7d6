"""Configs for the unconditional latent DDPM ``CompVis/ldm-celebahq-256`` (a ``UNet2DModel`` on the 64×64×3 latents of
a ``VQModel``; Haas et al.'s ``"ldm"`` model,
renhaa/semantic-diffusion@91f0a15:semanticdiffusion.py:1195-1200). Each imports the SD job's config
(same latent world, no prompt); ``model_path`` and ``image_paths`` are required.
"""
