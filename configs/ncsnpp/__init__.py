"""Configs for NCSN++ VE-SDE score models as diffusers stores them (``google/ncsnpp-*``: a fourier-embedding
``UNet2DModel`` with Skip blocks and a ``ScoreSdeVeScheduler``). The jobs detect the VE model from its folder
(``jaxhspace.tasks.inputs.ve_scheduler_config``); t is the noise level σ and the data range is [0, 1].
"""
