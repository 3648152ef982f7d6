"""Configs for the P2-weighting MetFaces model Asyrp uses (``metface_p2.pt``, guided-diffusion ``UNetModel`` with
learned variance; preset ``metfaces_p2``). Each file imports the configs/celebahq256 job and overrides only what differs
(cited as kwonminki/Asyrp_official@a6c82dc:path:line in each docstring). ``model_path`` may be the official ``.pt``: it
is converted into ``{workdir}/converted/`` on the first run (jaxhspace.checkpoints.auto_convert).
"""
