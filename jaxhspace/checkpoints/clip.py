"""Load and save :class:`~jaxhspace.models.clip.CLIPModel` checkpoints and CLIP tokenizers.

Two folder formats:
  * HF (transformers): ``config.json`` (``model_type: "clip"``) + ``model.safetensors`` (or
    ``pytorch_model.bin``, or a sharded ``model.safetensors.index.json``), optionally with the tokenizer
    files ``vocab.json`` + ``merges.txt`` (+ ``tokenizer.json``, ``tokenizer_config.json``,
    ``special_tokens_map.json``);
  * converted: ``config.json`` with ``"_jaxhspace_format": "orbax"`` + an orbax ``params/`` folder
    (:func:`save_clip_converted`, e.g. via ``python -m checkpoints_convert.hf_clip SRC DST``), plus the
    tokenizer files copied from the source.

State-dict buffers named ``*position_ids`` (written by older transformers) are ignored; any other key the
model does not use is an error listing the keys.
"""
from __future__ import annotations

import json
import os
import shutil
from typing import Iterable

import jax
import jax.numpy as jnp
import numpy as np
from flax import traverse_util

from jaxhspace.checkpoints.common import (
    atomic_directory, find_weights_file, params_to_state_dict, read_json, read_state_dict, restore_params,
    save_params, save_state_dict_safetensors, state_dict_to_params, write_json)
from jaxhspace.models.clip import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPTextModel, clip_param_shapes

FORMAT_KEY = "_jaxhspace_format"
CONVERTED_FORMAT = "orbax"
LIST_NAMES = ("layers",)
WEIGHT_FILES = ("model.safetensors", "pytorch_model.bin", "model.fp16.safetensors")
SHARD_INDEX_FILES = ("model.safetensors.index.json", "pytorch_model.bin.index.json")
TOKENIZER_FILES = ("vocab.json", "merges.txt", "tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")


def _folder(path) -> str:
    path = os.fspath(path)
    if not os.path.isdir(path):
        raise ValueError(f"{path} is not a folder: pass an HF CLIPModel folder (config.json + model.safetensors) "
                         "or a folder converted with checkpoints_convert.hf_clip.")
    return path


def _is_buffer(key: str) -> bool:
    return key.endswith("position_ids")


def state_dict_to_clip_params(model: CLIPModel, state_dict: dict) -> dict:
    """transformers CLIPModel state dict (NumPy, torch layout) -> Flax params; ValueError listing missing,
    unexpected (other than ``*position_ids`` buffers) and mis-shaped keys."""
    return state_dict_to_params(clip_param_shapes(model), state_dict, LIST_NAMES, what="CLIPModel",
                                ignore_unexpected=_is_buffer)


def clip_params_to_state_dict(params: dict) -> dict:
    """Flax params -> transformers CLIPModel state dict (NumPy, torch layout; no buffers)."""
    return params_to_state_dict(params, LIST_NAMES)


def _read_weights(folder: str) -> dict:
    for index_name in SHARD_INDEX_FILES:
        index_path = os.path.join(folder, index_name)
        if os.path.isfile(index_path):
            shards = sorted(set(read_json(index_path).get("weight_map", {}).values()))
            if not shards:
                raise ValueError(f"{index_path} has an empty weight_map.")
            sd = {}
            for shard in shards:
                sd.update(read_state_dict(find_weights_file(folder, [shard])))
            return sd
    return read_state_dict(find_weights_file(folder, WEIGHT_FILES))


def _check_converted_params(model: CLIPModel, params: dict, where: str) -> None:
    ref = traverse_util.flatten_dict(clip_param_shapes(model))
    got = traverse_util.flatten_dict(params)
    missing = sorted("/".join(p) for p in ref if p not in got)
    unexpected = sorted("/".join(p) for p in got if p not in ref)
    mismatched = sorted(f"{'/'.join(p)}: {tuple(np.shape(got[p]))} vs {tuple(ref[p].shape)}"
                        for p in ref if p in got and tuple(np.shape(got[p])) != tuple(ref[p].shape))
    if missing or unexpected or mismatched:
        raise ValueError(f"CLIP params in {where} do not match the config: missing {missing[:20]}, "
                         f"unexpected {unexpected[:20]}, shape mismatches {mismatched[:20]}")


def load_clip(path) -> tuple[CLIPModel, dict]:
    """Load a CLIPModel from an HF folder or a converted (orbax) folder.

    Args:
      path: folder with ``config.json`` and weights (see the module docstring).

    Returns:
      ``(model, params)`` with float32 params. Features::

        model.apply({"params": params}, ids [B, L], mask [B, L], method=model.get_text_features)  # [B, P]
        model.apply({"params": params}, pix [B, S, S, 3], method=model.get_image_features)         # [B, P]

      where ``pix`` is NHWC and CLIP-normalised (see :func:`jaxhspace.losses.clip_preprocess.clip_preprocess`).

    Raises:
      ValueError for unsupported configs (e.g. an unknown ``hidden_act``), missing/corrupt files and
      missing, unexpected or mis-shaped weights (all listed).
    """
    folder = _folder(path)
    cfg = read_json(os.path.join(folder, "config.json"))
    model = CLIPModel(CLIPConfig.from_dict(cfg))
    if cfg.get(FORMAT_KEY) == CONVERTED_FORMAT:
        params = restore_params(folder)
        _check_converted_params(model, params, folder)
        params = jax.tree_util.tree_map(lambda a: jnp.asarray(a, jnp.float32), params)
    else:
        params = jax.tree_util.tree_map(jnp.asarray, state_dict_to_clip_params(model, _read_weights(folder)))
    return model, params


TEXT_PREFIX = "text_model."


def clip_text_param_shapes(model: CLIPTextModel) -> dict:
    """Param tree of a :class:`CLIPTextModel` as ``jax.ShapeDtypeStruct`` leaves (no allocation)."""
    ids = jnp.zeros((1, 1), jnp.int32)
    return jax.eval_shape(lambda r: model.init(r, ids)["params"], jax.random.PRNGKey(0))


def state_dict_to_clip_text_params(model: CLIPTextModel, state_dict: dict) -> dict:
    """transformers ``CLIPTextModel`` state dict -> Flax params of :class:`CLIPTextModel`.

    Accepts both key spellings: ``text_model.encoder.layers.0...`` (checkpoints saved by transformers 4.x, e.g.
    every Stable Diffusion ``text_encoder/``) and ``encoder.layers.0...`` (transformers 5.x ``save_pretrained``).
    ``*position_ids`` buffers are ignored; anything else unused, missing or mis-shaped is listed in a ValueError.
    """
    sd = {}
    for k, v in state_dict.items():
        key = k[len(TEXT_PREFIX):] if k.startswith(TEXT_PREFIX) else k
        if key in sd:
            raise ValueError(f"CLIPTextModel checkpoint has both {key} and {TEXT_PREFIX}{key}.")
        sd[key] = v
    return state_dict_to_params(clip_text_param_shapes(model), sd, LIST_NAMES, what="CLIPTextModel",
                                ignore_unexpected=_is_buffer)


def load_clip_text(path) -> tuple[CLIPTextModel, dict]:
    """Load a standalone HF ``CLIPTextModel`` folder (e.g. a Stable Diffusion pipeline's ``text_encoder/``).

    Args:
      path: folder with ``config.json`` (``model_type: "clip_text_model"``) and ``model.safetensors`` (or
        ``pytorch_model.bin``, ``model.fp16.safetensors``, or a sharded index).

    Returns:
      ``(model, params)`` with float32 params;
      ``last_hidden_state, pooled = model.apply({"params": params}, input_ids [B, L])`` gives
      ``last_hidden_state [B, L, hidden_size]`` (after ``final_layer_norm``: what SD's UNet receives as
      ``encoder_hidden_states``) and the pooled ``[B, hidden_size]``.

    Raises:
      ValueError for an unsupported config, missing/corrupt files and missing, unexpected or mis-shaped weights.
    """
    folder = _folder(path)
    model = CLIPTextModel(CLIPTextConfig.from_dict(read_json(os.path.join(folder, "config.json"))))
    params = state_dict_to_clip_text_params(model, _read_weights(folder))
    return model, jax.tree_util.tree_map(jnp.asarray, params)


def load_clip_tokenizer(path):
    """Load the CLIP BPE tokenizer stored beside a model (``vocab.json`` + ``merges.txt``, or ``tokenizer.json``).

    Returns a transformers ``CLIPTokenizer`` (in transformers 5.x this is the Rust-backed tokenizer;
    ``CLIPTokenizerFast`` is an alias of it). Nothing is downloaded.

    Raises:
      ValueError if the folder has neither ``vocab.json`` + ``merges.txt`` nor ``tokenizer.json``.
    """
    folder = _folder(path)
    has = {f: os.path.isfile(os.path.join(folder, f)) for f in TOKENIZER_FILES}
    if not ((has["vocab.json"] and has["merges.txt"]) or has["tokenizer.json"]):
        missing = [f for f in ("vocab.json", "merges.txt") if not has[f]]
        raise ValueError(f"no CLIP tokenizer in {folder}: missing {missing} (and no tokenizer.json). Copy the "
                         "tokenizer files of the checkpoint (vocab.json, merges.txt) into the folder, or write a "
                         "byte-level vocab with jaxhspace.checkpoints.clip.write_byte_level_clip_vocab.")
    from transformers import CLIPTokenizer

    try:
        return CLIPTokenizer.from_pretrained(folder, local_files_only=True)
    except Exception as e:
        raise ValueError(f"could not load the CLIP tokenizer from {folder}: {e}") from e


def _bytes_to_unicode() -> dict[int, str]:
    """GPT-2/CLIP byte -> printable unicode map (as in OpenAI's simple_tokenizer.py)."""
    bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("¡"), ord("¬") + 1)) + list(range(ord("®"), ord("ÿ") + 1))
    cs = bs[:]
    n = 0
    for b in range(256):
        if b not in bs:
            bs.append(b)
            cs.append(256 + n)
            n += 1
    return dict(zip(bs, map(chr, cs)))


def write_byte_level_clip_vocab(folder, words: Iterable[str] = ()) -> int:
    """Write a CLIP-style byte-level BPE ``vocab.json`` + ``merges.txt`` into an existing ``folder``.

    The vocab has OpenAI CLIP's layout: 256 byte symbols, the same with ``</w>``, one merged token per merge,
    then ``<|startoftext|>`` and ``<|endoftext|>`` (so eos = vocab_size - 1, bos = vocab_size - 2). Each
    (lower-case) word in ``words`` gets left-to-right merges so it becomes a single token. Meant for tiny
    CLIPs trained from scratch and for tests (no download); it is *not* OpenAI's 49,408-token vocab.

    Returns:
      the vocab size.
    """
    b2u = _bytes_to_unicode()
    base = list(b2u.values())
    vocab_list = base + [c + "</w>" for c in base]
    merges = []
    seen = set(vocab_list)
    for word in words:
        symbols = [b2u[b] for b in word.lower().encode("utf-8")]
        if not symbols:
            continue
        symbols[-1] += "</w>"
        cur = symbols[0]
        for s in symbols[1:]:
            merged = cur + s
            if merged not in seen:
                merges.append(f"{cur} {s}")
                vocab_list.append(merged)
                seen.add(merged)
            cur = merged
    vocab_list += ["<|startoftext|>", "<|endoftext|>"]
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab_list)}, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(m + "\n" for m in merges))
    return len(vocab_list)


def _write_tokenizer(tmp: str, tokenizer) -> None:
    if tokenizer is None:
        return
    if isinstance(tokenizer, (str, os.PathLike)):
        src = _folder(tokenizer)
        copied = [f for f in TOKENIZER_FILES if os.path.isfile(os.path.join(src, f))]
        if not copied:
            raise ValueError(f"no tokenizer files {list(TOKENIZER_FILES)} in {src}.")
        for f in copied:
            shutil.copy2(os.path.join(src, f), os.path.join(tmp, f))
    else:
        tokenizer.save_pretrained(tmp)


def save_clip_converted(folder, model: CLIPModel, params: dict, tokenizer=None, overwrite: bool = False) -> None:
    """Write ``config.json`` (HF fields + ``"_jaxhspace_format": "orbax"``) and orbax ``params/``, atomically.

    Args:
      tokenizer: None, a transformers tokenizer (``save_pretrained`` into the folder), or a folder whose
        tokenizer files (:data:`TOKENIZER_FILES`) are copied byte for byte.
      overwrite: replace an existing ``folder``.
    """
    _check_converted_params(model, params, "the params to save")
    with atomic_directory(os.fspath(folder), overwrite=overwrite) as tmp:
        write_json(os.path.join(tmp, "config.json"), {FORMAT_KEY: CONVERTED_FORMAT, **model.config.to_dict()})
        save_params(tmp, jax.tree_util.tree_map(np.asarray, params))
        _write_tokenizer(tmp, tokenizer)


def save_clip_hf(folder, model: CLIPModel, params: dict, tokenizer=None, overwrite: bool = False) -> None:
    """Write a folder that ``transformers.CLIPModel.from_pretrained`` loads (config.json + float32
    ``model.safetensors`` + optional tokenizer files), atomically.

    Args:
      tokenizer: as in :func:`save_clip_converted`.
    """
    _check_converted_params(model, params, "the params to save")
    state_dict = {k: np.asarray(v, np.float32) for k, v in clip_params_to_state_dict(params).items()}
    try:
        import transformers
        version = transformers.__version__
    except ImportError:  # pragma: no cover
        version = "5.0.0"
    with atomic_directory(os.fspath(folder), overwrite=overwrite) as tmp:
        write_json(os.path.join(tmp, "config.json"), {**model.config.to_dict(), "transformers_version": version})
        save_state_dict_safetensors(os.path.join(tmp, "model.safetensors"), state_dict)
        _write_tokenizer(tmp, tokenizer)


def save_text_encoder_from_clip(folder, clip_path, overwrite: bool = False) -> None:
    """Write the text tower of a CLIPModel folder as a standalone HF ``CLIPTextModel`` folder (what a Stable
    Diffusion pipeline's ``text_encoder/`` holds: ``config.json`` with ``model_type: clip_text_model`` and
    ``model.safetensors`` with transformers' ``text_model.*`` keys), atomically. The weights are copied bit for bit.

    Args:
      folder: destination; clip_path: a folder :func:`load_clip` reads (e.g. the shipped ``assets/clip_synthfaces``).
    """
    model, params = load_clip(clip_path)
    state_dict = {k: np.asarray(v, np.float32) for k, v in clip_params_to_state_dict(jax.device_get(params)).items()
                  if k.startswith(TEXT_PREFIX)}
    cfg = model.config.to_dict()["text_config"]
    cfg.update(architectures=["CLIPTextModel"], model_type="clip_text_model")
    try:
        import transformers
        cfg["transformers_version"] = transformers.__version__
    except ImportError:  # pragma: no cover
        pass
    with atomic_directory(os.fspath(folder), overwrite=overwrite) as tmp:
        write_json(os.path.join(tmp, "config.json"), cfg)
        save_state_dict_safetensors(os.path.join(tmp, "model.safetensors"), state_dict)


__all__ = ["load_clip", "load_clip_text", "load_clip_tokenizer", "state_dict_to_clip_text_params",
           "save_clip_converted", "save_clip_hf", "save_text_encoder_from_clip", "write_byte_level_clip_vocab",
           "state_dict_to_clip_params", "clip_params_to_state_dict", "TOKENIZER_FILES"]
