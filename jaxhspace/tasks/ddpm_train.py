"""Job ``ddpm_train``: see :mod:`jaxhspace.training.ddpm`."""
from jaxhspace.training.ddpm import train_ddpm as run  # noqa: F401
