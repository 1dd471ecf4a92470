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
import secrets
import urllib.error
import urllib.request
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


#: A local output's path under the run's output dir: the orchestrator hands the worker this staging
#: name (activities/gpuRow.ts, storage/local.ts createUrl), the output dir resolved once.
_STAGING = "/.atelier/staging/"


def _pinned_parent(path: str) -> tuple[int, str]:
    """A descriptor of ``path``'s folder, reached without following a link below the run's output dir.

    The output dir (the part before ``/.atelier/``; for any other path, the folder that holds it) is
    opened by its path, as the orchestrator resolved it. Every folder below it is opened relative to
    the one above with O_NOFOLLOW (openat-style, ``dir_fd``), created if missing: a folder swapped for
    a link between the orchestrator's check and this write is refused (ELOOP / ENOTDIR), never followed,
    so nothing is written outside the output dir (storage/pinnedDir.ts does the same on the TS side).
    Returns the descriptor (the caller closes it) and the file's own name.
    """
    if not os.path.isabs(path):
        raise OutputStoreError(f"output path is not absolute: {path}")
    marker = path.find(_STAGING)
    if marker > 0:
        root, rest = path[:marker], path[marker + 1:]
    else:
        root, rest = os.path.dirname(path), os.path.basename(path)
    *folders, name = rest.split("/")
    if not name or any(part in ("", ".", "..") for part in [*folders, name]):
        raise OutputStoreError(f"output path {path} has an empty, . or .. component")
    flags = os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC
    try:
        os.makedirs(root, exist_ok=True)
        fd = os.open(root, flags)
    except OSError as e:
        raise OutputStoreError(f"storing the output at {path} failed: {e}") from None
    try:
        for i, folder in enumerate(folders):
            try:
                os.mkdir(folder, 0o777, dir_fd=fd)
            except FileExistsError:
                pass
            try:
                child = os.open(folder, flags | os.O_NOFOLLOW, dir_fd=fd)
            except OSError as e:
                where = os.path.join(root, *folders[: i + 1])
                why = f"{where} is not a folder (a link, or swapped for one): {e.strerror}"
                raise OutputStoreError(f"storing the output at {path} refused: {why}") from None
            os.close(fd)
            fd = child
        return fd, name
    except BaseException:
        os.close(fd)
        raise


def write_png_atomic(image: Image.Image, output_path: str, compress_level: int = 4) -> Written:
    """Write `image` as PNG to a path (temp file in the same folder, fsync, rename) or a PUT URL.

    A local path is written through descriptors pinned below the run's output dir (_pinned_parent):
    the temp file is created O_EXCL | O_NOFOLLOW in the folder held open, and renamed within it.
    """
    buffer = io.BytesIO()
    image.save(buffer, format="PNG", compress_level=compress_level)
    data = buffer.getvalue()
    written = Written(hashlib.sha256(data).hexdigest(), len(data))
    if is_url(output_path):
        _put_once(output_path, data)
        return written
    dfd, name = _pinned_parent(output_path)
    try:
        tmp = f".{name}.{secrets.token_hex(6)}.tmp"
        try:
            fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o644, dir_fd=dfd)
            try:
                with os.fdopen(fd, "wb") as f:
                    f.write(data)
                    f.flush()
                    os.fsync(f.fileno())
                os.replace(tmp, name, src_dir_fd=dfd, dst_dir_fd=dfd)
            except BaseException:
                try:
                    os.unlink(tmp, dir_fd=dfd)
                except OSError:
                    pass
                raise
        except OSError as e:
            # The folder held open was removed or replaced meanwhile (ENOENT), the disk is full, ...:
            # the output is not stored, as when a folder on the way is refused.
            raise OutputStoreError(f"storing the output at {output_path} failed: {e}") from None
        try:  # make the rename durable too
            os.fsync(dfd)
        except OSError:
            pass
    finally:
        os.close(dfd)
    return written
