"""Clip transforms: one augmentation per sample, flow-x negated on flips, test-time crops."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from vidray.data import transforms as T


def _texture(h: int, w: int, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (h, w, 3), dtype=np.uint8)


def _shifted_copies(base: np.ndarray, t: int) -> np.ndarray:
    """Frame i = base rolled i pixels to the right (content moves +1 px per frame)."""
    return np.stack([np.roll(base, i, axis=1) for i in range(t)])


@pytest.mark.parametrize("seed", range(6))
def test_same_crop_and_flip_for_every_frame(seed):
    """Shifted copies keep their shift relation only if all frames got the same box and flip."""
    frames = _shifted_copies(_texture(48, 96, seed), 4)
    # scale 1.0 and size = short side: no resize, random fixed offset along the long side
    pipe = T.Compose([T.MultiScaleCrop(48, scales=(1.0,), max_distort=0, more_fix_crop=True), T.Flip(0.5)])
    out = pipe({"imgs": frames}, np.random.default_rng(seed))
    imgs, flip = out["imgs"], out["flip"]
    x0, y0, x1, y1 = out["crop_box"]
    assert imgs.shape == (4, 48, 48, 3)
    expect0 = frames[0, y0:y1, x0:x1]
    assert np.array_equal(imgs[0], expect0[:, ::-1] if flip else expect0)
    for t in range(1, 4):
        if flip:  # content moves left in the mirrored frames
            assert np.array_equal(imgs[t][:, :-t], imgs[0][:, t:])
        else:
            assert np.array_equal(imgs[t][:, t:], imgs[0][:, :-t])


def test_flip_seen_in_both_states():
    flips = {T.Flip(0.5)({"imgs": _shifted_copies(_texture(8, 8), 2)}, np.random.default_rng(s))["flip"]
             for s in range(20)}  # fmt: skip
    assert flips == {True, False}


@pytest.mark.parametrize("seed", range(4))
def test_full_train_pipeline_identical_frames_stay_identical(seed):
    frames = np.repeat(_texture(40, 56, seed)[None], 3, axis=0)
    flow = np.repeat(np.random.default_rng(seed).normal(size=(1, 4, 40, 56)).astype(np.float32), 3, axis=0)
    out = T.train_pipeline(24)({"imgs": frames, "flow": flow}, np.random.default_rng(seed))
    imgs, fl = out["imgs"], out["flow"]
    assert imgs.shape == (3, 24, 24, 3) and imgs.dtype == np.uint8  # uint8 until the device normalises
    assert fl.shape == (3, 4, 24, 24) and fl.dtype == np.float32
    for t in range(1, 3):
        assert np.array_equal(imgs[t], imgs[0])
        assert np.array_equal(fl[t], fl[0])


def test_seeded_pipeline_is_reproducible():
    frames = _shifted_copies(_texture(40, 56), 3)
    a = T.train_pipeline(24)({"imgs": frames}, np.random.default_rng(7))
    b = T.train_pipeline(24)({"imgs": frames}, np.random.default_rng(7))
    assert a["crop_box"] == b["crop_box"] and a["flip"] == b["flip"]
    assert np.array_equal(a["imgs"], b["imgs"])


def test_multi_scale_box_sizes_and_aspect_jitter():
    sizes = {256, 224, 192, 168}  # int(256 * {1, .875, .75, .66})
    seen = set()
    for s in range(300):
        x0, y0, x1, y1 = T.multi_scale_crop_box((256, 340), np.random.default_rng(s))
        w, h = x1 - x0, y1 - y0
        assert w in sizes and h in sizes and x1 <= 340 and y1 <= 256 and x0 >= 0 and y0 >= 0
        order = sorted(sizes, reverse=True)
        assert abs(order.index(w) - order.index(h)) <= 1  # max_distort = 1
        seen.add((w, h))
    assert any(w != h for w, h in seen) and len(seen) >= 8


def test_flip_negates_flow_x_not_y():
    rng = np.random.default_rng(0)
    flow = rng.normal(size=(2, 4, 6, 8)).astype(np.float32)  # planes x1, y1, x2, y2
    flow[:, 0::2] += 3.0  # everything moves right by ~3 px
    flow[:, 1::2] -= 2.0  # and up by ~2 px
    frames = _shifted_copies(_texture(6, 8), 2)
    out = T.Flip(1.0)({"imgs": frames, "flow": flow.copy()}, rng)
    f = out["flow"]
    assert out["flip"] is True
    np.testing.assert_array_equal(f[:, 0::2], -flow[:, 0::2, :, ::-1])
    np.testing.assert_array_equal(f[:, 1::2], flow[:, 1::2, :, ::-1])
    assert f[:, 0::2].mean() < -2.5 and f[:, 1::2].mean() < -1.5  # now moving left, still up
    np.testing.assert_array_equal(out["imgs"], frames[:, :, ::-1])
    # torch path agrees
    np.testing.assert_array_equal(T.flip_flow(torch.from_numpy(flow)).numpy(), f)
    with pytest.raises(ValueError, match="float"):
        T.flip_flow(np.zeros((1, 2, 4, 4), np.uint8))


def test_flow_crop_follows_frames_and_is_rescaled():
    frames = _texture(64, 96)[None]
    flow = np.empty((1, 2, 32, 48), np.float32)  # flow stored at half the frame resolution
    flow[:, 0], flow[:, 1] = 1.0, 0.5  # pixels of the 32x48 flow grid
    out = T.CenterCrop(32)({"imgs": frames, "flow": flow.copy()})
    assert out["crop_box"] == (32, 16, 64, 48)
    np.testing.assert_array_equal(out["imgs"][0], frames[0, 16:48, 32:64])
    # flow box (16, 8, 32, 24) = 16x16, resized to 32x32: displacements double
    np.testing.assert_allclose(out["flow"][0, 0], 2.0, rtol=1e-6)
    np.testing.assert_allclose(out["flow"][0, 1], 1.0, rtol=1e-6)
    out = T.CenterCrop(32, rescale_flow=False)({"imgs": frames, "flow": flow.copy()})
    np.testing.assert_allclose(out["flow"][0, 0], 1.0, rtol=1e-6)


def test_flow_crop_same_box_at_same_resolution():
    rng = np.random.default_rng(3)
    frames = _texture(40, 60)[None].repeat(2, 0)
    flow = rng.normal(size=(2, 2, 40, 60)).astype(np.float32)
    out = T.MultiScaleCrop(40, scales=(1.0,), max_distort=0)({"imgs": frames, "flow": flow}, rng)
    x0, y0, x1, y1 = out["crop_box"]
    np.testing.assert_array_equal(out["flow"], flow[:, :, y0:y1, x0:x1])
    np.testing.assert_array_equal(out["imgs"], frames[:, y0:y1, x0:x1])


def test_color_jitter_same_factors_for_all_frames():
    frames = np.stack([_texture(16, 16, 1)] * 3)
    out = T.ColorJitter(0.5, 0.5, 0.5)({"imgs": frames.copy()}, np.random.default_rng(0))
    assert all(np.array_equal(out["imgs"][t], out["imgs"][0]) for t in range(3))
    assert not np.array_equal(out["imgs"][0], frames[0])
    # brightness only: x * b, rounded and clamped, for every (different) frame
    frames = _shifted_copies(_texture(16, 16, 2), 3)
    out = T.ColorJitter(0.5, 0.0, 0.0)({"imgs": frames.copy(), "flow": np.ones((3, 2, 4, 4))},
                                       np.random.default_rng(1))  # fmt: skip
    b = out["color_jitter"]["brightness"]
    assert 0.5 <= b <= 1.5 and b != 1.0
    expect = np.clip(np.round(frames * b), 0, 255)
    assert np.abs(out["imgs"].astype(int) - expect).max() <= 1
    np.testing.assert_array_equal(out["flow"], 1.0)  # flow untouched


def test_normalize_rgb_and_flow_mean_subtraction():
    mean = np.array(T.IMAGENET_MEAN)
    frame = np.broadcast_to(np.round(mean * 255).astype(np.uint8), (1, 4, 4, 3)).copy()
    yy, xx = np.mgrid[0:4, 0:4].astype(np.float32)
    flow = np.stack([xx + 5.0, yy - 3.0])[None]  # (1, 2, 4, 4): gradient + a global (camera) motion
    from vidray.data.loader import normalize_batch  # the one normalisation (on the training device)

    imgs = normalize_batch({"imgs": torch.from_numpy(frame)[None]}, "rgb")[0]
    assert imgs.shape == (1, 3, 4, 4)
    assert imgs.abs().max() < 0.01  # 255*mean -> ~0
    f = normalize_batch({"flow": torch.from_numpy(flow)[None]}, "flow", flow_scale=2.0)[0]
    np.testing.assert_allclose(f.mean(dim=(-2, -1)).numpy(), 0.0, atol=1e-6)
    np.testing.assert_allclose(f[0, 0].numpy(), (xx - 1.5) / 2.0, atol=1e-6)


def test_ten_crop_views_and_flipped_flow():
    rng = np.random.default_rng(0)
    frames = np.stack([_texture(40, 50, 5), _texture(40, 50, 6)])
    flow = rng.normal(size=(2, 4, 40, 50)).astype(np.float32)
    raw = T.MultiCrop(32, num_crops=10)({"imgs": frames, "flow": flow})
    assert raw["imgs"].shape == (10, 2, 32, 32, 3) and raw["flow"].shape == (10, 2, 4, 32, 32)
    corners = [(0, 0), (18, 0), (0, 8), (18, 8), (9, 4)]  # (x0, y0): tl, tr, bl, br, centre
    for v, (x0, y0) in enumerate(corners):
        np.testing.assert_array_equal(raw["imgs"][v], frames[:, y0:y0 + 32, x0:x0 + 32])
        np.testing.assert_array_equal(raw["flow"][v], flow[:, :, y0:y0 + 32, x0:x0 + 32])
        np.testing.assert_array_equal(raw["imgs"][v + 5], raw["imgs"][v][:, :, ::-1])
        np.testing.assert_array_equal(raw["flow"][v + 5, :, 0::2], -raw["flow"][v, :, 0::2, :, ::-1])
        np.testing.assert_array_equal(raw["flow"][v + 5, :, 1::2], raw["flow"][v, :, 1::2, :, ::-1])
    # after the whole eval pipeline and the device normalisation the relations survive
    from vidray.data.loader import normalize_batch

    out = T.eval_pipeline(32, 10)({"imgs": frames, "flow": flow})
    im = normalize_batch({"imgs": torch.from_numpy(out["imgs"])}, "rgb")  # views as the batch axis
    fl = normalize_batch({"flow": torch.from_numpy(out["flow"])}, "flow", flow_scale=1.0)
    assert im.shape == (10, 2, 3, 32, 32) and fl.shape == (10, 2, 4, 32, 32)
    for v in range(5):
        np.testing.assert_allclose(im[v + 5].numpy(), im[v].flip(-1).numpy(), atol=1e-6)
        np.testing.assert_allclose(fl[v + 5, :, 0::2].numpy(), -fl[v, :, 0::2].flip(-1).numpy(), atol=1e-5)
        np.testing.assert_allclose(fl[v + 5, :, 1::2].numpy(), fl[v, :, 1::2].flip(-1).numpy(), atol=1e-5)


def test_three_crop_along_long_side_and_one_crop():
    land = _texture(32, 64)[None]
    out = T.MultiCrop(32, num_crops=3)({"imgs": land})
    for v, x0 in enumerate((0, 16, 32)):
        np.testing.assert_array_equal(out["imgs"][v, 0], land[0, :, x0:x0 + 32])
    port = _texture(64, 32)[None]
    out = T.MultiCrop(32, num_crops=3)({"imgs": port})
    for v, y0 in enumerate((0, 16, 32)):
        np.testing.assert_array_equal(out["imgs"][v, 0], port[0, y0:y0 + 32])
    out = T.eval_pipeline(16, 1, short_side=32)({"imgs": _texture(64, 96)[None]})
    assert out["imgs"].shape == (1, 1, 16, 16, 3)
    with pytest.raises(ValueError, match="does not fit"):
        T.MultiCrop(48, num_crops=1)({"imgs": land})
    with pytest.raises(ValueError, match="1, 3 or 10"):
        T.MultiCrop(16, num_crops=5)


@pytest.mark.parametrize("seed", range(3))
def test_augmented_flow_matches_flow_measured_on_augmented_frames(seed):
    """End to end with the ingest codec: a known shift, stored as quantised JPEG flow, then crop +
    resize + flip. Flow measured (DIS) on the augmented frames must match the augmented stored flow:
    flow-x negated, flow-y kept, values rescaled by the crop's resize factor."""
    from vidray import flow as FL

    f0, f1, gt = FL.synthetic_shift_pair((1.5, -0.75), (96, 128), seed=seed)
    frames = np.stack([np.repeat(f[..., None], 3, axis=-1) for f in (f0, f1)])
    from vidray.io import flowcodec as codec

    data = codec.encode_flow_stack(codec.quantize_flow(gt[None]), "jpeg")
    stored = codec.dequantize_flow(codec.decode_flow_stack(data, "jpeg", 1, 96, 128))  # (2, H, W) pixels
    flow = np.stack([stored, stored])
    pipe = T.Compose([T.MultiScaleCrop(64), T.Flip(1.0)])
    out = pipe({"imgs": frames, "flow": flow}, np.random.default_rng(seed))
    measured = FL.make_flow_fn("dis_medium")(out["imgs"][0, ..., 0], out["imgs"][1, ..., 0])
    augmented = out["flow"][0].transpose(1, 2, 0)  # (H, W, 2)
    assert FL.endpoint_error(measured, augmented, margin=8) < 0.3
    not_negated = augmented * np.array([-1.0, 1.0], np.float32)
    assert FL.endpoint_error(measured, not_negated, margin=8) > 2.0
