"""Configs for the iDDPM AFHQ-dog model Asyrp uses (``afhq_dog_4m.pt``, guided-diffusion ``UNetModel`` with learned
variance; preset ``afhq_dog``). Each file imports the configs/celebahq256 job and overrides only what differs; the
values follow kwonminki/Asyrp_official@a6c82dc (cited as …:path:line in each docstring).
``model_path`` may be the official ``.pt`` itself: the job converts it into ``{workdir}/converted/`` on the first run
and reuses it afterwards (jaxhspace.checkpoints.auto_convert).
"""
