"""Configs for the unconditional ADM ImageNet 256 model (``256x256_diffusion_uncond.pt``, openai guided-diffusion;
preset ``imagenet256_uncond``: 256 channels, 2 res blocks, attention at 32/16/8, h = 8×8×1024). Each file imports
the configs/celebahq256 job and overrides only what differs (cited as kwonminki/Asyrp_official@a6c82dc:path:line in each
docstring). ``model_path`` may be the official ``.pt``: it is converted into ``{workdir}/converted/`` on the first
run (jaxhspace.checkpoints.auto_convert).
"""
