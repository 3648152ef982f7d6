"""The embedded default world (package data, no code): installed as ``jaxhspace.assets``.

``ddpm_synthfaces`` (the editing DDPM), ``ddpm_synthfaces_refined`` (the sampler), ``clip_synthfaces``,
``probe``, ``editors/`` and ``sd_synthfaces`` (the text-conditioned latent pipeline). Find the folder with
``jaxhspace.resources.assets_dir()``; README.md names the command that rebuilds each asset.
"""
