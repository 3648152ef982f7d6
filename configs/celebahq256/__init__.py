"""Configs for real 256×256 face DDPMs (google/ddpm-ema-celebahq-256 as a diffusers folder), with the official
Asyrp / Diffusion-Pullback / Haas et al. defaults. One file per job; each docstring starts with its command.

``model_path`` (and ``clip_path`` for Asyrp training, ``image_paths`` for jobs that edit real images) are
required: the placeholders below are rejected with an error naming the field. ``image_paths`` entries may be
image files or folders of images (all images in a folder are used). Official code is cited by
repository, commit, path and line (e.g. kwonminki/Asyrp_official@a6c82dc:main.py:159-164).

``model_path`` may also be the official SDEdit / DiffusionCLIP ``celeba_hq.ckpt`` that Asyrp loads
(kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:84-85) or a guided-diffusion ``.pt`` (e.g. the P2-weighting
CelebA-HQ model, …:README.md:38,50): the job converts it into ``{workdir}/converted/`` on its first run and reuses the
folder while the file is unchanged (``model_format`` / ``model_preset`` / ``model_arch_json``; preset inferred from
the file's shapes; see jaxhspace.checkpoints.auto_convert). Other datasets: configs/afhq_dog, configs/ffhq,
configs/metfaces, configs/imagenet256.
"""
