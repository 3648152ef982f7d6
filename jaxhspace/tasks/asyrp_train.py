"""Job ``asyrp_train``: see :mod:`jaxhspace.editing.asyrp_train`."""
import os

from jaxhspace.editing.asyrp_train import train_asyrp
from jaxhspace.editing.editor_io import check_editor_destination


def run(config, workdir: str) -> dict:
    """Train (or resume) an Asyrp editor; returns the metrics written to ``workdir/metrics.json``.

    Before any model loads, ``workdir/editor`` (where the trained editor is saved, replacing an earlier one) must be
    absent or a folder jaxhspace wrote (:func:`~jaxhspace.editing.editor_io.check_editor_destination`), so a user's
    files there are never deleted; otherwise a JaxhspaceError names it."""
    check_editor_destination(os.path.join(workdir, "editor"), overwrite=True,
                             hint=" (the asyrp_train job saves its editor into WORKDIR/editor; use another --workdir "
                                  "or move that folder away.)")
    return train_asyrp(config, workdir)
