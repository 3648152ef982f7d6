"""Job ``vae_train``: the SynthFaces AutoencoderKL (see :mod:`jaxhspace.training.vae`)."""
from jaxhspace.training.vae import train_vae as run  # noqa: F401
