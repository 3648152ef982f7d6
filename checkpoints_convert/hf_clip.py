"""Convert an HF (transformers) CLIPModel folder to jaxhspace's converted (orbax) format.

    python -m checkpoints_convert.hf_clip SRC DST [--overwrite]

SRC: a transformers CLIPModel folder (config.json + model.safetensors / pytorch_model.bin, e.g. a local
copy of openai/clip-vit-base-patch32). DST: written into a temporary folder beside it and renamed into
place, so an interrupted conversion leaves nothing at DST; a marker ``.jaxhspace_export.json`` records every file's
SHA-256, checked when the folder is loaded. The tokenizer files (vocab.json, merges.txt,
tokenizer.json, tokenizer_config.json, special_tokens_map.json) present in SRC are copied. Load the result
with ``jaxhspace.checkpoints.load_clip(DST)`` and ``load_clip_tokenizer(DST)``.
"""
from __future__ import annotations

import argparse
import os
import sys

from jaxhspace.checkpoints.clip import TOKENIZER_FILES, load_clip, save_clip_converted
from jaxhspace.checkpoints.common import atomic_directory
from jaxhspace.models.clip import count_params
from jaxhspace.training.safety import write_marker


def convert(src: str, dst: str, overwrite: bool = False) -> dict:
    """Convert ``src`` to ``dst``; returns a summary dict (param count, config, copied tokenizer files)."""
    model, params = load_clip(src)
    tok_files = [f for f in TOKENIZER_FILES if os.path.isfile(os.path.join(src, f))]
    with atomic_directory(dst, overwrite=overwrite) as tmp:
        inner = os.path.join(tmp, "clip")
        save_clip_converted(inner, model, params, tokenizer=src if tok_files else None)
        for name in os.listdir(inner):
            os.rename(os.path.join(inner, name), os.path.join(tmp, name))
        os.rmdir(inner)
        write_marker(tmp, "convert_hf_clip", {"source": os.path.abspath(src)})  # checksums, verified at load
    t, v = model.config.text_config, model.config.vision_config
    return {
        "params": count_params(params),
        "text": f"{t.num_hidden_layers} layers x {t.hidden_size} ({t.num_attention_heads} heads, {t.hidden_act})",
        "vision": (f"{v.num_hidden_layers} layers x {v.hidden_size} ({v.num_attention_heads} heads, {v.hidden_act}), "
                   f"image {v.image_size}, patch {v.patch_size}"),
        "projection_dim": model.config.projection_dim,
        "tokenizer_files": tok_files,
    }


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("src", help="transformers CLIPModel folder")
    parser.add_argument("dst", help="destination folder (must not exist unless --overwrite)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing DST")
    args = parser.parse_args(argv)
    try:
        s = convert(args.src, args.dst, args.overwrite)
    except ValueError as e:
        sys.exit(f"error: {e}")
    except OSError as e:  # read-only or full destination, a file in the way: one line, not a traceback
        sys.exit(f"error: cannot write {args.dst}: {e.strerror or e} ({e.filename or args.dst})")
    print(f"converted CLIPModel {args.src} -> {args.dst}: {s['params']:,} params")
    print(f"  text:   {s['text']}")
    print(f"  vision: {s['vision']}")
    print(f"  projection_dim: {s['projection_dim']}")
    print(f"  tokenizer files: {', '.join(s['tokenizer_files']) or 'none (load_clip_tokenizer will fail)'}")


if __name__ == "__main__":
    main()
