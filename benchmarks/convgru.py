"""ConvGRU: fused gate convolutions vs six separate convolutions, forward + backward time per step.

Both cells compute eqs. 1-4 of Ballas et al. (ICLR 2016) with identical weights
(``vidray.models.gru_rcn``):

* ``reference`` :class:`ConvGRUCellReference`: six convolutions per step (W_z, W_r, W on x; U_z, U_r, U on h).
* ``fused``     :class:`ConvGRUCell`: one convolution for ``[W_z; W_r; W] * x``, one for ``[U_z; U_r] * h``,
                one for ``U * (r . h)``; sigmoid of z and r in one op; the update as one ``lerp``.

Two measurements, in one run, interleaving the two implementations (median of ``--repeats``):

* ``cell``: one step ``h_t = cell(x_t, h_{t-1})`` with a given ``h_{t-1}``; forward + backward of
  ``<h_t, g>`` for a random upstream gradient ``g`` (grads w.r.t. weights, ``x_t`` and ``h_{t-1}``).
* ``seq``: ``--steps`` steps unrolled from a random ``h_0`` and back-propagated through time, reported per
  step. The fused layer (:class:`ConvGRU`) also computes the input projection of all steps in one
  convolution over ``B*T`` maps; the reference calls its cell step by step, as a straightforward
  implementation does.

    python benchmarks/convgru.py [--batch 8] [--cx 256] [--ch 256] [--sizes 14 28] [--steps 8]
                                 [--repeats 5] [--device cpu|cuda] [--threads N] [--json out.json]

Prints a table: milliseconds per step (forward + backward) and ``speedup = reference / fused``, by wall
clock and by CPU time of the process (``time.process_time``). On a CPU shared with other jobs, run with
``--threads 1`` and read the CPU-time columns: they measure the work done, not the waiting.
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Callable

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from vidray.models.gru_rcn import ConvGRU, ConvGRUCellReference  # noqa: E402


def _sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _timed(fn: Callable[[], None], device: torch.device) -> tuple[float, float]:
    """(wall seconds, CPU seconds of this process) of one call."""
    _sync(device)
    w0, c0 = time.perf_counter(), time.process_time()
    fn()
    _sync(device)
    return time.perf_counter() - w0, time.process_time() - c0


def bench_size(args: argparse.Namespace, size: int, device: torch.device) -> list[dict]:
    torch.manual_seed(0)
    b, cx, ch, t = args.batch, args.cx, args.ch, args.steps
    fused_layer = ConvGRU(cx, ch, 3).to(device)
    fused = fused_layer.cell
    ref = ConvGRUCellReference.from_fused(fused).to(device)
    x = torch.randn(b, cx, size, size, device=device, requires_grad=True)
    h = torch.randn(b, ch, size, size, device=device, requires_grad=True)
    g = torch.randn(b, ch, size, size, device=device)
    xs = torch.randn(b, t, cx, size, size, device=device, requires_grad=True)
    h0 = torch.randn(b, ch, size, size, device=device, requires_grad=True)
    gs = torch.randn(b, ch, size, size, device=device)

    def cell_step(cell) -> Callable[[], None]:
        def run() -> None:
            cell.zero_grad(set_to_none=True)
            x.grad = h.grad = None
            (cell(x, h) * g).sum().backward()

        return run

    def seq_fused() -> None:
        fused_layer.zero_grad(set_to_none=True)
        xs.grad = h0.grad = None
        _, last = fused_layer(xs, h0)
        (last * gs).sum().backward()

    def seq_ref() -> None:
        ref.zero_grad(set_to_none=True)
        xs.grad = h0.grad = None
        hh = h0
        for i in range(t):
            hh = ref(xs[:, i], hh)
        (hh * gs).sum().backward()

    cases = {
        "cell": (cell_step(fused), cell_step(ref), 1),
        "seq": (seq_fused, seq_ref, t),
    }
    rows = []
    for mode, (f_fn, r_fn, per) in cases.items():
        for _ in range(args.warmup):
            f_fn(), r_fn()
        tf, tr = [], []
        for _ in range(args.repeats):  # interleaved, so drifting machine load hits both alike
            tf.append(_timed(f_fn, device))
            tr.append(_timed(r_fn, device))
        row = {"mode": mode, "size": size, "batch": b, "cx": cx, "ch": ch, "steps": per}
        for k, clock in enumerate(("wall", "cpu")):
            mf = statistics.median(v[k] for v in tf) / per
            mr = statistics.median(v[k] for v in tr) / per
            row.update({
                f"fused_{clock}_ms": 1e3 * mf, f"reference_{clock}_ms": 1e3 * mr, f"speedup_{clock}": mr / mf,
                f"fused_{clock}_all_ms": [1e3 * v[k] / per for v in tf],
                f"reference_{clock}_all_ms": [1e3 * v[k] / per for v in tr],
            })  # fmt: skip
        rows.append(row)
        print(
            f"{mode:5s} {size:>3d}x{size:<3d} {row['reference_wall_ms']:12.1f} {row['fused_wall_ms']:10.1f} "
            f"{row['speedup_wall']:8.2f}x {row['reference_cpu_ms']:12.1f} {row['fused_cpu_ms']:10.1f} "
            f"{row['speedup_cpu']:8.2f}x",
            flush=True,
        )
    return rows


def main(argv: list[str] | None = None) -> dict:
    p = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--cx", type=int, default=256, help="input channels C_x")
    p.add_argument("--ch", type=int, default=256, help="hidden channels C_h")
    p.add_argument("--sizes", type=int, nargs="+", default=[14, 28], help="map sizes H = W")
    p.add_argument("--steps", type=int, default=8, help="unrolled steps of the seq measurement")
    p.add_argument("--repeats", type=int, default=5)
    p.add_argument("--warmup", type=int, default=1)
    p.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    p.add_argument("--threads", type=int, default=None, help="torch CPU threads (default: torch's)")
    p.add_argument("--json", type=Path, default=None, help="write the results here")
    args = p.parse_args(argv)
    if args.threads:
        torch.set_num_threads(args.threads)
    torch.set_flush_denormal(True)
    device = torch.device(args.device)
    env = {
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "threads": torch.get_num_threads(), "torch": torch.__version__,
    }  # fmt: skip
    print(f"ConvGRU fwd+bwd per step, B={args.batch} Cx={args.cx} Ch={args.ch} 3x3, {env}")
    print(f"{'':13s} {'--------------- wall ---------------':>33s} {'------------- CPU time -------------':>33s}")
    print(f"{'mode':5s} {'size':7s} {'reference ms':>12s} {'fused ms':>10s} {'speedup':>9s}"
          f" {'reference ms':>12s} {'fused ms':>10s} {'speedup':>9s}")
    rows = [r for s in args.sizes for r in bench_size(args, s, device)]
    result = {"benchmark": "convgru", "env": env, "args": {k: str(v) for k, v in vars(args).items()}, "rows": rows}
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(result, indent=2))
    return result


if __name__ == "__main__":
    main()
