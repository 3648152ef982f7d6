"""Job ``clip_train``: train the tiny SynthFaces CLIP (see :mod:`jaxhspace.training.clip_synthfaces`)."""
from jaxhspace.training.clip_synthfaces import train_clip


def run(config, workdir: str) -> dict:
    """Train / resume, export to ``config.export_dir`` when done; returns the metrics dict."""
    return train_clip(config, workdir)
