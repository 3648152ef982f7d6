"""SynthFaces: procedural cartoon faces with independent, known factors (the project's "default world").

Every image is a pure function of its factors (no hidden nuisance), rendered in NumPy with anti-aliased
signed-distance shapes (edge alpha = clip(0.5 - d / pixel_width, 0, 1)), vectorised over the batch.

    from jaxhspace.data.synthfaces import generate, captions
    images, factors = generate(seed=0, n=16)        # images [16, 32, 32, 3] float32 in [-1, 1]
    captions(factors)[0]  # e.g. 'a smiling face with blue hair, big eyes and glasses on a gray background'

Factors (all sampled independently, uniformly; see ``FACTORS``):
  smile        continuous [-1, 1]  mouth curvature: -1 corners down (frown), +1 corners up (smile)
  skin_tone    continuous [0, 1]   skin colour along a pale -> tan -> brown palette (hue and lightness co-vary)
  eye_size     continuous [0, 1]   eye radius, 0.10 -> 0.23 of the face height
  face_size    continuous [0, 1]   face radius
  face_x       continuous [-1, 1]  horizontal face position (left -> right)
  face_y       continuous [-1, 1]  vertical face position (up -> down)
  hair_color   categorical         black, brown, blonde, red, blue
  background   categorical         gray, teal, purple, cream
  glasses      binary              0 = none, 1 = round glasses

Continuous factors are float32 [N], categorical and binary factors int32 [N] (class index / 0-1).
"""
from __future__ import annotations

import dataclasses
from typing import Any, Iterator

import numpy as np

SIZES = (32, 64)


@dataclasses.dataclass(frozen=True)
class Factor:
    """One generative factor. ``kind`` is 'continuous' (uses ``low``/``high``), 'binary' or 'categorical'
    (uses ``classes``; binary classes are ('no', 'yes'))."""

    name: str
    kind: str
    low: float = 0.0
    high: float = 1.0
    classes: tuple = ()

    @property
    def span(self) -> float:
        """high - low for continuous factors (the unit of 'one full range'); 1 otherwise."""
        return float(self.high - self.low) if self.kind == "continuous" else 1.0

    @property
    def num_classes(self) -> int:
        return len(self.classes)


HAIR_COLORS = ("black", "brown", "blonde", "red", "blue")
BACKGROUNDS = ("gray", "teal", "purple", "cream")

FACTORS: dict[str, Factor] = {
    f.name: f
    for f in (
        Factor("smile", "continuous", -1.0, 1.0),
        Factor("skin_tone", "continuous", 0.0, 1.0),
        Factor("eye_size", "continuous", 0.0, 1.0),
        Factor("face_size", "continuous", 0.0, 1.0),
        Factor("face_x", "continuous", -1.0, 1.0),
        Factor("face_y", "continuous", -1.0, 1.0),
        Factor("hair_color", "categorical", classes=HAIR_COLORS),
        Factor("background", "categorical", classes=BACKGROUNDS),
        Factor("glasses", "binary", classes=("no", "yes")),
    )
}

# Caption thresholds (also the "clear" classes used by CLIP training and edit evaluation).
SMILE_THRESHOLD = 1.0 / 3.0  # smile > 1/3: "smiling"; < -1/3: "frowning"; else "neutral"
BIG_EYES, SMALL_EYES = 0.7, 0.3  # eye_size > 0.7: "big eyes"; < 0.3: "small eyes"

_HAIR_RGB = np.array([[0.10, 0.08, 0.08], [0.42, 0.24, 0.10], [0.96, 0.82, 0.38],
                      [0.85, 0.22, 0.06], [0.12, 0.32, 0.92]], np.float32)
_BG_RGB = np.array([[0.62, 0.62, 0.64], [0.38, 0.66, 0.66], [0.62, 0.50, 0.80], [0.94, 0.91, 0.80]], np.float32)
_SKIN_RGB = np.array([[1.00, 0.86, 0.76], [0.90, 0.68, 0.50], [0.66, 0.44, 0.28], [0.42, 0.27, 0.17]], np.float32)
_SHIRT_RGB = np.array([0.28, 0.30, 0.36], np.float32)
_EYE_WHITE = np.array([0.98, 0.98, 0.98], np.float32)
_PUPIL = np.array([0.08, 0.07, 0.12], np.float32)
_MOUTH = np.array([0.55, 0.08, 0.12], np.float32)
_FRAME = np.array([0.04, 0.04, 0.05], np.float32)
_CHUNK = 128  # images rendered at once (keeps the [chunk, H, W] temporaries cache-sized)


def _check_size(size: int) -> int:
    if size not in SIZES:
        raise ValueError(f"size must be one of {SIZES}, got {size!r} (SynthFaces renders only these sizes; for a model "
                         "of another resolution, e.g. a 256x256 CelebA-HQ DDPM, give the job your own images with "
                         "--config.image_paths)")
    return int(size)


def _check_n(n) -> int:
    if not isinstance(n, (int, np.integer)) or n <= 0:
        raise ValueError(f"n must be a positive integer, got {n!r}")
    return int(n)


def _rng(rng_or_seed) -> np.random.Generator:
    if isinstance(rng_or_seed, np.random.Generator):
        return rng_or_seed
    return np.random.default_rng(rng_or_seed)  # int, or a tuple/list such as (base_seed, i)


def sample_factors(rng_or_seed, n: int) -> dict[str, np.ndarray]:
    """Sample ``n`` independent factor settings (each factor uniform over its range / classes).

    Args:
      rng_or_seed: a ``np.random.Generator``, an int seed, or a sequence of ints such as (base_seed, i).
      n: number of faces (> 0).
    Returns:
      {name: [n]} — float32 for continuous factors, int32 class indices for categorical / binary.
    """
    n = _check_n(n)
    rng = _rng(rng_or_seed)
    out = {}
    for f in FACTORS.values():  # fixed order -> deterministic per seed
        if f.kind == "continuous":
            out[f.name] = rng.uniform(f.low, f.high, n).astype(np.float32)
        else:
            out[f.name] = rng.integers(0, f.num_classes, n).astype(np.int32)
    return out


def validate_factors(factors: dict) -> int:
    """Check a factor dict (all names of ``FACTORS``, equal-length 1-D arrays, values in range). Returns N."""
    missing = [k for k in FACTORS if k not in factors]
    if missing:
        raise ValueError(f"factors missing {missing}")
    lengths = {np.shape(factors[k]) for k in FACTORS}
    if len(lengths) != 1 or len(next(iter(lengths))) != 1 or next(iter(lengths))[0] == 0:
        raise ValueError(f"factors must be non-empty 1-D arrays of equal length, got shapes {lengths}")
    for f in FACTORS.values():
        v = np.asarray(factors[f.name])
        if f.kind == "continuous":
            if not np.all(np.isfinite(v)) or v.min() < f.low - 1e-6 or v.max() > f.high + 1e-6:
                raise ValueError(f"{f.name} must lie in [{f.low}, {f.high}]")
        elif not np.all((v >= 0) & (v < f.num_classes) & (v == np.round(v))):
            raise ValueError(f"{f.name} must hold class indices in [0, {f.num_classes})")
    return next(iter(lengths))[0]


# ---------------------------------------------------------------- signed distances (negative inside)
def _ellipse(x, y, rx, ry):
    """Approximate signed distance to an axis-aligned ellipse (Quilez' k0*(k0-1)/k1 bound)."""
    k0 = np.sqrt((x / rx) ** 2 + (y / ry) ** 2)
    k1 = np.sqrt((x / rx**2) ** 2 + (y / ry**2) ** 2) + 1e-6
    return k0 * (k0 - 1.0) / k1


def _circle(x, y, r):
    return np.sqrt(x * x + y * y) - r


def _segment_h(x, y, half_len, half_thick):
    """Horizontal capsule centred at the origin."""
    return np.sqrt(np.maximum(np.abs(x) - half_len, 0.0) ** 2 + y * y) - half_thick


def _mouth(x, y, half_w, amp, half_thick):
    """Stroke along y = amp * (0.5 - (x / half_w)^2) for |x| <= half_w (amp > 0: corners up, a smile;
    image y points down). Distance is the vertical gap divided by the slope norm; ends are round caps."""
    xc = np.clip(x, -half_w, half_w)
    yc = amp * (0.5 - (xc / half_w) ** 2)
    slope = -2.0 * amp * xc / half_w**2
    d_curve = np.abs(y - yc) / np.sqrt(1.0 + slope**2)
    d = np.where(np.abs(x) <= half_w, d_curve, np.sqrt((x - xc) ** 2 + (y - yc) ** 2))
    return d - half_thick


def _skin_rgb(tone):
    """[N] tone in [0, 1] -> [N, 3] colour, piecewise-linear along ``_SKIN_RGB``."""
    t = np.clip(tone, 0.0, 1.0) * (len(_SKIN_RGB) - 1)
    i = np.minimum(t.astype(np.int32), len(_SKIN_RGB) - 2)
    w = (t - i)[:, None]
    return (1 - w) * _SKIN_RGB[i] + w * _SKIN_RGB[i + 1]


def _render_chunk(f: dict, size: int) -> np.ndarray:
    n = len(f["smile"])
    pw = np.float32(2.0 / size)  # one pixel in normalised units (the image spans [-1, 1])
    g = (np.arange(size, dtype=np.float32) + 0.5) * pw - 1.0
    col = lambda a: np.asarray(a, np.float32).reshape(n, 1, 1)  # noqa: E731  per-image scalar -> [N,1,1]

    ry = col(0.50 + 0.16 * f["face_size"])
    rx = 0.80 * ry
    cx = col(0.20 * f["face_x"])
    cy = col(-0.02 + 0.13 * f["face_y"])
    x = g[None, None, :] - cx  # [N,1,W] face-centred coordinates
    y = g[None, :, None] - cy  # [N,H,1]

    img = np.empty((3, n, size, size), np.float32)  # channel-first while painting: contiguous planes
    shade = 1.06 - 0.08 * (g[None, :, None] + 1.0)  # gentle vertical background gradient
    for c in range(3):
        img[c] = _BG_RGB[f["background"], c][:, None, None] * shade
    tmp = np.empty((n, size, size), np.float32)

    def paint(d, rgb, opacity=1.0):
        """Alpha-blend colour rgb ([N, 3] or [3]) where d < 0, anti-aliased over one pixel."""
        a = np.clip(0.5 - d * inv_pw, 0.0, 1.0).astype(np.float32, copy=False)
        if opacity != 1.0:
            a *= np.float32(opacity)
        a = np.broadcast_to(a, tmp.shape)
        rgb = np.asarray(rgb, np.float32)
        for c in range(3):
            col_c = rgb[:, c, None, None] if rgb.ndim == 2 else rgb[c]
            np.subtract(col_c, img[c], out=tmp)
            np.multiply(tmp, a, out=tmp)
            img[c] += tmp

    inv_pw = np.float32(1.0 / pw)
    skin = _skin_rgb(np.asarray(f["skin_tone"], np.float32))
    hair = _HAIR_RGB[f["hair_color"]]
    # Shoulders, neck, back hair, face, fringe.
    paint(_ellipse(x, y - 2.05 * ry, 1.75 * rx, 0.85 * ry), _SHIRT_RGB)
    paint(np.maximum(np.abs(x) - 0.32 * rx, np.abs(y - 1.05 * ry) - 0.4 * ry), skin * 0.82)
    paint(np.maximum(_ellipse(x, y + 0.06 * ry, 1.24 * rx, 1.17 * ry), y - 0.45 * ry), hair)
    face = _ellipse(x, y, rx, ry)
    paint(face, skin)
    hairline = y - (-0.50 * ry + 0.22 * ry * (x / rx) ** 2)  # < 0 above the (curved) hairline
    paint(np.maximum(face - 0.02, hairline), hair)
    # Nose (subtle) and eyes.
    paint(_ellipse(x, y - 0.14 * ry, 0.07 * rx, 0.10 * ry), skin * 0.80)
    er = (0.10 + 0.13 * col(f["eye_size"])) * ry
    ex, ey = 0.38 * rx, -0.08 * ry
    for sx in (-1.0, 1.0):
        paint(_ellipse(x - sx * ex, y - ey, er, 0.9 * er), _EYE_WHITE)
        paint(_circle(x - sx * ex, y - ey, 0.55 * er), _PUPIL)
    # Mouth: corners up for smile > 0 (the curve's amplitude is signed).
    amp = 0.26 * ry * col(f["smile"])
    paint(_mouth(x, y - 0.50 * ry, 0.40 * rx, amp, 0.045 * ry + 0.35 * pw), _MOUTH)
    # Glasses (tinted lenses, rims, bridge) only on faces with glasses == 1.
    on = col(f["glasses"]).astype(np.float32)
    gr, gt = 0.28 * ry, 0.03 * ry + 0.25 * pw
    lens = np.minimum(_circle(x - ex, y - ey, gr), _circle(x + ex, y - ey, gr))
    rims = np.minimum(np.abs(lens) - gt, _segment_h(x, y - ey, ex - gr, gt))
    off = np.float32(1e3) * (1.0 - on)  # pushes the distance outside for faces without glasses
    paint(lens + off, _FRAME, opacity=0.12)
    paint(rims + off, _FRAME)
    return img.transpose(1, 2, 3, 0)


def render(factors: dict, size: int = 32) -> np.ndarray:
    """Render faces from factors.

    Args:
      factors: {name: [N]} with every name of ``FACTORS`` (as returned by ``sample_factors``).
      size: 32 or 64 (same picture, finer pixels).
    Returns:
      images [N, size, size, 3] float32 in [-1, 1].
    """
    size = _check_size(size)
    n = validate_factors(factors)
    out = np.empty((n, size, size, 3), np.float32)
    for s in range(0, n, _CHUNK):
        chunk = {k: np.asarray(factors[k])[s:s + _CHUNK] for k in FACTORS}
        out[s:s + _CHUNK] = _render_chunk(chunk, size)
    np.clip(out, 0.0, 1.0, out=out)
    return out * 2.0 - 1.0


def generate(seed, n: int, size: int = 32) -> tuple[np.ndarray, dict[str, np.ndarray]]:
    """Sample factors from ``seed`` and render them; the same seed gives identical arrays.

    Returns:
      (images [n, size, size, 3] float32 in [-1, 1], factors {name: [n]}).
    """
    size = _check_size(size)
    factors = sample_factors(seed, n)
    return render(factors, size), factors


def smile_word(smile: float) -> str:
    """'smiling' (> 1/3), 'frowning' (< -1/3) or 'neutral'."""
    return "smiling" if smile > SMILE_THRESHOLD else "frowning" if smile < -SMILE_THRESHOLD else "neutral"


def caption(factors_i: dict, background: bool = True) -> str:
    """English caption of one face, e.g. 'a smiling face with blue hair, big eyes and glasses on a gray background'.

    Args:
      factors_i: {name: scalar} for one face (``{k: v[i] for k, v in factors.items()}``).
      background: mention the background colour.
    """
    parts = [f"{HAIR_COLORS[int(factors_i['hair_color'])]} hair"]
    eye = float(factors_i["eye_size"])
    if eye > BIG_EYES:
        parts.append("big eyes")
    elif eye < SMALL_EYES:
        parts.append("small eyes")
    if int(factors_i["glasses"]):
        parts.append("glasses")
    items = parts[0] if len(parts) == 1 else ", ".join(parts[:-1]) + " and " + parts[-1]
    text = f"a {smile_word(float(factors_i['smile']))} face with {items}"
    if background:
        text += f" on a {BACKGROUNDS[int(factors_i['background'])]} background"
    return text


def captions(factors: dict, background: bool = True) -> list[str]:
    """Captions for a batch: factors {name: [N]} -> list of N strings (see ``caption``)."""
    n = validate_factors(factors)
    return [caption({k: factors[k][i] for k in FACTORS}, background) for i in range(n)]


class SynthFacesDataset:
    """Infinite, epoch-free, seeded batches: batch ``i`` is ``generate((base_seed, i), batch_size, size)``.

    Iterating yields dicts {"images": [B, size, size, 3] float32, <factor>: [B], ("captions": list[str])},
    starting at batch ``start`` (use it to resume). ``dataset[i]`` returns batch i directly.
    """

    def __init__(self, base_seed: int = 0, batch_size: int = 64, size: int = 32,
                 with_captions: bool = False, start: int = 0):
        self.base_seed = int(base_seed)
        self.batch_size = _check_n(batch_size)
        self.size = _check_size(size)
        self.with_captions = with_captions
        self.start = int(start)

    def __getitem__(self, i: int) -> dict:
        if i < 0:
            raise IndexError("batch index must be >= 0")
        images, factors = generate((self.base_seed, int(i)), self.batch_size, self.size)
        batch: dict[str, Any] = {"images": images, **factors}
        if self.with_captions:
            batch["captions"] = captions(factors)
        return batch

    def __iter__(self) -> Iterator[dict]:
        i = self.start
        while True:
            yield self[i]
            i += 1


def _preview(path: str = "/tmp/synthfaces_preview.png", seed: int = 0, size: int = 32) -> str:
    """Save an 8x8 grid of random faces plus a smile sweep row (for eyeballing the renderer)."""
    from jaxhspace.data.images import save_grid

    images, f = generate(seed, 56, size)
    sweep = {k: np.repeat(v[:1], 8) for k, v in f.items()}
    sweep["smile"] = np.linspace(-1, 1, 8).astype(np.float32)
    grid = np.concatenate([images, render(sweep, size)]).reshape(8, 8, size, size, 3)
    return save_grid(path, grid, upscale=max(1, 128 // size))


if __name__ == "__main__":
    import sys

    print(_preview(sys.argv[1]) if len(sys.argv) > 1 else _preview())
