"""`vidray inspect`: a dataset's counts, failures and a self-contained HTML page (parsed here: every image
decodes, the contact sheet has frames and coloured flow per class, the failures table names the bad
file); a run folder's best and last metrics."""

from __future__ import annotations

import base64
import json
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from test_train_data import fast_train_overrides, tiny_dataset

from vidray.cli import main as cli_main


class _Page(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.ids: set[str] = set()
        self.imgs: list[dict[str, str]] = []
        self.text: list[str] = []
        self.links: list[str] = []

    def handle_starttag(self, tag: str, attrs: list) -> None:
        a = dict(attrs)
        if "id" in a:
            self.ids.add(a["id"])
        if tag == "img":
            self.imgs.append(a)
        if tag in ("link", "script") and (a.get("href") or a.get("src")):
            self.links.append(a.get("href") or a.get("src"))

    def handle_data(self, data: str) -> None:
        self.text.append(data)


@pytest.fixture(scope="module")
def data_with_a_failure(tmp_path_factory, ray_local) -> Path:
    """The tiny dataset plus one more ingest with a broken file (a text file named .mp4)."""
    from vidray.config import IngestConfig, load_config
    from vidray.ingest import run_ingest

    base = tiny_dataset(tmp_path_factory).parent
    corpus = base / "corpus"
    (corpus / "videos" / "broken.mp4").write_text("not a video")
    rows = (corpus / "manifest.csv").read_text().rstrip("\n") + "\nvideos/broken.mp4,up,train,broken\n"
    (base / "manifest_bad.csv").write_text(rows.replace("videos/", "corpus/videos/"))
    out = tmp_path_factory.mktemp("inspect") / "data"
    cfg = load_config(IngestConfig, None, ["resize.short_side=32", "sampling.mode=all", "flow.enabled=true",
                                           "flow.algorithm=dis_fast", "output.videos_per_task=9"])  # fmt: skip
    run_ingest(base / "manifest_bad.csv", out, cfg=cfg)
    return out


def test_inspect_dataset_json_and_html(data_with_a_failure, tmp_path, capsys):
    import cv2

    page = tmp_path / "page.html"
    assert cli_main(["inspect", str(data_with_a_failure), "--json", "--html", str(page)]) == 0
    out = capsys.readouterr().out
    rep = json.loads(out.strip().splitlines()[-1])
    assert rep["entries"] == 25 and rep["by_status"] == {"ok": 24, "failed": 1}
    assert sum(c.get("train", 0) for c in rep["by_class"].values()) == 12
    assert "VideoDecodeError" in rep["failures"] and rep["failures"]["VideoDecodeError"]["count"] == 1
    assert "broken" in rep["failures"]["VideoDecodeError"]["examples"][0]["video_id"]
    assert rep["flow"]["enabled"] and rep["frames"] == 24 * 8
    assert "VideoDecodeError" in out and "broken.mp4" in out  # the text summary names the failure

    p = _Page()
    p.feed(page.read_text())
    assert {"summary", "classes", "contact-sheet", "failures", "failures-table"} <= p.ids
    assert p.links == []  # self-contained: nothing fetched from elsewhere
    srcs = [i["src"] for i in p.imgs]
    assert srcs and all(s.startswith("data:image/jpeg;base64,") for s in srcs)
    decoded = [cv2.imdecode(np.frombuffer(base64.b64decode(s.split(",", 1)[1]), np.uint8), cv2.IMREAD_COLOR)
               for s in srcs]  # fmt: skip
    assert all(d is not None and d.size for d in decoded)
    alts = [i.get("alt", "") for i in p.imgs]
    assert any("flow colour key" == a for a in alts)
    classes = rep["by_class"]
    for name in classes:  # every class: frames of its videos and their flow
        assert name in "".join(p.text)
    assert sum(" flow " in a for a in alts) >= len(classes) and sum(" frame " in a for a in alts) >= len(classes)
    assert "broken.mp4" in "".join(p.text)


@pytest.mark.timeout(300)
def test_inspect_run_best_and_last(tmp_path_factory, ray_local, tmp_path, capsys):
    from vidray.config import TrainConfig, load_config
    from vidray.train.trainer import run_training

    data = tiny_dataset(tmp_path_factory)
    run = tmp_path / "run"
    cfg = load_config(TrainConfig, None, fast_train_overrides("model.name=single_frame"))
    run_training(data, cfg, workers=0, out=run)
    capsys.readouterr()
    assert cli_main(["inspect", str(run), "--json"]) == 0
    out = capsys.readouterr().out
    rep = json.loads(out.strip().splitlines()[-1])
    assert rep["status"] == "FINISHED" and rep["epochs_done"] == rep["epochs"] == 2
    assert rep["best"]["epoch"] in (1, 2) and "val_top1" in rep["best"] and "train_loss" in rep["last"]
    assert any(pl.endswith("curves.png") for pl in rep["plots"]) and "curves.png" in out
    with pytest.raises(SystemExit):
        cli_main(["inspect"])  # usage: argparse's own message, exit 2


@pytest.mark.skipif(not Path("/usr/bin/chromium").exists(), reason="Debian's chromium is not installed here")
def test_inspect_page_renders_in_headless_chromium(data_with_a_failure, tmp_path):
    """Where a real browser is installed (`apt-get install chromium`), the page renders with its images."""
    import subprocess

    import cv2

    page, shot = tmp_path / "page.html", tmp_path / "page.png"
    assert cli_main(["inspect", str(data_with_a_failure), "--html", str(page)]) == 0
    flags = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
             "--disable-background-networking", "--disable-component-update", "--disable-sync",
             f"--user-data-dir={tmp_path / 'profile'}"]  # fmt: skip
    dom = subprocess.run(["/usr/bin/chromium", *flags, "--dump-dom", page.as_uri()], capture_output=True,
                         text=True, timeout=120).stdout  # fmt: skip
    assert "Contact sheet" in dom and "broken.mp4" in dom
    subprocess.run(["/usr/bin/chromium", *flags, f"--screenshot={shot}", "--window-size=1000,1400", page.as_uri()],
                   capture_output=True, timeout=120)  # fmt: skip
    img = cv2.imread(str(shot))
    assert img is not None and img.shape[:2] == (1400, 1000)
    colourful = (img.max(axis=2).astype(int) - img.min(axis=2)) > 60  # frames and flow, not just text
    assert colourful.mean() > 0.02
