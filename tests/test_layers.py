"""The package's layering (README "Repository layout"): every import, at module level or inside a
function, points DOWN the layers; the dataset format is reached only through vidray.io."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PKG = Path(__file__).resolve().parents[1] / "vidray"

# lowest first; a module may import its own layer's modules only where SIDEWAYS says so
LAYERS: list[tuple[str, ...]] = [
    ("vidray", "vidray.registry", "vidray.console"),
    ("vidray.config", "vidray.runtime"),
    ("vidray.io",),
    ("vidray.models",),
    ("vidray.flow", "vidray.sampling", "vidray.synth"),
    ("vidray.ingest",),
    ("vidray.data", "vidray.tracking"),
    ("vidray.recipe",),
    ("vidray.train", "vidray.eval", "vidray.retrieval"),
    ("vidray.tune", "vidray.plan", "vidray.commands", "vidray.inspection"),
    ("vidray.cli",),
    ("vidray.__main__",),
]
# training validates with evaluation's pure scoring functions; evaluation never imports training
SIDEWAYS = {("vidray.train", "vidray.eval.metrics"), ("vidray.train", "vidray.eval.aggregate"),
            ("vidray.train", "vidray.eval.fusion")}


def _module_name(path: Path) -> str:
    rel = path.relative_to(PKG.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _layer(name: str) -> tuple[int, str]:
    """(layer index, the layer entry that owns ``name``): the longest matching prefix."""
    best = (-1, "")
    for i, entries in enumerate(LAYERS):
        for e in entries:
            if (name == e or name.startswith(e + ".")) and len(e) > len(best[1]):
                best = (i, e)
    if best[0] < 0:
        raise AssertionError(f"{name} is in no layer: add it to LAYERS in tests/test_layers.py")
    return best


def _imports(path: Path) -> list[tuple[int, str]]:
    tree = ast.parse(path.read_text())
    out = []
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom) and node.module and node.level == 0 and node.module.startswith("vidray"):
            if node.module == "vidray":  # `from vidray import flow` imports the submodule
                out += [(node.lineno, f"vidray.{a.name}") for a in node.names if (PKG / a.name).exists()
                        or (PKG / f"{a.name}.py").exists()] or [(node.lineno, "vidray")]
            else:
                out.append((node.lineno, node.module))
        elif isinstance(node, ast.Import):
            out += [(node.lineno, a.name) for a in node.names if a.name.startswith("vidray")]
    return out


def _violations() -> list[str]:
    bad = []
    for path in sorted(PKG.rglob("*.py")):
        me = _module_name(path)
        my_layer, my_entry = _layer(me)
        for line, target in _imports(path):
            t_layer, t_entry = _layer(target)
            if t_layer < my_layer or t_entry == my_entry:
                continue
            if t_layer == my_layer and any(me.startswith(a) and target.startswith(b) for a, b in SIDEWAYS):
                continue
            bad.append(f"{path.relative_to(PKG.parent)}:{line} ({me}, layer {my_layer}) imports {target} "
                       f"(layer {t_layer})")
    return bad


def test_every_import_points_down_the_layers():
    assert _violations() == []


def test_io_and_models_reach_nothing_above_them():
    above = ("vidray.ingest", "vidray.flow", "vidray.data", "vidray.train", "vidray.eval", "vidray.tune",
             "vidray.plan", "vidray.cli")
    for sub in ("io", "models"):
        for path in (PKG / sub).rglob("*.py"):
            for line, target in _imports(path):
                assert not target.startswith(above), f"{path}:{line} imports {target}"


def test_eval_does_not_import_training_and_no_benchmark_in_the_package():
    for path in (PKG / "eval").rglob("*.py"):
        assert not any(t.startswith("vidray.train") for _, t in _imports(path)), path
    assert not list(PKG.rglob("fidelity*.py"))


def test_the_checker_sees_a_violation(tmp_path):
    """The rule is not vacuous: an upward import in a lower layer is reported."""
    assert _layer("vidray.io.reader") == (2, "vidray.io")
    assert _layer("vidray.train.loop")[0] > _layer("vidray.io.reader")[0]
    src = tmp_path / "x.py"
    src.write_text("def f():\n    from vidray.ingest import run_ingest\n")
    assert _imports(src) == [(2, "vidray.ingest")]


@pytest.mark.parametrize("registry", ["DECODERS", "IMAGE_ENCODINGS", "SAMPLING_MODES", "FLOW_ALGORITHMS", "SAMPLERS",
                                      "LOSSES", "OPTIMIZERS", "SCHEDULES", "AGGREGATIONS", "METRICS", "MODELS"])
def test_every_registry_fills_itself_and_describes_its_entries(registry):
    from vidray import registry as R

    reg = getattr(R, registry)
    names = reg.names()
    assert names, f"{registry} is empty"
    assert all(reg.help(n) for n in names), f"{registry}: an entry has no help text"
    with pytest.raises(ValueError, match=f"unknown {reg.kind}"):
        reg.get("no-such-entry")
