"""Image I/O on CPU threads: decode inputs, encode and atomically write outputs."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class InputImageError(Exception):
    """An input image is missing or cannot be decoded."""


def load_image(path: str) -> Image.Image:
    """Decode `path` fully (EXIF orientation applied, RGB). Raises InputImageError."""
    if not os.path.isabs(path):
        raise InputImageError(f"input image path is not absolute: {path}")
    try:
        with Image.open(path) as im:
            im.load()
            im = ImageOps.exif_transpose(im)
            if im.mode != "RGB":
                if im.mode in ("RGBA", "LA") or (im.mode == "P" and "transparency" in im.info):
                    rgba = im.convert("RGBA")
                    bg = Image.new("RGB", rgba.size, (255, 255, 255))
                    bg.paste(rgba, mask=rgba.getchannel("A"))
                    im = bg
                else:
                    im = im.convert("RGB")
            return im
    except FileNotFoundError:
        raise InputImageError(f"input image not found: {path}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise InputImageError(f"input image cannot be decoded: {path}: {e}") from None


def to_pil(array: np.ndarray) -> Image.Image:
    """HWC float in [0, 1] (diffusers output_type='np') or uint8 -> RGB PIL image."""
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(array).convert("RGB")


def write_png_atomic(image: Image.Image, output_path: str, compress_level: int = 4) -> None:
    """Write `image` as PNG to output_path: temp file in the same folder, fsync, os.replace."""
    out = Path(output_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            image.save(f, format="PNG", compress_level=compress_level)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, out)
    except BaseException:
        try:
            os.unlink(tmp)
        except OSError:
            pass
        raise
    try:  # make the rename durable too
        dfd = os.open(out.parent, os.O_RDONLY)
        try:
            os.fsync(dfd)
        finally:
            os.close(dfd)
    except OSError:
        pass
