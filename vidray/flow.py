"""Optical flow for ingest: estimation, two-stream quantisation, flow-stack encoding, measurement.

Conventions (two-stream / TSN):

* A flow field is ``float32 (H, W, 2)`` in **pixels**, channel 0 = x (right positive), channel 1 = y
  (down positive), mapping frame 0 to frame 1: the content at ``p`` in frame 0 is at ``p + flow[p]``
  in frame 1.
* Quantisation, zero-centred (0 px is exactly grey level 128)::

      q = saturate_uint8(round(128 + clip(x, -bound, bound) * 127.5 / bound))   # quantize_flow
      x' = (q - 128) * bound / 127.5                                            # dequantize_flow

  Rounding is half-to-even; -bound -> 0, 0 -> 128, +bound -> 255 (255.5 saturates), and
  ``|x' - x| <= bound / 255`` for ``|x| <= bound`` (0.078 px at the default bound 20). The bytes
  differ by at most one level from yjxiong/dense_flow's ``round((x + bound) * 255 / (2 * bound))``
  (the TSN / two-stream extraction), where 0 px decodes to +bound/255 instead of 0: measured on real
  frames, the centred form adds 0.007-0.03 px EPE on near-static pairs where dense_flow's adds
  0.09-0.105, and both add ~0.06 px on moving content.
* A flow stack of ``L`` fields is stored as one grayscale image ``(2L * H, W)`` with the planes tiled
  vertically in the order ``x_1, y_1, x_2, y_2, ..., x_L, y_L``; decoding gives ``uint8 (2L, H, W)``,
  the channel order flow-stream models take as input.

Algorithms (:data:`ALGORITHMS`): ``tvl1`` (opencv-contrib ``DualTVL1``, paper-faithful, seconds per
224x224 pair), ``farneback``, and OpenCV's DIS presets ``dis_ultrafast`` / ``dis_fast`` /
``dis_medium`` (the default). Measured figures are in ``docs/flow.md`` (``benchmarks/flow.py``).
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from vidray.io.imcodec import decode_image, encode_image

ALGORITHMS = ("tvl1", "farneback", "dis_ultrafast", "dis_fast", "dis_medium")
DEFAULT_ALGORITHM = "dis_medium"
DEFAULT_BOUND = 20.0
STACK_ENCODINGS = ("jpeg", "png", "raw")
JPEG_MAX_DIM = 65500  # libjpeg's limit on either image side

# TV-L1 as in the two-stream / TSN extraction tools (yjxiong/dense_flow, MMAction2's
# tools/misc/flow_extraction.py): OpenCV's default DualTVL1 parameters. OpenCV 2.4's single
# ``iterations=300`` is ``innerIterations * outerIterations = 30 * 10`` here.
TVL1_PARAMS: dict[str, float | int | bool] = {
    "tau": 0.25,  # time step of the numerical scheme
    "lambda": 0.15,  # data-term weight (smaller = smoother)
    "theta": 0.3,  # coupling between the two sub-problems
    "nscales": 5,  # pyramid levels
    "warps": 5,  # warpings per level
    "epsilon": 0.01,  # stopping threshold
    "inner_iterations": 30,
    "outer_iterations": 10,
    "scale_step": 0.8,  # pyramid downscale factor
    "gamma": 0.0,  # no illumination-change term
    "median_filtering": 5,  # median filter on the flow between warps
}

# Farneback with the parameters of OpenCV's dense-flow tutorial.
FARNEBACK_PARAMS: dict[str, float | int] = {
    "pyr_scale": 0.5,
    "levels": 3,
    "winsize": 15,
    "iterations": 3,
    "poly_n": 5,
    "poly_sigma": 1.2,
    "flags": 0,
}

_DIS_PRESETS = {
    "dis_ultrafast": "DISOPTICAL_FLOW_PRESET_ULTRAFAST",
    "dis_fast": "DISOPTICAL_FLOW_PRESET_FAST",
    "dis_medium": "DISOPTICAL_FLOW_PRESET_MEDIUM",
}


def _check_algorithm(algorithm: str) -> None:
    if algorithm not in ALGORITHMS:
        raise ValueError(f"unknown flow algorithm {algorithm!r}; expected one of {ALGORITHMS}")


def _create_tvl1():
    optflow = getattr(cv2, "optflow", None)
    if optflow is None or not hasattr(optflow, "DualTVL1OpticalFlow_create"):
        raise RuntimeError(
            f"flow algorithm 'tvl1' needs cv2.optflow.DualTVL1OpticalFlow_create, which the installed "
            f"OpenCV {cv2.__version__} lacks: it is in the contrib modules, package "
            "'opencv-contrib-python-headless' (uninstall opencv-python / opencv-python-headless first, "
            "they shadow it)"
        )
    p = TVL1_PARAMS
    tv = optflow.DualTVL1OpticalFlow_create()
    # Setters rather than keyword arguments: the keyword names differ between OpenCV versions.
    tv.setTau(p["tau"])
    tv.setLambda(p["lambda"])
    tv.setTheta(p["theta"])
    tv.setScalesNumber(p["nscales"])
    tv.setWarpingsNumber(p["warps"])
    tv.setEpsilon(p["epsilon"])
    tv.setInnerIterations(p["inner_iterations"])
    tv.setOuterIterations(p["outer_iterations"])
    tv.setScaleStep(p["scale_step"])
    tv.setGamma(p["gamma"])
    tv.setMedianFiltering(p["median_filtering"])
    tv.setUseInitialFlow(False)
    return tv


class FlowFn:
    """``flow = fn(frame0, frame1)``: one algorithm with its OpenCV object created once and reused.

    Frames are ``(H, W)`` uint8 grayscale of equal shape; the result is ``float32 (H, W, 2)`` in
    pixels (x, y), from frame 0 to frame 1. Picklable (Ray ships it to workers): the OpenCV object is
    dropped when pickled and re-created on unpickling. Not thread-safe: one instance per thread.
    """

    def __init__(self, algorithm: str, num_threads: int | None = 1) -> None:
        _check_algorithm(algorithm)
        self.algorithm = algorithm
        self.num_threads = num_threads
        self._setup()

    def _setup(self) -> None:
        if self.num_threads is not None:
            # Process-wide. Ray parallelises across videos, so OpenCV's own pool only oversubscribes.
            cv2.setNumThreads(int(self.num_threads))
        a = self.algorithm
        if a == "tvl1":
            self._impl = _create_tvl1()
        elif a == "farneback":
            self._impl = None
        else:
            self._impl = cv2.DISOpticalFlow_create(getattr(cv2, _DIS_PRESETS[a]))

    def __getstate__(self) -> dict:
        return {"algorithm": self.algorithm, "num_threads": self.num_threads}

    def __setstate__(self, state: dict) -> None:
        self.algorithm = state["algorithm"]
        self.num_threads = state["num_threads"]
        self._setup()

    def __repr__(self) -> str:
        return f"FlowFn({self.algorithm!r}, num_threads={self.num_threads})"

    def __call__(self, frame0: np.ndarray, frame1: np.ndarray) -> np.ndarray:
        if (
            frame0.dtype != np.uint8
            or frame1.dtype != np.uint8
            or frame0.ndim != 2
            or frame0.shape != frame1.shape
        ):
            raise ValueError(
                "flow needs two (H, W) uint8 grayscale frames of equal shape, got "
                f"{frame0.dtype} {frame0.shape} and {frame1.dtype} {frame1.shape}"
            )
        # DIS asserts on non-contiguous input (e.g. a crop view); this is a no-op when contiguous.
        f0 = np.ascontiguousarray(frame0)
        f1 = np.ascontiguousarray(frame1)
        if self._impl is None:
            p = FARNEBACK_PARAMS
            flow = cv2.calcOpticalFlowFarneback(
                f0, f1, None, p["pyr_scale"], p["levels"], p["winsize"], p["iterations"],
                p["poly_n"], p["poly_sigma"], p["flags"],
            )
        else:
            flow = self._impl.calc(f0, f1, None)
        return flow


def make_flow_fn(
    algorithm: str = DEFAULT_ALGORITHM, *, num_threads: int | None = 1
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Return ``fn(frame0, frame1) -> float32 (H, W, 2)`` flow in pixels (x, y) for ``algorithm``.

    ``algorithm`` is one of :data:`ALGORITHMS`; an unknown name raises ``ValueError``, and ``tvl1``
    raises ``RuntimeError`` naming the package when the installed OpenCV lacks the contrib modules.
    ``num_threads`` is passed to ``cv2.setNumThreads`` (process-wide) when the function is built or
    unpickled; ``None`` leaves OpenCV's setting alone.
    """
    return FlowFn(algorithm, num_threads=num_threads)


def _check_bound(bound: float) -> float:
    bound = float(bound)
    if not bound > 0:
        raise ValueError(f"flow bound must be > 0, got {bound}")
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
    if encoding not in STACK_ENCODINGS:
        raise ValueError(f"unknown flow stack encoding {encoding!r}; expected one of {STACK_ENCODINGS}")
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
    if encoding not in STACK_ENCODINGS:
        raise ValueError(f"unknown flow stack encoding {encoding!r}; expected one of {STACK_ENCODINGS}")
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


def flow_to_rgb(flow: np.ndarray) -> np.ndarray:
    """Colour-wheel visualisation of ``float (H, W, 2)`` flow as ``uint8 (H, W, 3)`` RGB.

    ``torchvision.utils.flow_to_image``: hue = direction, saturation = magnitude normalised by the
    field's largest magnitude (so colours are not comparable across images); zero flow is white.
    """
    import torch  # deferred: ingest workers that never visualise do not pay torch's import
    from torchvision.utils import flow_to_image

    flow = np.asarray(flow)
    if flow.ndim != 3 or flow.shape[-1] != 2:
        raise ValueError(f"expected (H, W, 2) flow, got {flow.shape}")
    t = torch.from_numpy(np.ascontiguousarray(flow, dtype=np.float32)).permute(2, 0, 1)
    return flow_to_image(t).permute(1, 2, 0).numpy()


def endpoint_error(pred: np.ndarray, gt: np.ndarray, *, margin: int = 0) -> float:
    """Mean end-point error in pixels: mean over pixels of ``||pred - gt||_2``.

    ``pred`` and ``gt`` are ``(..., H, W, 2)`` of equal shape; ``margin`` pixels are dropped on
    each side of H and W first (borders, where content enters the frame, are not well-posed).
    """
    pred = np.asarray(pred)
    gt = np.asarray(gt)
    if pred.shape != gt.shape or pred.ndim < 3 or pred.shape[-1] != 2:
        raise ValueError(f"expected two (..., H, W, 2) flows of equal shape, got {pred.shape} and {gt.shape}")
    if margin:
        h, w = pred.shape[-3], pred.shape[-2]
        if 2 * margin >= min(h, w):
            raise ValueError(f"margin {margin} leaves nothing of a {h}x{w} field")
        pred = pred[..., margin : h - margin, margin : w - margin, :]
        gt = gt[..., margin : h - margin, margin : w - margin, :]
    d = pred.astype(np.float64) - gt.astype(np.float64)
    return float(np.sqrt((d**2).sum(-1)).mean())


def synthetic_shift_pair(
    shift: tuple[float, float] = (1.5, -0.75),
    size: tuple[int, int] = (224, 224),
    seed: int = 0,
    *,
    sigma: float = 1.0,
    contrast: float = 40.0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A textured frame, the same frame shifted by a known sub-pixel ``shift = (dx, dy)``, and the flow.

    Returns ``(frame0, frame1, gt_flow)``: two ``uint8 (H, W)`` frames and ``float32 (H, W, 2)``
    constant flow ``(dx, dy)`` pixels, so ``frame1(p) = frame0(p - shift)``.

    The texture is periodic 1/f noise (amplitude spectrum ~ 1/f, the usual natural-image statistic:
    structure at every scale) low-passed by a Gaussian of ``sigma`` px, with std ``contrast`` grey
    levels around 128. The shift is applied exactly as a phase ramp in the Fourier domain; only the
    final rounding to uint8 is approximate. (``cv2.warpAffine`` with ``INTER_CUBIC`` is not
    shift-exact: its a=-0.75 kernel and 1/32 px position tables move a smooth ramp by 0.342 px when
    asked for 0.3, a ground-truth error as large as the EPEs being measured.) The wrap-around makes
    content enter at the borders, so measure EPE with a margin larger than the shift (e.g. 16 px).
    """
    H, W = int(size[0]), int(size[1])
    if H < 8 or W < 8:
        raise ValueError(f"size must be at least 8x8, got {size}")
    dx, dy = float(shift[0]), float(shift[1])
    rng = np.random.default_rng(seed)
    fy = np.fft.fftfreq(H)[:, None]
    fx = np.fft.rfftfreq(W)[None, :]
    f = np.sqrt(fx**2 + fy**2)
    f[0, 0] = 1.0
    spec = (rng.standard_normal(f.shape) + 1j * rng.standard_normal(f.shape)) / f
    spec *= np.exp(-2.0 * np.pi**2 * sigma**2 * f**2)  # Gaussian blur, in the Fourier domain
    spec[0, 0] = 0.0
    # Nyquist bins cannot carry a sub-pixel phase shift in a real signal: drop them.
    if H % 2 == 0:
        spec[H // 2, :] = 0.0
    if W % 2 == 0:
        spec[:, -1] = 0.0
    img0 = np.fft.irfft2(spec, s=(H, W))
    img1 = np.fft.irfft2(spec * np.exp(-2j * np.pi * (fx * dx + fy * dy)), s=(H, W))
    mu, sd = img0.mean(), img0.std()

    def to_u8(x: np.ndarray) -> np.ndarray:
        return np.clip(np.round(128.0 + contrast * (x - mu) / sd), 0, 255).astype(np.uint8)

    gt = np.empty((H, W, 2), np.float32)
    gt[..., 0] = dx
    gt[..., 1] = dy
    return to_u8(img0), to_u8(img1), gt
