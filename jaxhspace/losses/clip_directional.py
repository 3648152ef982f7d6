"""CLIP directional loss (StyleGAN-NADA; as used by Asyrp,
kwonminki/Asyrp_official@a6c82dc:losses/clip_loss.py:11-28, 90-117, 170-180).

    ΔT = normalize( mean_templates [ normalize(E_T(tmpl(tgt))) − normalize(E_T(tmpl(src))) ] )
    ΔI = normalize( normalize(E_I(x_edit)) − normalize(E_I(x_src)) )       (+1e-7 in the denominator)
    L_dir = 1 − cos(ΔI, ΔT)
    Asyrp's L_clip = −log((2 − L_dir)/2) = −log((1 + cos)/2)
                                                       (kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:343)

In Asyrp, ``x_src`` is the *real* image x0 and ``x_edit`` the edited P_t. Differences from the official code:
losses here are returned **per example**, and the trainer's default averages the per-example Asyrp losses,
mean_b −log((1 + cos_b)/2). The official code at batch > 1 instead takes −log of the *batch-mean* directional loss,
−log((2 − mean_b L_dir_b)/2), and uses the LAST image's x0 as every example's source
(kwonminki/Asyrp_official@a6c82dc:losses/clip_loss.py:180 ``.mean()``; …:diffusion_latent.py:343; its x0 is the last
image of the batch loop): :func:`asyrp_clip_loss_official_batch` (``clip_batch="official"`` in configs/asyrp_train.py).
At batch 1 the two are identical. Vector norms use a tiny floor (``finfo.tiny``) so that gradients stay finite when two
features coincide (values are unchanged otherwise); the cosine follows ``torch.nn.CosineSimilarity(eps=1e-8)``.
"""
from __future__ import annotations

import functools
from typing import Sequence

import jax
import jax.numpy as jnp
import numpy as np

from jaxhspace.losses.clip_preprocess import clip_preprocess

# The 79 ImageNet prompt templates of StyleGAN-NADA's / Asyrp's ``utils/text_templates.py``: CLIP's 80
# ImageNet prompt-engineering templates without "a photo of many {}.".
IMAGENET_TEMPLATES: tuple[str, ...] = (
    "a bad photo of a {}.",
    "a sculpture of a {}.",
    "a photo of the hard to see {}.",
    "a low resolution photo of the {}.",
    "a rendering of a {}.",
    "graffiti of a {}.",
    "a bad photo of the {}.",
    "a cropped photo of the {}.",
    "a tattoo of a {}.",
    "the embroidered {}.",
    "a photo of a hard to see {}.",
    "a bright photo of a {}.",
    "a photo of a clean {}.",
    "a photo of a dirty {}.",
    "a dark photo of the {}.",
    "a drawing of a {}.",
    "a photo of my {}.",
    "the plastic {}.",
    "a photo of the cool {}.",
    "a close-up photo of a {}.",
    "a black and white photo of the {}.",
    "a painting of the {}.",
    "a painting of a {}.",
    "a pixelated photo of the {}.",
    "a sculpture of the {}.",
    "a bright photo of the {}.",
    "a cropped photo of a {}.",
    "a plastic {}.",
    "a photo of the dirty {}.",
    "a jpeg corrupted photo of a {}.",
    "a blurry photo of the {}.",
    "a photo of the {}.",
    "a good photo of the {}.",
    "a rendering of the {}.",
    "a {} in a video game.",
    "a photo of one {}.",
    "a doodle of a {}.",
    "a close-up photo of the {}.",
    "a photo of a {}.",
    "the origami {}.",
    "the {} in a video game.",
    "a sketch of a {}.",
    "a doodle of the {}.",
    "a origami {}.",
    "a low resolution photo of a {}.",
    "the toy {}.",
    "a rendition of the {}.",
    "a photo of the clean {}.",
    "a photo of a large {}.",
    "a rendition of a {}.",
    "a photo of a nice {}.",
    "a photo of a weird {}.",
    "a blurry photo of a {}.",
    "a cartoon {}.",
    "art of a {}.",
    "a sketch of the {}.",
    "a embroidered {}.",
    "a pixelated photo of a {}.",
    "itap of the {}.",
    "a jpeg corrupted photo of the {}.",
    "a good photo of a {}.",
    "a plushie {}.",
    "a photo of the nice {}.",
    "a photo of the small {}.",
    "a photo of the weird {}.",
    "the cartoon {}.",
    "art of the {}.",
    "a drawing of the {}.",
    "a photo of the large {}.",
    "a black and white photo of a {}.",
    "the plushie {}.",
    "a dark photo of a {}.",
    "itap of a {}.",
    "graffiti of the {}.",
    "a toy {}.",
    "itap of my {}.",
    "a photo of a cool {}.",
    "a photo of a small {}.",
    "a tattoo of the {}.",
)

COS_EPS = 1e-8  # torch.nn.CosineSimilarity default
DIR_EPS = 1e-7  # official: edit_direction /= (norm + 1e-7)


def _norm(x: jax.Array) -> jax.Array:
    """L2 norm over the last axis (keepdims) with a ``finfo.tiny`` floor inside the sqrt (finite gradients at 0)."""
    sq = jnp.sum(x * x, axis=-1, keepdims=True)
    return jnp.sqrt(jnp.maximum(sq, jnp.finfo(sq.dtype).tiny))


def l2_normalize(x: jax.Array) -> jax.Array:
    """``x / ||x||`` over the last axis: ``[..., D] -> [..., D]``."""
    return x / _norm(x)


def _check_text(name: str, s) -> str:
    if not isinstance(s, str) or not s.strip():
        raise ValueError(f"{name} text must be a non-empty string, got {s!r}.")
    return s


@functools.lru_cache(maxsize=8)
def _text_features_fn(model):
    return jax.jit(lambda p, ids, m: model.apply({"params": p}, ids, m, method=model.get_text_features))


def encode_texts(model, params, tokenizer, texts: Sequence[str], batch_size: int = 128) -> jax.Array:
    """Projected text features ``[N, P]`` (unnormalised) of ``N`` strings.

    Tokenised with padding to ``max_position_embeddings`` and truncation (like ``clip.tokenize``'s fixed 77
    tokens; the EOS token is kept). Chunks of at most ``batch_size`` are padded to a power of two so that
    few shapes get compiled (the jitted function is cached per model).
    """
    texts = [_check_text("prompt", t) for t in texts]
    if not texts:
        raise ValueError("encode_texts: no texts given.")
    max_len = model.config.text_config.max_position_embeddings
    fn = _text_features_fn(model)
    out = []
    for i in range(0, len(texts), batch_size):
        chunk = texts[i:i + batch_size]
        enc = tokenizer(chunk, padding="max_length", max_length=max_len, truncation=True, return_tensors="np")
        ids, mask = np.asarray(enc["input_ids"], np.int32), np.asarray(enc["attention_mask"], np.int32)
        n = len(chunk)
        bucket = min(max(batch_size, n), 1 << max(n - 1, 0).bit_length())
        if bucket > n:
            ids = np.concatenate([ids, np.repeat(ids[-1:], bucket - n, 0)])
            mask = np.concatenate([mask, np.repeat(mask[-1:], bucket - n, 0)])
        out.append(fn(params, jnp.asarray(ids), jnp.asarray(mask))[:n])
    return jnp.concatenate(out, axis=0)


def text_direction(model, params, tokenizer, src: str, tgt: str,
                   templates: Sequence[str] | None = IMAGENET_TEMPLATES) -> jax.Array:
    """Text direction ΔT ``[P]`` (unit norm) from ``src`` to ``tgt`` (StyleGAN-NADA ``compute_text_direction``).

    ΔT = normalize(mean_k [normalize(E_T(templates[k].format(tgt))) − normalize(E_T(templates[k].format(src)))]).
    ``templates=None`` uses the raw strings (one "template"). Only single strings are supported (Asyrp uses
    ``src_txts[0]`` / ``trg_txts[0]``). Compute once and reuse: it is constant during training.

    Raises:
      ValueError for empty/whitespace texts, templates without ``{}``, or identical src/tgt prompts
      (zero direction).
    """
    src, tgt = _check_text("source", src), _check_text("target", tgt)
    if templates is None:
        src_p, tgt_p = [src], [tgt]
    else:
        templates = list(templates)
        if not templates:
            raise ValueError("templates is empty; pass None to use the raw strings.")
        bad = [t for t in templates if "{}" not in t]
        if bad:
            raise ValueError(f"every template needs a '{{}}' placeholder; bad: {bad[:5]}")
        src_p, tgt_p = [t.format(src) for t in templates], [t.format(tgt) for t in templates]
    if src_p == tgt_p:
        raise ValueError(f"source and target prompts are identical ({src!r}); the text direction would be zero.")
    feats = l2_normalize(encode_texts(model, params, tokenizer, src_p + tgt_p))
    s, t = feats[:len(src_p)], feats[len(src_p):]
    d = jnp.mean(t - s, axis=0)
    nrm = float(jnp.linalg.norm(d))
    if not nrm > 0:
        raise ValueError(f"text direction from {src!r} to {tgt!r} is zero: the tokenizer maps both to the same ids.")
    return d / nrm


def directional_loss(img_feat_edit: jax.Array, img_feat_src: jax.Array, text_dir: jax.Array) -> jax.Array:
    """L_dir = 1 − cos(ΔI, ΔT), per example.

    Args:
      img_feat_edit: ``[B, P]`` (or ``[P]``) projected image features of the edited images.
      img_feat_src: same shape, features of the source (real) images.
      text_dir: ``[P]`` (broadcast) or ``[B, P]`` text direction (unit norm from :func:`text_direction`).

    Returns:
      ``[B]`` (or scalar) losses in [0, 2]. ΔI = normalize(normalize(f_edit) − normalize(f_src)) with the
      official ``+1e-7`` in the denominator; cos as ``torch.nn.CosineSimilarity(eps=1e-8)``.
    """
    e, s = l2_normalize(img_feat_edit), l2_normalize(img_feat_src)
    d = e - s
    d = d / (_norm(d) + DIR_EPS)
    t = jnp.broadcast_to(text_dir, d.shape)
    denom = jnp.maximum(_norm(d)[..., 0] * _norm(t)[..., 0], COS_EPS)
    return 1.0 - jnp.sum(d * t, axis=-1) / denom


def asyrp_clip_loss(img_feat_edit: jax.Array, img_feat_src: jax.Array, text_dir: jax.Array) -> jax.Array:
    """Asyrp's CLIP loss −log((2 − L_dir)/2) = −log((1 + cos(ΔI, ΔT))/2), per example: ``[B, P] -> [B]``."""
    return -jnp.log((2.0 - directional_loss(img_feat_edit, img_feat_src, text_dir)) / 2.0)


def asyrp_clip_loss_official_batch(img_feat_edit: jax.Array, img_feat_src: jax.Array,
                                   text_dir: jax.Array) -> jax.Array:
    """The official Asyrp CLIP loss of a batch (scalar): −log((2 − mean_b L_dir(f_edit_b, f_src_last))/2).

    Args:
      img_feat_edit: ``[B, P]`` edited images' features; img_feat_src: ``[B, P]`` or ``[1, P]`` source features,
        of which only the LAST row is used (the official source x0 is the batch loop's last image).
      text_dir: ``[P]``.
    """
    src = jnp.broadcast_to(img_feat_src[-1], img_feat_edit.shape)
    return -jnp.log((2.0 - jnp.mean(directional_loss(img_feat_edit, src, text_dir))) / 2.0)


def image_features(model, params, x: jax.Array, method: str = "torch", validate: bool = True) -> jax.Array:
    """Projected CLIP features ``[B, P]`` of images ``x [B, H, W, 3]`` in [-1, 1] (differentiable)."""
    pix = clip_preprocess(x, model.config.vision_config.image_size, method=method, validate=validate)
    return model.apply({"params": params}, pix, method=model.get_image_features)


def clip_directional_loss(model, params, x_edit: jax.Array, x_src: jax.Array, text_dir: jax.Array,
                          asyrp_log: bool = False, method: str = "torch") -> jax.Array:
    """Directional CLIP loss from images in [-1, 1].

    Args:
      x_edit, x_src: ``[B, H, W, 3]`` NHWC images in [-1, 1] (Asyrp: edited P_t and the real x0); x_src may
        have batch 1 (broadcast).
      text_dir: ``[P]`` from :func:`text_direction`.
      asyrp_log: return Asyrp's −log((1 + cos)/2) instead of 1 − cos.
      method: bicubic resize flavour (see :mod:`jaxhspace.losses.clip_preprocess`).

    Returns:
      ``[B]`` per-example losses. Their mean is the official StyleGAN-NADA 1 − cos scalar (``.mean()``,
      kwonminki/Asyrp_official@a6c82dc:losses/clip_loss.py:180) when every example has its own source; Asyrp's −log loss
      of a batch is NOT the mean of the per-example −log values (see :func:`asyrp_clip_loss_official_batch`).
    """
    se, ss = tuple(np.shape(x_edit)), tuple(np.shape(x_src))
    if len(se) != 4 or len(ss) != 4 or se[1:] != ss[1:] or ss[0] not in (1, se[0]):
        raise ValueError(f"x_edit {se} and x_src {ss} must be NHWC with the same H, W, C and batch (or batch 1 "
                         "for x_src).")
    f_edit = image_features(model, params, x_edit, method=method)
    f_src = image_features(model, params, x_src, method=method)
    fn = asyrp_clip_loss if asyrp_log else directional_loss
    return fn(f_edit, f_src, text_dir)
