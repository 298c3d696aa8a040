"""The console: vidray's own lines and one progress bar per long stage; everything else in a log file.

``with session(log_file, verbose=False) as con:`` (what every ``vidray`` command runs inside):

* file descriptors 1 and 2 of the process point at ``log_file``: Ray's and Ray Data/Train/Tune's log
  lines, the C++ core worker's lines (written straight to fd 2), the lines Ray forwards from its workers
  (``log_to_driver``: Train's ``TrainingReport(...)``, "Checkpoint successfully created"), MLflow's
  messages and Python warnings all land there, not on the terminal;
* ``con`` writes to a duplicate of the original stdout (still a terminal when it was one): the
  ``vidray`` logger's warnings, :meth:`Console.print`, and :meth:`Console.progress` bars (rich, with
  rate and ETA) when stdout is a terminal, plain periodic lines when it is not;
* ``verbose=True`` (``vidray -v``) leaves the descriptors alone: Ray's output is on the console as before.

Progress from Ray tasks and workers (other processes) comes back through a :class:`ProgressBoard`, a
tiny Ray actor the stage creates; the driver polls it (:meth:`Console.follow`).
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
import threading
import time
from pathlib import Path
from typing import Any, Callable, Iterator, TextIO

__all__ = ["Console", "session", "current", "echo", "command_log", "set_log_dir", "ProgressBoard", "make_board"]

_CURRENT: "Console | None" = None


class Console:
    """Where vidray's own output goes (see the module doc).

    ``log_file``: where Ray's and MLflow's output goes once :meth:`capture` ran (``init_ray`` calls it, so
    a command that fails before Ray starts creates no log file and no output folder)."""

    def __init__(self, stream: TextIO, log_file: Path | None = None, verbose: bool = False,
                 err: TextIO | None = None) -> None:  # fmt: skip
        self.stream = stream
        self.err = err if err is not None else sys.stderr
        self.log_file = log_file
        self.verbose = verbose or log_file is None
        self.is_terminal = bool(getattr(stream, "isatty", lambda: False)())
        self._restore: Callable[[], None] | None = None

    def print(self, *lines: str) -> None:
        for ln in lines:
            self.stream.write(f"{ln}\n")
        self.stream.flush()

    def error(self, line: str) -> None:
        """One line on the console's stderr (usage errors, interruptions)."""
        self.err.write(f"{line}\n")
        self.err.flush()

    def capture(self) -> None:
        """From now on, file descriptors 1 and 2 write to :attr:`log_file` (idempotent; nothing when
        verbose). Prints where the log is, once."""
        if self.verbose or self._restore is not None:
            return
        assert self.log_file is not None
        self.log_file.parent.mkdir(parents=True, exist_ok=True)
        sys.stdout.flush()
        sys.stderr.flush()
        saved_out, saved_err = os.dup(1), os.dup(2)
        fd = os.open(self.log_file, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
        os.dup2(fd, 1)  # Python's sys.stdout/err (fds 1, 2), Ray's handlers and the C++ core worker: the log
        os.dup2(fd, 2)
        os.close(fd)
        vlog = logging.getLogger("vidray")
        handler = logging.StreamHandler(self.err)
        handler.setLevel(logging.WARNING)
        handler.setFormatter(logging.Formatter("%(levelname)s: %(message)s"))
        vlog.addHandler(handler)  # vidray's warnings stay on the console (and propagate to the log)

        def restore() -> None:
            vlog.removeHandler(handler)
            for st in (sys.stdout, sys.stderr):
                with contextlib.suppress(Exception):
                    st.flush()
            os.dup2(saved_out, 1)
            os.dup2(saved_err, 2)
            os.close(saved_out)
            os.close(saved_err)

        self._restore = restore
        self.print(f"logs of Ray and MLflow: {self.log_file} (vidray -v shows them here)")

    def release(self) -> None:
        """Undo :meth:`capture`. The Ray this command started (capture happens when it starts one) is shut
        down first, while its last forwarded worker lines still go to the log."""
        if self._restore is not None:
            with contextlib.suppress(Exception):
                import ray

                if ray.is_initialized():
                    ray.shutdown()
            # that local Ray is gone: the next init_ray in this process starts a new one instead of
            # trying to join the dead address (vidray.runtime exported it)
            local = os.environ.pop("VIDRAY_LOCAL_RAY_ADDRESS", None)
            if local and os.environ.get("RAY_ADDRESS") == local:
                del os.environ["RAY_ADDRESS"]
            self._restore()
            self._restore = None

    @contextlib.contextmanager
    def progress(self, description: str, total: float | None, unit: str = "it",
                 every_s: float = 10.0) -> Iterator[Callable[..., None]]:  # fmt: skip
        """A progress bar; yields ``update(completed, **fields)``. On a terminal: a rich bar with the rate
        (``unit``/s), ETA and ``fields``; otherwise plain lines: at most one every ``every_s`` seconds
        while the count moves (one a minute while it does not), and one at the end."""
        t0 = time.perf_counter()
        state: dict[str, Any] = {"done": 0.0, "fields": {}, "last": 0.0}

        def line() -> str:
            dt = max(time.perf_counter() - t0, 1e-9)
            rate = state["done"] / dt
            tot = f"/{total:g}" if total else ""
            extra = "".join(f", {k} {v}" for k, v in state["fields"].items())
            return f"{description}: {state['done']:g}{tot} {unit}, {rate:.2f} {unit}/s, {dt:.0f} s{extra}"

        if self.is_terminal:
            from rich.console import Console as RichConsole
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, \
                TimeRemainingColumn

            rc = RichConsole(file=self.stream, force_terminal=True)
            cols = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TextColumn("eta"), TimeRemainingColumn(),
                    TextColumn("{task.fields[extra]}")]  # fmt: skip
            with Progress(*cols, console=rc, transient=False) as bar:
                task = bar.add_task(description, total=total, rate="", extra="")

                def update(completed: float, **fields: Any) -> None:
                    state["done"], state["fields"] = completed, {**state["fields"], **fields}
                    dt = max(time.perf_counter() - t0, 1e-9)
                    bar.update(task, completed=completed, rate=f"{completed / dt:.2f} {unit}/s",
                               extra=" ".join(f"{k} {v}" for k, v in state["fields"].items()))  # fmt: skip

                yield update
            return

        def emit() -> None:
            text = line()
            if text.split(",")[0] != state.get("printed"):  # not the same count again
                self.print(text)
                state["printed"] = text.split(",")[0]

        def update(completed: float, **fields: Any) -> None:
            moved = completed != state["done"]
            state["done"], state["fields"] = completed, {**state["fields"], **fields}
            now = time.perf_counter()
            if now - state["last"] >= (every_s if moved or state["done"] else 60.0):
                state["last"] = now
                emit()

        state["last"] = time.perf_counter()
        yield update
        emit()

    @contextlib.contextmanager
    def follow(self, board: "Any", description: str, total: float | None, unit: str,
               render: Callable[[dict[str, Any]], tuple[float, dict[str, Any]]] | None = None,
               every_s: float = 0.5) -> Iterator[None]:  # fmt: skip
        """While the body runs (a blocking Ray call), poll the :class:`ProgressBoard` actor ``board``
        every ``every_s`` and draw its state: ``render(state) -> (completed, fields)`` (default: the
        ``done`` counter)."""
        import ray

        render = render or (lambda s: (float(s.get("done", 0)), {}))
        stop = threading.Event()
        with self.progress(description, total, unit) as update:

            def poll() -> None:
                while not stop.wait(every_s):
                    with contextlib.suppress(Exception):
                        done, fields = render(ray.get(board.state.remote(), timeout=5))
                        update(min(done, total) if total else done, **fields)

            t = threading.Thread(target=poll, daemon=True)
            t.start()
            try:
                yield
            finally:
                stop.set()
                t.join(timeout=2)
                with contextlib.suppress(Exception):
                    done, fields = render(ray.get(board.state.remote(), timeout=5))
                    update(min(done, total) if total else done, **fields)


def echo(line: str, file: Any = None, flush: bool = True) -> None:
    """A line of a command's output on the console of the running command (:func:`current`);
    ``file`` not ``None`` (e.g. ``sys.stderr``): on its error stream. The ``print`` of command handlers:
    once Ray's output is captured, a plain ``print`` would land in the log file."""
    con = current()
    (con.error if file is not None else con.print)(line)


def set_log_dir(out: str | os.PathLike | None) -> None:
    """Put the running command's log file in its output folder (before Ray starts; :func:`command_log`)."""
    con = current()
    if con.log_file is not None and con._restore is None:
        con.log_file = command_log(out, con.log_file.stem.split("-")[0]).resolve()


def command_log(out: str | os.PathLike | None, name: str) -> Path:
    """Where a command's log file goes: ``OUT/vidray.log`` for a local output folder, else
    ``~/.cache/vidray/logs/<name>-<time>.log`` (an ``s3://`` output, or none)."""
    if out is not None and ("://" not in str(out) or str(out).startswith("file://")):
        return Path(out) / "vidray.log"
    d = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "vidray" / "logs"
    return d / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


def current() -> Console:
    """The console of the running command (a plain stdout console outside :func:`session`)."""
    return _CURRENT if _CURRENT is not None else Console(sys.stdout)


@contextlib.contextmanager
def session(log_file: str | os.PathLike | None, verbose: bool = False) -> Iterator[Console]:
    """Run a command with vidray's output on the console and, from :meth:`Console.capture` on (the
    local Ray starting), Ray's and MLflow's in ``log_file`` (module doc). ``verbose``: no capture."""
    global _CURRENT
    prev = _CURRENT
    sys.stdout.flush()
    # The console: a duplicate of the terminal's descriptors, taken before they are pointed at the log.
    # Under a harness that replaced sys.stdout (pytest's capsys, a wrapper) that object IS the console.
    owned: list[TextIO] = []
    if sys.stdout is sys.__stdout__ and not verbose and log_file is not None:
        out = os.fdopen(os.dup(1), "w", buffering=1, encoding=sys.stdout.encoding or "utf-8", errors="replace")
        err = os.fdopen(os.dup(2), "w", buffering=1, encoding=sys.stderr.encoding or "utf-8", errors="replace")
        owned = [out, err]
    else:
        out, err = sys.stdout, sys.stderr
    con = Console(out, None if verbose or log_file is None else Path(log_file).resolve(), verbose, err=err)
    _CURRENT = con
    try:
        yield con
    finally:
        con.release()
        for st in owned:
            with contextlib.suppress(Exception):
                st.flush()
                st.close()
        _CURRENT = prev


# ------------------------------------------------------------------------------------------------
# progress from other processes
# ------------------------------------------------------------------------------------------------
class ProgressBoard:
    """A tiny Ray actor (0 CPUs) that tasks and Train workers tell their progress: ``add(key, n)``
    counters and ``set(**fields)`` values; the driver reads ``state()``. Calls are fire-and-forget, so
    a lost board never fails the work."""

    def __init__(self) -> None:
        self._state: dict[str, Any] = {}

    def add(self, key: str = "done", n: float = 1) -> None:
        self._state[key] = self._state.get(key, 0) + n

    def set(self, **fields: Any) -> None:
        self._state.update(fields)

    def state(self) -> dict[str, Any]:
        return dict(self._state)


def make_board() -> Any:
    """A new :class:`ProgressBoard` actor on this driver's node (Ray must be initialised): a 0-CPU
    coordination actor, pinned there (softly) so a worker node lost mid-run never takes it along."""
    import ray
    from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

    here = NodeAffinitySchedulingStrategy(ray.get_runtime_context().get_node_id(), soft=True)
    return ray.remote(num_cpus=0, max_restarts=0)(ProgressBoard).options(scheduling_strategy=here).remote()
