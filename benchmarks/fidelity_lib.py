"""A controlled benchmark: do the zoo's models do what their papers claim?

UCF101, FCVID and Sports-1M cannot be downloaded here, so the claims are checked on synthetic corpora
(:mod:`vidray.synth`) where the answer is known by construction:

* **Corpus A** (``motion``): 6 classes that differ *only* by motion (four translation directions, two
  rotations); every class draws its appearance from the same distribution, so an appearance-only model
  is at chance by design.
* **Corpus B** (``appearance_motion``): 12 classes = shape x direction: the RGB stream can get the shape,
  the flow stream the direction, their fusion both.

Both are ingested with flow, each model family is trained briefly on the CPU (tiny variants, the same
recipe for every model: :class:`FidelitySettings`), evaluated at video level on the test split over all
of each video's frames, and five claims are checked:

1. the single-frame baseline is ~chance on A; GRU-RCN, bidirectional GRU-RCN, RCNN, LSTM, conv pooling
   over flow, ActionFlowNet and TDN are clearly above chance (the papers' motion-modelling claims);
2. on B, two-stream fusion (weights chosen on validation) >= each stream alone;
3. RCNN random (pair) training gets further than sequential training after the same number of steps
   (Xu et al., sec. 3.3): validation top-1 of both at half the epochs, training losses reported;
4. ActionFlowNet's multitask loss (lambda > 0) beats lambda = 0 on A;
5. log-mean vs mean vs max aggregation of RCNN's frame scores (Xu et al., table 2): which wins is reported.

Horizontal flipping is off (``augment.flip_ratio=0``): it turns "right" into "left", a label-changing
augmentation on these corpora. Results, settings and their reasons: ``docs/fidelity.md``.

    python benchmarks/fidelity.py [--quick] [--out runs/fidelity] [--json PATH]
"""

from __future__ import annotations

import json
import logging
import shutil
import time
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

__all__ = ["FidelitySettings", "Experiment", "experiments", "build_corpora", "run_experiment", "judge",
           "run_fidelity", "format_report", "CLAIM1_MODELS"]


@dataclass(frozen=True)
class FidelitySettings:
    """Everything that defines a benchmark run (one recipe for every model; docs/fidelity.md says why).

    Corpus: ``videos_per_class`` videos of ``frames`` frames, ``size`` x ``size`` pixels, translation
    ``speed`` (pixels/frame; rotation: 2x degrees/frame), split ``splits`` (train/val/test per class).
    Training: Adam ``lr``, constant, ``batch_size``, ``epochs`` (same on both corpora: A has 6 classes,
    B 12, so B gets twice the steps), ``dropout`` for every tiny variant, ``clip_len`` frames per
    sample (clip and TSN samplers; RCNN random mode: pairs), flow input divided by ``flow_scale``
    pixels. Evaluation: every stored frame of a video, once (``frames // clip_len`` clips, or
    ``frames // 2`` pairs). ``threads``: torch intra-op threads during the run (1 avoids
    oversubscribing a shared 2-core machine next to Ray Data's decoding threads).
    """

    videos_per_class: int = 48
    frames: int = 16
    size: int = 32
    speed: tuple[float, float] = (2.0, 3.0)
    splits: tuple[float, float, float] = (0.5, 0.25, 0.25)
    corpus_seed: int = 7
    epochs: int = 17
    batch_size: int = 8
    lr: float = 1e-3
    dropout: float = 0.0
    clip_len: int = 8
    flow_scale: float = 2.0
    seed: int = 0
    threads: int | None = 1

    def corpus_tag(self) -> str:
        """Folder tag of the corpora these settings generate (a changed corpus is never reused)."""
        sp = "-".join(f"{s:g}" for s in self.speed)
        spl = "-".join(f"{s:g}" for s in self.splits)
        return f"v{self.videos_per_class}_f{self.frames}_s{self.size}_sp{sp}_split{spl}_seed{self.corpus_seed}"

    def train_overrides(self) -> list[str]:
        """TrainConfig overrides shared by every run."""
        return [
            f"augment.crop_size={self.size}", "augment.scales=[1.0,0.875]", "augment.max_distort=0",
            "augment.flip_ratio=0.0", "augment.color_jitter=null",
            "optim.name=adam", f"optim.lr={self.lr}", "optim.weight_decay=0.0", "schedule.name=constant",
            f"batch_size={self.batch_size}", f"epochs={self.epochs}", f"seed={self.seed}",
            # a shuffle buffer larger than a training split: ingest writes the manifest's class-sorted
            # videos 16 to a Parquet part, so a 64-row buffer gives batches of 3-4 classes (non-iid SGD)
            f"input.flow_scale={self.flow_scale}", "input.shuffle_buffer=1024",
            # no validation pass inside training (val is scored once at the end, for fusion weights)
            "input.val_split=null", "checkpoint.num_to_keep=1", "tracking.flow_samples=0",
            f"model.kwargs={{backbone: tiny, dropout: {self.dropout}}}",
        ]


def quick_settings(base: FidelitySettings | None = None) -> FidelitySettings:
    """The ``--quick`` settings: the same recipe (the claims must hold under it), fewer epochs."""
    return replace(base or FidelitySettings(), epochs=12)


@dataclass
class Experiment:
    """One training run of the benchmark."""

    name: str
    corpus: str  # "A" or "B"
    model: str
    modality: str  # rgb | flow | rgb+flow
    overrides: list[str] = field(default_factory=list)
    aggregate: str | None = None
    claim: str = ""
    sampler: str = "clip"  # clip | tsn (clip_len frames) | pair (2 consecutive frames)
    keep_checkpoints: bool = False  # keep every epoch (claim 3 compares runs at half the epochs)


#: The models of claim 1 (clearly above chance on A), by experiment name.
CLAIM1_MODELS = ("gru_rcn", "gru_rcn_bidir", "rcnn_random", "rcnn_sequential", "lstm", "conv_pooling_flow",
                 "actionflownet", "tdn")


def experiments(quick: bool = False) -> list[Experiment]:
    """The runs of the benchmark (``quick``: the subset the slow test uses: claims 1 and 2)."""
    seq = ["loss.name=per_frame", "model.forward={mode: sequential}", "model.eval_forward={mode: sequential}"]
    exps = [
        Experiment("single_frame", "A", "single_frame", "rgb", sampler="tsn", claim="1: ~chance"),
        Experiment("gru_rcn", "A", "gru_rcn", "rgb", claim="1: > chance"),
        Experiment("conv_pooling_flow", "A", "conv_pooling", "flow", claim="1: > chance"),
        # Two-stream conv pooling (Ng et al.): the same network on RGB and on flow, late fusion.
        Experiment("B_rgb", "B", "conv_pooling", "rgb", claim="2: RGB stream"),
        Experiment("B_flow", "B", "conv_pooling", "flow", claim="2: flow stream"),
    ]
    if quick:
        return exps
    return exps + [
        Experiment("gru_rcn_bidir", "A", "gru_rcn_bidir", "rgb", claim="1: > chance"),
        Experiment("rcnn_random", "A", "rcnn", "rgb",
                   ["loss.name=per_frame", "model.forward={mode: random}", "model.eval_forward={mode: sequential}"],
                   aggregate="logmean", claim="1, 3, 5", sampler="pair", keep_checkpoints=True),
        Experiment("rcnn_sequential", "A", "rcnn", "rgb", seq, aggregate="logmean", claim="1, 3",
                   keep_checkpoints=True),
        Experiment("lstm", "A", "lstm", "rgb", ["loss.name=gain"], aggregate="weighted", claim="1: > chance"),
        # diagnostic, not a claim-1 row: the same LSTM over flow frames (the paper's flow LSTM), to tell
        # "pooled RGB features carry no motion here" from "the LSTM does not learn"
        Experiment("lstm_flow", "A", "lstm", "flow", ["loss.name=gain"], aggregate="weighted", claim="diagnostic"),
        Experiment("actionflownet", "A", "actionflownet", "rgb+flow", ["loss.name=multitask", "loss.lam=0.01"],
                   claim="1, 4: lambda > 0"),
        Experiment("actionflownet_lam0", "A", "actionflownet", "rgb+flow", ["loss.name=multitask", "loss.lam=0.0"],
                   claim="4: lambda = 0"),
        Experiment("tdn", "A", "tdn", "rgb", sampler="tsn", claim="1: > chance"),
    ]


def build_corpora(out: Path, videos_per_class: int = 48, frames: int = 16, size: int = 32, *,
                  settings: FidelitySettings | None = None) -> dict[str, str]:
    """Write and ingest corpora A and B under ``out`` (kept between runs, keyed by their settings:
    ingest resumes). ``settings`` (when given) wins over the other arguments."""
    from vidray.config import IngestConfig, load_config
    from vidray.ingest import run_ingest
    from vidray.synth import SynthSpec, make_corpus

    s = settings or FidelitySettings(videos_per_class=videos_per_class, frames=frames, size=size)
    cfg = load_config(IngestConfig, None, [
        "sampling.mode=all", f"resize.short_side={s.size}", "flow.enabled=true", "flow.algorithm=dis_medium",
        "flow.stack_length=1", "output.videos_per_task=16",
    ])
    tag = s.corpus_tag()
    data = {}
    for name, kind, classes in (("A", "motion", 6), ("B", "appearance_motion", 12)):
        manifest = Path(out) / f"corpus_{name}_{tag}" / "manifest.csv"
        if not manifest.exists():
            make_corpus(manifest.parent, SynthSpec(kind=kind, num_videos=s.videos_per_class * classes, width=s.size,
                                                   height=s.size, frames=s.frames, seed=s.corpus_seed,
                                                   speed=tuple(s.speed), splits=tuple(s.splits)))
        dest = Path(out) / f"data_{name}_{tag}"
        run_ingest(manifest, dest, cfg=cfg)
        data[name] = str(dest)
    return data


def _eval_clips(exp: Experiment, s: FidelitySettings) -> int:
    """Clips per test video so that every stored frame is seen once (pairs: frames // 2)."""
    length = 2 if exp.sampler == "pair" else s.clip_len
    return max(1, s.frames // length)


def run_experiment(exp: Experiment, data_dir: str, out: Path, epochs: int | None = None,
                   tracking_uri: str | None = None, *, settings: FidelitySettings | None = None) -> dict[str, Any]:
    """Train ``exp`` from scratch (its run folder is replaced) and evaluate it on the test split; the
    val scores are saved too (fusion weights). ``epochs`` overrides ``settings.epochs``."""
    from vidray.config import TrainConfig, load_config
    from vidray.eval.evaluate import evaluate_checkpoint
    from vidray.io.reader import IngestDataset
    from vidray.io.checkpoint import load_checkpoint
    from vidray.train.trainer import run_training

    s = settings or FidelitySettings()
    if epochs is not None:
        s = replace(s, epochs=int(epochs))
    sampler = [f"sampler.name={exp.sampler}"] + ([] if exp.sampler == "pair" else [f"sampler.num_frames={s.clip_len}"])
    keep = [f"checkpoint.num_to_keep={s.epochs + 1}"] if exp.keep_checkpoints else []
    cfg = load_config(TrainConfig, None, s.train_overrides() + sampler + exp.overrides + keep + [
        f"model.name={exp.model}", f"input.modality={exp.modality}",
        "tracking.experiment=fidelity", f"tracking.run_name={exp.name}",
    ])
    run_dir = Path(out) / "runs" / exp.name
    if run_dir.exists():  # a benchmark run is always fresh: never resume an older run's checkpoints
        shutil.rmtree(run_dir)
    t0, c0 = time.perf_counter(), time.process_time()
    res = run_training(data_dir, cfg, workers=0, out=run_dir, tracking_uri=tracking_uri)
    train_s, train_cpu_s = time.perf_counter() - t0, time.process_time() - c0
    clips = _eval_clips(exp, s)
    t1 = time.perf_counter()
    test = evaluate_checkpoint(res.checkpoint, data_dir, split="test", num_clips=clips, aggregate=exp.aggregate,
                               out=run_dir / "test_scores.npz")
    val = evaluate_checkpoint(res.checkpoint, data_dir, split="val", num_clips=clips, aggregate=exp.aggregate,
                              out=run_dir / "val_scores.npz")
    eval_s = time.perf_counter() - t1
    ds = IngestDataset(data_dir)
    k = len(ds.classes)
    n_train = ds.table(columns=["video_id", "split"], split="train").num_rows
    steps_per_epoch = n_train // s.batch_size
    state = load_checkpoint(res.checkpoint)
    history = [{"epoch": int(h["epoch"]), "train_loss": float(h["train_loss"]),
                "train_top1": float(h.get("train_top1", float("nan")))} for h in state.get("history") or []]
    return {
        "name": exp.name, "corpus": exp.corpus, "model": exp.model, "input": exp.modality, "claim": exp.claim,
        "sampler": exp.sampler, "top1": round(float(test.metrics["top1"]), 4),
        "val_top1": round(float(val.metrics["top1"]), 4), "chance": round(1.0 / k, 4),
        "train_s": round(train_s, 1), "train_cpu_s": round(train_cpu_s, 1), "eval_s": round(eval_s, 1), "test_videos": test.num_videos,
        "eval_clips": clips, "aggregate": test.settings.get("aggregate"), "epochs": s.epochs,
        "steps": steps_per_epoch * s.epochs, "final_train_loss": round(float(history[-1]["train_loss"]), 4) if history else None,
        "checkpoint": res.checkpoint, "run_dir": str(run_dir), "test_scores": test.scores_path,
        "val_scores": val.scores_path, "history": history,
    }


def _aggregation_study(row: dict[str, Any], data_dir: str) -> dict[str, float]:
    """Claim 5: test top-1 of the same RCNN frame scores aggregated by mean, max and log-mean."""
    from vidray.eval.evaluate import evaluate_checkpoint

    out = {}
    for method in ("mean", "max", "logmean"):
        r = evaluate_checkpoint(row["checkpoint"], data_dir, split="test", num_clips=row["eval_clips"],
                                aggregate=method, level="frame", out=Path(row["run_dir"]) / f"agg_{method}.npz")
        out[method] = round(float(r.metrics["top1"]), 4)
    return out


def _midpoint(rows: dict[str, dict], data_dir: str) -> dict[str, Any]:
    """Claim 3: RCNN random vs sequential after the same number of steps (half the epochs): training
    loss from the history and validation top-1 of the two mid-run checkpoints (same evaluation)."""
    from vidray.eval.evaluate import evaluate_checkpoint
    from vidray.io.checkpoint import epoch_dir_name

    out: dict[str, Any] = {}
    for name in ("rcnn_random", "rcnn_sequential"):
        r = rows[name]
        half = max(1, int(r["epochs"]) // 2)
        ck = Path(r["run_dir"]) / "checkpoints" / epoch_dir_name(half)
        val = evaluate_checkpoint(ck, data_dir, split="val", num_clips=r["eval_clips"], aggregate=r["aggregate"],
                                  out=Path(r["run_dir"]) / f"val_epoch{half}.npz") if ck.exists() else None
        out[name] = {"epoch": half, "steps": r["steps"] * half // max(1, int(r["epochs"])),
                     "train_loss": _loss_at(r["history"], half),
                     "val_top1": round(float(val.metrics["top1"]), 4) if val is not None else None}
    return out


def _fusion(rows: dict[str, dict], seed: int = 0) -> dict[str, Any]:
    """Choose the fusion of the RGB and flow streams on their validation scores with vidray's own search
    (:func:`vidray.tune.tune_fusion`: the flow weight, l1-norm on/off, weighted vs log-mean, on Ray
    Tune), and apply it to the test scores."""
    from vidray.eval.fusion import align_scores, load_scores
    from vidray.eval.metrics import top_k_accuracy
    from vidray.tune import fusion_objective, tune_fusion

    def load(kind: str):
        ref = load_scores(rows["B_rgb"][kind])
        return ref, align_scores(ref, load_scores(rows["B_flow"][kind]))

    found = tune_fusion([rows["B_rgb"]["val_scores"], rows["B_flow"]["val_scores"]], num_samples=40, seed=seed)
    best = found["best"]
    tr, tf = load("test_scores")
    test = [tr.scores, tf.scores]
    return {"flow_weight": round(float(best["w"]), 3), "l1_norm": bool(best["l1_norm"]), "method": best["method"],
            "top1": round(fusion_objective(best, test, tr.labels), 4), "val_top1": round(float(found["top1"]), 4),
            "equal_weights_top1": round(fusion_objective({"w": 1.0, "l1_norm": False, "method": "weighted"},
                                                         test, tr.labels), 4),
            "rgb_top1": round(float(top_k_accuracy(tr.scores, tr.labels, 1)), 4),
            "flow_top1": round(float(top_k_accuracy(tf.scores, tf.labels, 1)), 4)}


def _loss_at(history: list[dict], epoch: int) -> float | None:
    for h in history:
        if h["epoch"] == epoch:
            return round(float(h["train_loss"]), 4)
    return None


def judge(rows: dict[str, dict], fusion: dict[str, Any] | None, agg: dict[str, float] | None,
          margin: float = 0.2, midpoint: dict[str, Any] | None = None) -> list[dict[str, Any]]:
    """Each claim as held / not held, with the numbers.

    ``margin`` (absolute top-1): "clearly above chance" means ``top1 >= chance + margin``, "~chance" means
    ``top1 <= chance + margin``. ``rows``: experiment name -> row (``top1``, ``chance``, ``corpus``,
    ``history`` ...). Claims whose runs are missing are left out. Claim 2 holds when the fused top-1 is
    at least each stream's; claim 3 when RCNN random's val top-1 at half the epochs beats sequential's
    (``midpoint``; without it, when its training loss there is lower); claim 4 when lambda > 0 beats
    lambda = 0 on test; claim 5 (a "which wins" report) is marked held when log-mean is at least as good
    as mean and max.
    """
    claims = []
    sf = rows.get("single_frame")
    if sf:
        chance = sf["chance"]
        per_model = {n: {"top1": rows[n]["top1"], "held": bool(rows[n]["top1"] >= rows[n]["chance"] + margin)}
                     for n in CLAIM1_MODELS if n in rows}
        sf_ok = bool(sf["top1"] <= chance + margin)
        held = sf_ok and bool(per_model) and all(v["held"] for v in per_model.values())
        claims.append({"claim": 1, "text": f"single-frame ~ chance on A (<= chance + {margin:g}); motion models "
                       f"clearly above chance (>= chance + {margin:g})", "held": bool(held),
                       "numbers": {"chance": chance, "single_frame": {"top1": sf["top1"], "held": sf_ok}, **per_model},
                       "not_held": [n for n, v in per_model.items() if not v["held"]] + ([] if sf_ok else ["single_frame"])})
    if fusion:
        held = fusion["top1"] >= max(fusion["rgb_top1"], fusion["flow_top1"])
        claims.append({"claim": 2, "text": "on B, two-stream fusion (weights chosen on val) >= each stream",
                       "held": bool(held), "numbers": fusion})
    if "rcnn_random" in rows and "rcnn_sequential" in rows:
        hr, hs = rows["rcnn_random"]["history"], rows["rcnn_sequential"]["history"]
        half = max(1, min(len(hr), len(hs)) // 2)
        nums: dict[str, Any] = {"epoch": half, "random_loss": _loss_at(hr, half), "sequential_loss": _loss_at(hs, half)}
        if midpoint:
            nums.update({"random_val_top1": midpoint["rcnn_random"]["val_top1"],
                         "sequential_val_top1": midpoint["rcnn_sequential"]["val_top1"],
                         "steps": midpoint["rcnn_random"]["steps"]})
            a, b = nums["random_val_top1"], nums["sequential_val_top1"]
            held = a is not None and b is not None and a > b
        else:
            a, b = nums["random_loss"], nums["sequential_loss"]
            held = a is not None and b is not None and a < b
        nums.update({"random_curve": [round(h["train_loss"], 3) for h in hr],
                     "sequential_curve": [round(h["train_loss"], 3) for h in hs],
                     "random_test_top1": rows["rcnn_random"]["top1"], "sequential_test_top1": rows["rcnn_sequential"]["top1"],
                     "random_train_s": rows["rcnn_random"].get("train_s"),
                     "sequential_train_s": rows["rcnn_sequential"].get("train_s")})
        claims.append({"claim": 3, "text": "RCNN random (pair) training gets further than sequential after the same "
                       "number of steps (val top-1 at half the epochs)", "held": bool(held), "numbers": nums})
    if "actionflownet" in rows and "actionflownet_lam0" in rows:
        a, b = rows["actionflownet"]["top1"], rows["actionflownet_lam0"]["top1"]
        claims.append({"claim": 4, "text": "ActionFlowNet multitask (lambda > 0) beats lambda = 0 on A",
                       "held": bool(a > b), "numbers": {"lambda>0": a, "lambda=0": b}})
    if agg:
        best = max(agg, key=agg.get)
        claims.append({"claim": 5, "text": "log-mean vs mean vs max aggregation of RCNN frame scores (held: log-mean "
                       "is at least as good)", "held": bool(agg["logmean"] >= max(agg["mean"], agg["max"])),
                       "numbers": {**agg, "best": best}})
    return claims


def _set_threads(n: int | None) -> int | None:
    if not n:
        return None
    import torch

    old = torch.get_num_threads()
    torch.set_num_threads(int(n))
    return old


def run_fidelity(out: str | Path = "runs/fidelity", *, quick: bool = False, epochs: int | None = None,
                 videos_per_class: int | None = None, seed: int | None = None,
                 settings: FidelitySettings | None = None, only: list[str] | None = None) -> dict[str, Any]:
    """Run the benchmark; returns ``{"rows": [...], "fusion": ..., "aggregation": ..., "midpoint": ...,
    "claims": [...], "settings": ...}`` and writes it to ``<out>/fidelity.json``.

    ``settings`` (default :class:`FidelitySettings`; ``quick``: :func:`quick_settings`) may be adjusted
    by ``epochs``, ``videos_per_class`` and ``seed`` (training seed). ``only``: run just these experiments.
    """
    from vidray.runtime import init_ray
    from vidray.tracking import default_tracking_uri, setup_mlflow

    s = settings or (quick_settings() if quick else FidelitySettings())
    upd = {k: v for k, v in (("epochs", epochs), ("videos_per_class", videos_per_class), ("seed", seed)) if v is not None}
    s = replace(s, **upd)
    out = Path(out).resolve()
    out.mkdir(parents=True, exist_ok=True)
    t0 = time.perf_counter()
    init_ray(None)  # the local Ray every stage uses (idle workers kept between epochs, dashboard on)
    old_threads = _set_threads(s.threads)
    try:
        data = build_corpora(out, settings=s)
        corpora_s = time.perf_counter() - t0
        uri = default_tracking_uri(out)
        setup_mlflow(uri, "fidelity")
        rows: dict[str, dict] = {}
        for exp in experiments(quick):
            if only and exp.name not in only:
                continue
            log.info("fidelity: training %s on corpus %s", exp.name, exp.corpus)
            rows[exp.name] = run_experiment(exp, data[exp.corpus], out, tracking_uri=uri, settings=s)
            log.info("fidelity: %s test top-1 %.3f (chance %.3f), %.0f s", exp.name, rows[exp.name]["top1"],
                     rows[exp.name]["chance"], rows[exp.name]["train_s"])
        fusion = _fusion(rows) if "B_rgb" in rows and "B_flow" in rows else None
        agg = _aggregation_study(rows["rcnn_random"], data["A"]) if "rcnn_random" in rows else None
        mid = _midpoint(rows, data["A"]) if "rcnn_random" in rows and "rcnn_sequential" in rows else None
    finally:
        if old_threads:
            _set_threads(old_threads)
    report = {"rows": [{k: v for k, v in r.items() if k != "history"} for r in rows.values()], "fusion": fusion,
              "aggregation": agg, "midpoint": mid, "claims": judge(rows, fusion, agg, midpoint=mid),
              "wall_s": round(time.perf_counter() - t0, 1), "corpora_s": round(corpora_s, 1), "quick": quick,
              "settings": asdict(s), "histories": {n: r["history"] for n, r in rows.items()}}
    (out / "fidelity.json").write_text(json.dumps(report, indent=2))
    return report


def format_report(report: dict[str, Any]) -> str:
    """The benchmark's table and claims as text."""
    lines = [f"{'model':<20} {'corpus':<6} {'input':<9} {'top1':>6} {'chance':>7} {'train s':>8} {'cpu s':>6} "
             f"{'eval s':>7}"]
    for r in report["rows"]:
        lines.append(f"{r['name']:<20} {r['corpus']:<6} {r['input']:<9} {r['top1']:>6.3f} {r['chance']:>7.3f} "
                     f"{r['train_s']:>8.1f} {r.get('train_cpu_s', 0.0):>6.1f} {r.get('eval_s', 0.0):>7.1f}")
    if report.get("fusion"):
        f = report["fusion"]
        lines.append(f"{'B fused':<20} {'B':<6} {'rgb+flow':<9} {f['top1']:>6.3f} {1 / 12:>7.3f} {'':>8} {'':>6} {'':>7}  "
                     f"(rgb:flow 1:{f['flow_weight']:g}, {f.get('method', 'weighted')}, l1-norm {f['l1_norm']}, chosen on val)")
    lines.append("")
    for c in report["claims"]:
        nums = {k: v for k, v in c["numbers"].items() if not k.endswith("_curve")}
        lines.append(f"claim {c['claim']}: {'HELD' if c['held'] else 'NOT HELD'} - {c['text']}: {json.dumps(nums)}")
    lines.append(f"wall {report['wall_s']} s (corpora {report.get('corpora_s', 0)} s)")
    return "\n".join(lines)
