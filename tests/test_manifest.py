import json
import os

import pytest

from vidray.io.manifest import read_manifest, resolve_path


def test_csv_names_multilabel_splits_and_default_ids(tmp_path):
    (tmp_path / "m.csv").write_text(
        "path,label,split\nvids/a.mp4,run,train\nvids/b.avi,jump|run,test\nvids/c.mp4,[\"jump\"],val\n"
    )
    m = read_manifest(tmp_path / "m.csv")
    assert m.classes == ["jump", "run"]
    assert [e.labels for e in m.entries] == [[1], [0, 1], [0]]
    assert [e.split for e in m.entries] == ["train", "test", "val"]
    assert [e.video_id for e in m.entries] == ["vids/a", "vids/b", "vids/c"]
    assert m.entries[0].open_path == os.path.join(str(tmp_path), "vids/a.mp4")
    assert len(m.sha256) == 64


def test_jsonl_integer_labels_and_explicit_ids(tmp_path):
    lines = [{"path": "x.mp4", "label": 3, "video_id": "X"}, {"path": "y.mp4", "labels": [0, 2]}]
    (tmp_path / "m.jsonl").write_text("\n".join(json.dumps(x) for x in lines))
    m = read_manifest(tmp_path / "m.jsonl")
    assert m.classes == ["0", "1", "2", "3"]
    assert [e.labels for e in m.entries] == [[3], [0, 2]]
    assert m.entries[0].video_id == "X"


def test_folder_tree(tmp_path):
    for c, names in {"Walk": ["1.mp4", "2.avi"], "Run": ["3.mp4", "notes.txt"]}.items():
        (tmp_path / c).mkdir()
        for n in names:
            (tmp_path / c / n).write_bytes(b"x")
    m = read_manifest(tmp_path)
    assert m.classes == ["Run", "Walk"]
    assert sorted((e.video_id, e.labels[0]) for e in m.entries) == [("Run/3", 0), ("Walk/1", 1), ("Walk/2", 1)]


def test_ucf101_split_lists(tmp_path):
    (tmp_path / "classInd.txt").write_text("1 ApplyEyeMakeup\n2 Archery\n")
    (tmp_path / "trainlist01.txt").write_text(
        "ApplyEyeMakeup/v_ApplyEyeMakeup_g08_c01.avi 1\nArchery/v_Archery_g08_c01.avi 2\n")
    (tmp_path / "testlist01.txt").write_text("Archery/v_Archery_g01_c01.avi\n")
    m = read_manifest(tmp_path / "trainlist01.txt", root=tmp_path / "UCF-101")
    assert m.classes == ["ApplyEyeMakeup", "Archery"]
    assert [(e.split, e.labels) for e in m.entries] == [("train", [0]), ("train", [1]), ("test", [1])]
    assert m.entries[2].open_path.endswith("UCF-101/Archery/v_Archery_g01_c01.avi")


def test_paths_escaping_the_root_are_refused(tmp_path):
    root = tmp_path / "root"
    root.mkdir()
    (tmp_path / "m.csv").write_text(
        f"path,label\nok.mp4,a\n../secret.mp4,a\nsub/../../x.mp4,a\n{tmp_path}/abs.mp4,a\n")
    m = read_manifest(tmp_path / "m.csv", root=root)
    assert [e.status for e in m.entries] == ["", "failed", "failed", "failed"]
    assert all(e.error_type == "PathOutsideRoot" for e in m.entries[1:])
    assert "escapes the root" in m.entries[1].error
    assert resolve_path("s3://bucket/v.mp4", str(root), True) == ("s3://bucket/v.mp4", "")
    assert resolve_path("v.mp4", "s3://bucket/videos", True)[0] == "s3://bucket/videos/v.mp4"
    assert resolve_path("../v.mp4", "s3://bucket/videos", True)[1]


def test_duplicate_ids_are_skipped_and_bad_manifests_named(tmp_path):
    (tmp_path / "m.csv").write_text("path,label,video_id\na.mp4,x,same\nb.mp4,x,same\nc.mp4,,other\n")
    m = read_manifest(tmp_path / "m.csv")
    assert [e.status for e in m.entries] == ["", "skipped", "failed"]
    assert m.entries[1].error_type == "DuplicateVideoId" and "row 0" in m.entries[1].error
    assert m.entries[2].error_type == "MissingLabel"
    (tmp_path / "bad.csv").write_text("file,label\na.mp4,x\n")
    with pytest.raises(ValueError, match="bad.csv|'path' column"):
        read_manifest(tmp_path / "bad.csv")
    with pytest.raises(ValueError, match="does not exist"):
        read_manifest(tmp_path / "nope.csv")


def test_non_utf8_file_names_survive(tmp_path):
    raw = os.fsencode(str(tmp_path)) + b"/caf\xe9.mp4"
    (tmp_path / "m.csv").write_bytes(b"path,label\ncaf\xe9.mp4,a\n")
    m = read_manifest(tmp_path / "m.csv")
    e = m.entries[0]
    assert os.fsencode(e.open_path) == raw
    assert e.path == "caf\\xe9.mp4"
    e.path.encode("utf-8")  # storable as an Arrow string


def test_fcvid_and_sports1m_converters_produce_readable_manifests(tmp_path):
    import io

    from vidray.io.convert import fcvid_rows, sports1m_rows, write_csv

    buf = io.StringIO()
    write_csv(sports1m_rows(["https://www.youtube.com/watch?v=abc123 4,17\n", "\n"], "train"), buf)
    (tmp_path / "s.csv").write_text(buf.getvalue())
    m = read_manifest(tmp_path / "s.csv")
    assert m.entries[0].video_id == "abc123" and m.classes[m.entries[0].labels[0]] == "4"
    assert sorted(m.classes[i] for i in m.entries[0].labels) == ["17", "4"]
    buf = io.StringIO()
    write_csv(fcvid_rows(["basketball/v_001.mp4 train\n", "cooking/x.mp4 test\n"]), buf)
    (tmp_path / "f.csv").write_text(buf.getvalue())
    m = read_manifest(tmp_path / "f.csv")
    assert m.classes == ["basketball", "cooking"] and [e.split for e in m.entries] == ["train", "test"]
    with pytest.raises(ValueError, match="line 1"):
        list(fcvid_rows(["nonsense\n"]))


def test_header_only_and_misspelt_columns_are_refused(tmp_path):
    """A manifest that would ingest nothing, or make every row fail, is a usage error naming the problem."""
    (tmp_path / "empty.csv").write_text("path,label,split\n")
    with pytest.raises(ValueError, match="empty.csv: no entries"):
        read_manifest(tmp_path / "empty.csv")
    (tmp_path / "typo.csv").write_text("path,lable,split\na.mp4,x,train\n")
    with pytest.raises(ValueError, match="'lable'") as e:
        read_manifest(tmp_path / "typo.csv")
    assert "label" in str(e.value) and "\n" not in str(e.value)
    (tmp_path / "nolabel.jsonl").write_text('{"path": "a.mp4", "lable": 1}\n')
    with pytest.raises(ValueError, match="'lable'"):
        read_manifest(tmp_path / "nolabel.jsonl")
