"""Encode/decode single images to the bytes stored in Parquet cells.

Encodings (the table :data:`vidray.registry.IMAGE_ENCODINGS`; ``output.encoding`` and
``output.flow_encoding``):

========= ===============================================================================
``jpeg``  default for frames; ~12.5 KB per 224x224 frame at quality 90
``png``   lossless
``raw``   the uint8 array's bytes, C order (the reader needs the shape from the row)
========= ===============================================================================

Arrays are ``(H, W, 3)`` RGB uint8 or ``(H, W)`` grayscale uint8. OpenCV's BGR order is handled here
and nowhere else: colour images are decoded straight to RGB (``IMREAD_COLOR_RGB``, no extra pass).
This is the one image decoder of vidray: the ingest reader, the training loader and evaluation all
call :func:`decode_image`.

JPEG is decoded with ``simplejpeg`` (libjpeg-turbo, the same accurate integer IDCT and fancy
upsampling as OpenCV's decoder: bit-identical pixels, checked by ``tests/test_train_data.py``) when it
is installed, straight into a caller's buffer (``out=``: no allocation per frame); measured 1.05-1.14x
OpenCV's ``imdecode`` on 341x256 frames here. Without it, OpenCV decodes (and ``out`` is filled by a copy).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import cv2
import numpy as np

from vidray.registry import IMAGE_ENCODINGS

Buffer = bytes | bytearray | memoryview | np.ndarray


@dataclass(frozen=True)
class ImageCodec:
    """``encode(img, quality) -> bytes`` and ``decode(buf, shape, gray, out) -> array`` of one encoding
    (``out``: an array of the decoded shape to decode into, or ``None``)."""

    encode: Callable[[np.ndarray, int], bytes]
    decode: Callable[[np.ndarray, tuple[int, ...] | None, bool, np.ndarray | None], np.ndarray]


def _cv_encode(ext: str, params: Callable[[int], list[int]]) -> Callable[[np.ndarray, int], bytes]:
    def encode(img: np.ndarray, quality: int) -> bytes:
        arr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
        ok, buf = cv2.imencode(ext, arr, params(quality))
        if not ok:
            raise RuntimeError(f"OpenCV failed to encode a {img.shape} image as {ext}")
        return buf.tobytes()

    return encode


def _into(img: np.ndarray, out: np.ndarray | None) -> np.ndarray:
    """``img`` itself, or copied into ``out`` (which must have its shape) and ``out`` returned."""
    if out is None:
        return img
    if out.shape != img.shape:
        raise ValueError(f"decoded image is {img.shape}, the output buffer {out.shape}")
    out[...] = img
    return out


def _cv_decode(buf: np.ndarray, shape: tuple[int, ...] | None, gray: bool,
               out: np.ndarray | None = None) -> np.ndarray:
    img = cv2.imdecode(buf, cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR_RGB)
    if img is None:
        raise ValueError(f"could not decode a {buf.size}-byte image")
    return _into(img, out)


try:
    import simplejpeg as _sj
except ImportError:  # pragma: no cover - a declared dependency (pyproject); OpenCV decodes the same pixels
    _sj = None


def _jpeg_decode(buf: np.ndarray, shape: tuple[int, ...] | None, gray: bool,
                 out: np.ndarray | None = None) -> np.ndarray:
    if _sj is None:
        return _cv_decode(buf, shape, gray, out)
    # decode into ``out``'s memory when it is C-contiguous (simplejpeg checks that it is large enough)
    target = out if out is not None and out.flags.c_contiguous else None
    if gray and target is not None:
        target = target.reshape(target.shape + (1,))
    try:
        img = _sj.decode_jpeg(buf, colorspace="GRAY" if gray else "RGB", buffer=target)
    except ValueError as e:
        raise ValueError(f"could not decode a {buf.size}-byte image: {e}") from None
    if gray:
        img = img[:, :, 0]
    if out is None:
        return img
    if img.shape != out.shape:
        raise ValueError(f"decoded image is {img.shape}, the output buffer {out.shape}")
    return out if np.shares_memory(img, out) else _into(img, out)


def _raw_decode(buf: np.ndarray, shape: tuple[int, ...] | None, gray: bool,
                out: np.ndarray | None = None) -> np.ndarray:
    if shape is None:
        raise ValueError("raw images need their shape")
    return _into(buf.reshape(shape), out)


IMAGE_ENCODINGS.register(
    "jpeg", ImageCodec(_cv_encode(".jpg", lambda q: [cv2.IMWRITE_JPEG_QUALITY, int(q)]), _jpeg_decode),
    help="JPEG at output.jpeg_quality (default; ~12.5 KB per 224x224 frame at 90)")
IMAGE_ENCODINGS.register(
    "png", ImageCodec(_cv_encode(".png", lambda q: [cv2.IMWRITE_PNG_COMPRESSION, 1]), _cv_decode),
    help="PNG, lossless")
IMAGE_ENCODINGS.register(
    "raw", ImageCodec(lambda img, q: np.ascontiguousarray(img).tobytes(), _raw_decode),
    help="the uint8 array's bytes, C order (largest; no decoding cost)")


def encode_image(img: np.ndarray, encoding: str = "jpeg", quality: int = 90) -> bytes:
    """Encode an ``(H, W, 3)`` RGB or ``(H, W)`` gray uint8 image to bytes."""
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"expected uint8 (H,W) or (H,W,3) image, got {img.dtype} {img.shape}")
    return IMAGE_ENCODINGS.get(encoding).encode(img, quality)


def decode_image(
    data: Buffer, encoding: str = "jpeg", shape: tuple[int, ...] | None = None, gray: bool = False,
    out: np.ndarray | None = None,
) -> np.ndarray:
    """Decode bytes from :func:`encode_image` to ``(H, W, 3)`` RGB (or ``(H, W)`` with ``gray=True``).

    ``data`` may be ``bytes`` or a uint8 numpy view (the loader passes zero-copy views of Arrow
    buffers). ``shape`` is required for ``raw`` (``(H, W, 3)`` or ``(H, W)``); ``raw`` returns a
    read-only view of ``data`` (unless ``out``). ``out``: a uint8 array of the decoded shape to decode
    into (JPEG with simplejpeg: no allocation, no copy when it is C-contiguous); it is returned.
    A size mismatch raises ``ValueError``.
    """
    codec = IMAGE_ENCODINGS.get(encoding)
    buf = data if isinstance(data, np.ndarray) else np.frombuffer(data, dtype=np.uint8)
    return codec.decode(buf, shape, gray, out)
