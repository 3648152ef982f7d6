"""Convert a diffusers UNet2DModel folder to jaxhspace's converted (orbax) format.

    python -m checkpoints_convert.diffusers_unet SRC DST [--overwrite]

SRC: a diffusers folder (config.json + diffusion_pytorch_model.safetensors/.bin, or a pipeline folder
with ``unet/``). DST: written into a temporary folder beside it and renamed into place, so an
interrupted conversion leaves nothing at DST. Load the result with ``jaxhspace.checkpoints.load_unet(DST)``.
"""
from __future__ import annotations

import argparse
import os
import sys

import jax
import numpy as np

from jaxhspace.checkpoints.unet import load_unet, save_unet_converted


def convert(src: str, dst: str, overwrite: bool = False) -> int:
    """Convert ``src`` to ``dst``; returns the parameter count."""
    model, params = load_unet(src)
    save_unet_converted(dst, model, params, overwrite=overwrite)
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
    print(f"converted UNet2DModel {args.src} -> {args.dst}: {n:,} params")


if __name__ == "__main__":
    main()
