"""Near-duplicate retrieval over an ingested corpus (Ng, thesis ch. 2; Ng et al., CVPRW 2015).

* :mod:`vidray.retrieval.vlad` -- the descriptors: VLAD of conv features (k-means vocabulary,
  intra-normalisation, PCA-whitening), the global-pooling / fc baselines, AP / mAP.
* :mod:`vidray.retrieval.config` -- :class:`EmbedConfig` (``vidray embed --config/--set``).
* :mod:`vidray.retrieval.features` -- the network (a backbone cut at a layer) and its preprocessing.
* :mod:`vidray.retrieval.embed` -- ``vidray embed``: Ray Data batch inference to Parquet, resumable.
* :mod:`vidray.retrieval.index` -- exact (numpy) and faiss (flat / IVF / HNSW) inner-product indexes.
* :mod:`vidray.retrieval.query` -- ``vidray search`` and ``vidray dedup`` over an embeddings folder.

Layering: imports ``vidray.io``, ``vidray.models``, ``vidray.config``, ``vidray.runtime`` only.
"""

from __future__ import annotations

import importlib
from typing import Any

__all__ = [
    "VLADEncoder",
    "GlobalEncoder",
    "encoder_from_state",
    "fit_pca_whitening",
    "local_descriptors",
    "search",
    "average_precision",
    "mean_average_precision",
    "feature_tap",
    "extract_feature_maps",
    "encode_frames",
    "video_descriptor",
]


def __getattr__(name: str) -> Any:
    """``from vidray.retrieval import VLADEncoder`` imports torch only then (PEP 562), so that
    ``vidray --help``, which imports :mod:`vidray.retrieval.commands`, stays fast."""
    if name in __all__:
        return getattr(importlib.import_module("vidray.retrieval.vlad"), name)
    raise AttributeError(f"module 'vidray.retrieval' has no attribute {name!r}")
