"""Flower's side of ``overhead.py --flower``: the same cases in Flower's simulation engine.

Runs in a child process of an interpreter that has ``flwr[simulation]`` (never a medfed
dependency); also measures the memory of the whole process tree Ray starts.
"""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Iterator
from typing import Any

import numpy as np
from overhead import Case, _peak_rss_mb, initial_params, site_constant, site_examples


def flower_child(case: Case) -> dict[str, Any]:
    import logging
    import warnings

    warnings.filterwarnings("ignore")
    import flwr
    from flwr.client import ClientApp, NumPyClient
    from flwr.common import Context, ndarrays_to_parameters, parameters_to_ndarrays
    from flwr.server import ServerApp, ServerAppComponents, ServerConfig
    from flwr.server.strategy import FedAvg as FlowerFedAvg
    from flwr.simulation import run_simulation

    logging.getLogger("flwr").setLevel(logging.WARNING)
    start: dict[int, float] = {}
    end: dict[int, float] = {}
    final: list[Any] = []

    class ConstantClient(NumPyClient):  # type: ignore[misc]
        def __init__(self, i: int) -> None:
            self.c, self.n = site_constant(i), site_examples(i)

        def fit(self, parameters: Any, config: Any) -> Any:
            return [p + self.c for p in parameters], self.n, {}

        def evaluate(self, parameters: Any, config: Any) -> Any:
            return 0.0, self.n, {}

    def client_fn(context: Context) -> Any:
        return ConstantClient(int(context.node_config["partition-id"])).to_client()

    class StampedFedAvg(FlowerFedAvg):  # type: ignore[misc]
        def configure_fit(self, server_round: int, parameters: Any, client_manager: Any) -> Any:
            start.setdefault(server_round, time.monotonic())
            return super().configure_fit(server_round, parameters, client_manager)

        def aggregate_fit(self, server_round: int, results: Any, failures: Any) -> Any:
            out = super().aggregate_fit(server_round, results, failures)
            end[server_round] = time.monotonic()
            if failures:
                raise RuntimeError(f"Flower round {server_round}: {len(failures)} failures")
            final[:] = [out[0]]
            return out

    def server_fn(context: Context) -> Any:
        strategy = StampedFedAvg(
            fraction_fit=1.0,
            fraction_evaluate=0.0,  # no federated evaluation
            min_fit_clients=case.sites,
            min_available_clients=case.sites,
            initial_parameters=ndarrays_to_parameters(list(initial_params(case).values())),
        )
        return ServerAppComponents(strategy=strategy, config=ServerConfig(num_rounds=case.rounds))

    run_simulation(
        server_app=ServerApp(server_fn=server_fn),
        client_app=ClientApp(client_fn=client_fn),
        num_supernodes=case.sites,
        backend_config={"client_resources": {"num_cpus": 1, "num_gpus": 0.0}},
    )
    if len(end) != case.rounds or not final:
        raise RuntimeError(f"Flower ran {len(end)} of {case.rounds} rounds")
    arrays = parameters_to_ndarrays(final[0])
    return {
        "version": flwr.__version__,
        "round1_start": start[1],
        "round1_end": end[1],
        "per_round": (end[case.rounds] - start[1]) / case.rounds,
        "rounds": [end[r] - start[r] for r in sorted(end)],
        "checksum": float(sum(np.sum(a, dtype=np.float64) for a in arrays)),
        "driver_peak_mb": _peak_rss_mb(),
    }


class TreeMemory:
    """Samples the summed PSS of a process and all its descendants (Ray starts many)."""

    def __init__(self, interval: float = 0.1) -> None:
        self.interval = interval
        self.peak_mb = 0.0
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    def start(self, pid: int) -> None:
        self._thread = threading.Thread(target=self._loop, args=(pid,), daemon=True)
        self._thread.start()

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join()

    def _loop(self, root: int) -> None:
        while not self._stop.is_set():
            total_kb = sum(_pss_kb(pid) for pid in _tree(root))
            self.peak_mb = max(self.peak_mb, total_kb / 1024)
            self._stop.wait(self.interval)


def _tree(root: int) -> Iterator[int]:
    children: dict[int, list[int]] = {}
    for entry in os.scandir("/proc"):
        if not entry.name.isdigit():
            continue
        try:
            with open(f"/proc/{entry.name}/stat") as fh:
                ppid = int(fh.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            continue
        children.setdefault(ppid, []).append(int(entry.name))
    todo = [root]
    while todo:
        pid = todo.pop()
        yield pid
        todo.extend(children.get(pid, []))


def _pss_kb(pid: int) -> int:
    try:
        with open(f"/proc/{pid}/smaps_rollup") as fh:
            for line in fh:
                if line.startswith("Pss:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0
