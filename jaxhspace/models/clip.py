"""CLIP in Flax Linen, numerically matching transformers' PyTorch ``CLIPModel`` (transformers 5.x).

Submodule names mirror the transformers state-dict keys, so converting a checkpoint is a rename plus a
layout transpose (see :mod:`jaxhspace.checkpoints.common`)::

    text_model.embeddings.token_embedding.weight          -> text_model/embeddings/token_embedding/embedding
    text_model.encoder.layers.3.self_attn.q_proj.weight   -> text_model/encoder/layers_3/self_attn/q_proj/kernel (.T)
    vision_model.embeddings.patch_embedding.weight (OIHW) -> vision_model/embeddings/patch_embedding/kernel (HWIO)
    vision_model.pre_layrnorm.weight                      -> vision_model/pre_layrnorm/scale   (transformers' spelling)
    visual_projection.weight / text_projection.weight     -> .../kernel (transposed, no bias)
    logit_scale                                           -> logit_scale

Differences from transformers, all deliberate:

* Images are **NHWC** (``[B, H, W, C]``), not NCHW. ``interpolate_pos_encoding`` is not supported: the image
  must already be ``image_size`` square (use :mod:`jaxhspace.losses.clip_preprocess`).
* Inference only: dropout (``attention_dropout``) is ignored; no ``position_ids`` argument (always
  ``arange(seq_len)``); no ``output_attentions``/``hidden_states`` flags.
* Padding is masked with ``jnp.where(mask, scores, finfo.min)`` (one finite fill value), so a fully masked
  query row (left padding) yields a uniform softmax instead of NaN; non-padded positions are unaffected.
"""
from __future__ import annotations

import dataclasses
from typing import Any, Mapping

import jax
import jax.numpy as jnp
import numpy as np
from flax import linen as nn

# Fields and defaults of transformers' CLIPTextConfig / CLIPVisionConfig / CLIPConfig (configuration_clip.py).
_TEXT_DEFAULTS = dict(
    vocab_size=49408, hidden_size=512, intermediate_size=2048, projection_dim=512, num_hidden_layers=12,
    num_attention_heads=8, max_position_embeddings=77, hidden_act="quick_gelu", layer_norm_eps=1e-5,
    pad_token_id=1, bos_token_id=49406, eos_token_id=49407,
)
_VISION_DEFAULTS = dict(
    hidden_size=768, intermediate_size=3072, projection_dim=512, num_hidden_layers=12, num_attention_heads=12,
    num_channels=3, image_size=224, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5,
)
SUPPORTED_ACTIVATIONS = ("quick_gelu", "gelu", "gelu_new", "gelu_pytorch_tanh")

# CLIP's image normalisation (OpenAI clip / transformers CLIPImageProcessor defaults).
CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def _pick(d: Mapping, defaults: Mapping) -> dict:
    """Known fields of ``d`` with transformers' defaults for missing ones (``layer_norm_eps: null`` too)."""
    out = {k: d.get(k, default) for k, default in defaults.items()}
    if out.get("layer_norm_eps") is None:
        out["layer_norm_eps"] = defaults["layer_norm_eps"]
    return out


def _check_int(name: str, v, where: str, minimum: int = 1) -> int:
    if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < minimum:
        raise ValueError(f"{where}.{name} must be an integer >= {minimum}, got {v!r}.")
    return int(v)


def _check_act(v, where: str) -> str:
    if v not in SUPPORTED_ACTIVATIONS:
        raise ValueError(f"{where}.hidden_act={v!r} is not supported; expected one of {SUPPORTED_ACTIVATIONS}.")
    return v


@dataclasses.dataclass(frozen=True)
class CLIPTextConfig:
    """Text tower hyper-parameters, with transformers' ``CLIPTextConfig`` field names."""

    vocab_size: int = 49408
    hidden_size: int = 512
    intermediate_size: int = 2048
    projection_dim: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 8
    max_position_embeddings: int = 77
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5
    pad_token_id: int | None = 1
    bos_token_id: int | None = 49406
    eos_token_id: int = 49407

    def __post_init__(self):
        w = "text_config"
        for k in ("vocab_size", "hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads",
                  "max_position_embeddings"):
            _check_int(k, getattr(self, k), w)
        _check_act(self.hidden_act, w)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"{w}.hidden_size={self.hidden_size} is not a multiple of "
                             f"num_attention_heads={self.num_attention_heads}.")
        if isinstance(self.eos_token_id, (list, tuple)) or self.eos_token_id is None:
            raise ValueError(f"{w}.eos_token_id={self.eos_token_id!r} is not supported: CLIP pools the hidden state "
                             "at one end-of-text token id (an int; 2 means the legacy argmax pooling).")
        _check_int("eos_token_id", self.eos_token_id, w, minimum=0)
        if not float(self.layer_norm_eps) > 0:
            raise ValueError(f"{w}.layer_norm_eps must be > 0, got {self.layer_norm_eps!r}.")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CLIPTextConfig":
        """Build from the dict of a standalone HF ``CLIPTextModel`` ``config.json`` (``model_type``
        ``clip_text_model``, e.g. a Stable Diffusion pipeline's ``text_encoder/``); missing fields take
        transformers' defaults, unused ones (dropout, initialisers) are ignored; ValueError on unsupported values."""
        if not isinstance(d, Mapping):
            raise ValueError(f"CLIP text config must be a dict, got {type(d).__name__}.")
        mt = d.get("model_type", "clip_text_model")
        if mt != "clip_text_model":
            raise ValueError(f"config model_type={mt!r}: expected a CLIPTextModel config ('clip_text_model'); "
                             "load full CLIPModel folders with load_clip.")
        return cls(**_pick(d, _TEXT_DEFAULTS))


@dataclasses.dataclass(frozen=True)
class CLIPVisionConfig:
    """Vision tower hyper-parameters, with transformers' ``CLIPVisionConfig`` field names (square images only)."""

    hidden_size: int = 768
    intermediate_size: int = 3072
    projection_dim: int = 512
    num_hidden_layers: int = 12
    num_attention_heads: int = 12
    num_channels: int = 3
    image_size: int = 224
    patch_size: int = 32
    hidden_act: str = "quick_gelu"
    layer_norm_eps: float = 1e-5

    def __post_init__(self):
        w = "vision_config"
        for k in ("image_size", "patch_size"):
            v = getattr(self, k)
            if isinstance(v, (list, tuple)):
                raise ValueError(f"{w}.{k}={v!r}: only square int sizes are supported.")
        for k in ("hidden_size", "intermediate_size", "num_hidden_layers", "num_attention_heads", "num_channels",
                  "image_size", "patch_size"):
            _check_int(k, getattr(self, k), w)
        _check_act(self.hidden_act, w)
        if self.hidden_size % self.num_attention_heads:
            raise ValueError(f"{w}.hidden_size={self.hidden_size} is not a multiple of "
                             f"num_attention_heads={self.num_attention_heads}.")
        if self.image_size % self.patch_size:
            raise ValueError(f"{w}.image_size={self.image_size} is not a multiple of patch_size={self.patch_size}.")
        if not float(self.layer_norm_eps) > 0:
            raise ValueError(f"{w}.layer_norm_eps must be > 0, got {self.layer_norm_eps!r}.")

    @property
    def num_patches(self) -> int:
        return (self.image_size // self.patch_size) ** 2


@dataclasses.dataclass(frozen=True)
class CLIPConfig:
    """Frozen (hashable) CLIP config; build it from an HF ``config.json`` dict with :meth:`from_dict`."""

    text_config: CLIPTextConfig = CLIPTextConfig()
    vision_config: CLIPVisionConfig = CLIPVisionConfig()
    projection_dim: int = 512
    logit_scale_init_value: float = 2.6592

    def __post_init__(self):
        _check_int("projection_dim", self.projection_dim, "config")

    @classmethod
    def from_dict(cls, d: Mapping[str, Any]) -> "CLIPConfig":
        """Build from the dict of an HF ``CLIPModel`` ``config.json``; ValueError on unsupported values.

        Missing fields take transformers' defaults; fields we do not use (dropout, initializer ranges, ids of
        the tokenizer other than ``eos_token_id``) are ignored.
        """
        if not isinstance(d, Mapping):
            raise ValueError(f"CLIP config must be a dict, got {type(d).__name__}.")
        mt = d.get("model_type", "clip")
        if mt != "clip":
            raise ValueError(f"config model_type={mt!r}: load_clip supports full CLIPModel checkpoints "
                             "(model_type 'clip', e.g. openai/clip-vit-base-patch32).")
        tc, vc = d.get("text_config") or {}, d.get("vision_config") or {}
        if not isinstance(tc, Mapping) or not isinstance(vc, Mapping):
            raise ValueError("config text_config / vision_config must be dicts.")
        try:
            text = CLIPTextConfig(**_pick(tc, _TEXT_DEFAULTS))
            vision = CLIPVisionConfig(**_pick(vc, _VISION_DEFAULTS))
        except TypeError as e:  # pragma: no cover - defensive
            raise ValueError(f"invalid CLIP config: {e}") from e
        proj = d.get("projection_dim", 512)
        lsi = d.get("logit_scale_init_value", 2.6592)
        return cls(text_config=text, vision_config=vision, projection_dim=proj, logit_scale_init_value=float(lsi))

    def to_dict(self) -> dict:
        """An HF ``config.json`` dict that transformers' ``CLIPModel.from_pretrained`` accepts."""
        text = dataclasses.asdict(self.text_config)
        vision = dataclasses.asdict(self.vision_config)
        text["model_type"] = "clip_text_model"
        vision["model_type"] = "clip_vision_model"
        return {
            "architectures": ["CLIPModel"],
            "model_type": "clip",
            "projection_dim": self.projection_dim,
            "logit_scale_init_value": self.logit_scale_init_value,
            "initializer_factor": 1.0,
            "text_config": text,
            "vision_config": vision,
            "dtype": "float32",
        }


# ----------------------------------------------------------------------------------------------
# Layers
# ----------------------------------------------------------------------------------------------
def activation(name: str):
    """transformers ACT2FN equivalents: quick_gelu = x·σ(1.702x); gelu = exact erf GELU; gelu_new /
    gelu_pytorch_tanh = tanh approximation."""
    if name == "quick_gelu":
        return lambda x: x * jax.nn.sigmoid(1.702 * x)
    if name == "gelu":
        return lambda x: jax.nn.gelu(x, approximate=False)
    if name in ("gelu_new", "gelu_pytorch_tanh"):
        return lambda x: jax.nn.gelu(x, approximate=True)
    raise ValueError(f"hidden_act={name!r} is not supported; expected one of {SUPPORTED_ACTIVATIONS}.")


def _layer_norm(eps: float) -> nn.LayerNorm:
    # two-pass variance, like torch.nn.LayerNorm
    return nn.LayerNorm(epsilon=eps, use_fast_variance=False)


class CLIPAttention(nn.Module):
    """Multi-head self-attention (q_proj/k_proj/v_proj/out_proj with biases)."""

    config: Any  # CLIPTextConfig | CLIPVisionConfig

    def setup(self):
        d = self.config.hidden_size
        self.q_proj = nn.Dense(d)
        self.k_proj = nn.Dense(d)
        self.v_proj = nn.Dense(d)
        self.out_proj = nn.Dense(d)

    def __call__(self, x, mask=None):
        """x: [B, L, D]; mask: bool [B, 1|H, L, L] (True = attend) or None -> [B, L, D]."""
        b, n, d = x.shape
        h = self.config.num_attention_heads
        hd = d // h
        q = self.q_proj(x).reshape(b, n, h, hd)
        k = self.k_proj(x).reshape(b, n, h, hd)
        v = self.v_proj(x).reshape(b, n, h, hd)
        scores = jnp.einsum("bqhd,bkhd->bhqk", q, k) * (hd ** -0.5)
        if mask is not None:
            scores = jnp.where(mask, scores, jnp.finfo(scores.dtype).min)
        w = jax.nn.softmax(scores, axis=-1)
        out = jnp.einsum("bhqk,bkhd->bqhd", w, v).reshape(b, n, d)
        return self.out_proj(out)


class CLIPMLP(nn.Module):
    config: Any

    def setup(self):
        self.fc1 = nn.Dense(self.config.intermediate_size)
        self.fc2 = nn.Dense(self.config.hidden_size)

    def __call__(self, x):
        return self.fc2(activation(self.config.hidden_act)(self.fc1(x)))


class CLIPEncoderLayer(nn.Module):
    """Pre-LN transformer block: x + attn(LN1(x)); x + mlp(LN2(x))."""

    config: Any

    def setup(self):
        self.self_attn = CLIPAttention(self.config)
        self.layer_norm1 = _layer_norm(self.config.layer_norm_eps)
        self.mlp = CLIPMLP(self.config)
        self.layer_norm2 = _layer_norm(self.config.layer_norm_eps)

    def __call__(self, x, mask=None):
        x = x + self.self_attn(self.layer_norm1(x), mask)
        return x + self.mlp(self.layer_norm2(x))


class CLIPEncoder(nn.Module):
    config: Any

    def setup(self):
        self.layers = [CLIPEncoderLayer(self.config) for _ in range(self.config.num_hidden_layers)]

    def __call__(self, x, mask=None):
        for layer in self.layers:
            x = layer(x, mask)
        return x


class CLIPTextEmbeddings(nn.Module):
    config: CLIPTextConfig

    def setup(self):
        c = self.config
        self.token_embedding = nn.Embed(c.vocab_size, c.hidden_size, embedding_init=nn.initializers.normal(0.02))
        self.position_embedding = nn.Embed(c.max_position_embeddings, c.hidden_size,
                                           embedding_init=nn.initializers.normal(0.02))

    def __call__(self, input_ids):
        n = input_ids.shape[-1]
        return self.token_embedding(input_ids) + self.position_embedding(jnp.arange(n))[None]


class CLIPTextModel(nn.Module):
    """CLIP text transformer (transformers' ``CLIPTextModel`` body: embeddings, encoder, final_layer_norm).

    ``__call__(input_ids [B, L] int, attention_mask [B, L] {0,1} or None)`` ->
    ``(last_hidden_state [B, L, D], pooled_output [B, D])``. Attention is causal, plus padding masking of
    keys where ``attention_mask == 0``. Pooling follows transformers: if ``eos_token_id == 2`` (configs from
    before transformers PR #24773) the position of ``argmax(input_ids)``, else the **first** position whose
    id equals ``eos_token_id`` (position 0 if there is none, as torch's argmax of an all-zero row).
    """

    config: CLIPTextConfig

    def setup(self):
        self.embeddings = CLIPTextEmbeddings(self.config)
        self.encoder = CLIPEncoder(self.config)
        self.final_layer_norm = _layer_norm(self.config.layer_norm_eps)

    def __call__(self, input_ids, attention_mask=None):
        input_ids = jnp.asarray(input_ids)
        if input_ids.ndim != 2:
            raise ValueError(f"input_ids must be [batch, seq_len], got shape {input_ids.shape}.")
        b, n = input_ids.shape
        if n > self.config.max_position_embeddings:
            raise ValueError(f"sequence length {n} exceeds max_position_embeddings="
                             f"{self.config.max_position_embeddings}; tokenize with truncation=True.")
        x = self.embeddings(input_ids)
        mask = jnp.tril(jnp.ones((n, n), bool))[None, None]  # [1, 1, L, L]
        if attention_mask is not None:
            attention_mask = jnp.asarray(attention_mask)
            if attention_mask.shape != (b, n):
                raise ValueError(f"attention_mask shape {attention_mask.shape} != input_ids shape {(b, n)}.")
            mask = mask & (attention_mask[:, None, None, :] != 0)
        x = self.encoder(x, mask)
        x = self.final_layer_norm(x)
        ids = input_ids.astype(jnp.int32)
        if self.config.eos_token_id == 2:
            pos = jnp.argmax(ids, axis=-1)
        else:
            pos = jnp.argmax((ids == self.config.eos_token_id).astype(jnp.int32), axis=-1)
        pooled = x[jnp.arange(b), pos]
        return x, pooled


class CLIPVisionEmbeddings(nn.Module):
    config: CLIPVisionConfig

    def setup(self):
        c = self.config
        self.class_embedding = self.param("class_embedding", nn.initializers.normal(c.hidden_size ** -0.5),
                                          (c.hidden_size,))
        self.patch_embedding = nn.Conv(c.hidden_size, (c.patch_size, c.patch_size),
                                       strides=(c.patch_size, c.patch_size), padding="VALID", use_bias=False,
                                       kernel_init=nn.initializers.normal(0.02))
        self.position_embedding = nn.Embed(c.num_patches + 1, c.hidden_size,
                                           embedding_init=nn.initializers.normal(0.02))

    def __call__(self, pixel_values):
        b = pixel_values.shape[0]
        p = self.patch_embedding(pixel_values)  # [B, g, g, D]
        p = p.reshape(b, -1, p.shape[-1])  # row-major over (h, w), as torch's flatten(2)
        cls = jnp.broadcast_to(self.class_embedding.astype(p.dtype), (b, 1, p.shape[-1]))
        x = jnp.concatenate([cls, p], axis=1)
        return x + self.position_embedding(jnp.arange(x.shape[1]))[None]


class CLIPVisionModel(nn.Module):
    """CLIP ViT (transformers' ``CLIPVisionModel`` body).

    ``__call__(pixel_values [B, S, S, C] NHWC, already CLIP-normalised, S = image_size)`` ->
    ``(last_hidden_state [B, 1 + (S/P)^2, D], pooled_output [B, D] = post_layernorm(class token))``.
    """

    config: CLIPVisionConfig

    def setup(self):
        self.embeddings = CLIPVisionEmbeddings(self.config)
        self.pre_layrnorm = _layer_norm(self.config.layer_norm_eps)  # sic: transformers' key name
        self.encoder = CLIPEncoder(self.config)
        self.post_layernorm = _layer_norm(self.config.layer_norm_eps)

    def __call__(self, pixel_values):
        c = self.config
        pixel_values = jnp.asarray(pixel_values)
        expected = (c.image_size, c.image_size, c.num_channels)
        if pixel_values.ndim != 4 or tuple(pixel_values.shape[1:]) != expected:
            raise ValueError(f"pixel_values must be NHWC [batch, {c.image_size}, {c.image_size}, {c.num_channels}], "
                             f"got shape {tuple(pixel_values.shape)}. Resize/crop first "
                             "(jaxhspace.losses.clip_preprocess.clip_preprocess); NCHW input must be transposed.")
        x = self.embeddings(pixel_values)
        x = self.pre_layrnorm(x)
        x = self.encoder(x)
        return x, self.post_layernorm(x[:, 0])


class CLIPModel(nn.Module):
    """Two-tower CLIP with projections (transformers' ``CLIPModel``).

    Methods (call with ``model.apply({"params": p}, ..., method=model.get_text_features)``):
      * ``get_text_features(input_ids [B, L], attention_mask [B, L] | None) -> [B, projection_dim]``
      * ``get_image_features(pixel_values [B, S, S, C] NHWC) -> [B, projection_dim]``
      * ``__call__(input_ids, pixel_values, attention_mask=None)`` -> dict with L2-normalised ``text_embeds``
        [Bt, P], ``image_embeds`` [Bi, P], ``logits_per_text`` [Bt, Bi] (× exp(logit_scale)), ``logits_per_image``.

    Unlike transformers 5.x (which returns an output object with the projection in ``.pooler_output``), the
    feature methods return the projected array directly.
    """

    config: CLIPConfig

    def setup(self):
        c = self.config
        self.text_model = CLIPTextModel(c.text_config)
        self.vision_model = CLIPVisionModel(c.vision_config)
        self.visual_projection = nn.Dense(c.projection_dim, use_bias=False)
        self.text_projection = nn.Dense(c.projection_dim, use_bias=False)
        self.logit_scale = self.param("logit_scale", nn.initializers.constant(c.logit_scale_init_value), ())

    def get_text_features(self, input_ids, attention_mask=None):
        """input_ids [B, L] int, attention_mask [B, L] or None -> projected text features [B, P] (unnormalised)."""
        _, pooled = self.text_model(input_ids, attention_mask)
        return self.text_projection(pooled)

    def get_image_features(self, pixel_values):
        """pixel_values [B, S, S, C] NHWC (CLIP-normalised) -> projected image features [B, P] (unnormalised)."""
        _, pooled = self.vision_model(pixel_values)
        return self.visual_projection(pooled)

    def __call__(self, input_ids, pixel_values, attention_mask=None):
        t = self.get_text_features(input_ids, attention_mask)
        i = self.get_image_features(pixel_values)
        t = t / jnp.linalg.norm(t, axis=-1, keepdims=True)
        i = i / jnp.linalg.norm(i, axis=-1, keepdims=True)
        logits_per_text = (t @ i.T) * jnp.exp(self.logit_scale)
        return {"text_embeds": t, "image_embeds": i, "logits_per_text": logits_per_text,
                "logits_per_image": logits_per_text.T}

    # ------------------------------------------------------------------------------------------
    def dummy_inputs(self, batch: int = 1):
        """Small inputs for ``init`` / ``jax.eval_shape``: (input_ids [batch, 1], pixel_values [batch, S, S, C])."""
        v = self.config.vision_config
        return (jnp.zeros((batch, 1), jnp.int32),
                jnp.zeros((batch, v.image_size, v.image_size, v.num_channels), jnp.float32))


def init_clip_params(model: CLIPModel, rng: jax.Array):
    """Random params for ``model`` (Flax initialisers, not transformers' init scheme)."""
    return jax.jit(lambda r: model.init(r, *model.dummy_inputs())["params"])(rng)


def clip_param_shapes(model: CLIPModel):
    """Param tree of ``jax.ShapeDtypeStruct`` (no allocation)."""
    return jax.eval_shape(lambda r: init_clip_params(model, r), jax.random.PRNGKey(0))


def count_params(params) -> int:
    """Total number of scalars in a param pytree."""
    return int(sum(np.prod(x.shape) for x in jax.tree_util.tree_leaves(params)))
