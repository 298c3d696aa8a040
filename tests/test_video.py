"""The reader on real encoded files: H.264, MPEG-4 in AVI, 1080p, odd sizes, rotation, bad files."""

import numpy as np
import pytest

from vidray.io.video import (
    VideoDecodeError, decode_cost, decode_frames, iter_frames, output_size, plan_decode, probe,
)
from vidray.synth import write_video


@pytest.mark.parametrize("name,codec,size,n", [
    ("h264_340x256", "h264", (340, 256), 300),
    ("mpeg4_avi", "mpeg4", (320, 240), 164),
    ("kinetics", "h264", (340, 256), 280),
])
def test_probe_real_files(sample_videos, name, codec, size, n):
    info = probe(str(sample_videos[name]))
    assert info.codec == codec and (info.width, info.height) == size and info.num_frames == n
    assert info.timestamps[0] == 0 and np.all(np.diff(info.timestamps) > 0)
    assert info.keyframes[0] == 0
    assert abs(info.duration_s - n / info.fps) < 0.1


@pytest.mark.parametrize("name", ["h264_340x256", "mpeg4_avi", "kinetics"])
def test_seek_and_sequential_give_identical_frames(sample_videos, name):
    path = str(sample_videos[name])
    info = probe(path)
    idx = np.unique(np.linspace(0, info.num_frames - 1, 9).astype(int))
    every, _ = decode_frames(path, np.arange(info.num_frames), info=info, strategy="sequential", size=(64, 48))
    for strategy in ("sequential", "seek", "auto"):
        frames, got = decode_frames(path, idx, info=info, strategy=strategy, size=(64, 48))
        assert got.tolist() == idx.tolist()
        assert frames.shape == (len(idx), 48, 64, 3)
        np.testing.assert_array_equal(frames, every[idx])


def test_decord_backend_matches_pyav(sample_videos):
    path = str(sample_videos["h264_340x256"])
    idx = [0, 37, 150, 299]
    a, _ = decode_frames(path, idx, size=(85, 64))
    b, _ = decode_frames(path, idx, size=(85, 64), backend="decord")
    assert a.shape == b.shape
    assert np.abs(a.astype(int) - b.astype(int)).mean() < 3  # same frames, different scalers


def test_rotation_metadata_is_applied(sample_videos):
    path = str(sample_videos["rotated"])
    info = probe(path)
    assert info.rotation == 90 and (info.width, info.height) == (32, 64)
    frame = decode_frames(path, [0], info=info)[0][0]
    assert frame.shape == (64, 32, 3)
    # stored: white band on the left, red band on top; turned 90 degrees counter-clockwise for display
    assert frame[-8:, :].mean() > 200  # left band is now at the bottom
    assert frame[:, :4, 0].mean() > 200 and frame[:, :4, 1].mean() < 60  # top red band is now on the left
    assert frame[:8, 8:].mean() < 60
    assert decode_frames(path, [0], info=info, backend="decord")[0].shape == (1, 64, 32, 3)


def test_1080p_and_odd_sizes(tmp_path):
    rng = np.random.default_rng(0)
    for (w, h) in [(1920, 1080), (322, 182)]:
        frames = rng.integers(0, 255, (3, h, w, 3), dtype=np.uint8)
        path = tmp_path / f"v{w}x{h}.mp4"
        write_video(path, frames, fps=30)
        info = probe(str(path))
        assert (info.width, info.height, info.num_frames) == (w, h, 3)
        size = output_size(w, h, short_side=256)
        out, _ = decode_frames(str(path), [0, 2], size=size, info=info)
        assert out.shape == (2, size[1], size[0], 3) and min(size) == 256


def test_output_size_keeps_aspect():
    assert output_size(1920, 1080, 256) == (455, 256)
    assert output_size(240, 320, 256) == (256, 341)
    assert output_size(1920, 1080, 256, max_long_side=320) == (320, 180)
    assert output_size(33, 17, None) == (33, 17)


def test_plan_seeks_only_when_cheaper():
    keys = np.arange(0, 300, 30)  # GOP 30
    sparse = np.arange(0, 300, 30) + 5
    plan = plan_decode(sparse, keys, "auto")
    assert sum(s >= 0 for s, _ in plan) == 9  # seek to every keyframe after the first
    assert decode_cost(plan) < decode_cost(plan_decode(sparse, keys, "sequential"))
    long_gop = np.array([0, 250])
    assert all(s < 0 for s, _ in plan_decode(np.arange(0, 240, 24), long_gop, "auto"))
    dense = np.arange(300)
    assert all(s < 0 for s, _ in plan_decode(dense, keys, "auto"))


def test_iter_frames_streams_in_order(sample_videos):
    got = [i for i, _ in iter_frames(str(sample_videos["mpeg4_avi"]), [50, 3, 3, 10], size=(32, 24))]
    assert got == [3, 10, 50]


def test_bad_files_raise_clear_errors(tmp_path, sample_videos):
    empty = tmp_path / "empty.mp4"
    empty.write_bytes(b"")
    text = tmp_path / "text.mp4"
    text.write_text("not a video\n" * 20)
    data = sample_videos["h264_340x256"].read_bytes()
    trunc = tmp_path / "trunc.mp4"
    trunc.write_bytes(data[: len(data) // 2])
    avi = sample_videos["mpeg4_avi"].read_bytes()
    trunc_avi = tmp_path / "trunc.avi"
    trunc_avi.write_bytes(avi[: len(avi) // 2])
    cases = {
        empty: "empty file", text: "cannot open container", trunc: "cannot open container",
        trunc_avi: "truncated", tmp_path / "missing.mp4": "file not found", tmp_path: "directory",
    }
    for path, reason in cases.items():
        with pytest.raises(VideoDecodeError) as e:
            probe(str(path))
        assert reason in str(e.value) and str(path) in str(e.value)


# ------------------------------------------------------------------------------------------------
# the skip reader (execution.seek: auto) against the counting reader: identical frames
# ------------------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def footage(tmp_path_factory):
    """Generated camera-like footage: GOP 250 with B-pyramid (x264 medium: more reference frames),
    GOP 250 without B-frames, and open GOPs (leading B-frames reference the previous GOP)."""
    from vidray.synth import write_footage

    d = tmp_path_factory.mktemp("footage")
    files = {"g250_medium": dict(frames=300, gop=250, preset="medium"), "g250_nob": dict(frames=300, gop=250, bframes=0),
             "open_gop": dict(frames=120, gop=30, open_gop=True)}
    out = {}
    for i, (name, kw) in enumerate(files.items()):
        out[name] = d / f"{name}.mp4"
        write_footage(out[name], 192, 144, seed=i, **kw)
    return out


def _patterns(info) -> dict[str, np.ndarray]:
    from vidray.config import SamplingConfig
    from vidray.sampling import sample_frames

    n = info.num_frames
    around_keys = np.concatenate([k + np.array([-1, 0, 1]) for k in info.keyframes] + [np.array([n - 1])])
    return {
        "fps1": sample_frames(info.timestamps, SamplingConfig(mode="fps", fps=1.0)),
        "tsn8": sample_frames(info.timestamps, SamplingConfig(mode="segments", num_segments=8)),
        "random": np.random.default_rng(0).choice(n, min(25, n), replace=False),
        "around_keyframes": np.clip(around_keys, 0, n - 1),
        "all": np.arange(n),
    }


def _skip_vs_counting(path: str, seek_frames) -> None:
    from vidray.io.video import _iter_pyav_counting, _iter_pyav_skip

    info = probe(path)
    assert info.pts_identify
    for name, idx in _patterns(info).items():
        want = np.unique(idx)
        ref = list(_iter_pyav_counting(path, want, (64, 48), info, "sequential"))
        stats: dict = {}
        got = list(_iter_pyav_skip(path, want, (64, 48), info, seek_frames=seek_frames, stats=stats))
        assert [i for i, _ in got] == want.tolist(), name
        for (_, a), (_, b) in zip(ref, got):
            np.testing.assert_array_equal(a, b, err_msg=f"{path} {name}")
        assert stats["sent"] <= info.num_frames + 3 * len(info.keyframes)


@pytest.mark.parametrize("name", ["h264_340x256", "kinetics", "rotated"])
@pytest.mark.parametrize("seek_frames", [None, 0])
def test_skip_reader_identical_on_real_files(sample_videos, name, seek_frames):
    _skip_vs_counting(str(sample_videos[name]), seek_frames)


@pytest.mark.parametrize("name", ["g250_medium", "g250_nob", "open_gop"])
@pytest.mark.parametrize("seek_frames", [None, 0])
def test_skip_reader_identical_on_generated_footage(footage, name, seek_frames):
    _skip_vs_counting(str(footage[name]), seek_frames)


def test_skip_reader_decodes_less(footage):
    """TSN-8 on GOP 250: only the GOPs holding a wanted frame are decoded, up to the last wanted frame."""
    from vidray.io.video import _iter_pyav_skip, skip_decode_cost

    path = str(footage["g250_medium"])
    info = probe(path)
    want = np.array([20, 100, 260])
    stats: dict = {}
    assert [i for i, _ in _iter_pyav_skip(path, want, None, info, stats=stats)] == [20, 100, 260]
    assert stats["gops"] == 2 and stats["sent"] <= skip_decode_cost(want, info.keyframes) + 3 < info.num_frames


def test_auto_uses_counting_reader_where_pts_cannot_identify_frames(sample_videos, monkeypatch):
    """AVI with packed B-frames: decoded frames carry out-of-order pts, so the counting reader runs."""
    import vidray.io.video as video

    info = probe(str(sample_videos["mpeg4_avi"]))
    assert not info.pts_identify
    monkeypatch.setattr(video, "_iter_pyav_skip", lambda *a, **k: pytest.fail("skip reader used on an AVI"))
    frames, got = decode_frames(str(sample_videos["mpeg4_avi"]), [3, 80, 150], info=info, size=(32, 24))
    assert got.tolist() == [3, 80, 150]


def test_skip_reader_falls_back_mid_stream(sample_videos, monkeypatch):
    """When the skip reader cannot identify a frame, the counting reader decodes the rest: same output."""
    import vidray.io.video as video

    path = str(sample_videos["kinetics"])
    info = probe(path)
    idx = np.array([5, 60, 130, 200, 270])
    every, _ = decode_frames(path, idx, info=info, strategy="sequential", size=(64, 48))
    real = video._iter_pyav_skip

    def flaky(*a, **k):
        for n, item in enumerate(real(*a, **k)):
            if n == 2:
                raise video._SkipUnsupported("test")
            yield item

    monkeypatch.setattr(video, "_iter_pyav_skip", flaky)
    frames, got = decode_frames(path, idx, info=info, size=(64, 48))
    assert got.tolist() == idx.tolist()
    np.testing.assert_array_equal(frames, every)


def test_skip_decode_cost():
    from vidray.io.video import skip_decode_cost

    keys = np.array([0, 250, 500])
    assert skip_decode_cost(np.array([10, 20]), keys) == 21
    assert skip_decode_cost(np.array([260, 499, 510]), keys) == 250 + 11
    assert skip_decode_cost(np.array([], np.int64), keys) == 0
