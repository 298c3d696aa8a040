"""``vidray embed``, ``vidray search`` and ``vidray dedup``: argument parsing and thin handlers.

Registered by :mod:`vidray.cli`; heavy imports (torch, Ray, faiss) happen inside the handlers so
``vidray --help`` stays instant. Usage errors raise ``ValueError`` / ``FileNotFoundError``, which
``vidray.cli.main`` prints as one line ``vidray <cmd>: error: ...`` with exit code 2.
"""

from __future__ import annotations

import argparse
import json
from typing import Callable

from vidray.console import echo, set_log_dir

DEFAULT_THRESHOLD = 0.5
"""``vidray dedup --threshold``: cosine similarity of two video descriptors (docs/retrieval.md has the
similarities of copies and of distinct videos measured by benchmarks/retrieval.py)."""

_INDEX_HELP = ("auto | exact | flat | ivf | hnsw (vidray.registry.INDEXES; auto: faiss flat up to 200k vectors, "
               "IVF above; exact: numpy, no faiss)")


# ---------------------------------------------------------------------------------------- embed
def _cmd_embed(a: argparse.Namespace) -> int:
    from vidray.config import load_config
    from vidray.retrieval.config import EmbedConfig
    from vidray.retrieval.embed import run_embed

    overrides = list(a.overrides)
    if a.model:
        overrides.append(f"model.name={a.model}")
    if a.layer:
        overrides.append(f"model.layer={a.layer}")
    if a.checkpoint:
        overrides.append(f"model.checkpoint={a.checkpoint}")
    cfg = load_config(EmbedConfig, a.config, overrides)
    set_log_dir(a.out)
    summary = run_embed(a.data, a.out, cfg, overwrite=a.overwrite)
    echo(summary.format())
    if a.json:
        from dataclasses import asdict

        echo(json.dumps(asdict(summary)))
    return 0


# ---------------------------------------------------------------------------------------- search
def _cmd_search(a: argparse.Namespace) -> int:
    from vidray.retrieval.query import Embeddings, search

    result = search(Embeddings(a.emb), a.query, a.k, index=a.index, frames_per_hit=a.frames)
    echo(result.format())
    if a.json:
        echo(json.dumps(result.to_json()))
    return 0


# ---------------------------------------------------------------------------------------- dedup
def _cmd_dedup(a: argparse.Namespace) -> int:
    from vidray.retrieval.query import Embeddings, dedup

    result = dedup(Embeddings(a.emb), a.threshold, neighbors=a.neighbors, index=a.index)
    echo(result.format())
    if a.json:
        echo(json.dumps(result.to_json()))
    return 0


def add_retrieval_parsers(sub: argparse._SubParsersAction, commands: dict[str, Callable]) -> None:
    """Register ``vidray embed``, ``vidray search`` and ``vidray dedup``."""
    p = sub.add_parser(
        "embed", help="VLAD descriptors of every stored frame and video of an ingest output (Ray Data)",
        description="Per stored frame: VLAD of a conv layer's features (k-means vocabulary, "
        "intra-normalisation, PCA; Ng, thesis ch. 2; descriptor.kind gap / fc: the baselines), and one descriptor per video. Resumable: a "
        "re-run embeds only what is missing. Keys: docs/retrieval.md.")  # fmt: skip
    p.add_argument("data", help="ingest output folder (clips/, dataset.json)")
    p.add_argument("--out", required=True, help="embeddings folder (manifest.json, encoder.npz, frames/, videos/)")
    p.add_argument("--model", help="backbone (model.name): resnet18 (default), alexnet, tiny, vgg16, ...")
    p.add_argument("--layer", help="conv tap (model.layer), e.g. res3 (default), res4, conv4")
    p.add_argument("--checkpoint", help="a vidray training checkpoint whose backbone is used (model.checkpoint)")
    p.add_argument("--config", help="YAML EmbedConfig")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set descriptor.k=64 (repeatable)")
    p.add_argument("--overwrite", action="store_true", help="replace embeddings made with other settings")
    p.add_argument("--json", action="store_true", help="print the summary as JSON on the last line")
    commands["embed"] = _cmd_embed

    p = sub.add_parser("search", help="the videos nearest to an image, a video or a video_id",
                       description="Rank the embedded videos for QUERY: a video_id of EMB, an image file, or a "
                       "video file (sampled as the ingest sampled the corpus).")  # fmt: skip
    p.add_argument("emb", help="embeddings folder (vidray embed --out)")
    p.add_argument("query", help="video_id in EMB, image file or video file")
    p.add_argument("--k", type=int, default=10, help="videos to return")
    p.add_argument("--frames", type=int, default=3, help="best-matching frames shown per video")
    p.add_argument("--index", default="auto", help=_INDEX_HELP)
    p.add_argument("--json", action="store_true", help="print the result as JSON on the last line")
    commands["search"] = _cmd_search

    p = sub.add_parser("dedup", help="groups of near-duplicate videos, and those spanning splits (leakage)")
    p.add_argument("emb", help="embeddings folder (vidray embed --out)")
    p.add_argument("--threshold", type=float, default=DEFAULT_THRESHOLD,
                   help=f"cosine similarity of two video descriptors to link them (default {DEFAULT_THRESHOLD})")
    p.add_argument("--neighbors", type=int, default=10, help="nearest neighbours examined per video")
    p.add_argument("--index", default="auto", help=_INDEX_HELP)
    p.add_argument("--json", action="store_true",
                   help='last line: {"groups": [[video_id, ...], ...], "cross_split": [[...], ...]}')
    commands["dedup"] = _cmd_dedup
