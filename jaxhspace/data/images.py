"""Image I/O: [-1, 1] NHWC arrays <-> PNG files and labelled grids."""
from __future__ import annotations

import os

import numpy as np
from PIL import Image


def to_uint8(x) -> np.ndarray:
    """[..., H, W, 3] float in [-1, 1] -> uint8 in [0, 255] (values outside are clipped for display only)."""
    x = np.asarray(x, dtype=np.float32)
    if not np.all(np.isfinite(x)):
        raise ValueError("images contain NaN or inf; nothing sensible can be written")
    return np.clip(np.round((x + 1.0) * 127.5), 0, 255).astype(np.uint8)


def make_grid(images, pad: int = 2, upscale: int = 1) -> np.ndarray:
    """Tile images into one picture.

    Args:
      images: [R, C, H, W, 3] (rows x columns) or [N, H, W, 3] (one row), float in [-1, 1].
      pad: white pixels between tiles.
      upscale: nearest-neighbour magnification (small 32x32 faces are easier to read at 4x).
    Returns:
      uint8 array [R*(H+pad)+pad, C*(W+pad)+pad, 3].
    """
    images = np.asarray(images)
    if images.ndim == 4:
        images = images[None]
    if images.ndim != 5 or images.shape[-1] != 3:
        raise ValueError(f"make_grid wants [R,C,H,W,3] or [N,H,W,3] images, got shape {images.shape}")
    tiles = to_uint8(images)
    if upscale > 1:
        tiles = tiles.repeat(upscale, axis=2).repeat(upscale, axis=3)
    r, c, h, w, _ = tiles.shape
    grid = np.full((r * (h + pad) + pad, c * (w + pad) + pad, 3), 255, np.uint8)
    for i in range(r):
        for j in range(c):
            y, x = pad + i * (h + pad), pad + j * (w + pad)
            grid[y:y + h, x:x + w] = tiles[i, j]
    return grid


def save_png(path: str, array_uint8: np.ndarray) -> str:
    """Write a uint8 [H, W, 3] array as PNG atomically (temp file + rename). Returns the path."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    Image.fromarray(array_uint8).save(tmp)
    os.replace(tmp, path)
    return path


def save_grid(path: str, images, pad: int = 2, upscale: int = 1) -> str:
    """``save_png(path, make_grid(images, pad, upscale))``."""
    return save_png(path, make_grid(images, pad=pad, upscale=upscale))


IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".webp", ".bmp")


def expand_image_paths(paths) -> list[str]:
    """Image files from ``paths``: a file stays as is; a folder becomes its image files (``IMAGE_EXTENSIONS``,
    sorted by name, not recursive), so ``--config.image_paths="('/data/celebahq_test',)"`` works."""
    out = []
    for p in paths:
        if os.path.isdir(p):
            files = sorted(f for f in os.listdir(p) if f.lower().endswith(IMAGE_EXTENSIONS))
            if not files:
                raise ValueError(f"folder {p} has no image files ({', '.join(IMAGE_EXTENSIONS)})")
            out += [os.path.join(p, f) for f in files]
        else:
            out.append(p)
    return out


def load_images(paths, size: int) -> np.ndarray:
    """Load image files (folders are expanded by :func:`expand_image_paths`), centre-crop to square, resize to
    ``size`` (bicubic), return [N, size, size, 3] in [-1, 1]."""
    out = []
    for p in expand_image_paths(paths):
        if not os.path.isfile(p):
            raise ValueError(f"image {p} not found")
        try:
            im = Image.open(p).convert("RGB")
        except Exception as e:
            raise ValueError(f"could not read image {p}: {e}") from e
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s)).resize((size, size), Image.BICUBIC)
        out.append(np.asarray(im, dtype=np.float32) / 127.5 - 1.0)
    return np.stack(out)
