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
    """Write a uint8 [H, W, 3] array as PNG atomically (temp file + rename). Returns the path.

    A failed write (e.g. a full disk) leaves neither the temp file nor a partial ``path``; ENOSPC / EDQUOT raise a
    :class:`jaxhspace.errors.JaxhspaceError` saying so (see :func:`jaxhspace.checkpoints.common.no_space_error`)."""
    os.makedirs(os.path.dirname(os.path.abspath(path)), exist_ok=True)
    tmp = path + ".tmp.png"
    try:
        Image.fromarray(array_uint8).save(tmp)
        os.replace(tmp, path)
    except BaseException as e:
        if os.path.lexists(tmp):
            os.remove(tmp)
        from jaxhspace.checkpoints.common import no_space_error

        err = no_space_error(e, path)
        if err is not None:
            raise err from e
        raise
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


def _open_image(p: str) -> tuple[Image.Image, float]:
    """``(image, full scale)``: an 8-bit RGB image (full scale 255), or, for single-channel 16-bit / 32-bit integer
    files (PNG ``I;16``, which ``convert("RGB")`` would saturate), a float ``"F"`` image with its full scale
    (65535). Pillow already reads 16-bit RGB(A) / gray+alpha PNGs as 8-bit (the high byte), correctly scaled."""
    from jaxhspace.errors import JaxhspaceError

    try:
        im = Image.open(p)
        im.load()
    except Exception as e:
        raise JaxhspaceError(f"could not read image {p}: {e}") from e
    if im.mode.startswith("I;16") or im.mode == "I":
        a = np.asarray(im).astype(np.float64)
        if a.size and (a.min() < 0 or a.max() > 65535):
            raise JaxhspaceError(f"image {p} is a 32-bit integer image with values in [{a.min():g}, {a.max():g}]; "
                                 "only 8- and 16-bit images are read: save it as an 8- or 16-bit PNG.")
        return Image.fromarray(a.astype(np.float32)), 65535.0  # mode "F"
    if im.mode == "F":
        raise JaxhspaceError(f"image {p} holds 32-bit floats, whose scale is not defined; save it as an 8- or "
                             "16-bit PNG (0..255 / 0..65535).")
    try:
        return im.convert("RGB"), 255.0
    except Exception as e:
        raise JaxhspaceError(f"could not convert image {p} (mode {im.mode}) to RGB: {e}") from e


def load_images(paths, size: int) -> np.ndarray:
    """Load image files (folders are expanded by :func:`expand_image_paths`), centre-crop to square, resize to
    ``size`` (bicubic), return [N, size, size, 3] in [-1, 1].

    8-bit files and Pillow's 8-bit reading of 16-bit RGB(A) PNGs map 0..255 to [-1, 1]; single-channel 16-bit PNGs
    keep their 16 bits (0..65535 -> [-1, 1], grey in all three channels). Raises a JaxhspaceError (a ValueError)
    naming the file if it is missing, unreadable or of an unsupported kind (32-bit float)."""
    from jaxhspace.errors import JaxhspaceError

    out = []
    for p in expand_image_paths(paths):
        if not os.path.isfile(p):
            raise JaxhspaceError(f"image {p} not found")
        im, full = _open_image(p)
        w, h = im.size
        s = min(w, h)
        im = im.crop(((w - s) // 2, (h - s) // 2, (w - s) // 2 + s, (h - s) // 2 + s))
        im = im.resize((size, size), Image.Resampling.BICUBIC)
        a = np.asarray(im, dtype=np.float32)
        if a.ndim == 2:  # 16-bit grey: bicubic may overshoot the range, as the 8-bit path clips it
            a = np.repeat(np.clip(a, 0.0, full)[..., None], 3, axis=-1)
        out.append(a * np.float32(2.0 / full) - 1.0)
    return np.stack(out)
