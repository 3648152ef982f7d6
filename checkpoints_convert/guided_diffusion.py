"""Convert an openai guided-diffusion ``UNetModel`` checkpoint (ADM / iDDPM / P2 ``.pt``) to jaxhspace's format.

    python -m checkpoints_convert.guided_diffusion SRC.pt DST (--preset NAME | --arch-json ARCH.json) [--overwrite]

Presets (create_model keywords from the official code; ``jaxhspace.checkpoints.guided_diffusion.PRESETS``):
  afhq_dog            afhq_dog_4m.pt (iDDPM, Asyrp AFHQ_DICT)
  ffhq                ffhq_10m.pt (iDDPM, Asyrp uses AFHQ_DICT for FFHQ)
  metfaces_p2         metface_p2.pt (P2 weighting, Asyrp METFACE_DICT)
  celeba_hq_p2        P2-weighting CelebA-HQ (Asyrp CELEBA_HQ_P2_DICT)
  imagenet256_uncond  256x256_diffusion_uncond.pt (ADM, guided-diffusion README flags)
ARCH.json: ``create_model`` keywords with their value formats, e.g.
  {"image_size": 256, "num_channels": 128, "num_res_blocks": 1, "attention_resolutions": "16", "channel_mult": "",
   "learn_sigma": true, "num_head_channels": 64, "resblock_updown": true, "use_scale_shift_norm": true}
(diffusion keys such as ``noise_schedule`` are ignored with a warning; the converted folder gets the linear
1e-4..0.02 schedule). DST is written into a temporary folder beside it and renamed into place. Load it with
``jaxhspace.checkpoints.load_unet(DST)``; ``model.apply(v, x, t)`` is the full output (ε = first 3 channels).
"""
from __future__ import annotations

import argparse
import os
import sys

from jaxhspace.checkpoints.common import read_json
from jaxhspace.checkpoints.guided_diffusion import PRESETS, convert_guided_diffusion


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="guided-diffusion state dict (.pt)")
    parser.add_argument("dst", help="destination folder (must not exist unless --overwrite)")
    arch = parser.add_mutually_exclusive_group(required=True)
    arch.add_argument("--preset", choices=sorted(PRESETS), help="architecture of an official checkpoint")
    arch.add_argument("--arch-json", help="JSON file of guided-diffusion create_model keywords")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    args = parser.parse_args(argv)
    if os.path.exists(args.dst) and not args.overwrite:
        sys.exit(f"error: {args.dst} already exists; pass --overwrite to replace it")
    if not os.path.isfile(args.src):
        sys.exit(f"error: {args.src} is not a file")
    try:
        arch_dict = read_json(args.arch_json) if args.arch_json else None
        s = convert_guided_diffusion(args.src, args.dst, preset=args.preset, arch=arch_dict, overwrite=args.overwrite)
    except ValueError as e:
        sys.exit(f"error: {e}")
    print(f"converted guided-diffusion UNetModel {args.src} -> {args.dst} "
          f"({args.preset or args.arch_json}): {s['params']:,} params")


if __name__ == "__main__":
    main()
