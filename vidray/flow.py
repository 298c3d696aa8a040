"""Optical flow estimation for ingest, and measuring it.

A flow field is ``float32 (H, W, 2)`` in pixels (x right, y down) from frame 0 to frame 1; how it is
quantised and stored is the dataset format's business (:mod:`vidray.io.flowcodec`).

Algorithms are the table :data:`vidray.registry.FLOW_ALGORITHMS` (``flow.algorithm``); each entry
builds ``fn(frame0, frame1) -> flow`` once per worker:

================= ======================================================================
``tvl1``          opencv-contrib ``DualTVL1`` with the two-stream/TSN extraction parameters
                  (paper-faithful; seconds per 224x224 pair)
``farneback``     OpenCV Farneback, the dense-flow tutorial's parameters
``dis_ultrafast`` OpenCV DIS, ULTRAFAST preset
``dis_fast``      OpenCV DIS, FAST preset
``dis_medium``    OpenCV DIS, MEDIUM preset (the default)
================= ======================================================================

Measured speed and EPE of each: ``docs/flow.md`` (``benchmarks/flow.py``). Adding an algorithm is one
``@FLOW_ALGORITHMS.register(name)`` factory below plus a test in ``tests/test_flow.py``.
"""

from __future__ import annotations

from typing import Callable

import cv2
import numpy as np

from vidray.registry import FLOW_ALGORITHMS

DEFAULT_ALGORITHM = "dis_medium"

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

PairFlow = Callable[[np.ndarray, np.ndarray], np.ndarray]


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


@FLOW_ALGORITHMS.register("tvl1")
def _tvl1() -> PairFlow:
    """opencv-contrib DualTVL1 with the two-stream/TSN parameters (paper-faithful, seconds per pair)."""
    tv = _create_tvl1()
    return lambda f0, f1: tv.calc(f0, f1, None)


@FLOW_ALGORITHMS.register("farneback")
def _farneback() -> PairFlow:
    """OpenCV Farneback with the dense-flow tutorial's parameters."""
    p = FARNEBACK_PARAMS

    def calc(f0: np.ndarray, f1: np.ndarray) -> np.ndarray:
        return cv2.calcOpticalFlowFarneback(f0, f1, None, p["pyr_scale"], p["levels"], p["winsize"],
                                            p["iterations"], p["poly_n"], p["poly_sigma"], p["flags"])

    return calc


def _dis(preset: str) -> Callable[[], PairFlow]:
    def build() -> PairFlow:
        dis = cv2.DISOpticalFlow_create(getattr(cv2, preset))
        return lambda f0, f1: dis.calc(f0, f1, None)

    return build


FLOW_ALGORITHMS.register("dis_ultrafast", _dis("DISOPTICAL_FLOW_PRESET_ULTRAFAST"),
                         help="OpenCV DIS, ULTRAFAST preset (~0.8 ms per 224x224 pair)")
FLOW_ALGORITHMS.register("dis_fast", _dis("DISOPTICAL_FLOW_PRESET_FAST"),
                         help="OpenCV DIS, FAST preset (~1.7 ms per 224x224 pair)")
FLOW_ALGORITHMS.register("dis_medium", _dis("DISOPTICAL_FLOW_PRESET_MEDIUM"),
                         help="OpenCV DIS, MEDIUM preset, the default (~8 ms per 224x224 pair, EPE ~0.04 px)")


class FlowFn:
    """``flow = fn(frame0, frame1)``: one algorithm with its OpenCV object created once and reused.

    Frames are ``(H, W)`` uint8 grayscale of equal shape; the result is ``float32 (H, W, 2)`` in
    pixels (x, y), from frame 0 to frame 1. Picklable (Ray ships it to workers): the OpenCV object is
    dropped when pickled and re-created on unpickling. Not thread-safe: one instance per thread.
    """

    def __init__(self, algorithm: str, num_threads: int | None = 1) -> None:
        FLOW_ALGORITHMS.check(algorithm)
        self.algorithm = algorithm
        self.num_threads = num_threads
        self._setup()

    def _setup(self) -> None:
        if self.num_threads is not None:
            # Process-wide. Ray parallelises across videos, so OpenCV's own pool only oversubscribes.
            cv2.setNumThreads(int(self.num_threads))
        self._impl: PairFlow = FLOW_ALGORITHMS.get(self.algorithm)()

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
        return self._impl(np.ascontiguousarray(frame0), np.ascontiguousarray(frame1))


def make_flow_fn(
    algorithm: str = DEFAULT_ALGORITHM, *, num_threads: int | None = 1
) -> Callable[[np.ndarray, np.ndarray], np.ndarray]:
    """Return ``fn(frame0, frame1) -> float32 (H, W, 2)`` flow in pixels (x, y) for ``algorithm``.

    ``algorithm`` is a name in :data:`vidray.registry.FLOW_ALGORITHMS`; an unknown name raises
    ``ValueError``, and ``tvl1``
    raises ``RuntimeError`` naming the package when the installed OpenCV lacks the contrib modules.
    ``num_threads`` is passed to ``cv2.setNumThreads`` (process-wide) when the function is built or
    unpickled; ``None`` leaves OpenCV's setting alone.
    """
    return FlowFn(algorithm, num_threads=num_threads)


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


def flow_color_key(size: int = 64) -> np.ndarray:
    """The colour key of :func:`flow_to_rgb`: a ``(size, size, 3)`` uint8 disc where each pixel shows the
    colour of a flow vector pointing from the centre to it (right = +x, down = +y; the rim is the
    largest magnitude, the centre white = no motion); outside the disc is white."""
    c = (size - 1) / 2.0
    yy, xx = np.mgrid[0:size, 0:size].astype(np.float32)
    field = np.stack([xx - c, yy - c], axis=-1)
    inside = np.hypot(field[..., 0], field[..., 1]) <= c
    field[~inside] = 0.0
    img = flow_to_rgb(field)
    img[~inside] = 255
    return img


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
