"""Every paper recipe loads with the typed configs and builds its model (paper backbone, random init)."""

from pathlib import Path

import pytest
import torch

from vidray.config import IngestConfig, TrainConfig, load_config
from vidray.models import create_model, list_models

RECIPES = Path(__file__).resolve().parents[1] / "configs" / "recipes"
TRAIN = sorted(p for p in RECIPES.glob("*.yaml") if not p.name.startswith("ingest_"))
INGEST = sorted(RECIPES.glob("ingest_*.yaml"))


def test_there_is_a_recipe_for_every_paper_target():
    names = {p.stem for p in TRAIN}
    assert {"ucf101_gru_rcn_rgb", "ucf101_gru_rcn_flow", "ucf101_gru_rcn_bidir_rgb", "ucf101_rcnn_random",
            "sports1m_conv_pooling", "sports1m_lstm_rgb", "fcvid_tdn_resnet50", "fcvid_tsn_resnet50",
            "hmdb51_tdn_resnet50"} <= names
    for p in TRAIN:
        head = p.read_text().splitlines()[0]
        assert head.startswith("# ") and any(ch.isdigit() for ch in head), f"{p.name}: no paper target in header"


@pytest.mark.parametrize("path", INGEST, ids=lambda p: p.stem)
def test_ingest_recipe_loads(path):
    cfg = load_config(IngestConfig, path)
    assert cfg.flow.enabled


@pytest.mark.parametrize("path", TRAIN, ids=lambda p: p.stem)
def test_train_recipe_loads_and_builds_its_paper_model(path):
    cfg = load_config(TrainConfig, path)
    assert cfg.model.name in list_models()
    kwargs = dict(cfg.model.kwargs)
    assert kwargs.get("backbone") not in (None, "tiny"), "a recipe uses the paper's backbone"
    kwargs["weights"] = None  # no downloads here: random init, the loading code is tested elsewhere
    in_ch = 2 if cfg.input.modality == "flow" else 3
    with torch.device("meta"):  # build the full graph without allocating or initialising weights
        model = create_model(cfg.model.name, num_classes=101, in_channels=in_ch, **kwargs)
    n = sum(p.numel() for p in model.parameters())
    assert n > 5_000_000  # a paper-size network, not the tiny CPU variant
