"""Convert an official Asyrp editor checkpoint (kwonminki/Asyrp_official@a6c82dc, DDPM or ADM DeltaBlock) to
jaxhspace's format.

    python -m checkpoints_convert.asyrp_editor SRC.pth DST [--layer 0] [--n-train-step 40] [--overwrite]

SRC: a torch-saved dict ``{'0': DeltaBlock.state_dict(), 'optimizer': ..., 'scheduler': ...}`` such as
``checkpoint/human_face_smiling_LC_CelebA_HQ_t999_ninv40_ngen40_0.pth`` (read with ``torch.load(weights_only=True)``;
``--allow-pickle`` retries with ``weights_only=False`` for files you trust). DST: ``config.json`` +
``editor.safetensors`` (official names, PyTorch layout), written into a temporary folder and renamed into place.
Load it with ``jaxhspace.editing.editor_io.load_editor(DST)``.

``n_train_step`` (the ``ngen`` in the file name) is parsed from SRC's name when present; it matters at test time
(Δh is scaled by n_train_step / n_test_step). The variant is read from the keys: the DDPM DeltaBlock (``conv1.*``;
CelebA-HQ / LSUN editors, for the SDEdit DDPM bases) or the ADM one (``in_layers.*``; ``dog_*`` / ``metface_*`` editors,
for the iDDPM AFHQ-dog and P2 MetFaces guided-diffusion bases). An editor only means something on its own base model.
The released CelebA-HQ editors were trained on SDEdit's ``celeba_hq.ckpt``; whether diffusers'
``google/ddpm-ema-celebahq-256`` holds the same weights is unverified, so load the original base with
``python -m checkpoints_convert.ddpm_ckpt celeba_hq.ckpt DST --preset celeba_hq`` for faithful results.
"""
from __future__ import annotations

import argparse
import sys

import numpy as np

from jaxhspace.editing.editor_io import (
    config_from_state_dict, read_official_checkpoint, save_editor, state_dict_to_editor_params)
from jaxhspace.models.editor import DeltaBlock


def convert(src: str, dst: str, layer: int = 0, n_train_step: int | None = None, num_groups: int = 32,
            overwrite: bool = False, allow_pickle: bool = False) -> dict:
    """Convert ``src`` to ``dst``; returns the stored meta dict (plus ``params``: the parameter count).

    Raises:
      ValueError: unreadable file, missing layer, or key / shape mismatches (listed).
    """
    sd, info = read_official_checkpoint(src, layer=layer, allow_pickle=allow_pickle)
    editor = DeltaBlock(config_from_state_dict(sd, num_groups=num_groups))
    params = state_dict_to_editor_params(editor, sd)
    if n_train_step is not None:
        info["n_train_step"] = int(n_train_step)
    info["converted_from"] = f"Asyrp_official DeltaBlock ({editor.config.variant} variant)"
    save_editor(dst, editor, params, meta=info, overwrite=overwrite)
    return {**info, "params": int(sum(np.prod(v.shape) for v in sd.values())), **editor.config.to_dict()}


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="official Asyrp checkpoint (.pth)")
    parser.add_argument("dst", help="destination folder (must not exist unless --overwrite)")
    parser.add_argument("--layer", type=int, default=0, help="editor index in the dict (key str(layer))")
    parser.add_argument("--n-train-step", type=int, default=None,
                        help="n_train_step the editor was trained with (default: 'ngen' parsed from SRC's name)")
    parser.add_argument("--num-groups", type=int, default=32, help="GroupNorm groups (official: 32)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    parser.add_argument("--allow-pickle", action="store_true",
                        help="fall back to torch.load(weights_only=False) (trusted files only)")
    args = parser.parse_args(argv)
    try:
        s = convert(args.src, args.dst, args.layer, args.n_train_step, args.num_groups, args.overwrite,
                    args.allow_pickle)
    except ValueError as e:
        sys.exit(f"error: {e}")
    print(f"converted Asyrp DeltaBlock ({s['variant']} variant) {args.src} [layer {args.layer}] -> {args.dst}: "
          f"{s['params']:,} params, C={s['channels']}, temb_dim={s['temb_dim']}, GroupNorm eps {s['eps']:g}")
    if "n_train_step" not in s:
        print("  warning: n_train_step unknown (no 'ngen' in the name; pass --n-train-step) - test-time scaling "
              "n_train_step/n_test_step will assume 1")
    else:
        print(f"  n_train_step={s['n_train_step']} (test-time scale = n_train_step / n_test_step * user scale)")


if __name__ == "__main__":
    main()
