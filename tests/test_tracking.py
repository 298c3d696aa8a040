"""MLflow helpers against a real sqlite store in a temporary run folder (no server, no mocks)."""

from __future__ import annotations

from pathlib import Path

import mlflow
import numpy as np
import pytest
from mlflow.tracking import MlflowClient

from vidray import tracking

PNG_MAGIC = b"\x89PNG\r\n\x1a\n"


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    """One sqlite store for the module (creating its tables takes seconds)."""
    run_dir = tmp_path_factory.mktemp("run")
    uri = tracking.default_tracking_uri(run_dir)
    exp_id = tracking.setup_mlflow(uri, "vidray-test")
    yield run_dir, uri, exp_id
    while mlflow.active_run() is not None:
        mlflow.end_run()


def test_default_uri_and_idempotent_setup(store):
    run_dir, uri, exp_id = store
    assert uri == f"sqlite:///{run_dir.resolve()}/mlflow.db"
    assert (run_dir / "mlflow.db").is_file()
    assert tracking.setup_mlflow(uri, "vidray-test") == exp_id  # second call: same experiment
    exp = MlflowClient(uri).get_experiment(exp_id)
    assert exp.name == "vidray-test"
    assert exp.artifact_location == (run_dir.resolve() / "mlartifacts").as_uri()
    other = tracking.setup_mlflow(uri, "vidray-other")
    assert other != exp_id
    tracking.setup_mlflow(uri, "vidray-test")  # leave the module's experiment active


def test_params_metrics_and_artifacts_read_back(store, tmp_path, monkeypatch):
    run_dir, uri, exp_id = store
    monkeypatch.chdir(tmp_path)  # a stray ./mlruns would show up here
    config = {
        "model": {"name": "tsn", "backbone": {"depth": 18, "pretrained": None}},
        "optim": {"lr": 0.01, "milestones": [10, 20]},
        "notes": "x" * 7000,
    }
    history = [{"epoch": e, "train_loss": 1.0 / e, "val_top1": 0.2 * e, "lr": 0.01} for e in (1, 2, 3)]
    flow = np.random.default_rng(0).normal(size=(3, 4, 16, 16)).astype(np.float32) * 3
    with mlflow.start_run(experiment_id=exp_id) as run:
        logged = tracking.log_params_flat(config)
        for row in history:
            tracking.log_epoch_metrics({**row, "hit@5": 0.5, "phase": "train", "bad": float("nan")}, row["epoch"])
        p_curves = tracking.plot_training_curves(history, tmp_path / "out" / "curves.png")
        cm = np.array([[5, 1, 0], [2, 3, 1], [0, 0, 6]])
        p_cm = tracking.plot_confusion_matrix(cm, tmp_path / "out" / "confusion.png", ["run", "jump", "swim"])
        p_flow = tracking.plot_flow_grid(flow, tmp_path / "out" / "flow.png", images=np.zeros((3, 16, 16, 3), np.uint8))
    assert set(logged) == {"model.name", "model.backbone.depth", "model.backbone.pretrained", "optim.lr",
                           "optim.milestones", "notes"}  # fmt: skip

    client = MlflowClient(uri)
    data = client.get_run(run.info.run_id).data
    assert data.params["model.name"] == "tsn"
    assert data.params["model.backbone.depth"] == "18"
    assert data.params["model.backbone.pretrained"] == "None"
    assert data.params["optim.milestones"] == "[10, 20]"
    assert len(data.params["notes"]) == 6000 and data.params["notes"].endswith("...")
    hist = client.get_metric_history(run.info.run_id, "train_loss")
    assert [(m.step, m.value) for m in sorted(hist, key=lambda m: m.step)] == [(1, 1.0), (2, 0.5), (3, 1 / 3)]
    assert data.metrics["val_top1"] == pytest.approx(0.6)
    assert data.metrics["hit_5"] == 0.5  # '@' is not allowed in MLflow names
    assert "phase" not in data.metrics and "bad" not in data.metrics

    arts = {a.path for a in client.list_artifacts(run.info.run_id, "plots")}
    assert arts == {"plots/curves.png", "plots/confusion.png", "plots/flow.png"}
    local = Path(client.download_artifacts(run.info.run_id, "plots", str(tmp_path / "dl")))
    for p in (p_curves, p_cm, p_flow):
        assert p.read_bytes()[:8] == PNG_MAGIC
        assert (local / p.name).read_bytes() == p.read_bytes()
    # artifacts live under the run folder, not in the working directory
    assert list((run_dir / "mlartifacts").rglob("confusion.png"))
    assert not (tmp_path / "mlruns").exists()


def test_logging_without_a_run_is_refused(store, tmp_path):
    assert mlflow.active_run() is None
    with pytest.raises(RuntimeError, match="no active MLflow run"):
        tracking.log_params_flat({"a": 1})
    with pytest.raises(RuntimeError, match="no active MLflow run"):
        tracking.plot_confusion_matrix(np.eye(2, dtype=int), tmp_path / "cm.png")
    assert not (tmp_path / "cm.png").exists()
    # artifact_path=None only writes the file
    p = tracking.plot_confusion_matrix(np.eye(40, dtype=int), tmp_path / "cm40.png", artifact_path=None)
    assert p.read_bytes()[:8] == PNG_MAGIC
    assert mlflow.active_run() is None


def test_sanitize_key():
    assert tracking.sanitize_key("val/hit@5 (video)") == "val/hit_5 _video_"
    assert len(tracking.sanitize_key("k" * 400)) == 250


def test_curves_put_the_learning_rate_on_its_own_axis_and_epochs_are_integers():
    history = [{"epoch": e, "train_loss": 2.0 / e, "val_top1": 0.2 * e, "lr": 0.01 * 0.1 ** (e // 2)}
               for e in range(1, 5)]  # fmt: skip
    fig = tracking.training_curves_figure(history)
    loss_ax, metric_ax, lr_ax = fig.axes
    labels = lambda ax: [ln.get_label() for ln in ax.get_lines()]  # noqa: E731
    assert labels(metric_ax) == ["val_top1"] and "lr" not in labels(loss_ax)  # not on the accuracy scale
    assert labels(lr_ax) == ["lr"] and lr_ax.get_ylabel() == "learning rate" and lr_ax.get_yscale() == "log"
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    FigureCanvasAgg(fig).draw()
    ticks = [t for t in metric_ax.get_xticks() if 1 <= t <= 4]
    assert ticks and all(float(t).is_integer() for t in ticks)


def test_flow_colour_key_points_the_way_flow_goes():
    from vidray.flow import flow_color_key, flow_to_rgb

    key = flow_color_key(65)
    c = 32
    right, down = key[c, c + 30], key[c + 30, c]
    field = np.zeros((2, 2, 2), np.float32)
    field[0, 0] = (30, 0)
    field[0, 1] = (0, 30)
    ref = flow_to_rgb(field)
    assert np.abs(right.astype(int) - ref[0, 0]).max() <= 20 and np.abs(down.astype(int) - ref[0, 1]).max() <= 20
    assert (key[c, c] > 240).all() and (key[0, 0] == 255).all()  # centre: no motion (white); outside: white
