"""Typed configuration for every vidray stage.

Configs are pydantic models, loaded from YAML (``yaml.safe_load``; a config is never ``eval``-ed)
and overridden from the command line with ``--set key.sub=value`` (the value is parsed as a YAML
scalar, so ``--set flow.bound=15``, ``--set flow.enabled=false`` and ``--set sampling.mode=fps``
all do what they look like). Unknown keys are errors, not silently ignored.

Stage configs live here so that there is one place to read what a knob means:

* :class:`IngestConfig` -- ``vidray ingest`` (sampling, resize, flow, output, execution).
* :class:`TrainConfig` -- ``vidray train`` (model, input, sampler, augment, optim, schedule, loss,
  freeze, checkpoint, tracking, ray, debug).
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Annotated, Any, Literal, TypeVar

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from vidray import registry

T = TypeVar("T", bound=BaseModel)


class _Strict(BaseModel):
    # extra="forbid": an unknown key is an error; allow_inf_nan=False: `.inf` / `nan` are refused
    # (a YAML `.inf` sampling rate or flow bound would otherwise pass and break every video).
    model_config = ConfigDict(extra="forbid", validate_assignment=True, allow_inf_nan=False)


# Names chosen from a backend table (vidray.registry): the table is the one list of allowed values.
SamplingMode = Annotated[str, registry.SAMPLING_MODES.validator()]
FlowAlgorithm = Annotated[str, registry.FLOW_ALGORITHMS.validator()]
FrameEncoding = Annotated[str, registry.IMAGE_ENCODINGS.validator()]
DecoderName = Annotated[str, registry.DECODERS.validator()]
SamplerName = Annotated[str, registry.SAMPLERS.validator()]
LossName = Annotated[str, registry.LOSSES.validator()]
OptimizerName = Annotated[str, registry.OPTIMIZERS.validator()]
ScheduleName = Annotated[str, registry.SCHEDULES.validator()]
ModelName = Annotated[str, registry.MODELS.validator()]


# --------------------------------------------------------------------------------------------
# Ingest
# --------------------------------------------------------------------------------------------
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

    mode: SamplingMode = Field("fps", description="which source frames are stored")
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
    seed: int = Field(0, description="per-video seeds (random_offset) derive from it and the video id")
    keyframe_tolerance: float = Field(
        0.0, ge=0, le=0.5, description="take a keyframe instead of a sampled frame within this fraction of the "
        "sampling interval (decodes on its own: TSN-8 on GOP 250 ~14-21x faster); frame_index records the "
        "frames taken; 0 = exact frames",
    )


class ResizeConfig(_Strict):
    """Resize stored frames to a short side, keeping the aspect ratio (sizes in pixels). By default a
    video is only ever made smaller: upscaling stores more bytes and no more information."""

    short_side: int | None = Field(256, ge=8, description="short side of the stored frames, pixels; None keeps the "
                                   "source size")
    upscale: bool = Field(False, description="also enlarge videos whose short side is smaller (off: short_side is an "
                          "upper bound and a 32x32 corpus stays 32x32)")
    max_long_side: int | None = Field(None, ge=8, description="cap on the long side after the short-side resize")


class FlowConfig(_Strict):
    """Optical flow stored with each frame (two-stream convention, see :mod:`vidray.flow`).

    For each stored frame at source index ``i`` a stack of ``stack_length`` (L) flow fields is computed
    between the frames ``i, i+s, ..., i+L*s`` where ``s = round(src_fps / flow_fps)`` (``flow_fps=None``
    means adjacent source frames). Each field is clipped to ``+-bound`` pixels and quantised to uint8
    (``128 + x * 127.5 / bound``).
    """

    enabled: bool = Field(False, description="compute a flow stack per stored frame")
    algorithm: FlowAlgorithm = Field("dis_medium", description="flow estimator")
    bound: float = Field(20.0, gt=0, description="pixels; values are clipped to +-bound")
    flow_fps: float | None = Field(None, gt=0, description="pairs span round(src_fps/flow_fps) source frames "
                                    "(Ng: 15 fps); None = adjacent frames")
    stack_length: int = Field(1, ge=1, description="L flow fields per stored frame")
    short_side: int | None = Field(None, ge=8, description="flow resolution; None = same as frames")


class OutputConfig(_Strict):
    """How rows and files are written."""

    encoding: FrameEncoding = Field("jpeg", description="stored frames' image encoding")
    jpeg_quality: int = Field(90, ge=1, le=100, description="JPEG quality of frames and flow stacks")
    flow_encoding: FrameEncoding = Field("jpeg", description="flow stacks' image encoding")
    max_frames_per_row: int = Field(128, ge=1, description="longer videos are split into chunk rows")
    videos_per_task: int = Field(4, ge=1, description="videos per Ray decoding task (load balance, cheap retries)")
    target_part_mb: float = Field(
        384.0, ge=0, description="size of a clips part file: a write task bundles decoded videos until it holds "
        "this many MB (rows of a video never split but for max_frames_per_row chunks); 0: one part per task")
    row_group_mb: float = Field(64.0, gt=0, description="Parquet row group size inside a clips part (MB): what a "
                                "training read task holds in memory")
    order_seed: int | None = Field(
        0, description="entries are processed in a seeded random order (recorded in dataset.json), so a "
        "class-sorted manifest still gives class-mixed parts; null: manifest order")


class ExecutionConfig(_Strict):
    """Where and how the Ray Data job runs."""

    ray_address: str | None = Field(None, description="None: connect to RAY_ADDRESS or start a local Ray")
    num_cpus_per_task: float = Field(1.0, gt=0, description="Ray CPUs reserved per ingest task")
    memory_per_task_mb: int | None = Field(None, ge=1, description="Ray memory reservation per task (MB)")
    concurrency: int | None = Field(None, ge=1, description="max parallel tasks (None: Ray decides)")
    max_retries: int = Field(3, ge=0, description="Ray task retries (worker crash)")
    max_failure_fraction: float = Field(0.1, ge=0, le=1, description="exit non-zero above this")
    decoder: DecoderName = Field("pyav", description="video decoder")
    seek: Literal["auto", "sequential", "seek"] = Field(
        "auto", description="auto: decode only what the wanted frames need (GOPs without one are skipped, "
        "non-reference frames dropped; AVI and other files whose timestamps cannot identify frames: per wanted "
        "frame, seek to its keyframe only when cheaper than decoding through); sequential / seek: always decode "
        "through / always seek (same frames, for comparisons)")
    env_vars: dict[str, str] = Field(
        default_factory=dict,
        description="environment of the ingest tasks (e.g. AWS_ENDPOINT_URL for an S3-compatible store); "
        "never put secrets here: use the nodes' credentials",
    )
    node_labels: dict[str, str] = Field(
        default_factory=lambda: {"vidray-role": "ingest"},
        description="Ray node labels the ingest tasks run on (cluster.yaml's cpu_ingest nodes); applied only when "
        "a node of the cluster carries these label keys (a plain local Ray has none); {} = any node",
    )


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
        for k in ("videos_per_task", "target_part_mb", "row_group_mb", "order_seed"):  # where rows go, not what
            d["output"].pop(k)
        if not d["sampling"]["keyframe_tolerance"]:  # added later: at its default, earlier hashes still match
            d["sampling"].pop("keyframe_tolerance")
        return hashlib.sha256(json.dumps(d, sort_keys=True).encode()).hexdigest()[:16]


# --------------------------------------------------------------------------------------------
# Train (``vidray train``; see docs/training.md for every key)
# --------------------------------------------------------------------------------------------
class ModelConfig(_Strict):
    """Which registered model (:mod:`vidray.models`) and how it is built and called.

    ``kwargs`` go to ``create_model(name, num_classes=K, in_channels=..., **kwargs)`` (e.g.
    ``backbone: tiny``, ``dropout``, ``weights``); ``in_channels`` is set from ``input.modality``.
    ``forward`` / ``eval_forward`` are extra keyword arguments of ``model(x, **forward)`` in training /
    evaluation (RCNN random mode: ``forward: {mode: random}``, ``eval_forward: {mode: sequential}``).
    """

    name: ModelName | None = Field(None, description="registry name; `vidray train --model` sets it")
    kwargs: dict[str, Any] = Field(default_factory=lambda: {"backbone": "tiny"},
                                   description="builder kwargs (backbone, dropout, weights, model-specific)")
    forward: dict[str, Any] = Field(default_factory=dict, description="model(x, **forward) in training")
    eval_forward: dict[str, Any] = Field(default_factory=dict, description="model(x, **eval_forward) in eval")


Modality = Literal["rgb", "flow", "rgb+flow"]


class InputConfig(_Strict):
    """What a sample holds.

    * ``rgb``: frames ``(T, 3, S, S)``.
    * ``flow``: the flow stream: each sampled frame's stack of ``L`` fields as ``2L`` channels
      ``(T, 2L, S, S)``, per-field mean subtracted, divided by ``flow_scale`` (pixels -> ~[-1, 1]).
    * ``rgb+flow``: frames as input AND the first flow field of each sampled frame as a target
      ``(T, 2, S, S)`` in pixels of the crop (ActionFlowNet's multitask loss).
    """

    modality: Modality = Field("rgb", description="rgb (3 channels), flow (2L channels), rgb+flow (RGB input, "
                               "flow as ActionFlowNet's target)")
    flow_scale: float = Field(20.0, gt=0, description="flow input divisor (pixels), after mean subtraction")
    train_split: str = Field("train", description="manifest split trained on")
    val_split: str | None = Field("val", description="None/'' = no validation")
    shuffle_files: bool = Field(True, description="shuffle Parquet file order every epoch")
    shuffle_buffer: int = Field(64, ge=0, description="rows in the local shuffle buffer (0 = off)")
    decode_in: Literal["read_tasks", "workers"] = Field(
        "read_tasks", description="where training clips are decoded + augmented: in the Ray Data read tasks "
        "(map_batches; uint8 clips to the workers) or in the Train workers' prefetch threads (sampled JPEGs "
        "to the workers)",
    )
    read_blocks: int | None = Field(
        None, ge=1, description="Ray Data read tasks per epoch (override_num_blocks); None: one per ~128 MB "
        "of Parquet, at least 2 per worker, at most one per file",
    )
    decode_on: Literal["cpu", "gpu"] = Field(
        "cpu", description="where the sampled JPEGs become clips: cpu (as decode_in says); gpu: the read tasks "
        "only cut each row to one sample's JPEGs and every Train worker decodes them in batches on its device "
        "(torchvision decode_jpeg: nvjpeg on a GPU) and crops/flips there, so a GPU node needs few CPU cores "
        "(RGB only; on a CPU worker the same code runs on the CPU)",
    )

    @model_validator(mode="after")
    def _decode_on_rgb(self) -> "InputConfig":
        if self.decode_on == "gpu" and self.modality != "rgb":
            raise ValueError(f"decode_on: gpu decodes RGB frames only; modality is {self.modality!r}")
        return self


class TrainSamplerConfig(_Strict):
    """Training-time sampling of the stored frames of a row (:mod:`vidray.data.clip_sampling`).

    * ``tsn``: ``num_frames`` segments, a random frame in each (validation: the centre).
    * ``clip``: ``num_frames`` consecutive frames ``frame_interval`` source frames apart, random start
      (validation: the centre clip).
    * ``pair``: two consecutive stored frames (RCNN random mode; validation: the middle pair).
    * ``sequential``: the whole row, at most ``num_frames`` frames (a random window when longer;
      validation: the centred window); shorter rows are padded by repeating their last frame.

    ``num_frames=None`` takes the model's ``model_info(name).num_frames``.
    """

    name: SamplerName = Field("tsn", description="which stored frames make a sample")
    num_frames: int | None = Field(None, ge=1, description="T: segments / clip length / max sequence")
    frame_interval: int = Field(1, ge=1, description="clip: source frames between clip frames")


class AugmentConfig(_Strict):
    """The same augmentation for every frame of a sample and for its flow (:mod:`vidray.data.transforms`).

    Training: TSN multi-scale crop (``scales`` of the short side, aspect jitter ``max_distort``)
    resized to ``crop_size``, horizontal flip (flow-x negated), colour jitter. Validation: the centre
    ``crop_size`` crop after resizing the short side to ``resize_short`` (None: keep the stored size;
    a frame smaller than the crop is resized up).
    """

    crop_size: int = Field(224, ge=8, description="S, pixels")
    scales: list[float] = Field(default_factory=lambda: [1.0, 0.875, 0.75, 0.66],
                                description="multi-scale crop sides as fractions of the short side")
    max_distort: int = Field(1, ge=0, description="aspect jitter: crop width and height at most this many scale steps apart")
    flip_ratio: float = Field(0.5, ge=0, le=1, description="horizontal flip probability (flow-x negated)")
    color_jitter: list[float] | None = Field(
        default_factory=lambda: [0.4, 0.4, 0.4], description="brightness, contrast, saturation; null = off"
    )
    resize_short: int | None = Field(None, ge=8, description="eval: resize the short side first")
    mean: list[float] = Field(default_factory=lambda: [0.485, 0.456, 0.406], description="RGB mean (ImageNet)")
    std: list[float] = Field(default_factory=lambda: [0.229, 0.224, 0.225], description="RGB std (ImageNet)")


class OptimConfig(_Strict):
    """Optimizer: SGD with momentum / weight decay (the papers) or Adam(W)."""

    name: OptimizerName = Field("sgd", description="optimizer")
    lr: float = Field(0.01, gt=0, description="base learning rate (per the global batch)")
    momentum: float = Field(0.9, ge=0, description="SGD momentum")
    nesterov: bool = Field(False, description="SGD Nesterov momentum")
    weight_decay: float = Field(5e-4, ge=0, description="L2 weight decay (decoupled for adamw)")
    betas: tuple[float, float] = Field((0.9, 0.999), description="Adam(W) betas")
    clip_grad_norm: float | None = Field(None, gt=0, description="TSN clips at 20 (rgb) / 40 (flow)")


class ScheduleConfig(_Strict):
    """Learning-rate schedule, stepped once per epoch.

    * ``step``: multiply by ``gamma`` at each epoch in ``milestones``.
    * ``exponential``: multiply by ``gamma`` every epoch.
    * ``cosine``: cosine from ``lr`` to ``min_lr`` over the epochs after warm-up.
    * ``constant``.

    ``warmup_epochs`` ramps linearly from ``warmup_factor * lr`` to ``lr`` first.
    """

    name: ScheduleName = Field("step", description="learning-rate schedule, stepped per epoch")
    milestones: list[int] = Field(default_factory=lambda: [30, 60], description="step: epochs where lr is multiplied by gamma")
    gamma: float = Field(0.1, gt=0, description="step / exponential: the factor")
    min_lr: float = Field(0.0, ge=0, description="cosine: final learning rate")
    warmup_epochs: int = Field(0, ge=0, description="linear warm-up epochs before the schedule")
    warmup_factor: float = Field(0.1, gt=0, le=1, description="warm-up starts at warmup_factor * lr")


class LossConfig(_Strict):
    """Training loss (:mod:`vidray.train.losses`).

    * ``ce``: cross-entropy of ``logits`` against the first label.
    * ``bce``: multi-label binary cross-entropy against all labels (Sports-1M / FCVID).
    * ``multitask``: ActionFlowNet ``CE + lam * EPE`` against the ingested flow (``input.modality:
      rgb+flow``); with ``alphas`` the flow term is multi-resolution ``sum_r alpha_r EPE_r`` over the
      model's ``flow_pyramid``.
    * ``gain``: LSTM ``sum_t g_t CE_t / sum_t g_t`` over ``frame_logits`` (Beyond Short Snippets).
    * ``per_frame``: mean CE over ``frame_logits`` (RCNN: every frame predicts the video label).

    ``aux_weight`` adds ``aux_weight * CE`` of each ``aux_logits`` head (GoogLeNet uses 0.3).
    """

    name: LossName = Field("ce", description="training loss")
    lam: float = Field(0.01, ge=0, description="multitask: weight of the EPE term")
    alphas: list[float] | None = Field(None, description="multitask: weights of the flow pyramid levels")
    aux_weight: float = Field(0.0, ge=0, description="weight of CE on aux_logits heads (GoogLeNet: 0.3)")


class FreezeConfig(_Strict):
    """Two-phase training: for the first ``epochs`` epochs the parameters whose names start with one of
    ``prefixes`` are frozen (no gradient; their BatchNorm layers in eval mode), then everything is
    fine-tuned (same optimizer and schedule). ``prefixes: [stages]`` uses the model's own
    ``set_training_stage(1|2)`` (RCNN: temporal weights and head first)."""

    epochs: int = Field(0, ge=0, description="0 = single phase")
    prefixes: list[str] = Field(default_factory=lambda: ["backbone."],
                                description="parameter-name prefixes frozen in phase 1; [stages]: the model's "
                                "set_training_stage (RCNN)")


class CheckpointSettings(_Strict):
    """Checkpoints every epoch; keep the best ``num_to_keep`` by ``score_attribute`` (plus the latest)."""

    num_to_keep: int = Field(2, ge=1, description="best checkpoints kept (the latest always)")
    score_attribute: str = Field("val_top1", description="a reported metric; falls back to -train_loss")
    score_order: Literal["max", "min"] = Field("max", description="max or min of score_attribute is best")


class TrackingConfig(_Strict):
    """MLflow (rank 0 logs; the store and run are created by the driver)."""

    experiment: str = Field("vidray", description="MLflow experiment")
    run_name: str | None = Field(None, description="MLflow run name (default <model>-<run folder>)")
    log_model: bool = Field(False, description="log the final checkpoint.pt as an artifact")
    flow_samples: int = Field(4, ge=0, description="flow visualisations logged (0 = none)")


class RayTrainConfig(_Strict):
    """Ray Train / Ray Data execution (CPU workers here, GPUs on a cluster)."""

    ray_address: str | None = Field(None, description="None: RAY_ADDRESS or a new local Ray")
    use_gpu: bool = Field(False, description="one GPU per worker, NCCL, autocast")
    cpus_per_worker: float = Field(1.0, gt=0, description="CPUs per Train worker (sized down to fit the cluster "
                                   "next to Ray Data's read tasks)")
    max_failures: int = Field(0, ge=-1, description="worker-group restarts from the last checkpoint")
    node_labels: dict[str, str] = Field(
        default_factory=lambda: {"vidray-role": "train"},
        description="Ray node labels the Train workers and their Ray Data tasks run on (cluster.yaml's gpu_train "
        "nodes); applied only when a node of the cluster carries these label keys; {} = any node",
    )
    worker_resources: dict[str, float] = Field(
        default_factory=dict, description="extra Ray resources per Train worker, e.g. {gpu_standin: 1}: the custom "
        "resource that stands in for the GPU on a CPU-only test cluster (scripts/local_cluster.py)",
    )
    prefetch_batches: int = Field(2, ge=0, description="batches Ray Data prepares ahead per worker")
    find_unused_parameters: bool = Field(False, description="DDP: for models with unused heads")
    parquet_v2: bool = Field(
        False, description="Ray Data's DataSourceV2 Parquet reader (starts 32 footer actors per epoch: "
        "~10 s/epoch on 2 cores vs 0.3 s for the V1 reader; see docs/training.md)",
    )


class DebugConfig(_Strict):
    """Testing aids. ``fail_after_epoch=k``: once per run folder (marker file), rank 0 dies early in
    epoch ``k+1``, after epoch ``k``'s checkpoint was reported (``exit``: ``os._exit(1)``, a real
    kill; ``raise``: an exception, for local mode inside a test)."""

    fail_after_epoch: int | None = Field(None, ge=1, description="tests: rank 0 dies once in epoch k+1")
    fail_mode: Literal["exit", "raise"] = Field("exit", description="tests: os._exit(1) or an exception")
    max_steps_per_epoch: int | None = Field(None, ge=1, description="cut epochs short (smoke tests)")
    step_sleep_s: float = Field(0.0, ge=0, description="tests: sleep after every training step (fault tests hit "
                                "an epoch in its middle)")


class TrainConfig(_Strict):
    """Full ``vidray train`` configuration (``epochs`` counted from 1; ``batch_size`` per worker)."""

    model: ModelConfig = ModelConfig()
    input: InputConfig = InputConfig()
    sampler: TrainSamplerConfig = TrainSamplerConfig()
    augment: AugmentConfig = AugmentConfig()
    optim: OptimConfig = OptimConfig()
    schedule: ScheduleConfig = ScheduleConfig()
    loss: LossConfig = LossConfig()
    freeze: FreezeConfig = FreezeConfig()
    checkpoint: CheckpointSettings = CheckpointSettings()
    tracking: TrackingConfig = TrackingConfig()
    ray: RayTrainConfig = RayTrainConfig()
    debug: DebugConfig = DebugConfig()
    epochs: int = Field(10, ge=1, description="epochs to train (counted from 1)")
    batch_size: int = Field(8, ge=1, description="clips per worker per step")
    eval_batch_size: int | None = Field(None, ge=1, description="default: batch_size")
    precision: Literal["fp32", "bf16", "fp16"] = Field("bf16", description="autocast dtype; GPU only")
    seed: int = Field(0, description="model init (same on every rank) and augmentation generators")

    def run_hash(self) -> str:
        """Hash of the settings that define a run's results (not ray/debug/tracking): a run folder is
        resumed only by the same settings."""
        d = self.model_dump(mode="json")
        for k in ("ray", "debug", "tracking"):
            d.pop(k)
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
    except ValidationError as e:  # one line naming the source, each bad key and what is accepted
        src = f"{path}{' + --set overrides' if overrides else ''}" if path else "--set overrides"
        raise ValueError(f"{src}: {describe_validation_error(e)}") from None


def describe_validation_error(e: ValidationError) -> str:
    """A pydantic error as one line: ``key.sub: reason (got value)`` per problem, ``; ``-separated."""
    parts = []
    for err in e.errors():
        loc = ".".join(str(x) for x in err.get("loc", ()))
        msg = str(err.get("msg", "")).removeprefix("Value error, ")
        if err.get("type") == "extra_forbidden":
            msg = "unknown key"
        got = err.get("input")
        show = "" if err.get("type") in ("extra_forbidden", "missing") or isinstance(got, dict) else f" (got {got!r})"
        parts.append(f"{loc}: {msg}{show}")
    return "; ".join(parts)


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



# --------------------------------------------------------------------------------------------
# Reference: every key with its default and meaning (`vidray config`, the README/docs tables)
# --------------------------------------------------------------------------------------------
def _allowed(field: Any) -> str:
    """The allowed values of a field chosen from a table (a registry) or a Literal, else ``""``."""
    import typing

    ann = field.annotation
    args = [a for a in typing.get_args(ann) if a is not type(None)] if typing.get_origin(ann) else []
    metadata = list(field.metadata) + [m for a in args for m in getattr(a, "__metadata__", ())]
    for m in metadata:
        reg = getattr(getattr(m, "func", None), "__self__", None)
        if isinstance(reg, registry.Registry):
            return " | ".join(reg.names())
    for a in args or [ann]:
        if typing.get_origin(a) is Literal:
            return " | ".join(str(v) for v in typing.get_args(a))
    return ""


def _default(field: Any) -> Any:
    return field.default_factory() if field.default_factory is not None else field.default


def config_reference(cls: type[BaseModel], prefix: str = "") -> list[tuple[str, Any, str]]:
    """``(key, default, meaning)`` of every leaf key of a config class, in declaration order; the
    meaning is the field's description plus the allowed values of keys chosen from a table."""
    rows: list[tuple[str, Any, str]] = []
    for name, f in cls.model_fields.items():
        ann = f.annotation
        if isinstance(ann, type) and issubclass(ann, BaseModel):
            rows += config_reference(ann, f"{prefix}{name}.")
            continue
        meaning = f.description or ""
        allowed = _allowed(f)
        if allowed:
            meaning = f"{meaning}: {allowed}" if meaning else allowed
        rows.append((f"{prefix}{name}", _default(f), meaning))
    return rows


def format_reference(cls: type[BaseModel], markdown: bool = False) -> str:
    """:func:`config_reference` as aligned text, or as a Markdown table (the README's and docs' tables
    are this output; ``tests/test_cli.py`` checks they match)."""
    rows = [(k, json.dumps(d) if not isinstance(d, str) else d, m) for k, d, m in config_reference(cls)]
    if markdown:
        esc = lambda x: str(x).replace("|", "\\|")  # noqa: E731
        lines = ["| key | default | meaning |", "|---|---|---|"]
        lines += [f"| `{k}` | `{esc(d)}` | {esc(m)} |" for k, d, m in rows]
        return "\n".join(lines)
    w = max(len(k) for k, _, _ in rows)
    wd = min(24, max(len(d) for _, d, _ in rows))
    return "\n".join(f"{k:<{w}}  {d:<{wd}}  {m}" for k, d, m in rows)
