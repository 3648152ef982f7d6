"""Attribute probe: a small Flax CNN that reads every SynthFaces factor back from a 32x32 image.

Used to score edits (did the target factor move? did others leak?), the validity of DDPM samples
(``is_valid_face``: every factor read in range; ``in_distribution``: penultimate features within the data's
99% Mahalanobis ball) and, through its penultimate features, a Fréchet distance between image sets.

Train and ship the default weights (CPU: 7.7 min wall on 2 cores shared with other jobs, 3.3 min CPU time;
held-out R² >= 0.987 for continuous factors, accuracy 1.0 otherwise; 0.9 MB float32):

    PYTHONPATH=. python -m jaxhspace.data.probe --out assets/probe --steps 1500 --batch 64 --lr 0.002 --seed 0

    from jaxhspace.data.probe import load_probe, score, edit_effect
    model, params = load_probe()                    # assets/probe
    s = score(params, images)                       # {factor: [N]}; images [N, 32|64, 32|64, 3] in [-1, 1]

Heads: one linear regression output per continuous factor (trained on the factor rescaled to [-1, 1]),
softmax logits per categorical factor, one sigmoid logit per binary factor. Training images get mild
augmentation (Gaussian noise sigma ~ U(0, 0.08), random 3x3 blur mix) so imperfect diffusion samples
still score sensibly.
"""
from __future__ import annotations

import argparse
import dataclasses
import json
import os
import time

import flax.linen as nn
import jax
import jax.numpy as jnp
import numpy as np
import optax
from flax.traverse_util import flatten_dict, unflatten_dict
from safetensors.numpy import load_file, save_file

from jaxhspace.data import synthfaces as sf
from jaxhspace.data.synthfaces import FACTORS

DEFAULT_DIR = os.path.normpath(os.path.join(os.path.dirname(__file__), "..", "..", "assets", "probe"))
WEIGHTS, CONFIG = "probe.safetensors", "config.json"


class ProbeCNN(nn.Module):
    """Conv stack (3x3 convs, GELU, strided downsampling 32 -> 4) + dense feature layer + one head per factor.

    __call__(x [N, 32, 32, 3]) -> (heads {name: [N] (continuous, binary logit) or [N, K] (categorical logits)},
    features [N, dense]).
    """

    channels: tuple = (32, 32, 64, 64, 64)
    strides: tuple = (1, 2, 1, 2, 2)
    dense: int = 128

    @nn.compact
    def __call__(self, x):
        for i, (c, s) in enumerate(zip(self.channels, self.strides)):
            x = nn.gelu(nn.Conv(c, (3, 3), strides=(s, s), padding="SAME", name=f"conv_{i}")(x))
        feats = nn.gelu(nn.Dense(self.dense, name="dense")(x.reshape(x.shape[0], -1)))
        heads = {}
        for name, f in FACTORS.items():
            out = nn.Dense(f.num_classes if f.kind == "categorical" else 1, name=f"head_{name}")(feats)
            heads[name] = out if f.kind == "categorical" else out[:, 0]
        return heads, feats


def _config_of(model: ProbeCNN) -> dict:
    return {"channels": list(model.channels), "strides": list(model.strides), "dense": model.dense}


# ---------------------------------------------------------------- targets, loss, augmentation
def _to_unit(name, v):
    """Continuous factor value -> [-1, 1] (the regression target scale)."""
    f = FACTORS[name]
    return 2.0 * (v - f.low) / f.span - 1.0


def _from_unit(name, z):
    f = FACTORS[name]
    return (z + 1.0) * 0.5 * f.span + f.low


def _loss(heads, batch):
    total, parts = 0.0, {}
    for name, f in FACTORS.items():
        y, out = batch[name], heads[name]
        if f.kind == "continuous":
            loss = jnp.mean((out - _to_unit(name, y)) ** 2) * 4.0  # ~ weight of a 0.25-range error = 1
        elif f.kind == "binary":
            loss = jnp.mean(optax.sigmoid_binary_cross_entropy(out, y.astype(jnp.float32)))
        else:
            loss = jnp.mean(optax.softmax_cross_entropy_with_integer_labels(out, y))
        parts[name] = loss
        total = total + loss
    return total, parts


def augment(key, x):
    """Mild degradations of images x [N, H, W, 3] in [-1, 1]: a random-strength 3x3 binomial blur on half
    the batch, then Gaussian noise with per-image sigma ~ U(0, 0.08). Returns [N, H, W, 3]."""
    kb, kw, ks, kn = jax.random.split(key, 4)
    n = x.shape[0]
    k1 = jnp.array([1.0, 2.0, 1.0]) / 4.0
    kern = jnp.tile((k1[:, None] * k1[None, :])[:, :, None, None], (1, 1, 1, 3))  # HWIO depthwise
    xp = jnp.pad(x, ((0, 0), (1, 1), (1, 1), (0, 0)), mode="edge")
    blurred = jax.lax.conv_general_dilated(xp, kern, (1, 1), "VALID", feature_group_count=3,
                                           dimension_numbers=("NHWC", "HWIO", "NHWC"))
    w = jax.random.uniform(kw, (n, 1, 1, 1)) * jax.random.bernoulli(kb, 0.5, (n, 1, 1, 1))
    x = x + w * (blurred - x)
    sigma = jax.random.uniform(ks, (n, 1, 1, 1), maxval=0.08)
    return x + sigma * jax.random.normal(kn, x.shape)


# ---------------------------------------------------------------- training
def evaluate(model, params, images, factors) -> dict:
    """Held-out metrics: {name: R² (continuous) or accuracy (categorical / binary at p = 0.5)}.

    images [N, 32, 32, 3]; factors {name: [N]} (ground truth)."""
    pred = score(params, images, model=model)
    out = {}
    for name, f in FACTORS.items():
        y, p = np.asarray(factors[name]), pred[name]
        if f.kind == "continuous":
            out[name] = float(1.0 - np.sum((p - y) ** 2) / np.sum((y - y.mean()) ** 2))
        elif f.kind == "binary":
            out[name] = float(np.mean((p > 0.5) == (y == 1)))
        else:
            out[name] = float(np.mean(p == y))
    return out


def train_probe(seed: int = 0, steps: int = 1500, batch_size: int = 64, lr: float = 2e-3,
                eval_n: int = 2048, augment_images: bool = True, model: ProbeCNN | None = None,
                progress: bool = True):
    """Train a probe on fresh SynthFaces batches (batch i from seed (seed, i)) with Adam + warmup-cosine.

    Returns:
      (model, params, metrics): metrics = {"clean": {factor: R²/acc}, "augmented": {...},
      "wall_time_s": float, ...} evaluated on ``eval_n`` held-out faces from seed (seed + 1, 2**31 - 1).
    """
    from tqdm import tqdm

    if steps <= 0 or batch_size <= 0:
        raise ValueError("steps and batch_size must be positive")
    model = model or ProbeCNN()
    key = jax.random.PRNGKey(seed)
    key, kinit = jax.random.split(key)
    params = model.init(kinit, jnp.zeros((1, 32, 32, 3)))["params"]
    sched = optax.warmup_cosine_decay_schedule(0.0, lr, min(200, steps // 10 + 1), steps, lr * 0.02)
    opt = optax.adam(sched)
    opt_state = opt.init(params)

    @jax.jit
    def train_step(params, opt_state, batch, key):
        x = augment(key, batch["images"]) if augment_images else batch["images"]

        def loss_fn(p):
            heads, _ = model.apply({"params": p}, x)
            return _loss(heads, batch)

        (loss, parts), grads = jax.value_and_grad(loss_fn, has_aux=True)(params)
        updates, opt_state = opt.update(grads, opt_state, params)
        return optax.apply_updates(params, updates), opt_state, loss

    data = iter(sf.SynthFacesDataset(base_seed=seed, batch_size=batch_size, size=32))
    t0 = time.perf_counter()
    bar = tqdm(range(steps), disable=not progress, desc="probe", mininterval=5.0)
    for i in bar:
        b = next(data)
        batch = {k: jnp.asarray(v) for k, v in b.items()}
        params, opt_state, loss = train_step(params, opt_state, batch, jax.random.fold_in(key, i))
        if i % 100 == 0:
            bar.set_postfix(loss=f"{float(loss):.4f}")
    wall = time.perf_counter() - t0

    images, factors = sf.generate((seed + 1, 2**31 - 1), eval_n)
    noisy = np.asarray(augment(jax.random.PRNGKey(seed + 1), jnp.asarray(images)))
    metrics = {"clean": evaluate(model, params, images, factors),
               "augmented": evaluate(model, params, noisy, factors),
               "wall_time_s": round(wall, 1), "steps": steps, "batch_size": batch_size, "lr": lr,
               "seed": seed, "eval_n": eval_n}
    return model, params, metrics


# ---------------------------------------------------------------- save / load
def save_probe(path: str, params, config: dict) -> str:
    """Write ``path/probe.safetensors`` (params flattened with '/' keys, float32) and ``path/config.json``
    (model hyper-parameters under "model", plus anything else in ``config``), each atomically. Returns path."""
    os.makedirs(path, exist_ok=True)
    flat = {"/".join(k): np.asarray(v, np.float32) for k, v in flatten_dict(jax.device_get(params)).items()}
    tmp = os.path.join(path, WEIGHTS + ".tmp")
    save_file(flat, tmp)
    os.chmod(tmp, 0o644)
    os.replace(tmp, os.path.join(path, WEIGHTS))
    tmp = os.path.join(path, CONFIG + ".tmp")
    with open(tmp, "w") as fh:
        json.dump(config, fh, indent=2, sort_keys=True)
    os.replace(tmp, os.path.join(path, CONFIG))
    return path


def load_probe(path: str | None = None):
    """Load a probe folder written by ``save_probe`` (default: the shipped ``assets/probe``).

    Returns (model: ProbeCNN, params pytree)."""
    path = path or DEFAULT_DIR
    wf, cf = os.path.join(path, WEIGHTS), os.path.join(path, CONFIG)
    if not (os.path.isfile(wf) and os.path.isfile(cf)):
        raise FileNotFoundError(f"no probe at {path} (expected {WEIGHTS} and {CONFIG})")
    with open(cf) as fh:
        cfg = json.load(fh)["model"]
    model = ProbeCNN(tuple(cfg["channels"]), tuple(cfg["strides"]), int(cfg["dense"]))
    flat = load_file(wf)
    params = unflatten_dict({tuple(k.split("/")): jnp.asarray(v) for k, v in flat.items()})
    return model, params


# ---------------------------------------------------------------- inference
_JIT_CACHE: dict = {}


def _apply_fn(model: ProbeCNN):
    key = json.dumps(_config_of(model))
    if key not in _JIT_CACHE:
        _JIT_CACHE[key] = jax.jit(lambda p, x: model.apply({"params": p}, x))
    return _JIT_CACHE[key]


def _run(params, images, model, chunk: int = 512):
    """Heads and features for images [N, 32|64, 32|64, 3]; 64x64 inputs are 2x2 average-pooled to 32x32.
    ``params`` may also be the (model, params) pair returned by ``load_probe``."""
    if isinstance(params, tuple) and len(params) == 2 and isinstance(params[0], ProbeCNN):
        model, params = params
    images = np.asarray(images, np.float32)
    if images.ndim != 4 or images.shape[-1] != 3 or images.shape[1:3] not in ((32, 32), (64, 64)):
        raise ValueError(f"probe wants images [N, 32|64, 32|64, 3], got {images.shape}")
    if images.shape[0] == 0:
        raise ValueError("no images to score")
    if images.shape[1] == 64:
        images = images.reshape(-1, 32, 2, 32, 2, 3).mean(axis=(2, 4))
    fn = _apply_fn(model or ProbeCNN())
    outs = [jax.device_get(fn(params, jnp.asarray(images[s:s + chunk]))) for s in range(0, len(images), chunk)]
    heads = {k: np.concatenate([o[0][k] for o in outs]) for k in outs[0][0]}
    return heads, np.concatenate([o[1] for o in outs])


def score(params, images, model: ProbeCNN | None = None, probs: bool = False) -> dict[str, np.ndarray]:
    """Predicted factors per image.

    Args:
      params: probe params, or the (model, params) pair from ``load_probe``; images: [N, 32|64, 32|64, 3] in
        [-1, 1]; model: default ``ProbeCNN()`` (the shipped architecture).
      probs: if True categorical factors are returned as probabilities [N, K] instead of class indices.
    Returns:
      {name: [N]}: continuous -> value in the factor's units (float32, may leave the range on odd images);
      categorical -> class index (int32) or [N, K] probabilities; binary -> probability of class 1 (float32).
    """
    heads, _ = _run(params, images, model)
    out = {}
    for name, f in FACTORS.items():
        h = heads[name]
        if f.kind == "continuous":
            out[name] = _from_unit(name, h).astype(np.float32)
        elif f.kind == "binary":
            out[name] = (1.0 / (1.0 + np.exp(-h))).astype(np.float32)
        else:
            p = np.exp(h - h.max(-1, keepdims=True))
            p = (p / p.sum(-1, keepdims=True)).astype(np.float32)
            out[name] = p if probs else p.argmax(-1).astype(np.int32)
    return out


def probe_features(params, images, model: ProbeCNN | None = None) -> np.ndarray:
    """Penultimate-layer features [N, dense] (float32) of images [N, 32|64, 32|64, 3], for Fréchet distances."""
    return _run(params, images, model)[1].astype(np.float32)


def frechet_distance(feats_a, feats_b, eps: float = 1e-6) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets [Na, D], [Nb, D] (unbiased covariances):
    |mu_a - mu_b|² + tr(S_a + S_b - 2 (S_a S_b)^½). Adds eps·I to both covariances if sqrtm is singular."""
    from scipy import linalg

    a, b = np.asarray(feats_a, np.float64), np.asarray(feats_b, np.float64)
    if a.ndim != 2 or b.ndim != 2 or a.shape[1] != b.shape[1] or min(len(a), len(b)) < 2:
        raise ValueError(f"need two [N>=2, D] feature arrays with equal D, got {a.shape} and {b.shape}")
    mu_a, mu_b = a.mean(0), b.mean(0)
    s_a, s_b = np.atleast_2d(np.cov(a, rowvar=False)), np.atleast_2d(np.cov(b, rowvar=False))
    covmean = linalg.sqrtm(s_a @ s_b)
    if not np.all(np.isfinite(covmean)):
        off = eps * np.eye(len(s_a))
        covmean = linalg.sqrtm((s_a + off) @ (s_b + off))
    covmean = np.real(covmean)
    return float(max(np.sum((mu_a - mu_b) ** 2) + np.trace(s_a) + np.trace(s_b) - 2.0 * np.trace(covmean), 0.0))


@dataclasses.dataclass(frozen=True)
class FeatureGaussian:
    """A Gaussian fitted to probe features of SynthFaces data: ``mean`` [D], ``precision`` [D, D] and the
    squared Mahalanobis distance ``threshold`` that a ``quantile`` of independent held-out data stays below."""

    mean: np.ndarray
    precision: np.ndarray
    threshold: float
    quantile: float

    def distance(self, feats) -> np.ndarray:
        """Squared Mahalanobis distance [N] of probe features [N, D] (:func:`probe_features`) to the Gaussian."""
        d = np.asarray(feats, np.float64) - self.mean
        return np.einsum("nd,de,ne->n", d, self.precision, d)

    def contains(self, feats) -> np.ndarray:
        """bool [N]: features [N, D] inside the ``quantile`` ball (see :func:`in_distribution`)."""
        return self.distance(feats) <= self.threshold


def fit_feature_gaussian(params, model: ProbeCNN | None = None, n_fit: int = 4096, n_calib: int = 1024,
                         quantile: float = 0.99, seed: int = 777, ridge: float = 1e-4) -> FeatureGaussian:
    """Fit the data's probe-feature Gaussian on ``n_fit`` SynthFaces images (seed ``seed``) and calibrate the
    threshold on ``n_calib`` others (seed ``seed + 1``), so that data passes :func:`in_distribution` at rate
    ≈ ``quantile``. ``ridge``·I regularises the covariance. Deterministic for a seed."""
    fit, _ = sf.generate(seed, n_fit)
    feats = probe_features(params, fit, model).astype(np.float64)
    mean = feats.mean(0)
    cov = np.cov(feats, rowvar=False) + ridge * np.eye(feats.shape[1])
    g = FeatureGaussian(mean, np.linalg.inv(cov), float("inf"), float(quantile))
    calib, _ = sf.generate(seed + 1, n_calib)
    return dataclasses.replace(g, threshold=float(np.quantile(feature_distance(params, calib, g, model), quantile)))


def feature_distance(params, images, gauss: FeatureGaussian, model: ProbeCNN | None = None) -> np.ndarray:
    """Squared Mahalanobis distance [N] of the probe features of images [N, 32|64, 32|64, 3] to ``gauss``."""
    return gauss.distance(probe_features(params, images, model))


def in_distribution(params, images, gauss: FeatureGaussian, model: ProbeCNN | None = None) -> np.ndarray:
    """bool [N]: the image's probe features lie inside the data's ``gauss.quantile`` Mahalanobis ball. Stricter
    than :func:`is_valid_face`, which only asks that each factor be read in range: a face with a colour cast
    over skin, hair and background reads as *some* skin tone and hair colour but its features are atypical."""
    return gauss.contains(probe_features(params, images, model))


# ---------------------------------------------------------------- validity and edit effects
def factors_in_range(scores: dict, tol: float = 0.1, min_conf: float = 0.75) -> dict[str, np.ndarray]:
    """Per-factor checks {name: bool [N]}: continuous predictions within [low, high] widened by tol·range;
    binary probabilities confident (max(p, 1-p) >= min_conf); categorical: probabilities [N, K] confident
    (max >= min_conf) or indices [N] valid."""
    out = {}
    for name, f in FACTORS.items():
        v = np.asarray(scores[name])
        if f.kind == "continuous":
            out[name] = (v >= f.low - tol * f.span) & (v <= f.high + tol * f.span)
        elif f.kind == "binary":
            out[name] = np.maximum(v, 1.0 - v) >= min_conf
        elif v.ndim == 2:
            out[name] = v.max(-1) >= min_conf
        else:
            out[name] = (v >= 0) & (v < f.num_classes)
    return out


def is_valid_face(scores: dict, tol: float = 0.1, min_conf: float = 0.75) -> np.ndarray:
    """bool [N]: every factor of ``factors_in_range`` holds. Pass ``score(..., probs=True)`` output to also
    demand confident categorical reads; the mean is the "share of samples whose factors are in range"."""
    checks = factors_in_range(scores, tol, min_conf)
    return np.logical_and.reduce(list(checks.values()))


def _change(name, before, after, signed: bool) -> float:
    """Mean change of one factor in comparable units (see ``edit_effect``)."""
    f = FACTORS[name]
    b, a = np.asarray(before, np.float64), np.asarray(after, np.float64)
    if f.kind == "continuous":
        d = (a - b) / f.span
    elif f.kind == "binary":
        d = a - b
    elif b.ndim == 2:
        return float(np.mean(0.5 * np.abs(a - b).sum(-1)))  # probability mass moved (total variation)
    else:
        return float(np.mean(a != b))  # flip rate
    return float(np.mean(d if signed else np.abs(d)))


def edit_effect(scores_before: dict, scores_after: dict, target: str) -> dict:
    """Effect of an edit on the target factor and leakage into all others, from probe scores of the same
    images before and after editing ({name: [N]} as returned by ``score``).

    Normalisation (every number is a fraction of "one full change", 0 = untouched):
      continuous  mean |after - before| / (high - low)      (target_change keeps the sign)
      binary      mean |p_after - p_before|                 (probability moved; signed for target_change)
      categorical flip rate of the predicted class, or with probs=True scores the mean total-variation
                  distance 0.5·Σ|p_after - p_before| (probability mass moved)
    Returns {"target", "target_change" (signed where defined), "target_magnitude", "leakage": {name: float},
    "max_leakage", "mean_leakage", "ratio" (target_magnitude / max_leakage)}.
    """
    if target not in FACTORS:
        raise ValueError(f"unknown target {target!r}; factors are {list(FACTORS)}")
    leak = {k: _change(k, scores_before[k], scores_after[k], False) for k in FACTORS if k != target}
    mag = _change(target, scores_before[target], scores_after[target], False)
    mx = max(leak.values())
    return {"target": target, "target_change": _change(target, scores_before[target], scores_after[target], True),
            "target_magnitude": mag, "leakage": leak, "max_leakage": mx,
            "mean_leakage": float(np.mean(list(leak.values()))), "ratio": mag / max(mx, 1e-8)}


# ---------------------------------------------------------------- CLI
def main(argv=None):
    ap = argparse.ArgumentParser(description="Train the SynthFaces attribute probe and save it.")
    ap.add_argument("--out", default=DEFAULT_DIR)
    ap.add_argument("--steps", type=int, default=1500)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--lr", type=float, default=2e-3)
    ap.add_argument("--seed", type=int, default=0)
    args = ap.parse_args(argv)
    model, params, metrics = train_probe(args.seed, args.steps, args.batch, args.lr)
    cmd = f"python -m jaxhspace.data.probe --out {args.out} --steps {args.steps} --batch {args.batch} " \
          f"--lr {args.lr} --seed {args.seed}"
    save_probe(args.out, params, {"model": _config_of(model), "metrics": metrics, "command": cmd,
                                  "factors": {k: {"kind": f.kind, "low": f.low, "high": f.high,
                                                  "classes": list(f.classes)} for k, f in FACTORS.items()}})
    print(json.dumps(metrics, indent=1))
    return metrics


if __name__ == "__main__":
    main()
