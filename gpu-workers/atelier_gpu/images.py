"""Image I/O on CPU threads: decode inputs, encode and atomically write outputs.

Inputs and outputs are named either by absolute paths (a disk the orchestrator shares with this
worker) or by presigned URLs into the run's object storage: a GET URL per input and a create-only
PUT URL (signed with If-None-Match: *) per output. With URLs the worker needs neither the dataset's
filesystem nor storage credentials.
"""

from __future__ import annotations

import hashlib
import io
import os
import tempfile
import urllib.error
import urllib.request
from pathlib import Path
from typing import NamedTuple
from urllib.parse import urlsplit, urlunsplit

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError


class InputImageError(Exception):
    """An input image is missing or cannot be decoded."""


class OutputStoreError(Exception):
    """The output could not be stored (the object store refused or failed the upload)."""


#: Staged inputs are normalised PNGs the orchestrator wrote; anything far larger is not one of them.
MAX_INPUT_BYTES = 512 * 1024 * 1024
HTTP_TIMEOUT_S = 120


def is_url(ref: str) -> bool:
    return ref.startswith("http://") or ref.startswith("https://")


def shown(ref: str) -> str:
    """A reference fit for messages and results: a presigned URL without its signature."""
    if not is_url(ref):
        return ref
    parts = urlsplit(ref)
    return urlunsplit((parts.scheme, parts.netloc, parts.path, "", ""))


def _fetch(url: str) -> bytes:
    try:
        with urllib.request.urlopen(url, timeout=HTTP_TIMEOUT_S) as response:
            data = response.read(MAX_INPUT_BYTES + 1)
    except urllib.error.HTTPError as e:
        if e.code == 404:
            raise InputImageError(f"input image not found: {shown(url)}") from None
        raise InputImageError(f"input image {shown(url)} cannot be read: HTTP {e.code}") from None
    except (urllib.error.URLError, OSError) as e:
        raise InputImageError(f"input image {shown(url)} cannot be read: {e}") from None
    if len(data) > MAX_INPUT_BYTES:
        raise InputImageError(f"input image {shown(url)} is over {MAX_INPUT_BYTES} bytes")
    return data


def load_image(path: str) -> Image.Image:
    """Decode a local path or a (presigned) URL fully (EXIF orientation applied, RGB). Raises InputImageError."""
    if is_url(path):
        source = io.BytesIO(_fetch(path))
    elif not os.path.isabs(path):
        raise InputImageError(f"input image path is not absolute: {path}")
    else:
        source = path
    try:
        with Image.open(source) as im:
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
        raise InputImageError(f"input image not found: {shown(path)}") from None
    except (UnidentifiedImageError, OSError, ValueError, SyntaxError) as e:
        raise InputImageError(f"input image cannot be decoded: {shown(path)}: {e}") from None


def to_pil(array: np.ndarray) -> Image.Image:
    """HWC float in [0, 1] (diffusers output_type='np') or uint8 -> RGB PIL image."""
    if array.dtype != np.uint8:
        array = (np.clip(array, 0.0, 1.0) * 255.0).round().astype(np.uint8)
    if array.ndim == 3 and array.shape[2] == 1:
        array = array[:, :, 0]
    return Image.fromarray(array).convert("RGB")


def _put_once(url: str, data: bytes) -> None:
    """PUT to a create-only presigned URL.

    412: an object is already there, an earlier attempt's or anyone's who held the URL. Not trusted
    here: the result carries the digest of the bytes this worker made, and the orchestrator's commit
    refuses a stored object whose digest differs (activities/gpuRow.ts).
    """
    req = urllib.request.Request(url, data=data, method="PUT",
                                 headers={"If-None-Match": "*", "Content-Type": "image/png"})
    try:
        with urllib.request.urlopen(req, timeout=HTTP_TIMEOUT_S) as response:
            response.read()
    except urllib.error.HTTPError as e:
        if e.code == 412:
            return
        body = e.read(2000).decode("utf-8", "replace")
        raise OutputStoreError(f"storing the output at {shown(url)} failed: HTTP {e.code}: {body}") from None
    except (urllib.error.URLError, OSError) as e:
        raise OutputStoreError(f"storing the output at {shown(url)} failed: {e}") from None


class Written(NamedTuple):
    """What the worker made: the PNG's sha256 (hex) and size, which the commit checks the stored object against."""

    sha256: str
    size: int


def write_png_atomic(image: Image.Image, output_path: str, compress_level: int = 4) -> Written:
    """Write `image` as PNG to a path (temp file in the same folder, fsync, os.replace) or a PUT URL."""
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    data = buffer.getvalue()
    written = Written(hashlib.sha256(data).hexdigest(), len(data))
    if is_url(output_path):
        _put_once(output_path, data)
        return written
    out = Path(output_path)
    out.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{out.name}.", suffix=".tmp", dir=out.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
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
    return written
