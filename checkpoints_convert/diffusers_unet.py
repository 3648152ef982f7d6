"""Convert a diffusers UNet2DModel folder to jaxhspace's converted (orbax) format.

    python -m checkpoints_convert.diffusers_unet SRC DST [--overwrite]

SRC: a diffusers folder (config.json + diffusion_pytorch_model.safetensors/.bin, or a pipeline folder
with ``unet/``). DST: written into a temporary folder beside it and renamed into place, so an
interrupted conversion leaves nothing at DST; a marker ``.jaxhspace_export.json`` records every file's SHA-256,
checked when the folder is loaded. Load the result with ``jaxhspace.checkpoints.load_unet(DST)``.

The noise schedule goes along: the first ``scheduler_config.json`` of :func:`find_scheduler_config` (the
folder's own, a pipeline's ``scheduler/``, or the one beside the ``unet/`` sub-folder) is checked and copied into
DST, so a model trained with another schedule (e.g. cosine) samples the same after conversion. Without one, a
warning says that the default linear schedule (1e-4..0.02, T=1000) will be assumed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import sys
import warnings

import jax
import numpy as np

from jaxhspace.checkpoints.common import atomic_directory, read_json
from jaxhspace.checkpoints.unet import load_unet, save_unet_converted
from jaxhspace.training.safety import write_marker

SCHEDULER_FILE = "scheduler_config.json"


def find_scheduler_config(src: str) -> str | None:
    """Path of the scheduler config belonging to the UNet in ``src``, or None.

    Looked for in ``src/``, ``src/scheduler/`` (pipeline folder), ``src/../scheduler/`` (``src`` is a pipeline's
    ``unet/``) and ``src/..``, the places :func:`jaxhspace.world.load_schedule` reads."""
    folder = os.path.abspath(src)
    parent = os.path.dirname(folder)
    for cand in (os.path.join(folder, SCHEDULER_FILE), os.path.join(folder, "scheduler", SCHEDULER_FILE),
                 os.path.join(parent, "scheduler", SCHEDULER_FILE), os.path.join(parent, SCHEDULER_FILE)):
        if os.path.isfile(cand):
            return cand
    return None


def convert(src: str, dst: str, overwrite: bool = False) -> int:
    """Convert ``src`` to ``dst`` together with its scheduler config (if any); returns the parameter count."""
    sched = find_scheduler_config(src)
    if sched is None:
        warnings.warn(
            f"no {SCHEDULER_FILE} found in or beside {src}: the converted model {dst} will be sampled with the "
            "ASSUMED default linear schedule (beta 1e-4..0.02, T=1000). If the model was trained with another "
            f"schedule, copy its {SCHEDULER_FILE} into {dst}.", UserWarning, stacklevel=2)
    else:
        read_json(sched)  # an unreadable file fails now, naming it
    model, params = load_unet(src)
    with atomic_directory(dst, overwrite=overwrite) as tmp:
        inner = os.path.join(tmp, "unet")
        save_unet_converted(inner, model, params)
        for name in os.listdir(inner):
            os.rename(os.path.join(inner, name), os.path.join(tmp, name))
        os.rmdir(inner)
        if sched is not None:
            shutil.copyfile(sched, os.path.join(tmp, SCHEDULER_FILE))
        write_marker(tmp, "convert_diffusers_unet", {"source": os.path.abspath(src)})  # checksums, verified at load
    return int(sum(np.prod(p.shape) for p in jax.tree.leaves(params)))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="diffusers UNet2DModel folder")
    parser.add_argument("dst", help="destination folder (must not exist unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    args = parser.parse_args(argv)
    if os.path.exists(args.dst) and not args.overwrite:
        sys.exit(f"error: {args.dst} already exists; pass --overwrite to replace it")
    try:
        n = convert(args.src, args.dst, args.overwrite)
    except ValueError as e:
        sys.exit(f"error: {e}")
    except OSError as e:  # read-only or full destination, a file in the way: one line, not a traceback
        sys.exit(f"error: cannot write {args.dst}: {e.strerror or e} ({e.filename or args.dst})")
    print(f"converted UNet2DModel {args.src} -> {args.dst}: {n:,} params")


if __name__ == "__main__":
    main()
