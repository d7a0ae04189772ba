"""Peak memory of aggregating large updates at the coordinator (one process, Linux only).

The model and two updates (four float32 tensors each, 1 GiB in all by default) are written to
files with ``medfed.tensor_file.write_params`` and opened memory-mapped, as the coordinator
opens uploaded blobs; then FedAvg's steps run: ``WeightedMean.add`` per update, ``result()``
and ``apply_delta``. Prints the growth of peak RSS (``VmHWM``, reset with ``clear_refs``)
after each step.

    python benchmarks/aggregate_memory.py            # 1 GiB model
    python benchmarks/aggregate_memory.py --mib 64   # quick
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import numpy as np

from medfed.math.aggregate import WeightedMean
from medfed.records import Params
from medfed.strategies.fedavg import apply_delta
from medfed.tensor_file import open_params, write_params


def _status(field: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(field):
            return int(line.split()[1]) // 1024
    raise RuntimeError(f"no {field} in /proc/self/status (Linux only)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=1024, help="model size in MiB [1024]")
    args = parser.parse_args()
    n = max(1, args.mib * (1 << 20) // 16)  # four float32 tensors
    with tempfile.TemporaryDirectory() as tmp:
        for name in ("model", "u1", "u2"):
            arrays = [(f"t{i}", np.full(n, i + 1, np.float32)) for i in range(4)]
            write_params(Path(tmp) / f"{name}.safetensors", Params(arrays))
            del arrays
        Path("/proc/self/clear_refs").write_text("5")
        base = _status("VmRSS")
        rows = []
        model, _ = open_params(Path(tmp) / "model.safetensors")
        mean = WeightedMean(model)
        for name in ("u1", "u2"):
            update, _ = open_params(Path(tmp) / f"{name}.safetensors")
            mean.add(update, weight=1.0)
            del update
            rows.append((f"update {name} added", _status("VmHWM") - base))
        result = mean.result()
        rows.append(("result() (the mean)", _status("VmHWM") - base))
        apply_delta(model, result)
        rows.append(("apply_delta (the new model)", _status("VmHWM") - base))
    print(f"aggregating a {args.mib} MiB model (4 float32 tensors), peak RSS growth:")
    print(f"{'step':<30} {'MiB':>8}")
    for what, mib in rows:
        print(f"{what:<30} {mib:>8}")


if __name__ == "__main__":
    main()
