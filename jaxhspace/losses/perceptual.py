"""Pluggable image distances for choosing Asyrp's t_edit / t_boost (official ``set_t_edit_t_addnoise``,
kwonminki/Asyrp_official@a6c82dc:diffusion_latent.py:1308-1412).

A *metric* is a callable ``metric(a [B,H,W,3], b [B,H,W,3]) -> [B]`` (images in [-1, 1], NHWC; ``a`` may be a
noisy x_t outside that range) with attributes ``name`` (str) and ``lpips_calibrated`` (bool: whether the official
thresholds 0.33 / 1.2 / 0.1 mean what they mean in the official code). Get one with :func:`get_metric`:

* ``"lpips"``: LPIPS v0.1 with the AlexNet backbone (Zhang et al. 2018; ``lpips.LPIPS(net='alex')``, what the
  official ``compute_lpips_distance`` uses), implemented in JAX. The weights are **not shipped**: pass a folder
  with ``alex.pth`` (the LPIPS linear layers, ``lin{0..4}.model.1.weight``, from the ``lpips`` package's
  ``weights/v0.1/alex.pth``) and the torchvision AlexNet weights (``alexnet.pth`` or torchvision's
  ``alexnet-owt-7be5be79.pth``; ``features.{0,3,6,8,10}.{weight,bias}``). A missing path raises a ValueError.
* ``"msl2"`` (the documented fallback, no weights): multi-scale RMS distance
  d(a, b) = (1/L) Σ_{l<L} RMS(pool^l(a) − pool^l(b)) / 2 with 2×2 average pooling (L = 3); 0 for equal images,
  1 for images at opposite ends of [-1, 1]. Coarse scales make it less sensitive to pixel noise than plain L2,
  loosely like LPIPS' multi-layer average. **Not LPIPS-calibrated**: its values for the same image pairs differ
  from LPIPS', so the official thresholds select different t; set t_edit / t_boost directly
  (kwonminki/Asyrp_official@a6c82dc:README.md:96-101: 500 / 200) or rescale the thresholds after looking at the curves.
* ``"probe"``: squared distance of unit-normalised penultimate features of the shipped SynthFaces attribute probe
  (``assets/probe``, :func:`jaxhspace.data.probe.probe_features`), in [0, 4], like LPIPS' normalised feature
  differences but with a single layer of a network trained on SynthFaces factors. Needs 32×32 or 64×64 images and
  the probe asset. Not LPIPS-calibrated either.
"""
from __future__ import annotations

import os
from typing import Callable

import jax
import jax.numpy as jnp
import numpy as np

METRICS = ("msl2", "probe", "lpips")


class Metric:
    """A named distance ``(a [B,H,W,3], b [B,H,W,3]) -> [B]`` (see the module docstring)."""

    def __init__(self, name: str, fn: Callable, lpips_calibrated: bool):
        self.name, self.fn, self.lpips_calibrated = name, fn, lpips_calibrated

    def __call__(self, a, b):
        a, b = jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32)
        if a.ndim != 4 or a.shape[-1] != 3 or b.shape[1:] != a.shape[1:] or b.shape[0] not in (1, a.shape[0]):
            raise ValueError(f"{self.name}: images must be NHWC [B, H, W, 3] with equal H, W (b may have batch 1); "
                             f"got {a.shape} and {b.shape}")
        return self.fn(a, jnp.broadcast_to(b, a.shape))

    def __repr__(self):
        return f"Metric({self.name!r}, lpips_calibrated={self.lpips_calibrated})"


# ----------------------------------------------------------------------------------------------
# Multi-scale RMS (fallback)
# ----------------------------------------------------------------------------------------------
def _pool2(x):
    b, h, w, c = x.shape
    h2, w2 = h // 2, w // 2
    return x[:, :2 * h2, :2 * w2].reshape(b, h2, 2, w2, 2, c).mean(axis=(2, 4))


@jax.jit
def _msl2_3(a, b):
    out = []
    for _ in range(3):
        out.append(jnp.sqrt(jnp.mean((a - b) ** 2, axis=(1, 2, 3))) / 2.0)
        if a.shape[1] >= 2 and a.shape[2] >= 2:
            a, b = _pool2(a), _pool2(b)
    return jnp.mean(jnp.stack(out), axis=0)


def multiscale_l2(a, b) -> jax.Array:
    """Multi-scale RMS distance ``[B]`` (3 scales, 2×2 average pooling; see the module docstring)."""
    return _msl2_3(jnp.asarray(a, jnp.float32), jnp.asarray(b, jnp.float32))


# ----------------------------------------------------------------------------------------------
# Probe features
# ----------------------------------------------------------------------------------------------
def probe_metric(path: str = "") -> Metric:
    """Distance in the attribute probe's feature space (``path`` or the shipped ``assets/probe``)."""
    from jaxhspace.data import probe

    path = path or probe.DEFAULT_DIR
    if not os.path.isdir(path):
        raise ValueError(f"probe metric: no probe at {path} (train/ship it with python -m jaxhspace.data.probe, or use "
                         "metric 'msl2')")
    model, params = probe.load_probe(path)

    def fn(a, b):
        fa = probe.probe_features(params, np.asarray(a), model)
        fb = probe.probe_features(params, np.asarray(b), model)
        fa = fa / (np.linalg.norm(fa, axis=-1, keepdims=True) + 1e-10)
        fb = fb / (np.linalg.norm(fb, axis=-1, keepdims=True) + 1e-10)
        return jnp.asarray(np.sum((fa - fb) ** 2, axis=-1))

    return Metric("probe", fn, lpips_calibrated=False)


# ----------------------------------------------------------------------------------------------
# LPIPS (AlexNet, v0.1)
# ----------------------------------------------------------------------------------------------
LPIPS_SHIFT = (-0.030, -0.088, -0.188)
LPIPS_SCALE = (0.458, 0.448, 0.450)
_ALEX = ((0, 11, 4, 2), (3, 5, 1, 2), (6, 3, 1, 1), (8, 3, 1, 1), (10, 3, 1, 1))  # (index, kernel, stride, pad)
ALEXNET_FILES = ("alexnet.pth", "alexnet-owt-7be5be79.pth", "alexnet-owt-4df8aa71.pth")


def _read_pth(path):
    import torch

    try:
        sd = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:
        raise ValueError(f"LPIPS: could not read {path}: {e}") from e
    if not isinstance(sd, dict):
        raise ValueError(f"LPIPS: {path} is not a state dict")
    return {k: v.detach().float().numpy() for k, v in sd.items() if hasattr(v, "detach")}


def load_lpips_weights(path: str) -> dict:
    """Read the LPIPS folder (module docstring) into ``{"features": [(w HWIO, b)] * 5, "lins": [w [C]] * 5}``."""
    if not path or not os.path.isdir(path):
        raise ValueError(f"LPIPS weights folder {path!r} not found. LPIPS is not shipped: put the lpips package's "
                         "weights/v0.1/alex.pth and torchvision's AlexNet weights (alexnet.pth) in a folder and pass "
                         "it as lpips_path, or use the metric 'msl2' (not LPIPS-calibrated; see "
                         "jaxhspace.losses.perceptual)")
    lin_path = os.path.join(path, "alex.pth")
    alex_path = next((os.path.join(path, f) for f in ALEXNET_FILES if os.path.isfile(os.path.join(path, f))), None)
    if not os.path.isfile(lin_path) or alex_path is None:
        raise ValueError(f"LPIPS folder {path} needs alex.pth (LPIPS linear layers) and one of {ALEXNET_FILES} "
                         "(torchvision AlexNet)")
    lin, alex = _read_pth(lin_path), _read_pth(alex_path)
    feats, lins = [], []
    for li, (idx, *_rest) in enumerate(_ALEX):
        try:
            w, b = alex[f"features.{idx}.weight"], alex[f"features.{idx}.bias"]
            lw = lin[f"lin{li}.model.1.weight"]
        except KeyError as e:
            raise ValueError(f"LPIPS weights: missing key {e} in {path}") from e
        feats.append((jnp.asarray(np.transpose(w, (2, 3, 1, 0))), jnp.asarray(b)))
        lins.append(jnp.asarray(lw.reshape(-1)))
    return {"features": feats, "lins": lins}


def lpips_distance(weights: dict, a, b) -> jax.Array:
    """LPIPS(a, b) ``[B]`` for images in [-1, 1] (``lpips.LPIPS(net='alex', version='0.1')``, spatial average)."""
    shift = jnp.asarray(LPIPS_SHIFT, jnp.float32)
    scale = jnp.asarray(LPIPS_SCALE, jnp.float32)
    x = (jnp.concatenate([a, b], 0) - shift) / scale
    n = a.shape[0]
    total = jnp.zeros((n,), jnp.float32)
    dn = ("NHWC", "HWIO", "NHWC")
    for li, ((w, bias), (_, k, s, p)) in enumerate(zip(weights["features"], _ALEX)):
        if li in (1, 2):  # MaxPool2d(3, 2) before conv2 and conv3
            x = jax.lax.reduce_window(x, -jnp.inf, jax.lax.max, (1, 3, 3, 1), (1, 2, 2, 1), "VALID")
        x = jax.lax.conv_general_dilated(x, w, (s, s), [(p, p), (p, p)], dimension_numbers=dn,
                                         precision=jax.lax.Precision.HIGHEST) + bias
        x = jax.nn.relu(x)
        f = x / (jnp.sqrt(jnp.sum(x * x, axis=-1, keepdims=True)) + 1e-10)
        d = (f[:n] - f[n:]) ** 2
        total = total + jnp.mean(jnp.sum(d * weights["lins"][li], axis=-1), axis=(1, 2))
    return total


def lpips_metric(path: str) -> Metric:
    """LPIPS-alex from weights in ``path`` (ValueError if missing; nothing is downloaded)."""
    weights = load_lpips_weights(path)
    fn = jax.jit(lambda a, b: lpips_distance(weights, a, b))
    return Metric("lpips", fn, lpips_calibrated=True)


def get_metric(name: str = "msl2", path: str = "") -> Metric:
    """``"msl2"`` | ``"probe"`` (``path``: probe folder, "" = shipped) | ``"lpips"`` (``path``: LPIPS folder,
    required)."""
    if name == "msl2":
        return Metric("msl2", multiscale_l2, lpips_calibrated=False)
    if name == "probe":
        return probe_metric(path)
    if name == "lpips":
        return lpips_metric(path)
    raise ValueError(f"unknown perceptual metric {name!r}; expected one of {METRICS}")
