"""Tiny converters from the FCVID and Sports-1M list files to vidray's CSV manifest.

These follow the lists as published (check the first lines of your copy; both corpora circulate in
several versions):

* Sports-1M (``original/train_partition.txt`` / ``test_partition.txt`` of the sports-1m-dataset
  release): one line per video, ``<youtube url> <label>[,<label>...]`` with 0-based class indices.
  Videos are expected as ``<video_dir>/<youtube id>.mp4`` (what downloaders write).
* FCVID (``FCVID_VideoName_TrainTestSplit.txt``): one line per video, ``<class>/<file> <train|test>``
  (the class folder name is the label). Multi-label annotations, if you have them, go in a JSONL manifest.

Usage::

    python -m vidray.io.convert sports1m train_partition.txt --split train --video-dir videos > s1m.csv
    python -m vidray.io.convert fcvid FCVID_VideoName_TrainTestSplit.txt > fcvid.csv
"""

from __future__ import annotations

import argparse
import csv
import sys
from typing import Iterable, TextIO


def sports1m_rows(lines: Iterable[str], split: str, video_dir: str = "videos") -> Iterable[dict]:
    """Manifest rows from Sports-1M partition lines (``url label,label``); labels joined with ``|``."""
    for n, line in enumerate(lines, 1):
        parts = line.strip().split()
        if not parts:
            continue
        if len(parts) != 2:
            raise ValueError(f"sports1m line {n}: expected '<url> <labels>', got {line.strip()!r}")
        url, labels = parts
        vid = url.split("v=")[-1].split("&")[0]
        yield {"path": f"{video_dir}/{vid}.mp4", "label": "|".join(labels.split(",")), "split": split,
               "video_id": vid}


def fcvid_rows(lines: Iterable[str]) -> Iterable[dict]:
    """Manifest rows from FCVID split lines (``class/file split``)."""
    for n, line in enumerate(lines, 1):
        parts = line.strip().split()
        if not parts:
            continue
        if len(parts) != 2 or "/" not in parts[0]:
            raise ValueError(f"fcvid line {n}: expected '<class>/<file> <train|test>', got {line.strip()!r}")
        path, split = parts
        yield {"path": path, "label": path.split("/")[0], "split": split, "video_id": path.rsplit(".", 1)[0]}


def write_csv(rows: Iterable[dict], out: TextIO) -> int:
    w = csv.DictWriter(out, fieldnames=["path", "label", "split", "video_id"])
    w.writeheader()
    n = 0
    for r in rows:
        w.writerow(r)
        n += 1
    return n


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("corpus", choices=["sports1m", "fcvid"])
    ap.add_argument("list_file")
    ap.add_argument("--split", default="train", help="sports1m: split of this partition file")
    ap.add_argument("--video-dir", default="videos", help="sports1m: folder of <id>.mp4 files")
    a = ap.parse_args(argv)
    with open(a.list_file) as f:
        rows = sports1m_rows(f, a.split, a.video_dir) if a.corpus == "sports1m" else fcvid_rows(f)
        write_csv(rows, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
