"""Convert an official Ho et al. DDPM checkpoint (SDEdit / DiffusionCLIP / Asyrp ``.ckpt``) to a diffusers folder.

    python -m checkpoints_convert.ddpm_ckpt SRC.ckpt DST (--preset celeba_hq|bedroom|church_outdoor
                                                          | --arch-json ARCH.json) [--overwrite]

SRC: a torch-saved state dict in the pesser ``pytorch_diffusion`` key format (``temb.dense.0``,
``down.0.block.0.norm1``, ``mid.attn_1.q``, ``up.*``, ``norm_out``, ``conv_out``), e.g. SDEdit's
``celeba_hq.ckpt``, ``bedroom.ckpt``, ``church_outdoor.ckpt``. ``--preset`` uses the official
``configs/{celeba,bedroom,church}.yml`` values (all three: ch 128, ch_mult [1,1,2,2,4,4], 2 res blocks,
attention at 16, image 256); ``ARCH.json`` holds the official config's ``model:`` keys (ch, out_ch, ch_mult,
num_res_blocks, attn_resolutions, dropout, in_channels, resamp_with_conv) plus ``image_size``.

DST (written into a temporary folder and renamed into place): ``config.json`` +
``diffusion_pytorch_model.safetensors`` (a diffusers ``UNet2DModel``, loadable by
``jaxhspace.checkpoints.load_unet`` and by ``diffusers.UNet2DModel.from_pretrained``) + ``scheduler_config.json``
(linear betas 1e-4..0.02, 1000 steps). Every missing, unexpected or mis-shaped key is reported (the official
loader's ``strict=False`` would hide them).
"""
from __future__ import annotations

import argparse
import sys

from jaxhspace.checkpoints.ddpm_ckpt import PRESETS, convert_ddpm_ckpt, load_arch_json, preset_arch


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="official DDPM checkpoint (.ckpt)")
    parser.add_argument("dst", help="destination folder (must not exist unless --overwrite)")
    which = parser.add_mutually_exclusive_group(required=True)
    which.add_argument("--preset", choices=sorted(PRESETS), help="the official config of this checkpoint")
    which.add_argument("--arch-json", help="JSON with the official model: keys plus image_size")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    args = parser.parse_args(argv)
    try:
        arch = preset_arch(args.preset) if args.preset else load_arch_json(args.arch_json)
        s = convert_ddpm_ckpt(args.src, args.dst, arch, overwrite=args.overwrite)
    except ValueError as e:
        sys.exit(f"error: {e}")
    c = s["config"]
    print(f"converted DDPM {args.src} -> {args.dst}: {s['params']:,} params, block_out_channels "
          f"{c['block_out_channels']}, layers_per_block {c['layers_per_block']}, h-space {s['hspace']}")


if __name__ == "__main__":
    main()
