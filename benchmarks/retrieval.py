"""Near-duplicate video retrieval (Ng, thesis ch. 2): VLAD of conv features vs global pooling vs fc.

A controlled corpus, written here with PyAV:

* ``originals``: footage-like videos, each a virtual camera panning and zooming over its own
  procedurally generated scene (multi-scale coloured noise, shapes, lines, text) with two moving
  objects; 320x240, 25 fps, 4 s, H.264.
* ``distractors``: more videos of the same kind (other scenes), never copied.
* ``copies`` of every original, made by decoding the original's file and re-encoding it after one
  transformation: ``reencode`` (120 kbit/s), ``crop`` (75% of each side, random offset), ``rescale``
  (half size), ``brightness`` (+40, contrast 0.85), ``timeshift`` (starts 1.3 s later), ``speedup``
  (every 2nd frame: 2x), ``combo`` (crop 85% + brightness -30 + 0.75x + 150 kbit/s), ``crop50``
  (half of each side, random offset), ``flip`` (mirrored left-right).

Originals and distractors form the database (split ``train``), copies are the queries (split
``test``). Everything goes through the real pipeline: ``run_ingest`` (fps 2, short side 160) ->
``run_embed`` per descriptor configuration (one Ray actor per core) -> the embeddings folder's video
descriptors. For each copy the database is ranked by cosine similarity: recall@1 (the original first)
and mAP (one relevant item: AP = 1/rank), overall and per transformation; ``frame``: the same with a
frame-level score (mean over the copy's frames of the best similarity to the candidate's frames).
It also reports the similarities of copies to their originals and of distinct videos (to place
``vidray dedup --threshold``) and the pair precision/recall of ``find_duplicates`` over the whole set.

Modes::

    python benchmarks/retrieval.py [--originals 30 --distractors 60] [--configs NAME,...] [--work DIR]
    python benchmarks/retrieval.py --trained        # + a TinyVGG trained on the corpus (vidray train)
    python benchmarks/retrieval.py --throughput     # descriptors / s / core, in-process, 1 thread
    python benchmarks/retrieval.py --index-only [--n 1000000] [--index-kinds flat,ivf,hnsw]   # at 1M vectors
    python benchmarks/retrieval.py --quick          # 8 originals + 16 distractors, resnet18 vlad/gap/fc,
                                                    # then descriptors/s/core of the same three

Results are printed as a table and written as JSON (``--json``). ``--work`` keeps the corpus, the
ingest and the embeddings between runs (each step resumes).
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import resource
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

TRANSFORMS = ("reencode", "crop", "rescale", "brightness", "timeshift", "speedup", "combo", "crop50", "flip")
FPS = 25
SIZE = (320, 240)
SECONDS = 4.0

# name -> EmbedConfig overrides (all at input.short_side=160, the stored frame size)
CONFIGS: dict[str, list[str]] = {
    "resnet18/vlad/res3": ["model.name=resnet18", "model.layer=res3", "descriptor.kind=vlad"],  # the default
    "resnet18/gap/res3": ["model.name=resnet18", "model.layer=res3", "descriptor.kind=gap"],
    "resnet18/fc/pool": ["model.name=resnet18", "model.fc_layer=pool", "descriptor.kind=fc"],
    "alexnet/vlad/conv4": ["model.name=alexnet", "model.layer=conv4", "descriptor.kind=vlad"],
    "alexnet/gap/conv4": ["model.name=alexnet", "model.layer=conv4", "descriptor.kind=gap"],
    "alexnet/fc/fc7": ["model.name=alexnet", "model.fc_layer=fc7", "descriptor.kind=fc"],
}
QUICK = {"originals": 8, "distractors": 16, "configs": ["resnet18/vlad/res3", "resnet18/gap/res3", "resnet18/fc/pool"]}
COMMON = ["input.short_side=160", "fit.max_frames=600", "fit.frames_per_video=3"]


# ------------------------------------------------------------------------------------------------
# corpus
# ------------------------------------------------------------------------------------------------
def make_scene(rng: np.random.Generator, h: int = 480, w: int = 640) -> np.ndarray:
    """A footage-like still ``(h, w, 3)`` uint8: coloured multi-scale noise, shapes, lines and text."""
    import cv2

    img = np.zeros((h, w, 3), np.float32)
    for scale, weight in ((64, 1.0), (16, 0.6), (4, 0.3)):
        small = rng.random((h // scale + 2, w // scale + 2, 3)).astype(np.float32)
        img += weight * cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    img -= img.min()
    img *= 255.0 / max(img.max(), 1e-6)
    palette = rng.uniform(0.4, 1.2, 3)
    img = np.clip(img * palette, 0, 255).astype(np.uint8)
    for _ in range(rng.integers(25, 45)):
        color = tuple(int(c) for c in rng.integers(0, 256, 3))
        x, y = int(rng.integers(0, w)), int(rng.integers(0, h))
        r = int(rng.integers(6, 60))
        kind = rng.integers(0, 4)
        if kind == 0:
            cv2.ellipse(img, (x, y), (r, int(r * rng.uniform(0.3, 1))), float(rng.uniform(0, 180)), 0, 360, color, -1)
        elif kind == 1:
            cv2.rectangle(img, (x, y), (x + r, y + int(r * rng.uniform(0.3, 2))), color, -1)
        elif kind == 2:
            pts = (rng.normal(0, r, (int(rng.integers(3, 7)), 2)) + (x, y)).astype(np.int32)
            cv2.fillPoly(img, [pts], color)
        else:
            cv2.line(img, (x, y), (int(rng.integers(0, w)), int(rng.integers(0, h))), color, int(rng.integers(1, 5)))
    for _ in range(rng.integers(2, 6)):
        word = "".join(chr(c) for c in rng.integers(65, 91, int(rng.integers(3, 9))))
        cv2.putText(img, word, (int(rng.integers(0, w - 100)), int(rng.integers(20, h))), cv2.FONT_HERSHEY_SIMPLEX,
                    float(rng.uniform(0.6, 1.6)), tuple(int(c) for c in rng.integers(0, 256, 3)), 2, cv2.LINE_AA)
    return cv2.GaussianBlur(img, (3, 3), 0)


def render_video(rng: np.random.Generator) -> np.ndarray:
    """``(T, 240, 320, 3)`` uint8: a camera panning + zooming over a new scene, two moving objects."""
    import cv2

    scene = make_scene(rng)
    sh, sw = scene.shape[:2]
    t_len = int(FPS * SECONDS)
    w, h = SIZE
    z0, z1 = rng.uniform(1.0, 1.6, 2)
    p0, p1 = rng.uniform(0, 1, 2), rng.uniform(0, 1, 2)
    objs = [(rng.uniform(0, w), rng.uniform(0, h), rng.uniform(-3, 3), rng.uniform(-3, 3), int(rng.integers(8, 24)),
             tuple(int(c) for c in rng.integers(0, 256, 3))) for _ in range(2)]
    frames = np.empty((t_len, h, w, 3), np.uint8)
    for t in range(t_len):
        a = t / max(t_len - 1, 1)
        z = z0 + (z1 - z0) * a  # viewport = (w, h) * z scene pixels
        vw, vh = w * z, h * z
        px, py = (p0 + (p1 - p0) * a) * (sw - vw, sh - vh)
        m = np.array([[1 / z, 0, -px / z], [0, 1 / z, -py / z]], np.float32)
        f = cv2.warpAffine(scene, m, (w, h), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REFLECT)
        for x, y, vx, vy, r, c in objs:
            cv2.circle(f, (int(x + vx * t) % w, int(y + vy * t) % h), r, c, -1)
        frames[t] = f
    return frames


def write_video(path: Path, frames: np.ndarray, fps: int = FPS, *, crf: int = 20, bitrate: int | None = None) -> None:
    """H.264 (libx264, yuv420p, one thread) with a constant quality ``crf`` or a ``bitrate`` (bit/s)."""
    import av

    path.parent.mkdir(parents=True, exist_ok=True)
    h, w = frames.shape[1:3]
    w2, h2 = w - w % 2, h - h % 2
    with av.open(str(path), mode="w") as c:
        opts = {"preset": "veryfast", "x264-params": "threads=1"}
        if bitrate is None:
            opts["crf"] = str(crf)
        s = c.add_stream("libx264", rate=fps, options=opts)
        s.width, s.height, s.pix_fmt = w2, h2, "yuv420p"
        if bitrate is not None:
            s.bit_rate = bitrate
        for img in frames:
            for p in s.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(img[:h2, :w2]), format="rgb24")):
                c.mux(p)
        for p in s.encode():
            c.mux(p)


def transform(frames: np.ndarray, kind: str, rng: np.random.Generator) -> tuple[np.ndarray, dict]:
    """A transformed copy of decoded frames and the encoder settings to write it with."""
    import cv2

    t, h, w = frames.shape[:3]

    def crop(x: np.ndarray, frac: float) -> np.ndarray:
        ch, cw = int(h * frac), int(w * frac)
        y0, x0 = int(rng.integers(0, h - ch + 1)), int(rng.integers(0, w - cw + 1))
        return x[:, y0:y0 + ch, x0:x0 + cw]

    def scale(x: np.ndarray, s: float) -> np.ndarray:
        size = (int(x.shape[2] * s) // 2 * 2, int(x.shape[1] * s) // 2 * 2)
        return np.stack([cv2.resize(f, size, interpolation=cv2.INTER_AREA) for f in x])

    def bright(x: np.ndarray, shift: float, contrast: float) -> np.ndarray:
        return np.clip((x.astype(np.float32) - 128) * contrast + 128 + shift, 0, 255).astype(np.uint8)

    if kind == "reencode":
        return frames, {"bitrate": 120_000}
    if kind == "crop":
        return crop(frames, 0.75), {}
    if kind == "rescale":
        return scale(frames, 0.5), {}
    if kind == "brightness":
        return bright(frames, 40, 0.85), {}
    if kind == "timeshift":
        return frames[int(1.3 * FPS):], {}
    if kind == "speedup":
        return frames[::2], {}
    if kind == "combo":
        return scale(bright(crop(frames, 0.85), -30, 1.0), 0.75), {"bitrate": 150_000}
    if kind == "crop50":
        return crop(frames, 0.5), {}
    if kind == "flip":
        return np.ascontiguousarray(frames[:, :, ::-1]), {}
    raise ValueError(kind)


def make_corpus(root: Path, originals: int, distractors: int, seed: int) -> tuple[Path, dict]:
    """Write the videos and ``manifest.csv``; returns it and the ground truth (copy -> original)."""
    from vidray.io.video import decode_frames, probe

    manifest = root / "manifest.csv"
    truth_file = root / "truth.json"
    if manifest.exists() and truth_file.exists():
        truth = json.loads(truth_file.read_text())
        if len(truth["queries"]) == originals * len(TRANSFORMS) and len(truth["db"]) == originals + distractors:
            return manifest, truth
    rows, truth = [], {"queries": {}, "db": []}
    t0 = time.perf_counter()
    for i in range(originals + distractors):
        kind = "orig" if i < originals else "dist"
        vid = f"{kind}{i:04d}"
        path = root / "videos" / f"{vid}.mp4"
        if not path.exists():  # files are deterministic: an earlier run's are kept
            write_video(path, render_video(np.random.default_rng([seed, i])))
        rows.append({"path": f"videos/{vid}.mp4", "label": "db", "split": "train", "video_id": vid})
        truth["db"].append(vid)
        if kind != "orig":
            continue
        info = probe(str(path))
        decoded, _ = decode_frames(str(path), np.arange(info.num_frames), info=info)
        for j, tr in enumerate(TRANSFORMS):
            cid = f"{vid}_{tr}"
            if not (root / "videos" / f"{cid}.mp4").exists():
                frames, enc = transform(decoded, tr, np.random.default_rng([seed, i, j, 7]))
                write_video(root / "videos" / f"{cid}.mp4", frames, **enc)
            rows.append({"path": f"videos/{cid}.mp4", "label": "copy", "split": "test", "video_id": cid})
            truth["queries"][cid] = {"original": vid, "transform": tr}
    with open(manifest, "w", newline="") as f:
        wr = csv.DictWriter(f, fieldnames=["path", "label", "split", "video_id"])
        wr.writeheader()
        wr.writerows(rows)
    truth_file.write_text(json.dumps(truth, indent=1))
    print(f"corpus: {len(rows)} videos in {time.perf_counter() - t0:.0f} s", flush=True)
    return manifest, truth


# ------------------------------------------------------------------------------------------------
# evaluation
# ------------------------------------------------------------------------------------------------
def evaluate(emb_dir: Path, truth: dict, threshold: float) -> dict:
    """:func:`score` of the vectors of an embeddings folder."""
    from vidray.retrieval.query import Embeddings

    e = Embeddings(emb_dir)
    ids, splits, x = e.video_vectors()
    f_vid, _, f_x = e.frames()
    return score(ids, splits, x, f_vid, f_x, truth, threshold) | {"dim": e.dim}


def score(ids: list[str], splits: list[str], x: np.ndarray, f_vid: list[str], f_x: np.ndarray, truth: dict,
          threshold: float) -> dict:
    """recall@1 / mAP of finding each copy's original among the database videos (module docstring).

    ``x``: video descriptors ``(n, d)`` of ``ids``; ``f_x``: frame descriptors of videos ``f_vid``.
    """
    from vidray.retrieval.query import find_duplicates

    pos = {v: i for i, v in enumerate(ids)}
    db = [v for v in truth["db"] if v in pos]
    dbx = x[[pos[v] for v in db]]
    dbpos = {v: i for i, v in enumerate(db)}
    queries = [(q, t["original"], t["transform"]) for q, t in truth["queries"].items() if q in pos]
    qx = x[[pos[q] for q, _, _ in queries]]
    s = qx @ dbx.T
    gt = np.array([dbpos[o] for _, o, _ in queries])
    own = s[np.arange(len(queries)), gt]
    rank = 1 + (s > own[:, None]).sum(axis=1)

    # frame level: mean over query frames of the best frame similarity in each database video
    f_vid = np.asarray(f_vid)
    db_rows = [np.flatnonzero(f_vid == v) for v in db]
    starts = np.cumsum([0] + [len(r) for r in db_rows[:-1]])
    fdb = f_x[np.concatenate(db_rows)]
    frank = []
    for qi, (q, _, _) in enumerate(queries):
        best = np.maximum.reduceat(f_x[f_vid == q] @ fdb.T, starts, axis=1).mean(axis=0)
        frank.append(1 + int((best > best[gt[qi]]).sum()))
    frank = np.array(frank)

    trs = np.array([t for _, _, t in queries])
    per = {tr: {"recall@1": float((rank[trs == tr] == 1).mean()), "mAP": float((1 / rank[trs == tr]).mean()),
                "frame_recall@1": float((frank[trs == tr] == 1).mean())} for tr in TRANSFORMS if (trs == tr).any()}
    # similarities of distinct videos: database pairs (different scenes) and copies vs other originals
    dd = dbx @ dbx.T
    other = np.concatenate([dd[np.triu_indices(len(db), 1)], np.delete(s, gt + np.arange(len(queries)) * len(db))])
    # dedup over everything: true pairs are (copy, original) and copies of the same original
    scene = {v: v for v in db} | {q: o for q, o, _ in queries}
    dres = find_duplicates(ids, splits, x, threshold, neighbors=10, index="exact")
    found = {tuple(sorted((a, b))) for g in dres.groups for ai, a in enumerate(g) for b in g[ai + 1:]}
    true_pairs = {(a, b) for a in ids for b in ids if a < b and a in scene and scene.get(a) == scene.get(b)}
    tp = len(found & true_pairs)
    return {
        "recall@1": float((rank == 1).mean()), "mAP": float((1 / rank).mean()),
        "frame_recall@1": float((frank == 1).mean()), "frame_mAP": float((1 / frank).mean()),
        "per_transform": per,
        "sim_copy_original": {"p05": float(np.percentile(own, 5)), "median": float(np.median(own)),
                              "min": float(own.min())},
        "sim_distinct": {"p99": float(np.percentile(other, 99)), "p999": float(np.percentile(other, 99.9)),
                         "max": float(other.max())},
        "dedup": {"threshold": threshold, "pair_precision": tp / max(len(found), 1),
                  "pair_recall": tp / max(len(true_pairs), 1), "groups": len(dres.groups),
                  "cross_split_groups": len(dres.cross_split)},
        "queries": len(queries), "database": len(db),
    }


def _line(name: str, r: dict) -> str:
    return (f"{name:34s} R@1 {r['recall@1']:.3f} mAP {r['mAP']:.3f} | frame R@1 {r['frame_recall@1']:.3f} | "
            f"sim copy p05 {r['sim_copy_original']['p05']:.2f} med {r['sim_copy_original']['median']:.2f} "
            f"distinct p99.9 {r['sim_distinct']['p999']:.2f} | dedup@{r['dedup']['threshold']} "
            f"P {r['dedup']['pair_precision']:.2f} R {r['dedup']['pair_recall']:.2f} | "
            + " ".join(f"{t[:5]} {v['recall@1']:.2f}" for t, v in r["per_transform"].items()))


# ------------------------------------------------------------------------------------------------
# ablation: one forward pass per network, every descriptor variant on the same features, in-process
# ------------------------------------------------------------------------------------------------
ABLATION_NETS = {"alexnet": (["conv3", "conv4", "conv5"], ["fc6", "fc7"]), "resnet18": (["res3", "res4"], ["pool"]),
                 "tiny": (["conv3", "conv4"], ["fc7"])}
WHITENING = {"white": (True, 0.0), "shrink0.1": (True, 0.1), "shrink1": (True, 1.0), "pca": (False, 0.0)}


def ablation(work: Path, truth: dict, nets: list[str], threshold: float, k: int, fit_frames: int,
             checkpoint: str | None = None, normalize: str = "dataset") -> dict:
    """Every (layer, descriptor, whitening) of each network on features computed once, in this process
    (the fitting sample: ``fit_frames`` frames, 3 evenly spaced per video, seeded video order)."""
    import torch

    from vidray.config import load_config
    from vidray.io.reader import IngestDataset
    from vidray.models.backbones import Backbone, backbone_spec, build_network
    from vidray.retrieval import video_descriptor
    from vidray.retrieval.config import EmbedConfig
    from vidray.retrieval.features import FrameDescriber, load_training_backbone
    from vidray.retrieval.vlad import GlobalEncoder, VLADEncoder, fit_pca_whitening
    from torchvision.models.feature_extraction import create_feature_extractor

    torch.set_num_threads(os.cpu_count() or 1)
    videos = [(v.video_id, v.split, v.frames) for v in IngestDataset(work / "ingest").iter_videos()]
    ids = [v[0] for v in videos]
    splits = [v[1] for v in videos]
    rng = np.random.default_rng(0)
    fit_sel: list[tuple[int, np.ndarray]] = []
    n_fit = 0
    for vi in rng.permutation(len(videos)):
        t = len(videos[vi][2])
        idx = np.unique(np.linspace(0, t - 1, min(3, t)).round().astype(int))
        fit_sel.append((int(vi), idx))
        n_fit += len(idx)
        if n_fit >= fit_frames:
            break
    out: dict = {}
    for net in nets:
        convs, fcs = ABLATION_NETS[net.split("@")[0]]
        name = net.split("@")[0]
        cfg = load_config(EmbedConfig, None, [f"model.name={name}", f"model.layer={convs[0]}", "input.short_side=160",
                                              f"input.normalize={normalize}"])
        pre = FrameDescriber(cfg)  # preprocessing (and the single-tap network the pipeline builds)
        spec = backbone_spec(name)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(cfg.model.seed)
            model, _ = build_network(name)
        if checkpoint and "@trained" in net:
            name2, sd = load_training_backbone(checkpoint)
            model.load_state_dict(sd, strict=False)
            fcs = [f for f in fcs if f != "fc7"]  # the trained model is cut at pool4: no fc layers
            convs = [c for c in convs if c != "conv5"]
        taps = convs + fcs
        body = create_feature_extractor(model.eval(), return_nodes={spec.taps[t]: t for t in taps})
        t0 = time.perf_counter()
        feats: dict[str, list[torch.Tensor]] = {t: [] for t in taps}
        with torch.no_grad():
            for _, _, frames in videos:
                o = body(pre.preprocess(frames))
                for t in taps:
                    feats[t].append(o[t].float())
        print(f"{net}: features of {sum(len(v[2]) for v in videos)} frames in {time.perf_counter() - t0:.0f} s",
              flush=True)
        for tap in taps:
            kinds = ["fc"] if tap in fcs else ["vlad", "gap"]
            fit_maps = [feats[tap][vi][idx] for vi, idx in fit_sel]
            for kind in kinds:
                # the un-projected vectors once (one k-means per layer), then each whitening on them
                if kind == "vlad":
                    raw_enc = VLADEncoder(k=k, pca_dim=None).fit(fit_maps)
                    raw = [raw_enc.vlad(f) for f in feats[tap]]
                else:
                    raw_enc = GlobalEncoder(kind, pca_dim=None)
                    raw = [raw_enc.vector(f) for f in feats[tap]]
                fit_raw = torch.cat([raw[vi][idx] for vi, idx in fit_sel])
                for wname, (white, shrink) in WHITENING.items():
                    mean, comps = fit_pca_whitening(fit_raw, 128, whiten=white, shrink=shrink)
                    codes = [torch.nn.functional.normalize((r - mean) @ comps, dim=-1) for r in raw]
                    x = torch.stack([video_descriptor(c) for c in codes]).numpy()
                    f_vid = [i for i, c in zip(ids, codes) for _ in range(len(c))]
                    r = score(ids, splits, x, f_vid, torch.cat(codes).numpy(), truth, threshold)
                    key = f"{net}/{kind}/{tap}/{wname}" + ("/framenorm" if normalize == "frame" else "")
                    out[key] = r
                    print(_line(key, r), flush=True)
                del raw
        del feats
    return out


# ------------------------------------------------------------------------------------------------
# trained network (TinyVGG trained on the corpus's own database videos, one class per video)
# ------------------------------------------------------------------------------------------------
def train_tiny(work: Path, data: Path, epochs: int) -> Path:
    """A ``single_frame`` TinyVGG trained with vidray train to tell the database videos apart
    (instance discrimination: labels = video ids; the copies are never seen). Returns the run dir."""
    from vidray.config import IngestConfig, TrainConfig, load_config
    from vidray.ingest import run_ingest

    run = work / "train_run"
    if (run / "final").exists():
        return run
    # a second ingest of the database only, one class per video
    man = work / "corpus" / "manifest.csv"
    inst = work / "corpus" / "instances.csv"
    with open(man) as f, open(inst, "w", newline="") as g:
        wr = csv.DictWriter(g, fieldnames=["path", "label", "split", "video_id"])
        wr.writeheader()
        for r in csv.DictReader(f):
            if r["split"] == "train":
                wr.writerow({**r, "label": r["video_id"]})
    inst_data = work / "ingest_instances"
    icfg = load_config(IngestConfig, None, ["sampling.fps=5", "resize.short_side=112"])
    run_ingest(inst, inst_data, cfg=icfg)
    from vidray.train.trainer import run_training

    cfg = load_config(TrainConfig, None, [
        "model.name=single_frame", "model.kwargs={backbone: tiny, dropout: 0.0}", "input.val_split=null",
        "sampler.name=tsn", "sampler.num_frames=2", "augment.crop_size=96", "augment.flip_ratio=0.5",
        "optim.name=sgd", "optim.lr=0.05", "optim.momentum=0.9", f"epochs={epochs}", "batch_size=16",
        "schedule.name=cosine", "checkpoint.num_to_keep=1", "checkpoint.score_attribute=train_loss",
        "checkpoint.score_order=min"])
    run_training(str(inst_data), cfg, workers=0, out=str(run), track=False)
    return run


# ------------------------------------------------------------------------------------------------
# throughput and index scaling
# ------------------------------------------------------------------------------------------------
def throughput(names: list[str], frames: int = 64, repeats: int = 3) -> dict:
    """Descriptors per second on ONE core (torch 1 thread), in-process, 224x298 frames (default input)."""
    import torch

    from vidray.config import load_config
    from vidray.retrieval.config import EmbedConfig
    from vidray.retrieval.features import FrameDescriber, make_encoder

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    imgs = np.stack([render_video(rng)[0] for _ in range(8)])
    imgs = np.concatenate([imgs] * (frames // 8))
    out = {}
    for name in names:
        cfg = load_config(EmbedConfig, None, [o for o in CONFIGS[name]] + ["descriptor.pca_dim=32"])
        d = FrameDescriber(cfg)
        enc = make_encoder(cfg).fit([d.features(imgs[:16])])
        d.encoder = enc
        net_t, tot_t = [], []
        for _ in range(repeats):
            t0 = time.perf_counter()
            d.features(imgs)
            t1 = time.perf_counter()
            d.encode(imgs)
            t2 = time.perf_counter()
            net_t.append(t1 - t0)
            tot_t.append(t2 - t1)
        out[name] = {"frames_per_s_per_core": frames / float(np.median(tot_t)),
                     "network_share": float(np.median(net_t) / np.median(tot_t))}
        print(f"  {name}: {out[name]['frames_per_s_per_core']:.1f} descriptors/s/core "
              f"(network {100 * out[name]['network_share']:.0f}% of it)", flush=True)
    return out


def _rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def index_scaling(n: int, d: int = 128, queries: int = 1000, threads: int = 2, seed: int = 0,
                  kinds: tuple[str, ...] = ("flat", "ivf", "hnsw")) -> dict:
    """Build and search times of exact / faiss flat / IVF / HNSW on ``n`` synthetic unit vectors.

    Vectors: a mixture of 4096 Gaussian clusters on the sphere (descriptors of a corpus cluster);
    queries: noisy copies of random database vectors (near-duplicate queries). Recall@10 is measured
    against the exact top 10; ``hit@1`` is finding the vector a query was copied from.
    """
    from vidray.retrieval.index import ExactIndex, FaissIndex

    rng = np.random.default_rng(seed)
    centers = rng.standard_normal((4096, d)).astype(np.float32)
    x = np.empty((n, d), np.float32)
    for a in range(0, n, 100_000):
        b = min(n, a + 100_000)
        x[a:b] = centers[rng.integers(0, 4096, b - a)] + 0.6 * rng.standard_normal((b - a, d)).astype(np.float32)
    x /= np.linalg.norm(x, axis=1, keepdims=True)
    src = rng.choice(n, queries, replace=False)
    q = x[src] + 0.05 * rng.standard_normal((queries, d)).astype(np.float32)
    q /= np.linalg.norm(q, axis=1, keepdims=True)
    print(f"index: {n} x {d} vectors ({x.nbytes / 2**20:.0f} MiB), {queries} queries, faiss threads {threads}; "
          f"max RSS so far {_rss_mb():.0f} MiB", flush=True)
    res = {"n": n, "d": d, "queries": queries, "threads": threads}
    t0 = time.perf_counter()
    _, exact = ExactIndex(x).search(q, 10)
    res["exact_numpy"] = {"build_s": 0.0, "search_s": time.perf_counter() - t0}
    opts = {"flat": {}, "ivf": {"nprobe": 16}, "hnsw": {"hnsw_m": 32, "ef_search": 64}}
    for kind, kw in ((k, opts[k]) for k in kinds):
        t0 = time.perf_counter()
        idx = FaissIndex(x, kind, threads=threads, **kw)
        tb = time.perf_counter() - t0
        t0 = time.perf_counter()
        _, got = idx.search(q, 10)
        ts = time.perf_counter() - t0
        recall = float(np.mean([len(set(a) & set(b)) / 10 for a, b in zip(got, exact)]))
        res[kind] = {"build_s": tb, "search_s": ts, "ms_per_query": 1000 * ts / queries, "recall@10": recall,
                     "hit@1": float((got[:, 0] == src).mean())}
        if kind == "ivf":
            for nprobe in (4, 64):
                idx.index.nprobe = nprobe
                t0 = time.perf_counter()
                _, got = idx.search(q, 10)
                ts = time.perf_counter() - t0
                res[f"ivf_nprobe{nprobe}"] = {"search_s": ts, "ms_per_query": 1000 * ts / queries,
                                              "recall@10": float(np.mean([len(set(a) & set(b)) / 10
                                                                          for a, b in zip(got, exact)]))}
        del idx
        print(f"  {kind}: build {tb:.1f} s, search {res[kind]['ms_per_query']:.3f} ms/query, recall@10 "
              f"{res[kind]['recall@10']:.3f}; max RSS {_rss_mb():.0f} MiB", flush=True)
    res["exact_numpy"]["ms_per_query"] = 1000 * res["exact_numpy"]["search_s"] / queries
    res["max_rss_mib"] = _rss_mb()
    return res


# ------------------------------------------------------------------------------------------------
def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--work", default="/tmp/vidray_bench_retrieval", help="corpus, ingest, embeddings (kept)")
    ap.add_argument("--originals", type=int, default=30)
    ap.add_argument("--distractors", type=int, default=60)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--configs", default=",".join(CONFIGS), help="comma-separated names of CONFIGS")
    ap.add_argument("--threshold", type=float, default=0.5, help="dedup threshold evaluated")
    ap.add_argument("--trained", action="store_true", help="also a TinyVGG trained on the corpus (vidray train)")
    ap.add_argument("--epochs", type=int, default=30)
    ap.add_argument("--ablation", default="", help="in-process: every layer x descriptor x whitening of these "
                    "networks (comma-separated, e.g. alexnet,resnet18; tiny@trained with --trained)")
    ap.add_argument("--k", type=int, default=100, help="--ablation: VLAD vocabulary size")
    ap.add_argument("--normalize", default="dataset", help="--ablation: input.normalize (dataset | frame)")
    ap.add_argument("--fit-frames", type=int, default=600, help="--ablation: frames of the fitting sample")
    ap.add_argument("--throughput", action="store_true", help="descriptors/s/core only")
    ap.add_argument("--index-only", action="store_true", help="faiss index build/search at --n vectors only")
    ap.add_argument("--n", type=int, default=1_000_000, help="--index-only: database vectors")
    ap.add_argument("--index-kinds", default="flat,ivf,hnsw", help="--index-only: faiss kinds measured (and exact)")
    ap.add_argument("--quick", action="store_true",
                    help=f"small corpus ({QUICK['originals']} originals, {QUICK['distractors']} distractors), "
                    f"configs {','.join(QUICK['configs'])}, then their throughput")
    ap.add_argument("--json", help="write the results here")
    a = ap.parse_args()
    if a.quick:
        a.originals, a.distractors, a.configs = QUICK["originals"], QUICK["distractors"], ",".join(QUICK["configs"])
        a.work = a.work + "_quick" if a.work == ap.get_default("work") else a.work
    results: dict = {"argv": sys.argv[1:], "load_avg_start": os.getloadavg()}
    if a.index_only:
        results["index"] = index_scaling(a.n, kinds=tuple(k for k in a.index_kinds.split(",") if k))
    elif a.throughput:
        results["throughput"] = throughput([c for c in a.configs.split(",") if c])
    else:
        run_corpus(a, results)
        if a.quick:
            results["throughput"] = throughput([c for c in a.configs.split(",") if c])
    results["load_avg_end"] = os.getloadavg()
    if a.json:
        Path(a.json).write_text(json.dumps(results, indent=1))
        print(f"wrote {a.json}")


def run_corpus(a: argparse.Namespace, results: dict) -> None:
    import ray

    from vidray.config import IngestConfig, load_config
    from vidray.ingest import run_ingest
    from vidray.retrieval.config import EmbedConfig
    from vidray.retrieval.embed import run_embed

    work = Path(a.work)
    manifest, truth = make_corpus(work / "corpus", a.originals, a.distractors, a.seed)
    if not ray.is_initialized():
        from vidray.runtime import init_ray

        init_ray(num_cpus=os.cpu_count(), dashboard=False, log_to_driver=False)  # vidray's private local Ray
    data = work / "ingest"
    icfg = load_config(IngestConfig, None, ["sampling.fps=2", "resize.short_side=160"])
    s = run_ingest(manifest, data, cfg=icfg)
    print(f"ingest: {s.ok} videos, {s.frames} frames", flush=True)
    configs = {c: CONFIGS[c] for c in a.configs.split(",") if c}
    run = train_tiny(work, data, a.epochs) if a.trained else None
    if a.ablation:  # in-process variants only
        results["ablation"] = ablation(work, truth, [n for n in a.ablation.split(",") if n], a.threshold, a.k,
                                       a.fit_frames, checkpoint=str(run) if run else None, normalize=a.normalize)
        configs = {}
    elif run is not None:  # the trained TinyVGG is cut at pool4 (single_frame): no fc layers to compare
        for kind in ("vlad", "gap"):
            configs[f"tiny-trained/{kind}/conv3"] = [f"model.checkpoint={run}", f"descriptor.kind={kind}",
                                                     "model.layer=conv3"]
    rows = results.setdefault("configs", {})
    for name, ov in configs.items():
        cfg = load_config(EmbedConfig, None, COMMON + ov)
        out = work / "emb" / name.replace("/", "_")
        s = run_embed(str(data), str(out), cfg)
        r = evaluate(out, truth, a.threshold)
        r["embed"] = {"frames": s.frames, "embed_s": s.embed_s, "fit_s": s.fit_s, "frames_per_s": s.frames_per_s,
                      "actors": s.actors}
        rows[name] = r
        print(_line(name, r), flush=True)
    ray.shutdown()


if __name__ == "__main__":
    main()
