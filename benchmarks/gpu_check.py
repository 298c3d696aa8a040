"""GPU check (issue 12 item 4): train and eval clips/s of the paper models, and the training loop's
data-wait fraction with the sampled JPEGs decoded on the CPU vs on the GPU, on ONE device, in one run.

Three measurements (random init, ``pretrained`` weights off: no network needed):

* ``train_clips_per_s``: forward + loss + backward + optimizer step of the recipes' models, built by
  :func:`vidray.recipe.build_model` from ``configs/recipes/fcvid_tdn_resnet50.yaml`` (TDN ResNet-50,
  5 segments, BCE, SGD) and ``configs/recipes/ucf101_gru_rcn_rgb.yaml`` (GRU-RCN VGG-16, 10-frame clips,
  frozen backbone, CE, Adam), 224x224 crops, the recipes' batch sizes, on random input already on the
  device, in bf16 autocast on CUDA (vidray's ``_autocast``; on a CPU device vidray trains in fp32, and
  so does this check). Median over ``--steps`` steps after warm-up, each step synchronised.
* ``eval_clips_per_s``: the same models in eval mode under ``torch.inference_mode`` + autocast,
  batches of twice the training batch.
* ``data_wait``: TDN ResNet-50 trained on real loader output: a small synthetic corpus (H.264,
  640x360) goes through vidray's ingest UDF (:func:`vidray.ingest.process_video`, every frame, short
  side 256, JPEG q90) into Arrow rows in memory; ``--loader-threads`` threads (default 1: one CPU core
  feeding the GPU) run the loader's collate (:class:`vidray.data.loader.ClipCollate`) ahead of the
  step with a prefetch queue of 2 batches, as Ray Data's ``iter_torch_batches`` prefetch threads do;
  the step is ``_train_epoch``'s: :func:`normalize_batch` (which, with ``input.decode_on=gpu``,
  decodes the JPEGs on the device with nvjpeg) + forward + loss + backward + step. The fraction is
  ``wait / (wait + step)``, the time the loop blocks on the next batch over the loop's time, for
  ``decode_on=cpu`` and ``decode_on=gpu``. Ray Data's read and transfer are not in it (the rows are
  already in memory): it isolates the decode + augment cost that ``decode_on`` moves.

    python benchmarks/gpu_check.py [--device cuda] [--steps 10] [--loader-threads 1] [--json out.json]
    python benchmarks/gpu_check.py --smoke --device cpu --json /tmp/g.json   # seconds, tiny sizes

On one H200-class GPU the default sizes should finish in a few minutes (budget: 8).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import queue
import statistics
import sys
import tempfile
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

RECIPES = {
    "tdn_resnet50": ROOT / "configs/recipes/fcvid_tdn_resnet50.yaml",
    "gru_rcn_vgg16": ROOT / "configs/recipes/ucf101_gru_rcn_rgb.yaml",
}
NUM_CLASSES = 101


@dataclass
class Sizes:
    crop: int = 224
    batch: dict | None = None  # per model; None: the recipe's
    frames: dict | None = None  # per model; None: the recipe's
    backbone: dict | None = None  # per model; None: the recipe's
    steps: int = 10
    warmup: int = 3
    videos: int = 6
    video_wh: tuple[int, int] = (640, 360)
    video_frames: int = 75
    short_side: int = 256


SMOKE = Sizes(crop=32, batch={"tdn_resnet50": 2, "gru_rcn_vgg16": 2}, frames={"tdn_resnet50": 3, "gru_rcn_vgg16": 3},
              backbone={"tdn_resnet50": "tiny", "gru_rcn_vgg16": "tiny"}, steps=2, warmup=1, videos=2,
              video_wh=(64, 48), video_frames=12, short_side=40)  # fmt: skip


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def load_cfg(name: str, sizes: Sizes, device: torch.device, decode_on: str = "cpu"):
    """The recipe's :class:`TrainConfig`, random init, sizes of this run."""
    from vidray.config import TrainConfig, load_config

    over = ["model.kwargs.weights=null", f"augment.crop_size={sizes.crop}", f"input.decode_on={decode_on}",
            f"ray.use_gpu={'true' if device.type == 'cuda' else 'false'}", "precision=bf16"]  # fmt: skip
    if sizes.batch:
        over.append(f"batch_size={sizes.batch[name]}")
    if sizes.frames:
        over.append(f"sampler.num_frames={sizes.frames[name]}")
    if sizes.backbone:
        over.append(f"model.kwargs.backbone={sizes.backbone[name]}")
    return load_config(TrainConfig, RECIPES[name], over)


def build(name: str, sizes: Sizes, device: torch.device, decode_on: str = "cpu"):
    from vidray.recipe import build_model
    from vidray.train.optim import build_optimizer

    cfg = load_cfg(name, sizes, device, decode_on)
    torch.manual_seed(0)
    model = build_model(cfg, NUM_CLASSES, 3).to(device)
    opt = build_optimizer([p for p in model.parameters() if p.requires_grad], cfg.optim)
    return cfg, model, opt


def train_step(model, opt, cfg, x: torch.Tensor, label: torch.Tensor, targets: torch.Tensor,
               device: torch.device) -> float:  # fmt: skip
    """``_train_epoch``'s step on a normalised batch; returns the loss (a host sync)."""
    from vidray.train.loop import _autocast
    from vidray.train.objective import compute_loss

    with _autocast(cfg, device):
        out = model(x, **cfg.model.forward)
        terms = compute_loss(out, label, targets, cfg.loss, None)
    opt.zero_grad(set_to_none=True)
    terms["loss"].backward()
    opt.step()
    return float(terms["loss"].detach())


def _train_mode(model) -> None:
    from vidray.train.optim import frozen_modules

    model.train()
    for m in frozen_modules(model):
        m.eval()


def train_and_eval(name: str, sizes: Sizes, device: torch.device) -> dict[str, float]:
    """Train clips/s and eval clips/s of one recipe's model on random input on the device."""
    from vidray.train.loop import _autocast

    cfg, model, opt = build(name, sizes, device)
    b, t, s = cfg.batch_size, int(cfg.sampler.num_frames), sizes.crop
    g = torch.Generator(device="cpu").manual_seed(0)
    x = torch.randn(b, t, 3, s, s, generator=g).to(device)
    label = torch.randint(0, NUM_CLASSES, (b,), generator=g).to(device)
    targets = torch.nn.functional.one_hot(label, NUM_CLASSES).float()
    _train_mode(model)
    times = []
    for i in range(sizes.warmup + sizes.steps):
        _sync(device)
        t0 = time.perf_counter()
        loss = train_step(model, opt, cfg, x, label, targets, device)
        _sync(device)
        if i >= sizes.warmup:
            times.append(time.perf_counter() - t0)
    if not math.isfinite(loss):
        raise RuntimeError(f"{name}: non-finite training loss {loss}")
    model.eval()
    xe = torch.randn(2 * b, t, 3, s, s, generator=g).to(device)
    etimes = []
    with torch.inference_mode():
        for i in range(sizes.warmup + sizes.steps):
            _sync(device)
            t0 = time.perf_counter()
            with _autocast(cfg, device):
                model(xe, **cfg.model.eval_forward)["logits"].float().sum().item()
            _sync(device)
            if i >= sizes.warmup:
                etimes.append(time.perf_counter() - t0)
    del model, opt, x, xe
    if device.type == "cuda":
        torch.cuda.empty_cache()
    return {"batch": b, "frames": t, "train_clips_per_s": b / statistics.median(times),
            "eval_batch": 2 * b, "eval_clips_per_s": 2 * b / statistics.median(etimes)}  # fmt: skip


# --------------------------------------------------------------------------------------- data wait
def make_rows(work: Path, sizes: Sizes):
    """A synthetic corpus through vidray's ingest UDF, in this process: an Arrow table of rows."""
    import pyarrow as pa

    from vidray.config import IngestConfig, load_config
    from vidray.ingest import TASK_SCHEMA, process_video
    from vidray.synth import SynthSpec, render_video, write_video

    w, h = sizes.video_wh
    spec = SynthSpec(kind="motion", width=w, height=h, frames=sizes.video_frames, fps=25)
    cfg = load_config(IngestConfig, None, [f"resize.short_side={sizes.short_side}", "sampling.mode=all"])
    tables = []
    for i in range(sizes.videos):
        p = work / f"v{i:03d}.mp4"
        label = spec.classes()[i % len(spec.classes())]
        write_video(p, render_video(spec, label, np.random.default_rng(i)), fps=25, gop=32)
        entry = {"video_id": f"v{i:03d}", "path": str(p), "open_path": str(p), "labels": [i % len(spec.classes())],
                 "split": "train", "row": i, "status": "", "error_type": "", "error": ""}  # fmt: skip
        rows = process_video(entry, cfg)
        if rows[0]["status"] != "ok":
            raise RuntimeError(f"ingest of {p} failed: {rows[0]['error']}")
        tables.append(pa.Table.from_pylist(rows, schema=TASK_SCHEMA))
    return pa.concat_tables(tables)


class Prefetcher:
    """``threads`` threads run ``collate`` on row batches ahead of the consumer (queue of ``depth``)."""

    def __init__(self, table, batch: int, collate, threads: int, depth: int = 2) -> None:
        self.q: queue.Queue = queue.Queue(maxsize=depth)
        self.stop = threading.Event()
        self.table, self.batch, self.collate = table, batch, collate
        self.count = 0
        self.lock = threading.Lock()
        self.threads = [threading.Thread(target=self._run, daemon=True) for _ in range(threads)]
        for th in self.threads:
            th.start()

    def _run(self) -> None:
        n = self.table.num_rows
        while not self.stop.is_set():
            with self.lock:
                k = self.count
                self.count += 1
            rng = np.random.default_rng(k)
            idx = rng.choice(n, size=self.batch, replace=n < self.batch)
            out = self.collate(self.table.take(idx))
            while not self.stop.is_set():
                try:
                    self.q.put(out, timeout=0.1)
                    break
                except queue.Full:
                    continue

    def get(self):
        return self.q.get()

    def close(self) -> None:
        self.stop.set()
        for th in self.threads:
            th.join(timeout=30)


def data_wait(table, sizes: Sizes, device: torch.device, threads: int) -> dict[str, dict[str, float]]:
    """``decode_on`` cpu vs gpu: the loop's wait for batches over its time, TDN ResNet-50."""
    from vidray.data.loader import ClipCollate, normalize_batch
    from vidray.recipe import clip_spec

    res = {}
    for decode_on in ("cpu", "gpu"):
        cfg, model, opt = build("tdn_resnet50", sizes, device, decode_on)
        spec = clip_spec(cfg, NUM_CLASSES, train=True)
        _train_mode(model)
        pf = Prefetcher(table, cfg.batch_size, ClipCollate(spec, seed=1), threads)
        wait = step = 0.0
        n = 0
        try:
            for i in range(sizes.warmup + sizes.steps):
                ta = time.perf_counter()
                batch = pf.get()
                tb = time.perf_counter()
                x = normalize_batch(batch, cfg.input.modality, mean=cfg.augment.mean, std=cfg.augment.std,
                                    device=device)  # fmt: skip
                label = batch["label"].to(device, non_blocking=True)
                targets = batch["targets"].to(device, non_blocking=True)
                train_step(model, opt, cfg, x, label, targets, device)
                _sync(device)
                tc = time.perf_counter()
                if i >= sizes.warmup:
                    wait += tb - ta
                    step += tc - tb
                    n += int(label.shape[0])
        finally:
            pf.close()
        res[decode_on] = {"data_wait_fraction": wait / (wait + step), "wait_s": wait, "step_s": step,
                          "clips_per_s": n / (wait + step)}  # fmt: skip
        del model, opt
        if device.type == "cuda":
            torch.cuda.empty_cache()
    return res


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    ap.add_argument("--smoke", action="store_true", help="tiny models and sizes: seconds on a CPU (a test)")
    ap.add_argument("--steps", type=int, help="measured steps per figure (default 10; smoke 2)")
    ap.add_argument("--loader-threads", type=int, default=1, help="CPU threads decoding ahead of the step")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args(argv)
    device = torch.device(a.device)
    sizes = SMOKE if a.smoke else Sizes()
    if a.steps:
        sizes.steps = a.steps
    if device.type == "cuda":
        torch.backends.cudnn.benchmark = True
    t_start = time.perf_counter()
    res: dict = {"benchmark": "gpu_check", "smoke": a.smoke, "device": str(device),
                 "device_name": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor(),
                 "precision": "bf16 autocast" if device.type == "cuda" else "fp32 (vidray trains on CPU in fp32)",
                 "torch": torch.__version__, "loader_threads": a.loader_threads, "crop": sizes.crop,
                 "steps": sizes.steps, "warmup": sizes.warmup, "models": {}}  # fmt: skip
    for name in RECIPES:
        r = train_and_eval(name, sizes, device)
        res["models"][name] = r
        print(f"{name:14s} batch {r['batch']:3d} x {r['frames']:2d} frames: train {r['train_clips_per_s']:8.2f} clips/s"
              f"   eval {r['eval_clips_per_s']:8.2f} clips/s", flush=True)  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        table = make_rows(Path(tmp), sizes)
        res["data_rows"] = table.num_rows
        res["data_ingest_s"] = time.perf_counter() - t0
        dw = data_wait(table, sizes, device, a.loader_threads)
    res["data_wait"] = dw
    for k, v in dw.items():
        print(f"data wait, decode_on={k}: {v['data_wait_fraction']:.3f} of the loop ({v['clips_per_s']:.2f} clips/s,"
              f" {a.loader_threads} loader thread(s))", flush=True)  # fmt: skip
    res["figures"] = {
        **{f"train_clips_per_s.{k}": v["train_clips_per_s"] for k, v in res["models"].items()},
        **{f"eval_clips_per_s.{k}": v["eval_clips_per_s"] for k, v in res["models"].items()},
        **{f"data_wait_fraction.{k}": v["data_wait_fraction"] for k, v in dw.items()},
        **{f"data_loop_clips_per_s.{k}": v["clips_per_s"] for k, v in dw.items()},
    }
    res["total_s"] = time.perf_counter() - t_start
    print(f"total {res['total_s']:.1f} s")
    if a.json:
        Path(a.json).write_text(json.dumps(res, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
