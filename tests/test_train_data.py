"""Training-time sampling and augmentation through the loader, and the tiny ingested dataset that
every training/evaluation test module uses.

The dataset: 6 motion classes x 4 videos (32x32, 8 frames, every frame stored, DIS flow L=1): 12 train,
6 val, 6 test videos, built once per test session under pytest's base temp (the module-scoped
fixtures of test_train*.py / test_eval_cli.py call :func:`tiny_dataset`).
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
import torch

from vidray.data.loader import (
    ClipCollate,
    ClipSpec,
    columns_for,
    eval_indices,
    iter_rows,
    make_eval_views,
    make_sample,
    merge_rows,
    normalize_batch,
    sample_indices,
)
from vidray.io.imcodec import encode_image



def tiny_dataset(tmp_path_factory) -> Path:
    """Path of the ingest output (built on first use in this session)."""
    from vidray.config import IngestConfig, load_config
    from vidray.ingest import run_ingest
    from vidray.synth import SynthSpec, make_corpus

    base = tmp_path_factory.getbasetemp() / "vidray_train_data"
    data = base / "data"
    if (data / "dataset.json").is_file():
        return data
    spec = SynthSpec(kind="motion", num_videos=24, width=32, height=32, frames=8, fps=12, seed=3,
                     splits=(0.5, 0.25, 0.25))  # fmt: skip
    manifest = make_corpus(base / "corpus", spec)
    cfg = load_config(IngestConfig, None, [
        "resize.short_side=32", "sampling.mode=all", "flow.enabled=true", "flow.algorithm=dis_fast",
        "output.videos_per_task=6",
    ])  # fmt: skip
    summary = run_ingest(manifest, data, cfg=cfg)
    assert summary.failure_fraction == 0, summary.format()
    return data


def fast_train_overrides(*extra: str) -> list[str]:
    """Config overrides for a seconds-long CPU run on the tiny dataset."""
    return [
        "augment.crop_size=24", "sampler.num_frames=4", "batch_size=2", "epochs=2",
        "input.shuffle_buffer=0", "tracking.flow_samples=2", "ray.prefetch_batches=1",
        "schedule.name=step", "schedule.milestones=[1]", "schedule.gamma=0.5", *extra,
    ]  # fmt: skip


# =============================================================================================
# Tests: training-time sampling and augmentation through the loader (no Ray Train needed)
# =============================================================================================
@pytest.fixture(scope="module")
def data(tmp_path_factory, ray_local):
    return tiny_dataset(tmp_path_factory)


def _rows(data: Path, spec: ClipSpec, split: str = "train"):
    from vidray.io.reader import IngestDataset

    t = IngestDataset(data).table(columns=columns_for(spec), split=split)
    return t, list(iter_rows(t))


def _row_table(frames: np.ndarray, flow_q: np.ndarray | None = None, labels=(2,)) -> pa.Table:
    """A one-row table in the ingest schema from raw frames ``(n, H, W, 3)`` and quantised flow
    ``(n, 1, H, W, 2)`` (both encoded as PNG: lossless, so tests compare exact values)."""
    from vidray.io.flowcodec import encode_flow_stack
    from vidray.io.schema import FLOW_META

    n, h, w, _ = frames.shape
    cols = {
        "video_id": ["v0"], "labels": [list(labels)], "split": ["train"], "frame_index": [list(range(n))],
        "frame_encoding": ["png"], "frame_height": [h], "frame_width": [w],
        "frames": [[encode_image(f, "png") for f in frames]],
    }  # fmt: skip
    if flow_q is not None:
        cols["flow"] = [[encode_flow_stack(q, "png") for q in flow_q]]
        cols["flow_meta"] = pa.array([{"algorithm": "synthetic", "bound": 20.0, "flow_fps": 0.0, "step": 1,
                                       "stack_length": 1, "encoding": "png", "height": h, "width": w}],
                                     type=FLOW_META)  # fmt: skip
    return pa.table(cols)


# ---------------------------------------------------------------------------------- sampling
def test_tsn_training_takes_one_frame_per_segment_and_validation_the_centres():
    spec = ClipSpec(sampler="tsn", num_frames=4, train=True)
    rng = np.random.default_rng(0)
    draws = np.stack([sample_indices(np.arange(40), spec, rng) for _ in range(200)])
    assert draws.shape == (200, 4)
    for s in range(4):  # segment s covers stored frames 10s .. 10s+9, every offset is drawn
        assert set(np.unique(draws[:, s])) == set(range(10 * s, 10 * s + 10))
    val = sample_indices(np.arange(40), ClipSpec(sampler="tsn", num_frames=4, train=False), None)
    assert val.tolist() == [5, 15, 25, 35]


def test_clip_pair_and_sequential_samplers():
    rng = np.random.default_rng(1)
    clip = ClipSpec(sampler="clip", num_frames=4, frame_interval=2, train=True)
    for _ in range(50):
        c = sample_indices(np.arange(20), clip, rng)
        assert np.all(np.diff(c) == 2) and c[0] <= 20 - 7  # ori clip length 7 fits without wrapping
    # source frame numbers, not positions: stored every 5th frame, interval 5 -> consecutive stored frames
    sparse = sample_indices(np.arange(0, 100, 5), ClipSpec(sampler="clip", num_frames=3, frame_interval=5,
                                                            train=False), None)  # fmt: skip
    assert np.all(np.diff(sparse) == 1)
    pair = sample_indices(np.arange(9), ClipSpec(sampler="pair", num_frames=8, train=True), rng)
    assert pair.shape == (2,) and pair[1] == pair[0] + 1
    assert sample_indices(np.arange(9), ClipSpec(sampler="pair", train=False), None).tolist() == [3, 4]
    seq = ClipSpec(sampler="sequential", num_frames=6, train=False)
    assert sample_indices(np.arange(4), seq, None).tolist() == [0, 1, 2, 3, 3, 3]  # padded with the last
    assert sample_indices(np.arange(10), seq, None).tolist() == [2, 3, 4, 5, 6, 7]  # centred window


def test_eval_indices_spread_clips_over_the_video():
    tsn = eval_indices(np.arange(40), ClipSpec(sampler="tsn", num_frames=4, train=False), num_clips=2)
    # segment length 10; clip c at offset (c + 0.5) / 2 of each segment: 2.5 -> 2, 7.5 -> 7
    assert tsn.tolist() == [[2, 12, 22, 32], [7, 17, 27, 37]]
    one = eval_indices(np.arange(40), ClipSpec(sampler="tsn", num_frames=4, train=False), num_clips=1)
    assert one.tolist() == [[5, 15, 25, 35]]  # = TSN test mode
    pairs = eval_indices(np.arange(10), ClipSpec(sampler="pair", train=False), num_clips=3)
    assert pairs.shape == (3, 2) and np.all(pairs[:, 1] == pairs[:, 0] + 1) and np.all(np.diff(pairs[:, 0]) > 0)


# ---------------------------------------------------------------------------------- augmentation
def test_same_augmentation_for_every_frame_and_the_flow():
    """Identical frames (and identical flow fields) stay identical after crop/flip/jitter: one set
    of parameters per sample, not per frame."""
    rng = np.random.default_rng(0)
    frame = rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)
    flow_q = rng.integers(0, 256, (1, 40, 48, 2), dtype=np.uint8)
    t = _row_table(np.repeat(frame[None], 6, 0), np.repeat(flow_q[None], 6, 0))
    [row] = list(iter_rows(t))
    spec = ClipSpec(sampler="tsn", num_frames=4, modality="rgb+flow", num_classes=6, crop_size=24)
    for seed in range(10):
        s = make_sample(row, spec, np.random.default_rng(seed))
        assert s["imgs"].shape == (4, 24, 24, 3) and s["flow"].shape == (4, 2, 24, 24)
        assert all(np.array_equal(s["imgs"][0], s["imgs"][i]) for i in range(1, 4))
        assert all(np.array_equal(s["flow"][0], s["flow"][i]) for i in range(1, 4))
        x = normalize_batch({"imgs": torch.from_numpy(s["imgs"][None]),
                             "jitter": torch.from_numpy(s["jitter"][None])}, "rgb")[0]  # fmt: skip
        assert all(torch.equal(x[0], x[i]) for i in range(1, 4))  # the colour jitter too


def test_flip_mirrors_frames_and_negates_flow_x_through_the_loader(data):
    """Through ClipCollate on real ingested rows: the same seed with flip_ratio 1 vs 0 draws the same
    crop and jitter; the flipped sample is the mirror image, with flow-x negated and flow-y kept."""
    base = dict(sampler="tsn", num_frames=4, modality="rgb+flow", num_classes=6, crop_size=24)
    table, _ = _rows(data, ClipSpec(**base))
    flip = ClipCollate(ClipSpec(**base, flip_ratio=1.0), seed=7)(table)
    keep = ClipCollate(ClipSpec(**base, flip_ratio=0.0), seed=7)(table)
    assert flip["flip"].all() and not keep["flip"].any()
    assert flip["imgs"].shape == (table.num_rows, 4, 24, 24, 3) and flip["imgs"].dtype == torch.uint8
    assert torch.equal(flip["imgs"], keep["imgs"].flip(-2))  # (B, T, H, W, 3): mirror along W
    assert torch.equal(flip["jitter"], keep["jitter"])  # one colour jitter per clip, applied on the device
    xf, xk = normalize_batch(flip, "rgb+flow"), normalize_batch(keep, "rgb+flow")
    assert torch.allclose(xf, xk.flip(-1), atol=1e-5)  # (B, T, 3, H, W)
    fx, fy = flip["flow"][:, :, 0], flip["flow"][:, :, 1]
    kx, ky = keep["flow"][:, :, 0], keep["flow"][:, :, 1]
    assert torch.equal(fx, -kx.flip(-1)) and torch.equal(fy, ky.flip(-1))
    assert kx.abs().max() > 0.5  # the synthetic videos move: flow-x is not trivially zero


def test_ingested_flow_direction_matches_the_label_and_flips(data):
    """'left' videos have negative mean flow-x; after a flip the loader reports positive flow-x."""
    base = dict(sampler="tsn", num_frames=4, modality="flow", num_classes=6, crop_size=24, color_jitter=None)
    table, rows = _rows(data, ClipSpec(**base))
    left = [i for i, r in enumerate(rows) if r.video_id.startswith("left")]
    assert left
    sub = table.take(left)
    keep = ClipCollate(ClipSpec(**base, flip_ratio=0.0), seed=1)(sub)
    flip = ClipCollate(ClipSpec(**base, flip_ratio=1.0), seed=1)(sub)
    assert "imgs" not in keep  # the flow stream decodes no JPEG frame
    assert keep["flow"][:, :, 0].mean() < -0.3 < 0.3 < flip["flow"][:, :, 0].mean()


def test_validation_sample_is_deterministic_centre_crop(data):
    spec = ClipSpec(sampler="clip", num_frames=4, modality="rgb", num_classes=6, crop_size=24, train=False)
    _, rows = _rows(data, spec, "val")
    a = make_sample(rows[0], spec, np.random.default_rng(1))
    b = make_sample(rows[0], spec, np.random.default_rng(2))
    assert np.array_equal(a["imgs"], b["imgs"]) and not a["flip"]
    assert a["crop_box"] == (4, 4, 28, 28)  # centre 24x24 of a 32x32 frame
    assert a["indices"].tolist() == [2, 3, 4, 5]  # centre clip of 8 stored frames


def test_eval_views_ten_crops_flip_the_last_five(data):
    spec = ClipSpec(sampler="tsn", num_frames=2, modality="rgb+flow", num_classes=6, crop_size=24, train=False)
    _, rows = _rows(data, spec, "test")
    v = make_eval_views(rows[0], spec, num_clips=2, num_crops=10)
    assert v["imgs"].shape == (20, 2, 24, 24, 3) and v["flow"].shape == (20, 2, 2, 24, 24)
    # crop 4 (centre) and crop 9 (centre, flipped) of clip 0
    assert np.array_equal(v["imgs"][9], v["imgs"][4][:, :, ::-1])
    assert np.allclose(v["flow"][9][:, 0], -v["flow"][4][:, 0][:, :, ::-1])


def test_chunks_of_a_long_video_merge_in_order():
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (6, 8, 8, 3), dtype=np.uint8)
    [a] = list(iter_rows(_row_table(frames[:4])))
    [b] = list(iter_rows(_row_table(frames[4:])))
    b.frame_index = b.frame_index + 4
    m = merge_rows([a, b])
    assert m.num_frames == 6 and m.frame_index.tolist() == list(range(6))
    assert np.array_equal(m.frames([5, 0]), frames[[5, 0]])


def test_normalize_batch_matches_a_hand_computation():
    rng = np.random.default_rng(0)
    imgs = rng.integers(0, 256, (2, 3, 8, 8, 3), dtype=np.uint8)
    flow = rng.normal(0, 3, (2, 3, 4, 8, 8)).astype(np.float32)
    ours = normalize_batch({"imgs": torch.from_numpy(imgs)}, "rgb")
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    ref = torch.from_numpy(((imgs[0] / 255.0 - mean) / std).transpose(0, 3, 1, 2).astype(np.float32))
    assert ours.shape == (2, 3, 3, 8, 8) and torch.allclose(ours[0], ref, atol=1e-5)
    f = normalize_batch({"flow": torch.from_numpy(flow)}, "flow", flow_scale=20.0)
    ref_f = torch.from_numpy((flow[1] - flow[1].mean(axis=(-2, -1), keepdims=True)) / 20.0)
    assert torch.allclose(f[1], ref_f, atol=1e-6) and f.mean(dim=(-2, -1)).abs().max() < 1e-5


def test_collate_shards_validation_videos_disjointly(data):
    spec = ClipSpec(sampler="tsn", num_frames=2, modality="rgb", num_classes=6, crop_size=24, train=False)
    table, rows = _rows(data, spec, "val")
    ids = [r.video_id for r in rows]
    parts = [ClipCollate(spec, rank=r, world_size=2, shard_by_video=True, video_ids=ids)(table) for r in (0, 1)]
    got = sorted(int(i) for p in parts for i in p["index"])
    assert got == list(range(len(ids)))  # every video on exactly one rank


def test_device_colour_jitter_matches_the_uint8_transform():
    """apply_jitter (float, on the device) and transforms.ColorJitter (uint8, on the CPU) draw the same
    parameters from the same generator and agree up to uint8 rounding."""
    from vidray.data.loader import apply_jitter
    from vidray.data.transforms import draw_jitter
    from vidray.data.transforms import ColorJitter

    imgs = np.random.default_rng(0).integers(0, 256, (3, 16, 16, 3), dtype=np.uint8)
    for seed in range(5):
        params = draw_jitter((0.4, 0.4, 0.4), np.random.default_rng(seed))
        ref = ColorJitter(0.4, 0.4, 0.4)({"imgs": imgs.copy()}, np.random.default_rng(seed))["imgs"]
        x = torch.from_numpy(imgs).permute(0, 3, 1, 2).float().div(255)[None]
        got = apply_jitter(x, torch.from_numpy(params)[None])[0].permute(0, 2, 3, 1).numpy() * 255
        assert np.abs(got - ref.astype(np.float32)).max() <= 3.0


# ---------------------------------------------------------------------------------- fast RGB path
def _reference_sample(row, spec: ClipSpec, seed: int) -> dict:
    """The RGB sample as the transform pipelines make it from whole decoded clips (the path the fast
    make_sample replaced): decode -> train_pipeline / eval_pipeline."""
    from vidray.data.loader import _eval_resize
    from vidray.data.transforms import eval_pipeline, train_pipeline

    rng = np.random.default_rng(seed)
    idx = sample_indices(row.frame_index, spec, rng)
    res = {"imgs": row.frames(idx), "flow": None}
    if spec.train:
        train_pipeline(spec.crop_size, scales=spec.scales, max_distort=spec.max_distort, flip_ratio=spec.flip_ratio,
                       color_jitter=spec.color_jitter, jitter_on_device=spec.jitter_on_device)(res, rng)  # fmt: skip
    else:
        eval_pipeline(spec.crop_size, short_side=_eval_resize(spec, res["imgs"].shape[1:3]))(res, rng)
    return res


@pytest.mark.parametrize("encoding", ["jpeg", "png"])
def test_fast_rgb_sample_is_bit_identical_to_the_pipeline(encoding):
    """make_sample's RGB path (decode into a reused buffer, crop-resize into the batch slot, flip in
    place) gives exactly the pipeline's pixels, crop box, flip and jitter, for training (jitter on the
    device or here), validation with and without a resize, and rows shorter than the clip."""
    from vidray.synth import periodic_texture

    rng = np.random.default_rng(0)
    frames = np.stack([periodic_texture(rng, 48, 64) for _ in range(10)])
    t = _row_table(frames)
    if encoding == "jpeg":
        t = t.set_column(t.column_names.index("frames"), "frames", pa.array([[encode_image(f) for f in frames]]))
        t = t.set_column(t.column_names.index("frame_encoding"), "frame_encoding", pa.array(["jpeg"]))
    [row] = list(iter_rows(t))
    specs = [
        ClipSpec(sampler="tsn", num_frames=4, crop_size=32, jitter_on_device=True, num_classes=3),
        ClipSpec(sampler="tsn", num_frames=4, crop_size=32, jitter_on_device=False),
        ClipSpec(sampler="tsn", num_frames=4, crop_size=40, color_jitter=None, max_distort=2),
        ClipSpec(sampler="tsn", num_frames=4, crop_size=32, train=False),
        ClipSpec(sampler="tsn", num_frames=4, crop_size=24, train=False, resize_short=36),
        ClipSpec(sampler="sequential", num_frames=14, crop_size=32, train=True, jitter_on_device=False),
    ]
    for spec in specs:
        spec = dataclasses.replace(spec, num_classes=3)
        for seed in range(6):
            ref = _reference_sample(row, spec, seed)
            got = make_sample(row, spec, np.random.default_rng(seed))
            np.testing.assert_array_equal(got["imgs"], ref["imgs"], err_msg=f"{spec} seed {seed}")
            assert got["flip"] == bool(ref.get("flip", False)) and tuple(got["crop_box"]) == tuple(ref["crop_box"])
            if spec.train and spec.color_jitter is not None and spec.jitter_on_device:
                np.testing.assert_array_equal(got["jitter"], ref["jitter"])
            else:
                assert "jitter" not in got
            slot = np.zeros((spec.clip_len, spec.crop_size, spec.crop_size, 3), np.uint8)
            again = make_sample(row, spec, np.random.default_rng(seed), out=slot)
            assert again["imgs"] is slot and np.array_equal(slot, ref["imgs"])


def test_simplejpeg_decodes_the_same_pixels_as_opencv():
    """imcodec decodes JPEG with simplejpeg into the caller's buffer: the same pixels as OpenCV."""
    import cv2

    from vidray.io.imcodec import decode_image
    from vidray.synth import periodic_texture

    rng = np.random.default_rng(1)
    for shape in [(48, 64), (37, 51), (256, 341)]:
        img = periodic_texture(rng, *shape)
        for gray in (False, True):
            src = cv2.cvtColor(img, cv2.COLOR_RGB2GRAY) if gray else img
            buf = encode_image(src, "jpeg", 90)
            ref = cv2.imdecode(np.frombuffer(buf, np.uint8), cv2.IMREAD_GRAYSCALE if gray else cv2.IMREAD_COLOR_RGB)
            np.testing.assert_array_equal(decode_image(buf, gray=gray), ref)
            out = np.empty_like(ref)
            assert decode_image(np.frombuffer(buf, np.uint8), gray=gray, out=out) is out
            np.testing.assert_array_equal(out, ref)
    with pytest.raises(ValueError):
        decode_image(encode_image(img), out=np.empty((10, 10, 3), np.uint8))


# ---------------------------------------------------------------------------------- input.decode_on: gpu
def test_gpu_decode_path_on_cpu_is_the_twin_of_the_cpu_path():
    """The decode_on=gpu code (collate_jpegs + decode_clips, here with device="cpu") gives the CPU path's
    samples: the same JPEG pixels, crop boxes, flips, jitter, labels; resized pixels within one grey
    level (bilinear in float vs OpenCV's 11-bit fixed point: ~13% of the values are one level off),
    exact where no resize is needed. (On a GPU nvjpeg's IDCT may add its own one-level differences.)"""
    from vidray.data.loader import collate_jpegs, decode_clips
    from vidray.synth import periodic_texture

    rng = np.random.default_rng(2)
    tables = []
    for v in range(3):
        frames = np.stack([periodic_texture(rng, 48, 64) for _ in range(6)])
        t = _row_table(frames, labels=(v,))
        t = t.set_column(t.column_names.index("frames"), "frames", pa.array([[encode_image(f) for f in frames]]))
        t = t.set_column(t.column_names.index("frame_encoding"), "frame_encoding", pa.array(["jpeg"]))
        tables.append(t.set_column(0, "video_id", pa.array([f"v{v}"])))
    table = pa.concat_tables(tables)
    specs = [ClipSpec(sampler="tsn", num_frames=4, crop_size=32, num_classes=3, jitter_on_device=True),
             ClipSpec(sampler="tsn", num_frames=4, crop_size=40, num_classes=3, color_jitter=None),
             ClipSpec(sampler="tsn", num_frames=4, crop_size=48, num_classes=3, train=False),
             ClipSpec(sampler="tsn", num_frames=4, crop_size=24, num_classes=3, train=False, resize_short=36)]
    for spec in specs:
        for seed in range(4):
            cpu = ClipCollate(spec, seed=seed)(table)
            jb = ClipCollate(dataclasses.replace(spec, decode_on="gpu"), seed=seed)(table)
            assert set(jb) >= {"jpeg", "jpeg_offsets", "plan", "label", "targets", "flip", "index"}
            for k in ("label", "targets", "flip", "index") + (("jitter",) if "jitter" in cpu else ()):
                assert torch.equal(cpu[k], jb[k]), (spec, k)
            imgs = decode_clips(jb, "cpu")
            assert imgs.shape == cpu["imgs"].shape and imgs.dtype == torch.uint8
            diff = (imgs.int() - cpu["imgs"].int()).abs()
            exact = not spec.train and spec.resize_short is None  # a 48 crop of a 48-high frame: no resize
            assert int(diff.max()) == 0 if exact else int(diff.max()) <= 1, (spec, int(diff.max()))
            assert float(diff.float().mean()) < 0.15, (spec, float(diff.float().mean()))  # measured 0.12-0.13
            x_cpu = normalize_batch(cpu, "rgb")
            x_dev = normalize_batch(jb, "rgb", device="cpu")
            assert x_dev.shape == x_cpu.shape and float((x_dev - x_cpu).abs().max()) < 0.03


def test_decode_on_gpu_is_rgb_only():
    """input.decode_on: gpu reaches the ClipSpec (jitter on the device) and refuses flow modalities."""
    from vidray.config import TrainConfig, load_config

    from vidray.recipe import clip_spec

    cfg = load_config(TrainConfig, None, ["input.decode_on=gpu", "sampler.num_frames=8"])
    assert cfg.input.decode_on == "gpu"
    spec = clip_spec(cfg, 3, True)  # what the train loop's ClipCollate gets: jitter left to the device
    assert spec.decode_on == "gpu" and spec.jitter_on_device
    with pytest.raises(ValueError, match="RGB frames only"):
        load_config(TrainConfig, None, ["input.decode_on=gpu", "input.modality=rgb+flow"])
