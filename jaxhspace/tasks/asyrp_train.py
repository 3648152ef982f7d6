"""Job ``asyrp_train``: see :mod:`jaxhspace.editing.asyrp_train`."""
from jaxhspace.editing.asyrp_train import train_asyrp


def run(config, workdir: str) -> dict:
    """Train (or resume) an Asyrp editor; returns the metrics written to ``workdir/metrics.json``."""
    return train_asyrp(config, workdir)
