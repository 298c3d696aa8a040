import pytest

from vidray.config import IngestConfig, apply_overrides, flatten, load_config


def test_overrides_parse_yaml_scalars(tmp_path):
    (tmp_path / "c.yaml").write_text("flow:\n  enabled: true\n  bound: 10\n")
    cfg = load_config(IngestConfig, tmp_path / "c.yaml", ["flow.algorithm=farneback", "flow.bound=15",
                                                           "sampling.max_seconds=300", "resize.short_side=null"])
    assert cfg.flow.enabled and cfg.flow.bound == 15.0 and cfg.flow.algorithm == "farneback"
    assert cfg.sampling.max_seconds == 300 and cfg.resize.short_side is None


def test_unknown_keys_and_bad_values_are_errors_naming_the_source(tmp_path):
    with pytest.raises(ValueError, match="--set"):
        load_config(IngestConfig, None, ["flow.bogus=1"])
    (tmp_path / "c.yaml").write_text("sampling:\n  mode: sometimes\n")
    with pytest.raises(ValueError, match="c.yaml"):
        load_config(IngestConfig, tmp_path / "c.yaml")
    with pytest.raises(ValueError, match="key.sub=value"):
        apply_overrides({}, ["novalue"])
    (tmp_path / "evil.yaml").write_text("!!python/object/apply:os.system ['echo hi']\n")
    with pytest.raises(Exception):
        load_config(IngestConfig, tmp_path / "evil.yaml")  # safe_load: no code execution


def test_data_hash_ignores_execution_settings():
    a = IngestConfig()
    b = load_config(IngestConfig, None, ["execution.concurrency=3", "output.videos_per_task=1"])
    c = load_config(IngestConfig, None, ["flow.enabled=true"])
    assert a.data_hash() == b.data_hash() != c.data_hash()
    assert flatten({"a": {"b": 1}, "c": 2}) == {"a.b": 1, "c": 2}
