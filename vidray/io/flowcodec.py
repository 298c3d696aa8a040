"""The flow storage codec of the dataset format: two-stream uint8 quantisation and flow-stack images.

Conventions (two-stream / TSN):

* A flow field is ``float32 (H, W, 2)`` in **pixels**, channel 0 = x (right positive), channel 1 = y
  (down positive), mapping frame 0 to frame 1: the content at ``p`` in frame 0 is at ``p + flow[p]``
  in frame 1 (estimation: :mod:`vidray.flow`).
* Quantisation, zero-centred (0 px is exactly grey level 128)::

      q = saturate_uint8(round(128 + clip(x, -bound, bound) * 127.5 / bound))   # quantize_flow
      x' = (q - 128) * bound / 127.5                                            # dequantize_flow

  Rounding is half-to-even; -bound -> 0, 0 -> 128, +bound -> 255 (255.5 saturates), and
  ``|x' - x| <= bound / 255`` for ``|x| <= bound`` (0.078 px at the default bound 20). The bytes
  differ by at most one level from yjxiong/dense_flow's ``round((x + bound) * 255 / (2 * bound))``
  (the TSN / two-stream extraction), where 0 px decodes to +bound/255 instead of 0: measured on real
  frames, the centred form adds 0.007-0.03 px EPE on near-static pairs where dense_flow's adds
  0.09-0.105, and both add ~0.06 px on moving content (docs/flow.md).
* A flow stack of ``L`` fields is stored as one grayscale image ``(2L * H, W)`` with the planes tiled
  vertically in the order ``x_1, y_1, x_2, y_2, ..., x_L, y_L``; decoding gives ``uint8 (2L, H, W)``,
  the channel order flow-stream models take as input. The image encodings are
  :data:`vidray.registry.IMAGE_ENCODINGS` (``jpeg``, ``png``, ``raw``).
"""

from __future__ import annotations

import math

import cv2
import numpy as np

from vidray.io.imcodec import decode_image, encode_image
from vidray.registry import IMAGE_ENCODINGS

DEFAULT_BOUND = 20.0
JPEG_MAX_DIM = 65500  # libjpeg's limit on either image side

__all__ = ["DEFAULT_BOUND", "quantize_flow", "dequantize_flow", "encode_flow_stack", "decode_flow_stack"]


def _check_bound(bound: float) -> float:
    bound = float(bound)
    if not (bound > 0 and math.isfinite(bound)):
        raise ValueError(f"flow bound must be a finite number of pixels > 0, got {bound}")
    return bound


def quantize_flow(flow: np.ndarray, bound: float = DEFAULT_BOUND) -> np.ndarray:
    """Clip flow (pixels) to ``[-bound, bound]`` and map it linearly to uint8, same shape.

    ``q = saturate_uint8(round(128 + x * 127.5 / bound))``, rounding half to even: -bound -> 0,
    0 -> 128, +bound -> 255. Usually ``(H, W, 2)`` or ``(L, H, W, 2)``; any shape works. OpenCV calls
    (clip, then ``convertScaleAbs``): 0.17 ms for 224x224x2 here against 0.29 ms in numpy. NaN maps
    to an unspecified value.
    """
    bound = _check_bound(bound)
    src = np.asarray(flow, dtype=np.float32)
    if src.ndim == 0:
        raise ValueError("quantize_flow needs an array")
    flat = np.ascontiguousarray(src).reshape(-1, src.shape[-1] if src.ndim > 1 else 1)
    # Clip first (also tames +-inf and values that would overflow the int rounding), then one fused
    # scale+offset+round+saturate pass. convertScaleAbs's abs() is a no-op on the clipped range.
    clipped = cv2.max(flat, -bound)
    cv2.min(clipped, bound, dst=clipped)
    q = cv2.convertScaleAbs(clipped, alpha=127.5 / bound, beta=128.0)
    return q.reshape(src.shape)


def dequantize_flow(q: np.ndarray, bound: float = DEFAULT_BOUND) -> np.ndarray:
    """Inverse of :func:`quantize_flow`: ``x = (q - 128) * bound / 127.5``, float32 pixels, same shape.

    Level 128 is exactly 0 px; 255 is ``bound * 127/127.5`` and 0 is ``-bound * 128/127.5`` (each
    within ``bound/255`` of the clip value). Works on ``(H, W, 2)`` fields and on decoded stacks
    ``(2L, H, W)`` alike (it is elementwise).
    """
    bound = _check_bound(bound)
    q = np.asarray(q)
    if q.dtype != np.uint8:
        raise ValueError(f"dequantize_flow needs uint8, got {q.dtype}")
    if q.ndim == 0:
        raise ValueError("dequantize_flow needs an array")
    step = bound / 127.5
    x = q.astype(np.float32)  # numpy beats cv2.addWeighted here (measured 0.42 vs 1.0 ms, 224x224x2)
    x *= np.float32(step)
    x -= np.float32(128.0 * step)
    return x


def encode_flow_stack(q: np.ndarray, encoding: str = "jpeg", quality: int = 90) -> bytes:
    """Encode a quantised stack ``uint8 (L, H, W, 2)`` as one gray image ``(2L * H, W)`` to bytes.

    Planes are tiled vertically as ``x_1, y_1, ..., x_L, y_L`` (rows ``[2l*H, (2l+1)*H)`` hold
    ``x_{l+1}``). ``encoding`` is ``jpeg`` (``quality`` 0-100), ``png`` (lossless) or ``raw`` (the
    image's bytes, C order). With JPEG, keep ``H`` a multiple of 8 so no 8x8 block spans two planes.
    """
    IMAGE_ENCODINGS.check(encoding)
    q = np.asarray(q)
    if q.dtype != np.uint8 or q.ndim != 4 or q.shape[-1] != 2 or 0 in q.shape:
        raise ValueError(f"expected a uint8 (L, H, W, 2) flow stack, got {q.dtype} {q.shape}")
    L, H, W, _ = q.shape
    if encoding == "jpeg" and max(2 * L * H, W) > JPEG_MAX_DIM:
        raise ValueError(
            f"a (2L*H, W) = ({2 * L * H}, {W}) image exceeds JPEG's {JPEG_MAX_DIM} px limit; "
            "use png/raw or a shorter stack"
        )
    planes = np.ascontiguousarray(q.transpose(0, 3, 1, 2)).reshape(2 * L * H, W)
    return encode_image(planes, encoding=encoding, quality=quality)


def decode_flow_stack(
    data: bytes, encoding: str, stack_length: int, height: int, width: int
) -> np.ndarray:
    """Decode :func:`encode_flow_stack` bytes to ``uint8 (2L, H, W)``, channels ``x_1, y_1, ..., y_L``.

    Dequantise with :func:`dequantize_flow` and the row's bound. With ``raw`` the result is a
    read-only view of ``data`` (copy it before writing in place).
    """
    IMAGE_ENCODINGS.check(encoding)
    L, H, W = int(stack_length), int(height), int(width)
    if min(L, H, W) <= 0:
        raise ValueError(f"stack_length, height, width must be > 0, got {L}, {H}, {W}")
    shape = (2 * L * H, W)
    if encoding == "raw" and len(data) != shape[0] * shape[1]:
        raise ValueError(
            f"raw flow stack has {len(data)} bytes, expected {shape[0] * shape[1]} for L={L}, H={H}, W={W}"
        )
    img = decode_image(data, encoding=encoding, shape=shape, gray=True)
    if img.shape != shape:
        raise ValueError(f"decoded flow stack is {img.shape}, expected {shape} for L={L}, H={H}, W={W}")
    return img.reshape(2 * L, H, W)
