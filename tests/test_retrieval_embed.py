"""``vidray embed`` / ``search`` / ``dedup`` end to end on a real local Ray: a small synthetic corpus
plus a cropped, re-encoded copy of one test video placed in the training split."""

from __future__ import annotations

import csv
import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from vidray.cli import main as cli_main

pytestmark = pytest.mark.slow  # one ingest + one embedding run on Ray (~40 s on 2 cores)

EMBED_SETTINGS = ["model.name=resnet18", "model.layer=res3", "input.short_side=64", "descriptor.k=16",
                  "descriptor.pca_dim=32", "fit.max_frames=200", "execution.batch_size=16"]
ORIGINAL = "circle_right_0000"
COPY = "copy_of_circle_right_0000"


def _copy_video(src, dst) -> None:
    """Crop 80% of ``src`` at an offset and re-encode it at a low quality (another bitrate)."""
    from vidray.io.video import decode_frames, probe
    from vidray.synth import write_video

    info = probe(str(src))
    frames, _ = decode_frames(str(src), np.arange(info.num_frames), info=info)
    h, w = frames.shape[1:3]
    crop = frames[:, 4:4 + int(h * 0.8) // 2 * 2, 2:2 + int(w * 0.8) // 2 * 2]
    write_video(dst, crop, fps=12, crf=38)


@pytest.fixture(scope="module")
def corpus(ray_local, tmp_path_factory):
    from vidray.config import IngestConfig, load_config
    from vidray.ingest import run_ingest
    from vidray.retrieval.config import EmbedConfig
    from vidray.retrieval.embed import run_embed
    from vidray.synth import make_corpus

    root = tmp_path_factory.mktemp("retrieval")
    manifest = make_corpus(root / "corpus", num_videos=12, kind="appearance_motion", width=64, height=64,
                           frames=16, seed=3)
    _copy_video(root / "corpus" / "videos" / "circle_right" / f"{ORIGINAL}.mp4", root / "corpus" / "copy.mp4")
    with open(manifest, "a", newline="") as f:
        csv.writer(f).writerow(["copy.mp4", "circle_right", "train", COPY])  # its original is in test
    data = root / "data"
    run_ingest(manifest, data, cfg=load_config(IngestConfig, None, ["sampling.fps=4", "resize.short_side=64"]))
    emb = root / "emb"
    summary = run_embed(str(data), str(emb), load_config(EmbedConfig, None, EMBED_SETTINGS))
    return {"root": root, "data": data, "emb": emb, "summary": summary}


def test_embed_writes_frames_videos_and_a_manifest(corpus):
    from vidray.io.reader import IngestDataset

    s, emb = corpus["summary"], corpus["emb"]
    ingest_frames = sum(IngestDataset(corpus["data"]).status()["num_frames"].to_pylist())
    assert s.videos == 13 and s.failed == 0 and s.frames == ingest_frames == s.frames_this_run
    man = json.loads((emb / "manifest.json").read_text())
    assert man["state"] == "complete" and man["model"] == "resnet18" and man["layer"] == "res3"
    assert man["descriptor"] == "vlad" and man["k"] == 16 and man["dim"] == 32
    assert man["data"]["data_hash"] == IngestDataset(corpus["data"]).meta["data_hash"]
    frames = pq.read_table(emb / "frames")
    assert frames.schema.field("vector").type.list_size == 32 and frames.num_rows == ingest_frames
    v = np.asarray(frames["vector"].combine_chunks().flatten()).reshape(-1, 32)
    np.testing.assert_allclose(np.linalg.norm(v, axis=1), 1.0, atol=1e-5)
    with np.load(emb / "encoder.npz", allow_pickle=False) as z:
        assert z["centroids"].shape == (16, 128) and z["pca_components"].shape == (16 * 128, 32)
    # one frames part and one videos part per clips part of the ingest, same names
    assert sorted(p.name for p in (emb / "videos").iterdir()) == sorted(p.name for p in (corpus["data"] / "clips").iterdir())


def test_second_run_does_nothing_and_other_settings_are_refused(corpus):
    from vidray.config import load_config
    from vidray.retrieval.config import EmbedConfig
    from vidray.retrieval.embed import run_embed

    before = {p.name: p.stat().st_mtime_ns for p in (corpus["emb"] / "frames").iterdir()}
    s = run_embed(str(corpus["data"]), str(corpus["emb"]), load_config(EmbedConfig, None, EMBED_SETTINGS))
    assert s.parts_this_run == 0 and s.videos_this_run == 0 and s.videos == 13
    assert {p.name: p.stat().st_mtime_ns for p in (corpus["emb"] / "frames").iterdir()} == before
    with pytest.raises(ValueError, match="other settings"):
        run_embed(str(corpus["data"]), str(corpus["emb"]),
                  load_config(EmbedConfig, None, EMBED_SETTINGS + ["descriptor.k=8"]))


def test_resume_after_a_lost_part(corpus):
    from vidray.config import load_config
    from vidray.retrieval.config import EmbedConfig
    from vidray.retrieval.embed import run_embed

    emb = corpus["root"] / "emb_resume"
    cfg = load_config(EmbedConfig, None, EMBED_SETTINGS)
    import shutil

    shutil.copytree(corpus["emb"], emb)
    victim = sorted((emb / "videos").iterdir())[0]
    victim.unlink()  # as if the run died between the frames and the videos commit of this part
    (emb / "frames" / ".part-x.parquet.123.tmp").write_bytes(b"partial")
    s = run_embed(str(corpus["data"]), str(emb), cfg)
    assert s.parts_this_run == 1 and s.videos == 13 and (emb / "videos" / victim.name).exists()
    assert not list((emb / "frames").glob(".*.tmp"))
    a = pq.read_table(emb / "frames").sort_by([("video_id", "ascending"), ("frame_index", "ascending")])
    b = pq.read_table(corpus["emb"] / "frames").sort_by([("video_id", "ascending"), ("frame_index", "ascending")])
    assert a["video_id"].to_pylist() == b["video_id"].to_pylist()  # exactly once
    np.testing.assert_allclose(np.asarray(a["vector"].combine_chunks().flatten()),
                               np.asarray(b["vector"].combine_chunks().flatten()), atol=1e-5)


def test_search_by_video_id_returns_itself_first(corpus, capsys):
    assert cli_main(["search", str(corpus["emb"]), ORIGINAL, "--k", "3", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["kind"] == "video_id" and len(res["hits"]) == 3
    top = res["hits"][0]
    assert top["video_id"] == ORIGINAL and top["score"] == pytest.approx(1.0, abs=1e-4)
    assert top["frames"][0]["score"] == pytest.approx(1.0, abs=1e-4)  # each frame matches itself
    assert res["hits"][1]["video_id"] == COPY  # the copy is its nearest other video


def test_search_by_video_file_and_by_image(corpus, capsys, tmp_path):
    import cv2

    from vidray.io.video import decode_frames

    assert cli_main(["search", str(corpus["emb"]), str(corpus["root"] / "corpus" / "copy.mp4"), "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["kind"] == "video" and res["hits"][0]["video_id"] == COPY
    assert {h["video_id"] for h in res["hits"][:2]} == {COPY, ORIGINAL}
    frames, _ = decode_frames(str(corpus["root"] / "corpus" / "videos" / "square_up" / "square_up_0000.mp4"), [5])
    png = tmp_path / "frame.png"
    cv2.imwrite(str(png), cv2.cvtColor(frames[0], cv2.COLOR_RGB2BGR))
    assert cli_main(["search", str(corpus["emb"]), str(png), "--k", "2", "--json"]) == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["kind"] == "image" and res["hits"][0]["video_id"] == "square_up_0000"


def test_dedup_finds_the_copy_and_flags_the_cross_split_group(corpus, capsys):
    assert cli_main(["dedup", str(corpus["emb"]), "--json"]) == 0
    out = capsys.readouterr().out.strip().splitlines()
    res = json.loads(out[-1])
    assert set(res) == {"groups", "cross_split"}
    assert res["groups"] == [sorted([ORIGINAL, COPY])]  # the copy, and nothing else, at the default threshold
    assert res["cross_split"] == res["groups"]  # test original, train copy: leakage
    assert any("CROSS-SPLIT" in line for line in out)


def test_usage_errors_are_one_line_with_exit_code_2(corpus, capsys, tmp_path):
    assert cli_main(["search", str(corpus["emb"]), "no_such_video"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and err[0].startswith("vidray search: error: QUERY 'no_such_video'")
    assert cli_main(["dedup", str(tmp_path / "missing")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an embeddings folder" in err[0]
    assert cli_main(["embed", str(tmp_path / "missing"), "--out", str(tmp_path / "e")]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "not an ingest output" in err[0]
    assert cli_main(["embed", str(corpus["data"]), "--out", str(tmp_path / "e"), "--set", "descriptor.k=1"]) == 2
    assert "descriptor.k" in capsys.readouterr().err
