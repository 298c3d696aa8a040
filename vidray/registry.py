"""Name -> implementation tables: one per backend family, the single source of truth for what a name means.

Every family that a config or the command line chooses by name is a :class:`Registry` declared HERE
(so :mod:`vidray.config` can validate names without importing the implementations) and filled by the
module that implements the family, one decorated entry per implementation::

    # vidray/flow.py
    from vidray.registry import FLOW_ALGORITHMS

    @FLOW_ALGORITHMS.register("dis_medium")
    def _dis_medium() -> FlowFn:
        "OpenCV DIS, MEDIUM preset (default): 8 ms per 224x224 pair, EPE 0.04 px."
        ...

A registry knows which module fills it and imports that module the first time it is asked for a name
(as Python entry points do), so ``FLOW_ALGORITHMS.names()`` is complete wherever it is called from.
The config's allowed values (:meth:`Registry.validator`), the CLI help (:meth:`Registry.describe`) and
the docs tables all come from these tables: adding an implementation is one decorated entry plus its
test. (PyTorchVideo's ``select_*`` functions and MMAction2's registries show the idea; this one is
plain Python with no config magic.)

=====================  =================================  ==============================================
registry               filled by                          chosen by
=====================  =================================  ==============================================
``DECODERS``           :mod:`vidray.io.video`             ``execution.decoder`` (ingest)
``IMAGE_ENCODINGS``    :mod:`vidray.io.imcodec`           ``output.encoding`` / ``output.flow_encoding``
``SAMPLING_MODES``     :mod:`vidray.sampling`             ``sampling.mode`` (ingest)
``FLOW_ALGORITHMS``    :mod:`vidray.flow`                 ``flow.algorithm`` (ingest)
``SAMPLERS``           :mod:`vidray.data.clip_sampling`   ``sampler.name`` (training / evaluation)
``LOSSES``             :mod:`vidray.train.objective`      ``loss.name``
``OPTIMIZERS``         :mod:`vidray.train.optim`          ``optim.name``
``SCHEDULES``          :mod:`vidray.train.optim`          ``schedule.name``
``AGGREGATIONS``       :mod:`vidray.eval.aggregate`       ``vidray eval --aggregate``
``METRICS``            :mod:`vidray.eval.metrics`         what ``summarize`` reports
``MODELS``             :mod:`vidray.models`               ``model.name`` / ``vidray train --model``
``DESCRIPTORS``        :mod:`vidray.retrieval.features`   ``descriptor.kind`` (``vidray embed``)
``INDEXES``            :mod:`vidray.retrieval.index`      ``vidray search / dedup --index``
=====================  =================================  ==============================================
"""

from __future__ import annotations

import importlib
import inspect
from typing import Any, Generic, Iterator, TypeVar

from pydantic import AfterValidator

T = TypeVar("T")

__all__ = ["Registry", "DECODERS", "IMAGE_ENCODINGS", "SAMPLING_MODES", "FLOW_ALGORITHMS", "SAMPLERS", "LOSSES",
           "OPTIMIZERS", "SCHEDULES", "AGGREGATIONS", "METRICS", "MODELS", "DESCRIPTORS", "INDEXES"]


class Registry(Generic[T]):
    """A table ``name -> implementation`` of one backend family.

    Args:
        kind: what an entry is, for messages (``"flow algorithm"``).
        module: the module whose import fills the table (imported on first lookup).
    """

    def __init__(self, kind: str, module: str) -> None:
        self.kind = kind
        self.module = module
        self._entries: dict[str, T] = {}
        self._help: dict[str, str] = {}
        self._loaded = False

    # -- filling -------------------------------------------------------------------------------------
    def register(self, name: str, obj: T | None = None, *, help: str | None = None) -> Any:
        """Register ``obj`` under ``name``; usable as ``@REG.register("name")`` or ``REG.register("n", obj)``.

        ``help`` (default: the first line of ``obj``'s docstring) is what the CLI and docs show.
        """

        def add(o: T) -> T:
            if name in self._entries:
                raise ValueError(f"{self.kind} {name!r} is registered twice")
            self._entries[name] = o
            doc = help if help is not None else (inspect.getdoc(o) or "")
            self._help[name] = doc.strip().splitlines()[0] if doc.strip() else ""
            return o

        return add(obj) if obj is not None else add

    # -- lookup --------------------------------------------------------------------------------------
    def _load(self) -> None:
        if not self._loaded:
            self._loaded = True  # set first: the module's import registers into this table
            importlib.import_module(self.module)

    def names(self) -> list[str]:
        """The registered names, in registration order."""
        self._load()
        return list(self._entries)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._entries

    def __iter__(self) -> Iterator[str]:
        return iter(self.names())

    def items(self) -> list[tuple[str, T]]:
        self._load()
        return list(self._entries.items())

    def get(self, name: str) -> T:
        """The implementation registered as ``name``; ``ValueError`` naming the known ones otherwise."""
        self._load()
        try:
            return self._entries[name]
        except (KeyError, TypeError):
            raise ValueError(f"unknown {self.kind} {name!r}; expected one of: {', '.join(self._entries)}") from None

    def help(self, name: str) -> str:
        """One line describing ``name``."""
        self.get(name)
        return self._help[name]

    def describe(self, sep: str = "; ") -> str:
        """``name: help`` of every entry (CLI help, docs)."""
        return sep.join(f"{n}: {self._help[n]}" if self._help[n] else n for n in self.names())

    # -- config integration ----------------------------------------------------------------------------
    def check(self, name: str) -> str:
        """``name`` if registered, else ``ValueError`` listing the registered names."""
        self.get(name)
        return name

    def validator(self) -> AfterValidator:
        """A pydantic validator: ``Annotated[str, REG.validator()]`` accepts only registered names."""
        return AfterValidator(self.check)

    def __repr__(self) -> str:
        state = ", ".join(self._entries) if self._loaded else f"not loaded: {self.module}"
        return f"Registry({self.kind!r}: {state})"


DECODERS: Registry[Any] = Registry("decoder", "vidray.io.video")
IMAGE_ENCODINGS: Registry[Any] = Registry("image encoding", "vidray.io.imcodec")
SAMPLING_MODES: Registry[Any] = Registry("sampling mode", "vidray.sampling")
FLOW_ALGORITHMS: Registry[Any] = Registry("flow algorithm", "vidray.flow")
SAMPLERS: Registry[Any] = Registry("sampler", "vidray.data.clip_sampling")
LOSSES: Registry[Any] = Registry("loss", "vidray.train.objective")
OPTIMIZERS: Registry[Any] = Registry("optimizer", "vidray.train.optim")
SCHEDULES: Registry[Any] = Registry("schedule", "vidray.train.optim")
AGGREGATIONS: Registry[Any] = Registry("aggregation", "vidray.eval.aggregate")
METRICS: Registry[Any] = Registry("metric", "vidray.eval.metrics")
MODELS: Registry[Any] = Registry("model", "vidray.models")
DESCRIPTORS: Registry[Any] = Registry("descriptor", "vidray.retrieval.features")
INDEXES: Registry[Any] = Registry("index kind", "vidray.retrieval.index")
