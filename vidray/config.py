"""Typed configuration for every vidray stage.

Configs are pydantic models, loaded from YAML (``yaml.safe_load``; a config is never ``eval``-ed)
and overridden from the command line with ``--set key.sub=value`` (the value is parsed as a YAML
scalar, so ``--set flow.bound=15``, ``--set flow.enabled=false`` and ``--set sampling.mode=fps``
all do what they look like). Unknown keys are errors, not silently ignored.

Stage configs live here so that there is one place to read what a knob means:

* :class:`IngestConfig` -- ``vidray ingest`` (sampling, resize, flow, output, execution).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field

T = TypeVar("T", bound=BaseModel)


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


# --------------------------------------------------------------------------------------------
# Ingest
# --------------------------------------------------------------------------------------------
SamplingMode = Literal["fps", "every_s", "segments", "clip", "all"]


class SamplingConfig(_Strict):
    """Which source frames are stored (see :mod:`vidray.sampling`).

    ``mode``:
      * ``fps``: ``fps`` frames per second of the first ``max_seconds`` (Sports-1M: 1 fps of the first
        300 s; with ``loop=True`` a shorter video repeats from its start up to ``fps*max_seconds``).
      * ``every_s``: one frame every ``interval_s`` seconds (FCVID: 3 s).
      * ``segments``: TSN, ``num_segments`` equal segments, one snippet each (centre of the segment,
        or a seeded random offset with ``random_offset=True``).
      * ``clip``: ``num_clips`` clips of ``clip_len`` frames, ``frame_interval`` apart (MMAction2's
        ``clip_len x frame_interval x num_clips``), clip starts evenly spread over the video.
      * ``all``: every frame (at most ``max_frames``).
    """

    mode: SamplingMode = "fps"
    fps: float = Field(1.0, gt=0, description="frames per second for mode=fps")
    max_seconds: float | None = Field(None, gt=0, description="only the first max_seconds of a video")
    loop: bool = Field(False, description="mode=fps: repeat short videos up to fps*max_seconds frames")
    interval_s: float = Field(3.0, gt=0, description="mode=every_s: seconds between frames")
    num_segments: int = Field(8, ge=1, description="mode=segments: TSN k")
    random_offset: bool = Field(False, description="mode=segments: seeded random offset per segment")
    clip_len: int = Field(16, ge=1, description="mode=clip: frames per clip (T)")
    frame_interval: int = Field(1, ge=1, description="mode=clip: source frames between clip frames")
    num_clips: int = Field(1, ge=1, description="mode=clip: clips per video")
    max_frames: int | None = Field(None, ge=1, description="cap on stored frames per video")
    seed: int = 0


class ResizeConfig(_Strict):
    """Resize stored frames to a short side, keeping the aspect ratio (sizes in pixels)."""

    short_side: int | None = Field(256, ge=8, description="None keeps the source size")
    max_long_side: int | None = Field(None, ge=8)


FlowAlgorithm = Literal["tvl1", "farneback", "dis_ultrafast", "dis_fast", "dis_medium"]


class FlowConfig(_Strict):
    """Optical flow stored with each frame (two-stream convention, see :mod:`vidray.flow`).

    For each stored frame at source index ``i`` a stack of ``stack_length`` (L) flow fields is computed
    between the frames ``i, i+s, ..., i+L*s`` where ``s = round(src_fps / flow_fps)`` (``flow_fps=None``
    means adjacent source frames). Each field is clipped to ``+-bound`` pixels and quantised to uint8
    (``128 + x * 127.5 / bound``).
    """

    enabled: bool = False
    algorithm: FlowAlgorithm = "dis_medium"
    bound: float = Field(20.0, gt=0, description="pixels; values are clipped to +-bound")
    flow_fps: float | None = Field(None, gt=0)
    stack_length: int = Field(1, ge=1, description="L flow fields per stored frame")
    short_side: int | None = Field(None, ge=8, description="flow resolution; None = same as frames")


FrameEncoding = Literal["jpeg", "png", "raw"]


class OutputConfig(_Strict):
    """How rows and files are written."""

    encoding: FrameEncoding = "jpeg"
    jpeg_quality: int = Field(90, ge=1, le=100)
    flow_encoding: FrameEncoding = "jpeg"
    max_frames_per_row: int = Field(128, ge=1, description="longer videos are split into chunk rows")
    videos_per_task: int = Field(4, ge=1, description="videos per Ray task and per Parquet file pair")


class ExecutionConfig(_Strict):
    """Where and how the Ray Data job runs."""

    ray_address: str | None = Field(None, description="None: connect to RAY_ADDRESS or start a local Ray")
    num_cpus_per_task: float = Field(1.0, gt=0)
    memory_per_task_mb: int | None = Field(None, ge=1)
    concurrency: int | None = Field(None, ge=1, description="max parallel tasks (None: Ray decides)")
    max_retries: int = Field(3, ge=0, description="Ray task retries (worker crash)")
    max_failure_fraction: float = Field(0.1, ge=0, le=1, description="exit non-zero above this")
    decoder: Literal["pyav", "decord"] = "pyav"
    seek: Literal["auto", "sequential", "seek"] = "auto"


class IngestConfig(_Strict):
    """Full ``vidray ingest`` configuration."""

    sampling: SamplingConfig = SamplingConfig()
    resize: ResizeConfig = ResizeConfig()
    flow: FlowConfig = FlowConfig()
    output: OutputConfig = OutputConfig()
    execution: ExecutionConfig = ExecutionConfig()

    def data_hash(self) -> str:
        """Hash of the settings that change the data (not of execution settings)."""
        d = self.model_dump(mode="json")
        d.pop("execution")
        d["output"].pop("videos_per_task")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Loading and overrides
# --------------------------------------------------------------------------------------------
def parse_override(item: str) -> tuple[list[str], Any]:
    """Parse ``"a.b.c=value"`` into ``(["a", "b", "c"], value)``; value is a YAML scalar/list."""
    if "=" not in item:
        raise ValueError(f"override {item!r} is not of the form key.sub=value")
    key, raw = item.split("=", 1)
    key = key.strip()
    if not key or any(not part for part in key.split(".")):
        raise ValueError(f"override {item!r} has an empty key part")
    value = yaml.safe_load(raw) if raw.strip() else None
    return key.split("."), value


def apply_overrides(data: dict[str, Any], overrides: list[str] | None) -> dict[str, Any]:
    """Return a copy of a nested dict with ``key.sub=value`` overrides applied."""
    out = json.loads(json.dumps(data))  # deep copy of plain data
    for item in overrides or []:
        keys, value = parse_override(item)
        node = out
        for k in keys[:-1]:
            node = node.setdefault(k, {})
            if not isinstance(node, dict):
                raise ValueError(f"override {item!r}: {k!r} is not a section")
        node[keys[-1]] = value
    return out


def load_config(cls: type[T], path: str | Path | None = None, overrides: list[str] | None = None) -> T:
    """Build a config of type ``cls`` from an optional YAML file plus ``--set`` overrides.

    Raises ``ValueError`` naming the file and the offending key for unknown keys or bad values.
    """
    data: dict[str, Any] = {}
    if path is not None:
        text = Path(path).read_text()
        loaded = yaml.safe_load(text) or {}
        if not isinstance(loaded, dict):
            raise ValueError(f"{path}: a config file must be a YAML mapping, got {type(loaded).__name__}")
        data = loaded
    data = apply_overrides(data, overrides)
    try:
        return cls.model_validate(data)
    except Exception as e:  # pydantic.ValidationError: re-raise with the source named
        src = str(path) if path else "--set overrides"
        raise ValueError(f"invalid {cls.__name__} in {src}: {e}") from e


def flatten(d: dict[str, Any], prefix: str = "") -> dict[str, Any]:
    """Flatten a nested dict to ``{"a.b": v}`` (for MLflow params and summaries)."""
    out: dict[str, Any] = {}
    for k, v in d.items():
        key = f"{prefix}{k}"
        if isinstance(v, dict):
            out.update(flatten(v, key + "."))
        else:
            out[key] = v
    return out

