"""Configs for the iDDPM FFHQ model Asyrp uses (``ffhq_10m.pt``, guided-diffusion ``UNetModel`` with learned variance;
preset ``ffhq``, the AFHQ architecture). Each file imports the configs/celebahq256 job and overrides only what differs
(cited as kwonminki/Asyrp_official@a6c82dc:path:line in each docstring). ``model_path`` may be the official ``.pt``: it
is converted into ``{workdir}/converted/`` on the first run (jaxhspace.checkpoints.auto_convert).
"""
