"""Encode/decode single images to the bytes stored in Parquet cells.

Encodings: ``jpeg`` (default for frames; ~12.5 KB per 224x224 frame at q90), ``png`` (lossless),
``raw`` (the uint8 array's bytes, C order; the reader needs the shape from the row).

Arrays are ``(H, W, 3)`` RGB uint8 or ``(H, W)`` grayscale uint8. OpenCV's BGR order is handled here
and nowhere else.
"""

from __future__ import annotations

import cv2
import numpy as np

ENCODINGS = ("jpeg", "png", "raw")


def encode_image(img: np.ndarray, encoding: str = "jpeg", quality: int = 90) -> bytes:
    """Encode an ``(H, W, 3)`` RGB or ``(H, W)`` gray uint8 image to bytes."""
    if img.dtype != np.uint8 or img.ndim not in (2, 3):
        raise ValueError(f"expected uint8 (H,W) or (H,W,3) image, got {img.dtype} {img.shape}")
    if encoding == "raw":
        return np.ascontiguousarray(img).tobytes()
    arr = cv2.cvtColor(img, cv2.COLOR_RGB2BGR) if img.ndim == 3 else img
    if encoding == "jpeg":
        ok, buf = cv2.imencode(".jpg", arr, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    elif encoding == "png":
        ok, buf = cv2.imencode(".png", arr, [cv2.IMWRITE_PNG_COMPRESSION, 1])
    else:
        raise ValueError(f"unknown image encoding {encoding!r}; expected one of {ENCODINGS}")
    if not ok:
        raise RuntimeError(f"OpenCV failed to encode a {img.shape} image as {encoding}")
    return buf.tobytes()


def decode_image(
    data: bytes, encoding: str = "jpeg", shape: tuple[int, ...] | None = None, gray: bool = False
) -> np.ndarray:
    """Decode bytes from :func:`encode_image` to ``(H, W, 3)`` RGB (or ``(H, W)`` with ``gray=True``).

    ``shape`` is required for ``raw`` (``(H, W, 3)`` or ``(H, W)``).
    """
    if encoding == "raw":
        if shape is None:
            raise ValueError("raw images need their shape")
        return np.frombuffer(data, dtype=np.uint8).reshape(shape)
    if encoding not in ENCODINGS:
        raise ValueError(f"unknown image encoding {encoding!r}; expected one of {ENCODINGS}")
    flag = cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR
    img = cv2.imdecode(np.frombuffer(data, dtype=np.uint8), flag)
    if img is None:
        raise ValueError(f"could not decode {len(data)} bytes as {encoding}")
    return img if gray else cv2.cvtColor(img, cv2.COLOR_BGR2RGB)
