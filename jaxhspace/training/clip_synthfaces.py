"""Train a tiny CLIP on SynthFaces (images + augmented captions), resumably, and ship it in HF format.

The job (config, training loop, export) is :mod:`jaxhspace.tasks.clip_train_job`:
``python -m jaxhspace.main --config configs/clip_synthfaces.py --workdir runs/clip_synthfaces``
(re-running resumes from the newest orbax checkpoint in ``workdir/checkpoints``).

* **Tokenizer** (:func:`build_tokenizer`): a byte-level BPE learned (deterministically, :func:`learn_bpe`)
  on the caption vocabulary and the prompt templates, pre-tokenised by CLIP's own ``tokenizers`` pipeline,
  written in OpenAI CLIP's layout (256 byte symbols, the same with ``</w>``, one token per merge, then
  ``<|startoftext|>``, ``<|endoftext|>``), so transformers' ``CLIPTokenizer`` loads ``vocab.json`` +
  ``merges.txt`` and every known word is a single token. bos = V − 2, eos = pad = V − 1.
* **Captions** (:func:`augmented_captions`): each attribute of the SynthFaces caption is kept with
  probability ``keep_prob`` ("a smiling face", "a face with red hair", "a face", ...); absent glasses are
  sometimes said ("no glasses"); a fraction is wrapped in a template ("a photo of {}.", Asyrp's ImageNet
  templates with the article stripped) so that template-averaged text directions are meaningful.
* **Loss** (:func:`clip_loss`): CLIP's symmetric InfoNCE with the learnable ``logit_scale`` (clamped at
  ln 100). With ``multi_positive`` the one-hot targets become uniform over *consistent* pairs (a caption is
  consistent with an image when every attribute it mentions matches), so duplicated short captions such
  as "a face" are not false negatives.
* **Twins** (:func:`twin_factors`, ``twin_probs``): half of each batch are counterfactual copies of
  the other half with only the smile (or eye size, or glasses) moved to another caption class, captioned
  with the same wording except that attribute. Without them the ViT learned colours and glasses but not
  the 2-pixel mouth curve within the time budget; with them, telling the pair apart requires it (and the
  image pair difference is exactly what Asyrp's directional loss compares with the text direction).
* **Text lock** (``text_freeze_steps``): the text tower stays at its random init for the first steps
  (see :func:`make_train_step`); unlocked from the start it collapses "smiling"/"frowning" to one embedding
  before the vision tower can see mouths, and smile never gets learned.
* **Data** of step ``i`` is a pure function of ``(seed, i)`` (:func:`make_batch`), so a resumed run equals
  an uninterrupted one bit for bit.
"""
from __future__ import annotations

import functools
import json
import os
from typing import Mapping

import flax
import jax
import jax.numpy as jnp
import numpy as np
import optax

from jaxhspace.data import synthfaces as sf
from jaxhspace.losses.clip_directional import IMAGENET_TEMPLATES, encode_texts, image_features, l2_normalize
from jaxhspace.losses.clip_preprocess import clip_preprocess
from jaxhspace.models.clip import CLIPConfig, CLIPModel, CLIPTextConfig, CLIPVisionConfig

SIMPLE_TEMPLATES = ("a photo of {}.", "{}.", "an image of {}.", "a picture of {}.")
SMILE_WORDS = ("frowning", "neutral", "smiling")
EYE_WORDS = ("small eyes", None, "big eyes")
ATTRS = ("smile", "hair_color", "eyes", "glasses", "background")  # columns of the attribute arrays
MAX_LOGIT_SCALE = float(np.log(100.0))
# what the job writes into its workdir (an export_dir inside the workdir must avoid these)
WORKDIR_FILES = ("checkpoints", "tokenizer", "train_log.jsonl", "metrics.json", "run_config.json")


# ----------------------------------------------------------------------------------------------
# Tokenizer
# ----------------------------------------------------------------------------------------------
def tokenizer_corpus() -> list[str]:
    """Every word the captions, evaluation prompts and templates use (one sentence per line)."""
    lines = [f"a {s} face with {h} hair, {e} and glasses on a {b} background."
             for s in SMILE_WORDS for h in sf.HAIR_COLORS for b in sf.BACKGROUNDS for e in ("big eyes", "small eyes")]
    lines += ["a face with no glasses without an image picture of my person"]
    return lines + list(SIMPLE_TEMPLATES) + list(IMAGENET_TEMPLATES)


def learn_bpe(word_counts: dict[str, int]) -> list[tuple[str, str]]:
    """Deterministic BPE: repeatedly merge the most frequent adjacent pair (ties: smallest pair), words
    ending in ``</w>``, until every word is one symbol. ``word_counts``: byte-level pre-tokenised word -> count.
    (``tokenizers``' BpeTrainer breaks frequency ties in hash-map order, so its merges change run to run.)"""
    segs = {w: tuple(w[:-1]) + (w[-1] + "</w>",) for w in word_counts}
    merges: list[tuple[str, str]] = []
    while True:
        counts: dict[tuple[str, str], int] = {}
        for w, seg in segs.items():
            for pair in zip(seg, seg[1:]):
                counts[pair] = counts.get(pair, 0) + word_counts[w]
        if not counts:
            return merges
        best = min(counts, key=lambda pr: (-counts[pr], pr))
        merges.append(best)
        for w, seg in segs.items():
            out, i = [], 0
            while i < len(seg):
                if seg[i:i + 2] == best:
                    out.append(best[0] + best[1])
                    i += 2
                else:
                    out.append(seg[i])
                    i += 1
            segs[w] = tuple(out)


def build_tokenizer(folder: str, context_length: int):
    """Learn the BPE on :func:`tokenizer_corpus`, write ``vocab.json`` + ``merges.txt`` (+ tokenizer.json,
    tokenizer_config.json) into ``folder`` and return the transformers ``CLIPTokenizer``
    (``model_max_length = context_length``). Words are normalised and pre-tokenised by CLIP's own
    ``tokenizers`` pipeline (lower case, CLIP's regex, byte-level symbols), so every corpus word is one token."""
    from transformers import CLIPTokenizer

    from jaxhspace.checkpoints.clip import write_byte_level_clip_vocab

    os.makedirs(folder, exist_ok=True)
    for name in ("tokenizer.json", "tokenizer_config.json"):  # stale files would shadow vocab.json/merges.txt
        if os.path.exists(os.path.join(folder, name)):
            os.remove(os.path.join(folder, name))
    write_byte_level_clip_vocab(folder)  # 512 byte symbols + specials; gives CLIP's normaliser / pre-tokeniser
    base = CLIPTokenizer.from_pretrained(folder, local_files_only=True).backend_tokenizer
    counts: dict[str, int] = {}
    for line in tokenizer_corpus():
        for word, _ in base.pre_tokenizer.pre_tokenize_str(base.normalizer.normalize_str(line)):
            counts[word] = counts.get(word, 0) + 1
    merges = [" ".join(m) for m in learn_bpe(counts)]
    specials = ["<|startoftext|>", "<|endoftext|>"]
    byte_syms = [t for t, _ in sorted(base.get_vocab().items(), key=lambda kv: kv[1]) if t not in specials]
    vocab = list(dict.fromkeys(byte_syms + ["".join(m.split(" ")) for m in merges])) + specials
    with open(os.path.join(folder, "vocab.json"), "w", encoding="utf-8") as f:
        json.dump({t: i for i, t in enumerate(vocab)}, f, ensure_ascii=False)
    with open(os.path.join(folder, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("#version: 0.2\n" + "".join(m + "\n" for m in merges))
    tokenizer = CLIPTokenizer.from_pretrained(folder, local_files_only=True, model_max_length=context_length)
    tokenizer.save_pretrained(folder)
    return tokenizer


# ----------------------------------------------------------------------------------------------
# Captions
# ----------------------------------------------------------------------------------------------
def image_attributes(factors: dict) -> np.ndarray:
    """Discrete attributes of faces as captions name them: int32 [N, 5] over :data:`ATTRS`
    (smile word 0/1/2 = frowning/neutral/smiling, hair class, eyes 0/1/2 = small/medium/big, glasses, background)."""
    s = np.asarray(factors["smile"])
    e = np.asarray(factors["eye_size"])
    smile = np.where(s > sf.SMILE_THRESHOLD, 2, np.where(s < -sf.SMILE_THRESHOLD, 0, 1))
    eyes = np.where(e > sf.BIG_EYES, 2, np.where(e < sf.SMALL_EYES, 0, 1))
    return np.stack([smile, factors["hair_color"], eyes, factors["glasses"], factors["background"]], 1).astype(np.int32)


def describe(attrs: np.ndarray, mention: np.ndarray) -> str:
    """Caption of one face from its attributes [5] and which ones to mention (bool [5]); the order and
    wording follow :func:`jaxhspace.data.synthfaces.caption` ('a smiling face with blue hair, big eyes and
    glasses on a gray background'). Mentioned glasses = 0 reads 'no glasses'; medium eyes are never named."""
    smile, hair, eyes, glasses, bg = (int(a) for a in attrs)
    parts = []
    if mention[1]:
        parts.append(f"{sf.HAIR_COLORS[hair]} hair")
    eye_word = EYE_WORDS[eyes]
    if mention[2] and eye_word:
        parts.append(eye_word)
    if mention[3]:
        parts.append("glasses" if glasses else "no glasses")
    text = f"a {SMILE_WORDS[smile]} face" if mention[0] else "a face"
    if parts:
        text += " with " + (parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1])
    if mention[4]:
        text += f" on a {sf.BACKGROUNDS[bg]} background"
    return text


def _wrap(text: str, u: float, pick: int, template_prob: float) -> str:
    """Wrap a caption in a template: simple ones with probability template_prob/2, Asyrp's ImageNet templates
    (article stripped: 'a photo of a {smiling face}.') with template_prob/2, else unchanged."""
    if u < template_prob / 2:
        return SIMPLE_TEMPLATES[pick % len(SIMPLE_TEMPLATES)].format(text)
    if u < template_prob:
        return IMAGENET_TEMPLATES[pick % len(IMAGENET_TEMPLATES)].format(text[2:])
    return text


# caption classes of smile / eye size as value intervals (see jaxhspace.data.synthfaces.caption)
_SMILE_BINS = ((-1.0, -sf.SMILE_THRESHOLD), (-sf.SMILE_THRESHOLD, sf.SMILE_THRESHOLD), (sf.SMILE_THRESHOLD, 1.0))
_EYE_BINS = ((0.0, sf.SMALL_EYES), (sf.SMALL_EYES, sf.BIG_EYES), (sf.BIG_EYES, 1.0))


def twin_factors(rng: np.random.Generator, factors: dict, probs=(0.6, 0.2, 0.2)):
    """Counterfactual twins: each face with one fine attribute moved to another caption class — smile
    (another of frowning/neutral/smiling), eyes (small <-> big) or glasses (flipped), chosen with ``probs``.

    Returns:
      ``(twins {name: [N]}, changed int [N])`` where ``changed`` is the column of :data:`ATTRS` (0, 2 or 3).
    """
    n = len(factors["smile"])
    changed = np.array([0, 2, 3])[rng.choice(3, n, p=np.asarray(probs) / np.sum(probs))]
    shift, u = rng.integers(1, 3, n), rng.random(n)
    attrs = image_attributes(factors)
    twins = {k: np.array(v) for k, v in factors.items()}
    for j in np.flatnonzero(changed == 0):
        lo, hi = _SMILE_BINS[(attrs[j, 0] + shift[j]) % 3]
        twins["smile"][j] = lo + u[j] * (hi - lo)
    for j in np.flatnonzero(changed == 2):
        lo, hi = _EYE_BINS[{0: 2, 2: 0}.get(int(attrs[j, 2]), 2 * (shift[j] - 1))]
        twins["eye_size"][j] = lo + u[j] * (hi - lo)
    twins["glasses"] = np.where(changed == 3, 1 - twins["glasses"], twins["glasses"]).astype(np.int32)
    return twins, changed


def augmented_captions(rng: np.random.Generator, factors: dict, keep_prob=0.5, full_prob: float = 0.2,
                       no_glasses_prob: float = 0.3, template_prob: float = 0.4, twin_changed=None):
    """Random captions for a batch of N faces.

    With probability ``full_prob`` the full SynthFaces caption is used; otherwise each attribute is kept with
    ``keep_prob`` (a float or one per :data:`ATTRS`; absent glasses are then said only with
    ``no_glasses_prob``). Texts are wrapped by :func:`_wrap` with ``template_prob``.

    Args:
      twin_changed: None, or int [N/2] when the second half of the faces are :func:`twin_factors` of the
        first: each pair then shares its mention mask and template, and the changed attribute is always said.

    Returns:
      ``(texts: list[str] of N, mentioned: int32 [N, 5])``: ``mentioned[j, k]`` is the value caption j states
      for :data:`ATTRS` ``[k]``, −1 where it says nothing (medium eyes are never stated).
    """
    attrs = image_attributes(factors)
    n = len(attrs) if twin_changed is None else len(attrs) // 2
    full = rng.random(n) < full_prob
    mention = (rng.random((n, 5)) < np.asarray(keep_prob, np.float64)) | full[:, None]
    mention[:, 3] &= (attrs[:n, 3] == 1) | full | (rng.random(n) < no_glasses_prob)
    mention[:, 3] &= ~(full & (attrs[:n, 3] == 0))  # the full caption omits absent glasses
    tmpl_u, tmpl_pick = rng.random(n), rng.integers(0, 1 << 30, n)
    if twin_changed is not None:
        mention[np.arange(n), twin_changed] = True
        mention, tmpl_u, tmpl_pick = (np.concatenate([x, x]) for x in (mention, tmpl_u, tmpl_pick))
    mention[:, 2] &= attrs[:, 2] != 1
    texts = [_wrap(describe(attrs[j], mention[j]), tmpl_u[j], tmpl_pick[j], template_prob) for j in range(len(attrs))]
    return texts, np.where(mention, attrs, -1).astype(np.int32)


def consistency(mentioned: np.ndarray, attrs: np.ndarray) -> np.ndarray:
    """float32 [Nt, Ni]: 1 where caption j states nothing that contradicts image i."""
    m = mentioned[:, None, :]
    return np.all((m < 0) | (m == attrs[None, :, :]), axis=-1).astype(np.float32)


def make_batch(step: int, tokenizer, *, seed: int, batch_size: int, context_length: int, captions: Mapping,
               twin_probs=None, multi_positive: bool = True) -> dict:
    """The batch of ``step``, a pure function of (seed, step).

    With ``twin_probs`` (probabilities of changing smile / eyes / glasses) the batch is B/2 faces
    ``sample_factors((seed, step))`` plus their :func:`twin_factors` (rng ``(seed, step, 2)``), so the only way to
    tell a twin pair apart is the changed fine attribute; otherwise ``generate((seed, step), B)``. Captions use rng
    ``(seed, step, 1)`` and the keyword arguments ``captions`` of :func:`augmented_captions`; they are tokenised to
    ``context_length`` tokens.

    Returns:
      images [B, 32, 32, 3] in [-1, 1]; input_ids / attention_mask int32 [B, L]; targets float32 [B, B]
      (rows texts, columns images: 1 for consistent pairs; identity if ``multi_positive`` is off).
    """
    b, twin_changed = batch_size, None
    if twin_probs:
        base = sf.sample_factors((seed, step), b // 2)
        twins, twin_changed = twin_factors(np.random.default_rng((seed, step, 2)), base, twin_probs)
        factors = {k: np.concatenate([base[k], twins[k]]) for k in base}
        images = sf.render(factors)
    else:
        images, factors = sf.generate((seed, step), b)
    rng = np.random.default_rng((seed, step, 1))
    texts, mentioned = augmented_captions(rng, factors, twin_changed=twin_changed, **dict(captions))
    enc = tokenizer(texts, padding="max_length", max_length=context_length, truncation=True, return_tensors="np")
    if multi_positive:
        targets = consistency(mentioned, image_attributes(factors))
    else:
        targets = np.eye(len(texts), dtype=np.float32)
    return {"images": images, "input_ids": enc["input_ids"].astype(np.int32),
            "attention_mask": enc["attention_mask"].astype(np.int32), "targets": targets}


# ----------------------------------------------------------------------------------------------
# Model, loss, train step
# ----------------------------------------------------------------------------------------------
def make_model(vocab_size: int, context_length: int, projection_dim: int, text: Mapping, vision: Mapping,
               logit_scale_init: float = 2.6592) -> CLIPModel:
    """CLIPModel for 32x32 images from the text / vision tower fields (HF field names, e.g. ``hidden_size``,
    ``num_hidden_layers``, ``patch_size``), the vocab size (bos = V − 2, eos = pad = V − 1), the context length, the
    projection width and the initial ``logit_scale`` (CLIP's ln(1/0.07))."""
    tc = CLIPTextConfig(vocab_size=vocab_size, max_position_embeddings=context_length,
                        projection_dim=projection_dim, bos_token_id=vocab_size - 2, eos_token_id=vocab_size - 1,
                        pad_token_id=vocab_size - 1, **dict(text))
    vc = CLIPVisionConfig(image_size=32, projection_dim=projection_dim, **dict(vision))
    return CLIPModel(CLIPConfig(text_config=tc, vision_config=vc, projection_dim=projection_dim,
                                logit_scale_init_value=float(logit_scale_init)))


def clip_loss(logits_per_text: jax.Array, targets: jax.Array) -> jax.Array:
    """Symmetric InfoNCE: mean of CE(text -> images) and CE(image -> texts).

    Args:
      logits_per_text: [T, B] scaled cosine similarities.
      targets: [T, B] nonnegative weights of positive pairs (identity for plain CLIP), normalised per row
        (text -> image) and per column (image -> text). Texts without any positive image only act as
        negatives (left out of the text -> image term); every image needs a positive text.
    """
    rows = jnp.sum(targets, axis=1, keepdims=True)
    valid = (rows[:, 0] > 0).astype(logits_per_text.dtype)
    lt = optax.softmax_cross_entropy(logits_per_text, targets / jnp.maximum(rows, 1e-9))
    li = optax.softmax_cross_entropy(logits_per_text.T, targets.T / jnp.sum(targets.T, axis=1, keepdims=True))
    return 0.5 * (jnp.sum(lt * valid) / jnp.maximum(jnp.sum(valid), 1.0) + jnp.mean(li))


@flax.struct.dataclass
class CLIPTrainState:
    """``step`` (int32 scalar), ``params``, ``opt_state``."""

    step: jax.Array
    params: dict
    opt_state: optax.OptState


def make_optimizer(lr, warmup_steps, total_steps, weight_decay, grad_clip) -> optax.GradientTransformation:
    """AdamW (decay only on matrices) with linear warm-up and cosine decay, global-norm clipping."""
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, max(1, warmup_steps), max(total_steps, warmup_steps + 1),
                                               lr * 0.05)
    wd_mask = lambda p: jax.tree.map(lambda a: a.ndim >= 2, p)  # noqa: E731
    return optax.chain(optax.clip_by_global_norm(grad_clip),
                       optax.adamw(sched, b2=0.98, weight_decay=weight_decay, mask=wd_mask))


TEXT_TOWER = ("text_model", "text_projection")


@functools.lru_cache(maxsize=4)
def make_train_step(model: CLIPModel, opt_args: tuple, noise_std: float, text_freeze_steps: int = 0):
    """Jitted ``step(state, batch, base_key) -> (state, metrics)`` (cached: one compile per setting), with
    the optimizer ``make_optimizer(*opt_args)``; the image-noise key is ``fold_in(base_key, step)``.

    For the first ``text_freeze_steps`` steps the text tower (:data:`TEXT_TOWER`) is locked at its random
    init (its updates are zeroed; Adam moments still accumulate). Otherwise the text tower quickly learns to
    ignore the words the young vision tower cannot see yet ("smiling" vs "frowning": cos 1.000), after which
    neither tower gets a gradient to tell smiles apart (a saddle); against fixed random text directions
    the vision tower learns the mouth as it would with a random linear classifier head.

    ``batch``: images [B, 32, 32, 3] in [-1, 1], input_ids/attention_mask [B, L], targets [B, B]
    (see :func:`make_batch`). ``i2t_acc``: fraction of images whose best text is a positive.
    Images get Gaussian noise with per-image σ ~ U(0, noise_std) (robustness to diffusion outputs).
    """

    def loss_fn(params, batch, key):
        x = batch["images"]
        k1, k2 = jax.random.split(key)
        sigma = noise_std * jax.random.uniform(k1, (x.shape[0], 1, 1, 1))
        x = x + sigma * jax.random.normal(k2, x.shape)
        pix = clip_preprocess(x, model.config.vision_config.image_size, validate=False)
        out = model.apply({"params": params}, batch["input_ids"], pix, batch["attention_mask"])
        logits = out["logits_per_text"]
        loss = clip_loss(logits, batch["targets"])
        acc = jnp.mean(jnp.take_along_axis(batch["targets"].T, jnp.argmax(logits.T, 1)[:, None], 1) > 0)
        return loss, acc

    optimizer = make_optimizer(*opt_args)

    def step(state: CLIPTrainState, batch, base_key):
        key = jax.random.fold_in(base_key, state.step)
        (loss, acc), grads = jax.value_and_grad(loss_fn, has_aux=True)(state.params, batch, key)
        updates, opt_state = optimizer.update(grads, state.opt_state, state.params)
        frozen = state.step < text_freeze_steps
        updates = {k: jax.tree.map(lambda u: jnp.where(frozen, jnp.zeros_like(u), u), v) if k in TEXT_TOWER else v
                   for k, v in updates.items()}
        params = optax.apply_updates(state.params, updates)
        params = {**params, "logit_scale": jnp.clip(params["logit_scale"], 0.0, MAX_LOGIT_SCALE)}
        metrics = {"loss": loss, "i2t_acc": acc, "logit_scale": params["logit_scale"]}
        return CLIPTrainState(state.step + 1, params, opt_state), metrics

    return jax.jit(step, donate_argnums=(0,))


# ----------------------------------------------------------------------------------------------
# Zero-shot evaluation
# ----------------------------------------------------------------------------------------------
def zero_shot_tasks(factors: dict) -> dict:
    """{task: (prompts [C], labels int [N] with −1 = excluded)} for the SynthFaces factors."""
    attrs = image_attributes(factors)
    s = np.asarray(factors["smile"])
    clear = np.abs(s) > 0.4
    return {
        "smile_3way": ([f"a {w} face" for w in SMILE_WORDS], attrs[:, 0]),
        "smile_binary": (["a frowning face", "a smiling face"], np.where(clear, (s > 0).astype(int), -1)),
        "hair_color": ([f"a face with {c} hair" for c in sf.HAIR_COLORS], attrs[:, 1]),
        "glasses": (["a face with no glasses", "a face with glasses"], attrs[:, 3]),
        "background": ([f"a face on a {c} background" for c in sf.BACKGROUNDS], attrs[:, 4]),
        "eyes_binary": (["a face with small eyes", "a face with big eyes"],
                        np.where(attrs[:, 2] == 1, -1, attrs[:, 2] // 2)),
    }


def zero_shot_accuracy(model, params, tokenizer, images, factors, templates=None) -> dict:
    """Zero-shot classification accuracy per factor (argmax cosine over class prompts).

    Args:
      images: [N, 32, 32, 3] in [-1, 1]; factors: SynthFaces factors {name: [N]}.
      templates: None (raw prompts such as "a smiling face") or templates with ``{}`` filled with the prompt
        minus its leading "a " (text features averaged over templates, as in CLIP's prompt ensembling).

    Returns:
      {task: accuracy} for :func:`zero_shot_tasks` (smile 3-way, smile_binary on |smile| > 0.4, hair colour
      5-way, glasses, background 4-way, eyes small-vs-big on clear faces) plus ``{task}_n`` sample counts.
    """
    img = np.concatenate([np.asarray(l2_normalize(image_features(model, params, jnp.asarray(images[i:i + 256]))))
                          for i in range(0, len(images), 256)])
    out = {}
    for task, (prompts, labels) in zero_shot_tasks(factors).items():
        if templates is None:
            txt = l2_normalize(encode_texts(model, params, tokenizer, prompts))
        else:
            filled = [t.format(p[2:]) for p in prompts for t in templates]
            txt = l2_normalize(encode_texts(model, params, tokenizer, filled)).reshape(len(prompts), len(templates), -1)
            txt = l2_normalize(jnp.mean(l2_normalize(txt), axis=1))
        pred = np.argmax(img @ np.asarray(txt).T, axis=1)
        keep = labels >= 0
        out[task] = float(np.mean(pred[keep] == labels[keep]))
        out[f"{task}_n"] = int(keep.sum())
    return out


def direction_alignment(model, params, tokenizer, factors, edits=None, templates=IMAGENET_TEMPLATES) -> dict:
    """Mean cos(ΔI, ΔT) of exact single-factor edits (re-rendered faces) vs the template-averaged text
    direction — what Asyrp's directional loss sees. ``edits``: {name: (factor, src value, tgt value, src
    text, tgt text)}. Returns {name: mean cosine over faces}."""
    from jaxhspace.losses.clip_directional import text_direction

    edits = edits or {
        "smile": ("smile", -0.8, 0.8, "frowning face", "smiling face"),
        "neutral_to_smiling": ("smile", 0.0, 0.8, "face", "smiling face"),
        "red_hair": ("hair_color", 0, 3, "face with black hair", "face with red hair"),
        "glasses": ("glasses", 0, 1, "face", "face with glasses"),
    }
    out = {}
    for name, (k, a, b, src, tgt) in edits.items():
        fa, fb = dict(factors), dict(factors)
        fa[k] = np.full_like(factors[k], a)
        fb[k] = np.full_like(factors[k], b)
        ia = l2_normalize(image_features(model, params, jnp.asarray(sf.render(fa))))
        ib = l2_normalize(image_features(model, params, jnp.asarray(sf.render(fb))))
        d_img = l2_normalize(ib - ia)
        d_txt = text_direction(model, params, tokenizer, src, tgt, templates)
        out[name] = float(jnp.mean(d_img @ d_txt))
    return out


def evaluate(model, params, tokenizer, seed: int, n: int) -> dict:
    """Zero-shot accuracies (raw prompts and ImageNet-template ensembles) and edit/text direction alignment
    on ``n`` held-out faces ``generate(seed, n)``."""
    images, factors = sf.generate(seed, n)
    small = {k: v[:128] for k, v in factors.items()}
    return {"zero_shot": zero_shot_accuracy(model, params, tokenizer, images, factors),
            "zero_shot_templates": zero_shot_accuracy(model, params, tokenizer, images, factors, IMAGENET_TEMPLATES),
            "direction_cosine": direction_alignment(model, params, tokenizer, small)}
