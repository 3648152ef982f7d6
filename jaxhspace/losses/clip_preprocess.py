"""Differentiable CLIP image preprocessing in JAX, for images in [-1, 1] (NHWC).

Asyrp (kwonminki/Asyrp_official@a6c82dc:losses/clip_loss.py:39-41, copied from StyleGAN-NADA) preprocesses a *tensor*
with ``Normalize(-1, 2)`` ((x+1)/2), ``Resize(224, BICUBIC)``, ``CenterCrop(224)`` and CLIP's ``Normalize(mean, std)``.
On tensors, the pinned torchvision's ``Resize`` calls ``torch.nn.functional.interpolate(mode="bicubic",
align_corners=False)`` without antialiasing.

Resize methods offered here:

* ``"torch"`` (default): reproduces that torch op exactly (up to float rounding): Keys cubic convolution with
  ``A = -0.75``, source coordinate ``(i + 0.5)·in/out − 0.5``, border indices clamped (replicate), no
  antialiasing when downsampling. Implemented as two dense interpolation matrices (``[out, in]`` per axis)
  applied with ``einsum``, so it is linear and differentiable. The matrices are built in float64, so this
  matches torch's float64 op to ~1e-15 and torch's float32 op to ~2e-5 (torch computes the source
  coordinates in float32).
* ``"jax"``: ``jax.image.resize(..., "bicubic")``. It differs from torch in three ways: Keys' ``A = -0.5``
  (torch: −0.75), weights near the border are renormalised over in-range samples instead of replicating the
  edge pixel, and with ``antialias=True`` (jax's default) the kernel is widened when downsampling. Expect
  differences of a few 1e-3 on natural images; the directional loss barely notices, but use ``"torch"`` to
  match the official numbers.
"""
from __future__ import annotations

import functools
import math
import warnings

import jax
import jax.numpy as jnp
import numpy as np

from jaxhspace.models.clip import CLIP_MEAN, CLIP_STD

RANGE_LIMIT = 1.5  # |x| above this cannot be an image in [-1, 1] (unclamped P_t may slightly exceed 1)


def _cubic(x: np.ndarray, a: float) -> np.ndarray:
    x = np.abs(x)
    return np.where(x <= 1, ((a + 2) * x - (a + 3)) * x * x + 1,
                    np.where(x < 2, ((a * x - 5 * a) * x + 8 * a) * x - 4 * a, 0.0))


@functools.lru_cache(maxsize=64)
def torch_bicubic_matrix(in_size: int, out_size: int, a: float = -0.75) -> np.ndarray:
    """Interpolation matrix ``W [out_size, in_size]`` of torch's ``interpolate(mode="bicubic",
    align_corners=False, antialias=False)`` along one axis (``y = W @ x``)."""
    scale = in_size / out_size
    w = np.zeros((out_size, in_size), np.float64)
    for i in range(out_size):
        src = scale * (i + 0.5) - 0.5  # not clamped at 0 for cubic (torch's area_pixel_compute_source_index)
        x0 = math.floor(src)
        t = src - x0
        for k, c in zip(range(-1, 3), _cubic(np.array([t + 1, t, 1 - t, 2 - t]), a)):
            w[i, min(max(x0 + k, 0), in_size - 1)] += c
    return w.astype(np.float32)


def resize_shorter_side(size_hw: tuple[int, int], size: int) -> tuple[int, int]:
    """Output size of torchvision ``Resize(size)`` (int): shorter side -> ``size``, aspect kept (floored)."""
    h, w = size_hw
    if h <= w:
        return size, int(size * w / h)
    return int(size * h / w), size


def bicubic_resize(x: jax.Array, out_hw: tuple[int, int], method: str = "torch", antialias: bool = False) -> jax.Array:
    """Bicubic resize of ``x [B, H, W, C]`` to ``[B, out_h, out_w, C]`` (see the module docstring for methods)."""
    oh, ow = out_hw
    if method == "torch":
        wh = jnp.asarray(torch_bicubic_matrix(x.shape[1], oh), x.dtype)
        ww = jnp.asarray(torch_bicubic_matrix(x.shape[2], ow), x.dtype)
        x = jnp.einsum("oh,bhwc->bowc", wh, x)
        return jnp.einsum("pw,bowc->bopc", ww, x)
    if method == "jax":
        return jax.image.resize(x, (x.shape[0], oh, ow, x.shape[3]), "bicubic", antialias=antialias)
    raise ValueError(f"resize method {method!r} not supported; use 'torch' or 'jax'.")


def center_crop(x: jax.Array, size: int) -> jax.Array:
    """torchvision ``CenterCrop(size)`` on ``[B, H, W, C]`` (top = round((H − size)/2)); H, W >= size."""
    h, w = x.shape[1:3]
    if h < size or w < size:
        raise ValueError(f"center_crop: image {h}x{w} is smaller than the crop {size}.")
    top, left = int(round((h - size) / 2.0)), int(round((w - size) / 2.0))
    return x[:, top:top + size, left:left + size, :]


def check_images(x, name: str = "images") -> None:
    """Validate images for CLIP: 4-D NHWC with 3 channels and values in [-1, 1].

    The range check runs only on concrete arrays (not under ``jit``/``grad`` tracing) and raises for
    ``|x| > 1.5``: values that far out mean the images are in [0, 1]/[0, 255] ranges or unscaled.
    """
    shape = tuple(np.shape(x))
    if len(shape) != 4 or shape[-1] != 3:
        raise ValueError(f"{name} must be NHWC [batch, height, width, 3] in [-1, 1], got shape {shape}"
                         + (" (looks NCHW: transpose to NHWC)" if len(shape) == 4 and shape[1] == 3 else "") + ".")
    if shape[1] < 1 or shape[2] < 1 or shape[0] < 1:
        raise ValueError(f"{name} must be non-empty, got shape {shape}.")
    if not isinstance(x, jax.core.Tracer):
        m = float(np.max(np.abs(np.asarray(x))))  # NumPy: stays concrete even inside an outer jit trace
        if not math.isfinite(m):
            raise ValueError(f"{name} contain NaN or inf.")
        if m > RANGE_LIMIT:
            raise ValueError(f"{name} must be in [-1, 1] (got max |x| = {m:.3g}); rescale, e.g. x/127.5 - 1 "
                             "for uint8 or 2x - 1 for [0, 1].")
        if m > 1.0 + 1e-3:
            warnings.warn(f"{name} slightly exceed [-1, 1] (max |x| = {m:.3g}); fine for unclamped predictions.",
                          stacklevel=3)


def clip_preprocess(x: jax.Array, image_size: int, method: str = "torch", antialias: bool = False,
                    validate: bool = True) -> jax.Array:
    """[-1, 1] images -> CLIP pixel values, differentiably (Asyrp/StyleGAN-NADA's pipeline).

    Args:
      x: ``[B, H, W, 3]`` float images in [-1, 1] (NHWC).
      image_size: the vision tower's input size S (``model.config.vision_config.image_size``).
      method / antialias: bicubic resize flavour (module docstring); the default matches the official code.
      validate: run :func:`check_images`.

    Returns:
      ``[B, S, S, 3]``: ((x + 1)/2 -> shorter side resized to S -> center crop S -> (· − mean)/std).
    """
    if validate:
        check_images(x)
    x = jnp.asarray(x)
    if not jnp.issubdtype(x.dtype, jnp.floating):
        raise ValueError(f"images must be floating point in [-1, 1], got dtype {x.dtype}.")
    x = (x + 1.0) / 2.0
    x = bicubic_resize(x, resize_shorter_side((x.shape[1], x.shape[2]), image_size), method=method,
                       antialias=antialias)
    x = center_crop(x, image_size)
    mean = jnp.asarray(CLIP_MEAN, x.dtype)
    std = jnp.asarray(CLIP_STD, x.dtype)
    return (x - mean) / std
