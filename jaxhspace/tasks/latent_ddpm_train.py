"""Job ``latent_ddpm_train``: the text-conditioned SynthFaces pipeline (see :mod:`jaxhspace.training.latent_ddpm`)."""
from jaxhspace.training.latent_ddpm import train_latent_ddpm as run  # noqa: F401
