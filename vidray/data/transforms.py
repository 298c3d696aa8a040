"""Clip transforms: the SAME augmentation for every frame of a sample, and for its optical flow.

A sample travels through a :class:`Compose` pipeline as a ``results`` dict (MMAction2's habit; each
transform's docstring lists the keys it reads and adds). Keys:

* ``imgs``: frames, ``(T, H, W, 3)`` uint8 RGB numpy (decoded JPEGs of one sample) in and out;
  test-time :class:`MultiCrop` adds a leading view axis: ``(V, T, S, S, 3)``.
* ``flow`` (optional): ``(T, 2L, Hf, Wf)`` float32 numpy, displacements in PIXELS (dequantised with
  ``vidray.io.flowcodec.dequantize_flow``), planes ``x1, y1, x2, y2, ...`` -- x (horizontal) planes are the
  even channels. ``(Hf, Wf)`` may differ from the frames' ``(H, W)`` (ingest ``flow.short_side``):
  crops are placed at the same relative position. Out: ``(T, 2L, S, S)`` / ``(V, T, 2L, S, S)``.

Geometric transforms take an optional ``np.random.Generator``; the parameters (crop box, flip, jitter
factors) are drawn ONCE per sample and applied to all frames and to the flow. With
``rescale_flow=True`` (default) flow values are multiplied by the resize factor of their axis so that
they stay displacements in pixels of the output image (needed for an EPE loss against them);
MMAction2/TSN treat flow as an image and do not rescale (``rescale_flow=False``).

Everything here works on uint8 numpy with OpenCV (~0.1-0.3 ms per frame). Frames stay uint8 until
the training device: :func:`vidray.data.loader.normalize_batch` converts, normalises (ImageNet mean/std,
flow mean subtraction) and, on a GPU, applies the colour jitter drawn here (``ColorJitter(on_device=
True)``). The training loader and evaluation build their pipelines with the presets below::

    pipeline = train_pipeline(size=224)                  # multi-scale crop, flip, colour jitter
    out = pipeline({"imgs": frames, "flow": flow}, rng)    # out["imgs"]: (T, 224, 224, 3) uint8
    test = eval_pipeline(size=224, num_crops=10)         # out["imgs"]: (10, T, 224, 224, 3)
"""

from __future__ import annotations

from typing import Any, Callable, Literal, Sequence

import cv2
import numpy as np
import torch

IMAGENET_MEAN: tuple[float, float, float] = (0.485, 0.456, 0.406)
IMAGENET_STD: tuple[float, float, float] = (0.229, 0.224, 0.225)
TSN_SCALES: tuple[float, ...] = (1.0, 0.875, 0.75, 0.66)  # 256, 224, 192, 168 of a 256 short side

Results = dict[str, Any]
Box = tuple[int, int, int, int]  # x0, y0, x1, y1 in pixels of the frames, x1/y1 exclusive

__all__ = [
    "IMAGENET_MEAN",
    "IMAGENET_STD",
    "TSN_SCALES",
    "Compose",
    "Resize",
    "MultiScaleCrop",
    "CenterCrop",
    "Flip",
    "MultiCrop",
    "ColorJitter",
    "draw_jitter",
    "jitter_frame",
    "train_pipeline",
    "eval_pipeline",
    "multi_scale_crop_box",
    "multi_crop_boxes",
    "flip_flow",
]


# --------------------------------------------------------------------------------------------
# array helpers (pure)
# --------------------------------------------------------------------------------------------
def _rng(rng: np.random.Generator | None) -> np.random.Generator:
    return rng if rng is not None else np.random.default_rng()


def _check_imgs(imgs: np.ndarray) -> None:
    if not (isinstance(imgs, np.ndarray) and imgs.dtype == np.uint8 and imgs.ndim == 4 and imgs.shape[-1] == 3):
        got = f"{type(imgs).__name__} {getattr(imgs, 'dtype', '')} {getattr(imgs, 'shape', '')}"
        raise ValueError(f"imgs must be a (T, H, W, 3) uint8 numpy array, got {got}")


def _check_flow(flow: np.ndarray, t: int) -> None:
    if not (isinstance(flow, np.ndarray) and flow.ndim == 4 and flow.shape[1] % 2 == 0 and flow.shape[0] == t):
        got = f"{type(flow).__name__} {getattr(flow, 'shape', '')}"
        raise ValueError(f"flow must be a (T={t}, 2L, H, W) numpy array, got {got}")


def _map_box(box: Box, src_hw: tuple[int, int], dst_hw: tuple[int, int]) -> Box:
    """Map a pixel box on an image of size ``src_hw`` to the same relative box on ``dst_hw``."""
    if src_hw == dst_hw:
        return box
    sy, sx = dst_hw[0] / src_hw[0], dst_hw[1] / src_hw[1]
    x0, y0, x1, y1 = box
    nx0, ny0 = int(round(x0 * sx)), int(round(y0 * sy))
    nx1, ny1 = max(nx0 + 1, int(round(x1 * sx))), max(ny0 + 1, int(round(y1 * sy)))
    return nx0, ny0, min(nx1, dst_hw[1]), min(ny1, dst_hw[0])


def _resize_frames(imgs: np.ndarray, box: Box, out_hw: tuple[int, int]) -> np.ndarray:
    """Crop ``box`` from every frame of ``(T, H, W, 3)`` uint8 and resize to ``out_hw`` (bilinear)."""
    x0, y0, x1, y1 = box
    crop = imgs[:, y0:y1, x0:x1]
    if crop.shape[1:3] == tuple(out_hw):
        return np.ascontiguousarray(crop)
    out = np.empty((imgs.shape[0], out_hw[0], out_hw[1], 3), dtype=np.uint8)
    for t in range(imgs.shape[0]):
        out[t] = cv2.resize(crop[t], (out_hw[1], out_hw[0]), interpolation=cv2.INTER_LINEAR)
    return out


def _resize_flow(
    flow: np.ndarray, box: Box, out_hw: tuple[int, int], rescale: bool
) -> np.ndarray:
    """Crop ``box`` from ``(T, 2L, Hf, Wf)`` flow, resize to ``out_hw``; optionally scale the values.

    With ``rescale``, x planes (even channels) are multiplied by ``out_w / crop_w`` and y planes by
    ``out_h / crop_h`` so that values stay pixel displacements of the output grid.
    """
    x0, y0, x1, y1 = box
    crop = flow[:, :, y0:y1, x0:x1]
    ch, cw = crop.shape[2:]
    if (ch, cw) == tuple(out_hw):
        out = np.array(crop, dtype=np.float32)
    else:
        t, c = crop.shape[:2]
        out = np.empty((t, c, out_hw[0], out_hw[1]), dtype=np.float32)
        for i in range(t):
            hwc = np.ascontiguousarray(crop[i].transpose(1, 2, 0), dtype=np.float32)
            r = cv2.resize(hwc, (out_hw[1], out_hw[0]), interpolation=cv2.INTER_LINEAR)
            out[i] = r.reshape(out_hw[0], out_hw[1], c).transpose(2, 0, 1)
        if rescale:
            out[:, 0::2] *= out_hw[1] / cw
            out[:, 1::2] *= out_hw[0] / ch
    return out


def _hflip_frames(imgs: np.ndarray) -> np.ndarray:
    """Mirror ``(T, H, W, 3)`` uint8 frames left-right (OpenCV: ~40x faster than a numpy ``::-1`` copy)."""
    out = np.empty_like(imgs)
    for t in range(imgs.shape[0]):
        cv2.flip(imgs[t], 1, dst=out[t])
    return out


def flip_flow(flow: np.ndarray | torch.Tensor) -> np.ndarray | torch.Tensor:
    """Horizontally flip a flow stack ``(..., 2L, H, W)`` and NEGATE its x planes (even channels).

    A horizontal mirror maps a displacement ``(u, v)`` at column ``x`` to ``(-u, v)`` at column
    ``W-1-x``: flipping the planes alone would make every horizontal motion point the wrong way.
    Works on float (dequantised, signed) flow only.
    """
    if not (flow.dtype.is_floating_point if isinstance(flow, torch.Tensor) else np.issubdtype(flow.dtype, np.floating)):
        raise ValueError(f"flip_flow needs dequantised float flow, got {flow.dtype} (uint8 would wrap)")
    if isinstance(flow, torch.Tensor):
        out = torch.flip(flow, dims=(-1,)).clone()
    else:
        src = np.ascontiguousarray(flow, dtype=np.float32)
        out = np.empty_like(src)
        planes, oplanes = src.reshape((-1,) + src.shape[-2:]), out.reshape((-1,) + src.shape[-2:])
        for i in range(planes.shape[0]):
            cv2.flip(planes[i], 1, dst=oplanes[i])
    out[..., 0::2, :, :] = -out[..., 0::2, :, :]
    return out


def multi_scale_crop_box(
    img_hw: tuple[int, int],
    rng: np.random.Generator,
    scales: Sequence[float] = TSN_SCALES,
    max_distort: int = 1,
    fix_crop: bool = True,
    more_fix_crop: bool = True,
) -> Box:
    """TSN's multi-scale crop box (``GroupMultiScaleCrop``; MMAction2 ``MultiScaleCrop``).

    With ``base = min(H, W)`` the candidate sides are ``int(base * s)`` for ``s`` in ``scales``; the
    crop width and height are two of them whose positions in ``scales`` differ by at most
    ``max_distort`` (aspect-ratio jitter), drawn uniformly among the allowed pairs. The offset is one of
    5 fixed positions (4 corners + centre; 13 with ``more_fix_crop``: also the 4 edge middles and the
    4 quarter points) when ``fix_crop``, else uniform.

    Returns ``(x0, y0, x1, y1)`` pixels, exclusive ends.
    """
    h, w = img_hw
    base = min(h, w)
    sizes = [max(1, int(base * s)) for s in scales]
    pairs = [
        (cw, ch) for i, ch in enumerate(sizes) for j, cw in enumerate(sizes) if abs(i - j) <= max_distort
    ]
    cw, ch = pairs[int(rng.integers(0, len(pairs)))]
    cw, ch = min(cw, w), min(ch, h)
    if not fix_crop:
        x0 = int(rng.integers(0, w - cw + 1))
        y0 = int(rng.integers(0, h - ch + 1))
    else:
        ws, hs = (w - cw) // 4, (h - ch) // 4
        offsets = [(0, 0), (4 * ws, 0), (0, 4 * hs), (4 * ws, 4 * hs), (2 * ws, 2 * hs)]
        if more_fix_crop:
            offsets += [
                (0, 2 * hs), (4 * ws, 2 * hs), (2 * ws, 4 * hs), (2 * ws, 0),
                (1 * ws, 1 * hs), (3 * ws, 1 * hs), (1 * ws, 3 * hs), (3 * ws, 3 * hs),
            ]  # fmt: skip
        x0, y0 = offsets[int(rng.integers(0, len(offsets)))]
    return x0, y0, x0 + cw, y0 + ch


def multi_crop_boxes(img_hw: tuple[int, int], crop_size: int, num_crops: int) -> list[tuple[Box, bool]]:
    """Boxes of the test-time views, each ``(box, flipped)``.

    * ``1``: the centre crop.
    * ``3``: three crops along the LONG side (start, centre, end), centred on the short side
      (MMAction2 ``ThreeCrop``; use ``crop_size`` = short side to cover the whole frame).
    * ``10``: top-left, top-right, bottom-left, bottom-right, centre, then the same five flipped
      (torchvision ``TenCrop`` order).
    """
    h, w = img_hw
    s = int(crop_size)
    if s > h or s > w:
        raise ValueError(f"crop {s}x{s} does not fit a {h}x{w} frame; resize the short side first")
    cy, cx = (h - s) // 2, (w - s) // 2

    def box(x0: int, y0: int) -> Box:
        return x0, y0, x0 + s, y0 + s

    if num_crops == 1:
        return [(box(cx, cy), False)]
    if num_crops == 3:
        if w >= h:
            return [(box(x, cy), False) for x in (0, cx, w - s)]
        return [(box(cx, y), False) for y in (0, cy, h - s)]
    if num_crops == 10:
        five = [box(0, 0), box(w - s, 0), box(0, h - s), box(w - s, h - s), box(cx, cy)]
        return [(b, False) for b in five] + [(b, True) for b in five]
    raise ValueError(f"num_crops must be 1, 3 or 10, got {num_crops}")


# --------------------------------------------------------------------------------------------
# transforms
# --------------------------------------------------------------------------------------------
Transform = Callable[[Results, np.random.Generator], Results]


class Compose:
    """Apply transforms in order, sharing one ``np.random.Generator`` (seed it for reproducibility).

    Reads/adds: whatever its transforms do (see each one). ``results`` is updated in place and
    returned.
    """

    def __init__(self, transforms: Sequence[Transform]) -> None:
        self.transforms = list(transforms)

    def __call__(self, results: Results, rng: np.random.Generator | None = None) -> Results:
        rng = _rng(rng)
        for t in self.transforms:
            results = t(results, rng)
        return results

    def __repr__(self) -> str:
        inner = ",\n    ".join(repr(t) for t in self.transforms)
        return f"Compose([\n    {inner}\n])"


class Resize:
    """Resize frames (and flow) so that the short side is ``short_side`` pixels, keeping the aspect.

    Reads ``imgs`` (T, H, W, 3) uint8, optional ``flow`` (T, 2L, Hf, Wf) float. Writes ``imgs``
    (T, H', W', 3) and ``flow`` (T, 2L, H', W') -- the flow is brought to the frames' new size, values
    scaled with ``rescale_flow``. Adds ``img_shape`` ``(H', W')``.
    """

    def __init__(self, short_side: int, rescale_flow: bool = True) -> None:
        self.short_side = int(short_side)
        self.rescale_flow = rescale_flow

    def __call__(self, results: Results, rng: np.random.Generator | None = None) -> Results:
        imgs = results["imgs"]
        _check_imgs(imgs)
        h, w = imgs.shape[1:3]
        scale = self.short_side / min(h, w)
        out_hw = (max(1, int(round(h * scale))), max(1, int(round(w * scale))))
        results["imgs"] = _resize_frames(imgs, (0, 0, w, h), out_hw)
        if results.get("flow") is not None:
            flow = results["flow"]
            _check_flow(flow, imgs.shape[0])
            fh, fw = flow.shape[2:]
            results["flow"] = _resize_flow(flow, (0, 0, fw, fh), out_hw, self.rescale_flow)
        results["img_shape"] = out_hw
        return results

    def __repr__(self) -> str:
        return f"Resize(short_side={self.short_side}, rescale_flow={self.rescale_flow})"


class MultiScaleCrop:
    """TSN multi-scale crop with aspect jitter, resized to ``size x size`` (training).

    One box per sample from :func:`multi_scale_crop_box` (default scales ``{1, .875, .75, .66}`` of the
    short side = {256, 224, 192, 168} px for a 256 short side), applied to every frame and (at the same
    relative position) to the flow.

    Reads ``imgs`` (T, H, W, 3) uint8, optional ``flow`` (T, 2L, Hf, Wf). Writes ``imgs``
    (T, S, S, 3), ``flow`` (T, 2L, S, S). Adds ``crop_box`` ``(x0, y0, x1, y1)`` in input frame
    pixels and ``img_shape`` ``(S, S)``.
    """

    def __init__(
        self,
        size: int = 224,
        scales: Sequence[float] = TSN_SCALES,
        max_distort: int = 1,
        fix_crop: bool = True,
        more_fix_crop: bool = True,
        rescale_flow: bool = True,
    ) -> None:
        self.size = int(size)
        self.scales = tuple(float(s) for s in scales)
        self.max_distort = int(max_distort)
        self.fix_crop = fix_crop
        self.more_fix_crop = more_fix_crop
        self.rescale_flow = rescale_flow

    def __call__(self, results: Results, rng: np.random.Generator | None = None) -> Results:
        imgs = results["imgs"]
        _check_imgs(imgs)
        hw = imgs.shape[1:3]
        box = multi_scale_crop_box(
            hw, _rng(rng), self.scales, self.max_distort, self.fix_crop, self.more_fix_crop
        )
        out_hw = (self.size, self.size)
        results["imgs"] = _resize_frames(imgs, box, out_hw)
        if results.get("flow") is not None:
            flow = results["flow"]
            _check_flow(flow, imgs.shape[0])
            fbox = _map_box(box, hw, flow.shape[2:])
            results["flow"] = _resize_flow(flow, fbox, out_hw, self.rescale_flow)
        results["crop_box"] = box
        results["img_shape"] = out_hw
        return results

    def __repr__(self) -> str:
        return (
            f"MultiScaleCrop(size={self.size}, scales={self.scales}, max_distort={self.max_distort}, "
            f"fix_crop={self.fix_crop}, more_fix_crop={self.more_fix_crop})"
        )


class CenterCrop:
    """Centre ``size x size`` crop of every frame and of the flow (validation; no view axis).

    Reads ``imgs`` (T, H, W, 3) uint8, optional ``flow``. Writes ``imgs`` (T, S, S, 3), ``flow``
    (T, 2L, S, S). Adds ``crop_box``, ``img_shape``. For flow at another resolution the box is mapped
    and resized to ``S`` (values scaled with ``rescale_flow``).
    """

    def __init__(self, size: int = 224, rescale_flow: bool = True) -> None:
        self.size = int(size)
        self.rescale_flow = rescale_flow

    def __call__(self, results: Results, rng: np.random.Generator | None = None) -> Results:
        imgs = results["imgs"]
        _check_imgs(imgs)
        hw = imgs.shape[1:3]
        [(box, _)] = multi_crop_boxes(hw, self.size, 1)
        out_hw = (self.size, self.size)
        results["imgs"] = _resize_frames(imgs, box, out_hw)
        if results.get("flow") is not None:
            flow = results["flow"]
            _check_flow(flow, imgs.shape[0])
            results["flow"] = _resize_flow(flow, _map_box(box, hw, flow.shape[2:]), out_hw, self.rescale_flow)
        results["crop_box"] = box
        results["img_shape"] = out_hw
        return results

    def __repr__(self) -> str:
        return f"CenterCrop(size={self.size})"


class Flip:
    """Random horizontal flip of all frames and the flow, with probability ``flip_ratio``.

    The flow's x planes (even channels) are negated (:func:`flip_flow`); y planes are only mirrored.

    Reads ``imgs`` (T, H, W, 3) uint8, optional ``flow`` (T, 2L, H, W) float. Writes them flipped
    (same shapes). Adds ``flip`` (bool).
    """

    def __init__(self, flip_ratio: float = 0.5) -> None:
        self.flip_ratio = float(flip_ratio)

    def __call__(self, results: Results, rng: np.random.Generator | None = None) -> Results:
        flip = bool(_rng(rng).random() < self.flip_ratio)
        if flip:
            results["imgs"] = _hflip_frames(results["imgs"])
            if results.get("flow") is not None:
                results["flow"] = flip_flow(results["flow"])
        results["flip"] = flip
        return results

    def __repr__(self) -> str:
        return f"Flip(flip_ratio={self.flip_ratio})"


class MultiCrop:
    """Test-time views: ``num_crops`` in {1, 3, 10} (see :func:`multi_crop_boxes`), each
    ``crop_size`` square, resized to ``size`` (default ``crop_size = size``: no resize).

    Flipped views (10-crop) mirror the frames and negate flow-x.

    Reads ``imgs`` (T, H, W, 3) uint8, optional ``flow`` (T, 2L, Hf, Wf). Writes ``imgs``
    (V, T, S, S, 3) and ``flow`` (V, T, 2L, S, S) with ``V = num_crops``. Adds ``crop_boxes``
    (list of ``((x0, y0, x1, y1), flipped)``) and ``num_crops``.
    """

    def __init__(
        self, size: int = 224, num_crops: Literal[1, 3, 10] = 1, crop_size: int | None = None,
        rescale_flow: bool = True,
    ) -> None:  # fmt: skip
        if num_crops not in (1, 3, 10):
            raise ValueError(f"num_crops must be 1, 3 or 10, got {num_crops}")
        self.size = int(size)
        self.num_crops = int(num_crops)
        self.crop_size = int(crop_size) if crop_size is not None else self.size
        self.rescale_flow = rescale_flow

    def __call__(self, results: Results, rng: np.random.Generator | None = None) -> Results:
        imgs = results["imgs"]
        _check_imgs(imgs)
        hw = imgs.shape[1:3]
        flow = results.get("flow")
        if flow is not None:
            _check_flow(flow, imgs.shape[0])
        views = multi_crop_boxes(hw, self.crop_size, self.num_crops)
        out_hw = (self.size, self.size)
        v_imgs, v_flow = [], []
        for box, flipped in views:
            im = _resize_frames(imgs, box, out_hw)
            v_imgs.append(_hflip_frames(im) if flipped else im)
            if flow is not None:
                fl = _resize_flow(flow, _map_box(box, hw, flow.shape[2:]), out_hw, self.rescale_flow)
                v_flow.append(flip_flow(fl) if flipped else fl)
        results["imgs"] = np.stack(v_imgs)
        if flow is not None:
            results["flow"] = np.stack(v_flow)
        results["crop_boxes"] = views
        results["num_crops"] = self.num_crops
        results["img_shape"] = out_hw
        return results

    def __repr__(self) -> str:
        return f"MultiCrop(size={self.size}, num_crops={self.num_crops}, crop_size={self.crop_size})"


def _gray3(frame: np.ndarray) -> np.ndarray:
    """ITU-R 601 grey (``0.299 R + 0.587 G + 0.114 B``, rounded) of ``(H, W, 3)`` uint8, as 3 channels."""
    return cv2.cvtColor(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), cv2.COLOR_GRAY2RGB)


class ColorJitter:
    """Brightness / contrast / saturation jitter with ONE set of factors for all frames of a sample.

    Factors are uniform in ``[max(0, 1-a), 1+a]`` for ``a`` = brightness, contrast, saturation, and the
    three adjustments are applied in a random order (drawn once per sample), as torchvision's
    ``ColorJitter`` does on a uint8 image. On each frame ``x`` (uint8, values 0..255):

    * brightness ``b``: ``x * b``;
    * contrast ``c``: ``x * c + (1 - c) * m``, ``m`` the mean grey level of that frame;
    * saturation ``s``: ``x * s + (1 - s) * g``, ``g`` the per-pixel grey image;

    each rounded and clamped to ``0..255`` (OpenCV ``addWeighted``; ~0.1 ms per 224x224 frame, several
    times faster than the same on float tensors here). Hue is not jittered. The flow is never touched.

    ``on_device=True`` only draws the factors: ``jitter`` ``(6,)`` float32 ``[b, c, s, o0, o1, o2]``
    (:func:`draw_jitter`) is added and the frames are left alone, for
    :func:`vidray.data.loader.apply_jitter` to apply on the training device (free on a GPU).

    Reads ``imgs`` (T, H, W, 3) uint8 numpy. Writes ``imgs`` (same shape). Adds ``color_jitter``
    ``{"brightness": b, "contrast": c, "saturation": s, "order": [...]}`` and ``jitter``.
    """

    def __init__(self, brightness: float = 0.4, contrast: float = 0.4, saturation: float = 0.4,
                 on_device: bool = False) -> None:  # fmt: skip
        self.brightness = float(brightness)
        self.contrast = float(contrast)
        self.saturation = float(saturation)
        self.on_device = bool(on_device)

    def __call__(self, results: Results, rng: np.random.Generator | None = None) -> Results:
        params = draw_jitter((self.brightness, self.contrast, self.saturation), _rng(rng))
        results["jitter"] = params
        names = ("brightness", "contrast", "saturation")
        f = dict(zip(names, params[:3].astype(float).tolist()))
        order = [names[int(i)] for i in params[3:]]
        results["color_jitter"] = {**f, "order": order}
        if self.on_device:
            return results
        imgs = results["imgs"]
        if not (isinstance(imgs, np.ndarray) and imgs.dtype == np.uint8 and imgs.shape[-1] == 3):
            raise ValueError("ColorJitter needs imgs as (..., H, W, 3) uint8 numpy")
        flat = imgs.reshape((-1,) + imgs.shape[-3:])
        out = np.empty_like(flat)
        for t in range(flat.shape[0]):
            out[t] = jitter_frame(flat[t], f, order)
        results["imgs"] = out.reshape(imgs.shape)
        return results

    def __repr__(self) -> str:
        return (
            f"ColorJitter(brightness={self.brightness}, contrast={self.contrast}, "
            f"saturation={self.saturation}, on_device={self.on_device})"
        )


def jitter_frame(x: np.ndarray, factors: dict[str, float], order: Sequence[str]) -> np.ndarray:
    """:class:`ColorJitter` on one ``(H, W, 3)`` uint8 frame: ``factors`` by name (``brightness``,
    ``contrast``, ``saturation``), applied in ``order``; each step rounded and clamped (``addWeighted``).
    Returns a new array."""
    for name in order:
        v = factors[name]
        if name == "brightness":
            x = cv2.addWeighted(x, v, x, 0.0, 0.0)
        elif name == "contrast":
            m = float(cv2.cvtColor(x, cv2.COLOR_RGB2GRAY).mean())
            x = cv2.addWeighted(x, v, x, 0.0, (1.0 - v) * m)
        else:
            x = cv2.addWeighted(x, v, _gray3(x), 1.0 - v, 0.0)
    return x


def draw_jitter(strength: Sequence[float], rng: np.random.Generator) -> np.ndarray:
    """Colour-jitter parameters of one sample, as torchvision's ``ColorJitter`` draws them: factors
    ``uniform(max(0, 1-a), 1+a)`` for brightness, contrast, saturation, then a random order of the
    three. Returns ``(6,)`` float32 ``[b, c, s, o0, o1, o2]`` (``o`` = op ids 0/1/2 in the order
    applied)."""
    f = [float(rng.uniform(max(0.0, 1.0 - a), 1.0 + a)) for a in strength]
    order = rng.permutation(3)
    return np.array([*f, *order], dtype=np.float32)


# --------------------------------------------------------------------------------------------
# presets
# --------------------------------------------------------------------------------------------
def train_pipeline(
    size: int = 224,
    *,
    scales: Sequence[float] = TSN_SCALES,
    max_distort: int = 1,
    flip_ratio: float = 0.5,
    color_jitter: tuple[float, float, float] | None = (0.4, 0.4, 0.4),
    jitter_on_device: bool = False,
    rescale_flow: bool = True,
) -> Compose:
    """The TSN training pipeline: MultiScaleCrop -> Flip -> [ColorJitter] (the training loader's).

    In: ``imgs`` (T, H, W, 3) uint8, optional ``flow`` (T, 2L, Hf, Wf) float pixels.
    Out: ``imgs`` (T, size, size, 3) uint8, ``flow`` (T, 2L, size, size) float32; ``crop_box``,
    ``flip`` and (with jitter) ``jitter`` added.
    """
    ts: list[Transform] = [
        MultiScaleCrop(size, scales, max_distort, rescale_flow=rescale_flow),
        Flip(flip_ratio),
    ]
    if color_jitter is not None:
        ts.append(ColorJitter(*color_jitter, on_device=jitter_on_device))
    return Compose(ts)


def eval_pipeline(
    size: int = 224,
    num_crops: Literal[1, 3, 10] | None = None,
    *,
    short_side: int | None = None,
    crop_size: int | None = None,
    rescale_flow: bool = True,
) -> Compose:
    """Validation / test pipeline: [Resize(short_side)] -> CenterCrop (``num_crops=None``: one view, no
    view axis) or MultiCrop(num_crops) (views first).

    ``short_side=None`` keeps the stored size (frames are stored at short side 256 by default: a
    224 centre/10-crop as in the papers). For 3-crop MMAction2 resizes the short side to the crop size
    so the three crops cover the frame: ``short_side=size``.

    Out: ``imgs`` (T, size, size, 3) or (V, T, size, size, 3) uint8; ``flow`` likewise with ``2L``
    channels before the spatial axes.
    """
    ts: list[Transform] = []
    if short_side is not None:
        ts.append(Resize(short_side, rescale_flow=rescale_flow))
    if num_crops is None:
        ts.append(CenterCrop(size, rescale_flow=rescale_flow))
    else:
        ts.append(MultiCrop(size, num_crops, crop_size, rescale_flow=rescale_flow))
    return Compose(ts)
