"""vidray.flow: flow accuracy on exact sub-pixel shifts, quantisation, stack encoding, helpers.

EPE bounds are per algorithm, from measurements on this machine (benchmarks/flow.py, docs/flow.md)
with margin: the per-pair maxima measured over 3 seeds x these shifts were tvl1 (64x64) 0.040,
farneback 0.011, dis_ultrafast 0.093, dis_fast 0.116, dis_medium 0.051 (mean 0.037).
"""

from __future__ import annotations

import pickle

import numpy as np
import pytest

from vidray import flow as F
from vidray.io import flowcodec as codec

SHIFTS = [(1.5, -0.75), (0.3, 0.6), (-2.25, 1.0)]
SIZE = (224, 224)
MARGIN = 16
EPE_BOUND = {
    "farneback": 0.03,
    "dis_ultrafast": 0.15,
    "dis_fast": 0.2,
    "dis_medium": 0.08,
}


@pytest.fixture(scope="module")
def pairs():
    return {s: F.synthetic_shift_pair(s, SIZE, seed=0) for s in SHIFTS}


@pytest.mark.parametrize("algorithm", sorted(EPE_BOUND))
def test_epe_on_subpixel_shifts(algorithm, pairs):
    fn = F.make_flow_fn(algorithm)
    for shift, (f0, f1, gt) in pairs.items():
        flow = fn(f0, f1)
        assert flow.dtype == np.float32 and flow.shape == (*SIZE, 2)
        epe = F.endpoint_error(flow, gt, margin=MARGIN)
        assert epe <= EPE_BOUND[algorithm], f"{algorithm} {shift}: EPE {epe:.4f} px"


def test_default_meets_issue_target(pairs):
    """The issue's target for the default flow: mean EPE <= 0.05 px on the synthetic shifts."""
    fn = F.make_flow_fn(F.DEFAULT_ALGORITHM)
    epes = [F.endpoint_error(fn(f0, f1), gt, margin=MARGIN) for f0, f1, gt in pairs.values()]
    assert np.mean(epes) <= 0.05, epes


def test_tvl1_small_pair():
    f0, f1, gt = F.synthetic_shift_pair((1.5, -0.75), (64, 64), seed=0)
    flow = F.make_flow_fn("tvl1")(f0, f1)
    assert flow.dtype == np.float32 and flow.shape == (64, 64, 2)
    assert F.endpoint_error(flow, gt, margin=8) <= 0.06


def test_flow_direction_and_axes():
    """Content moving right and up gives positive x and negative y (not swapped, not reversed)."""
    f0, f1, _ = F.synthetic_shift_pair((2.0, -1.0), (96, 96), seed=3)
    fn = F.make_flow_fn("dis_medium")
    mean = fn(f0, f1)[16:-16, 16:-16].reshape(-1, 2).mean(0)
    np.testing.assert_allclose(mean, [2.0, -1.0], atol=0.1)
    back = fn(f1, f0)[16:-16, 16:-16].reshape(-1, 2).mean(0)
    np.testing.assert_allclose(back, [-2.0, 1.0], atol=0.1)


def test_non_contiguous_frames(pairs):
    # OpenCV's DIS asserts on non-contiguous input; crops of a bigger frame are views.
    f0, f1, gt = pairs[SHIFTS[0]]
    fn = F.make_flow_fn("dis_medium")
    flow = fn(f0[:, 8:-8], f1[:, 8:-8])
    assert F.endpoint_error(flow, gt[:, 8:-8], margin=MARGIN) <= EPE_BOUND["dis_medium"]


def test_flow_fn_pickles_for_ray(pairs):
    f0, f1, _ = pairs[SHIFTS[0]]
    fn = F.make_flow_fn("dis_fast")
    clone = pickle.loads(pickle.dumps(fn))
    assert clone.algorithm == "dis_fast"
    np.testing.assert_array_equal(clone(f0, f1), fn(f0, f1))


def test_unknown_algorithm():
    with pytest.raises(ValueError, match="unknown flow algorithm 'raft'.*dis_medium"):
        F.make_flow_fn("raft")


@pytest.mark.parametrize(
    "frame0, frame1",
    [
        (np.zeros((32, 32, 3), np.uint8), np.zeros((32, 32, 3), np.uint8)),  # colour
        (np.zeros((32, 32), np.float32), np.zeros((32, 32), np.float32)),  # float
        (np.zeros((32, 32), np.uint8), np.zeros((32, 40), np.uint8)),  # sizes differ
    ],
)
def test_bad_frames(frame0, frame1):
    with pytest.raises(ValueError, match="grayscale"):
        F.make_flow_fn("dis_ultrafast")(frame0, frame1)


@pytest.mark.parametrize("bound", [20.0, 7.5])
def test_quantize_round_trip_and_clipping(bound):
    rng = np.random.default_rng(0)
    x = rng.uniform(-bound, bound, (2, 48, 40, 2)).astype(np.float32)
    q = codec.quantize_flow(x, bound)
    assert q.dtype == np.uint8 and q.shape == x.shape
    back = codec.dequantize_flow(q, bound)
    assert back.dtype == np.float32 and back.shape == x.shape
    assert np.abs(back - x).max() <= bound / 255 + 1e-5
    # Exact formula against a float64 reference.
    ref = np.clip(np.round(128 + x.astype(np.float64) * 127.5 / bound), 0, 255)
    np.testing.assert_array_equal(q, ref.astype(np.uint8))
    # Clipping: beyond +-bound saturates to the ends, which dequantise to within bound/255 of +-bound.
    big = np.array([[[-3 * bound, 3 * bound], [-np.inf, np.inf], [-bound, bound]]], np.float32)
    qb = codec.quantize_flow(big, bound)
    np.testing.assert_array_equal(qb, [[[0, 255], [0, 255], [0, 255]]])
    np.testing.assert_allclose(codec.dequantize_flow(qb, bound), [[[-bound, bound]] * 3], atol=bound / 255 + 1e-5)


def test_quantize_known_values():
    x = np.array([[0.0, 10.0], [-10.0, 20.0], [0.1, -0.1]], np.float32)
    q = codec.quantize_flow(x, 20.0)
    np.testing.assert_array_equal(q, [[128, 192], [64, 255], [129, 127]])
    assert codec.dequantize_flow(q, 20.0)[0, 0] == 0.0  # zero flow survives exactly
    with pytest.raises(ValueError):
        codec.quantize_flow(x, 0.0)
    with pytest.raises(ValueError):
        codec.dequantize_flow(x, 20.0)  # not uint8


def _plane_stack(L=3, H=16, W=24):
    """uint8 (L, H, W, 2) whose planes are constant and distinct: x_l = 20*l + 10, y_l = 20*l + 20."""
    q = np.empty((L, H, W, 2), np.uint8)
    for i in range(L):
        q[i, ..., 0] = 20 * i + 10
        q[i, ..., 1] = 20 * i + 20
    return q


@pytest.mark.parametrize("encoding", ["raw", "png", "jpeg"])
def test_stack_tiling_order(encoding):
    L, H, W = 3, 16, 24
    q = _plane_stack(L, H, W)
    data = codec.encode_flow_stack(q, encoding)
    out = codec.decode_flow_stack(data, encoding, L, H, W)
    assert out.dtype == np.uint8 and out.shape == (2 * L, H, W)
    expect = [10, 20, 30, 40, 50, 60]  # x1, y1, x2, y2, x3, y3
    tol = 1 if encoding == "jpeg" else 0
    for c, v in enumerate(expect):
        assert np.abs(out[c].astype(int) - v).max() <= tol, (encoding, c)
    # The stored image itself is (2L*H, W) with the planes stacked top to bottom.
    if encoding == "raw":
        img = np.frombuffer(data, np.uint8).reshape(2 * L * H, W)
        np.testing.assert_array_equal(img[H : 2 * H], 20)
        np.testing.assert_array_equal(img[2 * H : 3 * H], 30)


def _smooth_flow_stack(L=3, H=64, W=80):
    yy, xx = np.mgrid[0:H, 0:W].astype(np.float32)
    f = np.stack([(yy - H / 2) * 0.2, -(xx - W / 2) * 0.2], -1)
    f[:, W // 2 :, 0] += 6.0  # a motion boundary
    return np.stack([f * (0.5 + i) for i in range(L)])


@pytest.mark.parametrize("encoding", ["raw", "png", "jpeg"])
def test_stack_round_trip(encoding):
    flow = _smooth_flow_stack()
    L, H, W, _ = flow.shape
    q = codec.quantize_flow(flow)
    out = codec.decode_flow_stack(codec.encode_flow_stack(q, encoding, quality=90), encoding, L, H, W)
    ref = q.transpose(0, 3, 1, 2).reshape(2 * L, H, W)
    err = np.abs(out.astype(int) - ref)
    if encoding == "jpeg":
        assert err.max() <= 3 and err.mean() <= 0.5, (err.max(), err.mean())
    else:
        assert err.max() == 0


def test_stack_errors():
    q = _plane_stack()
    with pytest.raises(ValueError, match="encoding"):
        codec.encode_flow_stack(q, "webp")
    with pytest.raises(ValueError, match="L, H, W, 2"):
        codec.encode_flow_stack(q[0], "png")
    with pytest.raises(ValueError):
        codec.decode_flow_stack(codec.encode_flow_stack(q, "raw"), "raw", 3, 16, 25)
    with pytest.raises(ValueError, match="expected"):
        codec.decode_flow_stack(codec.encode_flow_stack(q, "png"), "png", 2, 16, 24)
    with pytest.raises(ValueError, match="JPEG"):
        codec.encode_flow_stack(np.zeros((1, 32768, 8, 2), np.uint8), "jpeg")


def test_flow_to_rgb():
    f = np.zeros((20, 30, 2), np.float32)
    rgb = F.flow_to_rgb(f)
    assert rgb.dtype == np.uint8 and rgb.shape == (20, 30, 3)
    np.testing.assert_array_equal(rgb, 255)  # zero flow is white
    f[:, :15, 0] = 3.0
    f[:, 15:, 0] = -3.0
    rgb = F.flow_to_rgb(f)
    assert (rgb[:, :15] != rgb[:, 15:]).any() and (rgb[:, :15] != 255).any()
    with pytest.raises(ValueError):
        F.flow_to_rgb(np.zeros((20, 30), np.float32))


def test_endpoint_error():
    gt = np.zeros((10, 12, 2), np.float32)
    pred = gt.copy()
    pred[..., 0] = 3.0
    pred[..., 1] = 4.0
    assert F.endpoint_error(pred, gt) == pytest.approx(5.0)
    pred[0] = 100.0  # only the border row is wrong: a margin drops it
    assert F.endpoint_error(pred, gt, margin=1) == pytest.approx(5.0)
    assert F.endpoint_error(pred, gt) > 5.0
    with pytest.raises(ValueError):
        F.endpoint_error(pred, gt[:-1])


def test_synthetic_shift_pair():
    a0, a1, gt = F.synthetic_shift_pair((0.3, 0.6), (48, 64), seed=1)
    assert a0.dtype == a1.dtype == np.uint8 and a0.shape == a1.shape == (48, 64)
    assert gt.dtype == np.float32 and gt.shape == (48, 64, 2)
    np.testing.assert_array_equal(gt[..., 0], np.float32(0.3))
    np.testing.assert_array_equal(gt[..., 1], np.float32(0.6))
    b0, b1, _ = F.synthetic_shift_pair((0.3, 0.6), (48, 64), seed=1)
    np.testing.assert_array_equal(a0, b0)
    np.testing.assert_array_equal(a1, b1)
    assert a0.std() > 20  # textured
    assert not np.array_equal(a0, F.synthetic_shift_pair((0.3, 0.6), (48, 64), seed=2)[0])
    # The shift is exact: an integer shift equals a periodic roll (up to the final rounding).
    c0, c1, _ = F.synthetic_shift_pair((3.0, -2.0), (48, 64), seed=1)
    assert np.abs(np.roll(c0, (-2, 3), axis=(0, 1)).astype(int) - c1).max() <= 1
