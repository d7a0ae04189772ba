"""Child processes of ``benchmarks/federation.py``: many nodes in one process, and the TLS floor.

    python benchmarks/_fed_nodes.py nodes --kits K --url U --state S --sites a,b --inputs I …
    python benchmarks/_fed_nodes.py floor-server --cert C --key K --clients N --size B --rounds R
    python benchmarks/_fed_nodes.py floor-clients --ca C --port P --clients N --size B --rounds R

``nodes`` runs one real :class:`~medfed.federation.node.agent.NodeAgent` per site, each in its own
thread with its own signed HTTPS client, state folder (approvals, egress ledger) and, once it
takes part in a job, its own copy of the model. It prints ``READY`` and runs until SIGTERM;
then it writes, as JSON into ``--timings``, when each node's download, ledger writes, upload
and reply began and ended (wall-clock ``time.time()``, the clock of the coordinator's tables).

The floor moves the bytes of a round and nothing else: per round each client receives
``--size`` bytes from the server (the global model), sends ``--size`` bytes back (its
update) and waits for a one-byte acknowledgement, over TLS 1.3 with the coordinator's own
certificate and key. Clients are threads of one process, the server a thread per connection.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import socket
import ssl
import statistics
import sys
import threading
import time
from pathlib import Path
from typing import Any

RESULT_MARK = "FED-RESULT "

TASK_TEMPLATE = '''"""Benchmark task: one {inputs} x {outputs} float32 tensor, fit adds 1e-3."""

import torch
from torch import nn

from medfed.records import Metrics
from medfed.site.task import Task


def build_model(spec):
    return nn.Linear({inputs}, {outputs}, bias=False)


def train(model, data, ctx):
    with torch.no_grad():
        for p in model.parameters():
            p.add_(1e-3)
    return Metrics(num_examples=max(1, data.num_train))


def evaluate(model, x, y, spec):
    return Metrics(num_examples=len(x))


task = Task(model=build_model, train=train, evaluate=evaluate, name="{name}")
'''


def task_source(inputs: int, outputs: int, name: str) -> str:
    return TASK_TEMPLATE.format(inputs=inputs, outputs=outputs, name=name)


def spec_json(inputs: int, outputs: int) -> dict[str, Any]:
    """The data spec of the benchmark's synthetic data (multiclass: the model's width fits)."""
    return {"kind": "multiclass", "input_shape": [inputs], "n_classes": outputs}


# ---------------------------------------------------------------------------------------------
# /proc sampling (used by federation.py)


def proc_status(pid: int) -> dict[str, int]:
    out = {}
    with contextlib.suppress(OSError), open(f"/proc/{pid}/status") as fh:
        for line in fh:
            key, _, rest = line.partition(":")
            if key in ("VmRSS", "VmHWM", "Threads"):
                out[key] = int(rest.split()[0])
    return out


def _cpu_seconds(pid: int) -> float:
    try:
        with open(f"/proc/{pid}/stat") as fh:
            fields = fh.read().rsplit(")", 1)[1].split()
    except OSError:
        return 0.0
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


class Sampler(threading.Thread):
    """VmRSS (MB) and CPU seconds of some processes, every 0.1 s, with wall-clock stamps."""

    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.pids: dict[str, int] = {}
        self.samples: list[tuple[float, str, float, float, int]] = []
        self._stop_event = threading.Event()

    def run(self) -> None:
        while not self._stop_event.wait(0.1):
            for key, pid in list(self.pids.items()):
                st = proc_status(pid)
                if st:
                    now = time.time()
                    rss, cpu = st.get("VmRSS", 0) / 1024, _cpu_seconds(pid)
                    self.samples.append((now, key, rss, cpu, st.get("Threads", 0)))

    def stop(self) -> None:
        self._stop_event.set()

    def window(self, key: str, t0: float, t1: float) -> dict[str, float]:
        rows = [s for s in self.samples if s[1] == key and t0 <= s[0] <= t1]
        if not rows:
            return {"max_mb": 0.0, "mean_mb": 0.0, "cpu_s": 0.0, "threads": 0}
        return {
            "max_mb": max(r[2] for r in rows),
            "mean_mb": statistics.fmean(r[2] for r in rows),
            "cpu_s": rows[-1][3] - rows[0][3],
            "wall_s": rows[-1][0] - rows[0][0],
            "threads": max(r[4] for r in rows),
        }


# ---------------------------------------------------------------------------------------------
# many nodes in one process


class Timings:
    """Wall-clock intervals of a node's transfers, as (site, phase, start, end)."""

    def __init__(self) -> None:
        self.rows: list[tuple[str, str, float, float]] = []
        self._lock = threading.Lock()

    def wrap(self, site: str, phase: str, fn: Any) -> Any:
        def timed(*args: Any, **kwargs: Any) -> Any:
            if phase == "reply" and not str(args[0] if args else "").startswith("/v1/tasks/"):
                return fn(*args, **kwargs)  # only the reply itself, not the upload's posts
            start = time.time()
            try:
                return fn(*args, **kwargs)
            finally:
                with self._lock:
                    self.rows.append((site, phase, start, time.time()))

        return timed


def _agent(
    kits: Path, url: str, state: Path, site: str, inputs: int, outputs: int, t: Timings
) -> Any:
    import numpy as np

    from medfed.data.base import SiteData
    from medfed.federation.identity.kits import load_kit
    from medfed.federation.node.agent import NodeAgent, NodeSettings
    from medfed.federation.node.job_context import spec_from_json
    from medfed.federation.transfer.client import client_for_kit

    client = client_for_kit(load_kit(kits / "sites" / site), url=url, timeout=300)
    rows = 4
    data = SiteData(
        name=site,
        x_train=np.zeros((rows, inputs), np.float32),
        y_train=np.zeros(rows, np.int64),
        x_test=np.zeros((2, inputs), np.float32),
        y_test=np.zeros(2, np.int64),
    )
    agent = NodeAgent(
        client=client,
        site=site,
        data=data,
        spec=spec_from_json(spec_json(inputs, outputs)),
        settings=NodeSettings(state_dir=state / site, auto_approve=True, poll_wait=20.0),
        on_event=lambda message: None,
    )
    # time the transfers: the instance's attributes only (medfed's code is untouched), and
    # whichever of these methods this version of the client has
    for obj, name, phase in (
        (client, "download_blob", "download"),
        (client, "download_blob_to", "download"),
        (client, "upload_blob", "upload"),
        (client, "upload_file", "upload"),
        (client, "post_bytes", "reply"),
        (agent.ledger, "append", "ledger"),
    ):
        if hasattr(obj, name):
            setattr(obj, name, t.wrap(site, phase, getattr(obj, name)))
    return agent


def _run_forever(agent: Any) -> None:
    while True:
        try:
            agent.run()
            return
        except Exception as exc:  # keep the node alive, say why it stumbled
            print(f"{agent.site}: {type(exc).__name__}: {exc}", file=sys.stderr, flush=True)
            time.sleep(1.0)


def nodes_main(args: argparse.Namespace) -> None:
    import torch

    torch.set_num_threads(1)  # training is one add; many threads would only contend
    timings = Timings()
    sites = [s for s in args.sites.split(",") if s]
    agents = [
        _agent(Path(args.kits), args.url, Path(args.state), s, args.inputs, args.outputs, timings)
        for s in sites
    ]

    def stop(*_: Any) -> None:
        if args.timings:
            Path(args.timings).write_text(json.dumps(list(timings.rows)))
        sys.stdout.flush()
        os._exit(0)

    signal.signal(signal.SIGTERM, stop)
    for agent in agents:
        threading.Thread(target=_run_forever, args=(agent,), daemon=True).start()
    print("READY", flush=True)
    while True:
        time.sleep(3600)


# ---------------------------------------------------------------------------------------------
# the floor: the same bytes over raw TLS sockets


def _recv_exactly(sock: ssl.SSLSocket, view: memoryview) -> None:
    got = 0
    while got < len(view):
        n = sock.recv_into(view[got:])
        if n == 0:
            raise ConnectionError("peer closed")
        got += n


def floor_server_main(args: argparse.Namespace) -> None:
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(args.cert, args.key)
    model = os.urandom(args.size)  # the "global model" every client downloads
    listener = socket.create_server(("127.0.0.1", 0), backlog=args.clients)
    print(f"PORT {listener.getsockname()[1]}", flush=True)

    def serve(raw: socket.socket) -> None:
        with ctx.wrap_socket(raw, server_side=True) as conn:
            inbox = memoryview(bytearray(args.size))  # the "update" the server reads
            for _ in range(args.rounds):
                _recv_exactly(conn, memoryview(bytearray(1)))
                conn.sendall(model)
                _recv_exactly(conn, inbox)
                conn.sendall(b"k")

    threads = []
    for _ in range(args.clients):
        raw, _addr = listener.accept()
        th = threading.Thread(target=serve, args=(raw,), daemon=True)
        th.start()
        threads.append(th)
    cpu = time.process_time()
    for th in threads:
        th.join()
    print(f"CPU {time.process_time() - cpu}", flush=True)  # seconds, all rounds


def floor_clients_main(args: argparse.Namespace) -> None:
    ctx = ssl.create_default_context(cafile=args.ca)
    update = os.urandom(args.size)
    start = threading.Barrier(args.clients + 1)
    done = threading.Barrier(args.clients + 1)
    ciphers: list[Any] = []
    errors: list[BaseException] = []

    def client() -> None:
        try:
            with ctx.wrap_socket(
                socket.create_connection(("127.0.0.1", args.port)), server_hostname="127.0.0.1"
            ) as conn:
                ciphers.append(conn.cipher())
                inbox = memoryview(bytearray(args.size))
                for _ in range(args.rounds):
                    start.wait()
                    conn.sendall(b"g")
                    _recv_exactly(conn, inbox)
                    conn.sendall(update)
                    _recv_exactly(conn, memoryview(bytearray(1)))
                    done.wait()
        except BaseException as exc:
            errors.append(exc)
            start.abort()
            done.abort()

    threads = [threading.Thread(target=client, daemon=True) for _ in range(args.clients)]
    for th in threads:
        th.start()
    seconds = []
    cpu = 0.0
    for _ in range(args.rounds):
        start.wait(timeout=120)
        t0, c0 = time.perf_counter(), time.process_time()
        done.wait(timeout=300)
        seconds.append(time.perf_counter() - t0)
        cpu += time.process_time() - c0
    for th in threads:
        th.join()
    if errors:
        raise RuntimeError(f"floor client failed: {errors[0]!r}")
    cipher = ciphers[0] if ciphers else None
    print(RESULT_MARK + json.dumps({"seconds": seconds, "cpu": cpu, "cipher": cipher}), flush=True)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    sub = parser.add_subparsers(dest="mode", required=True)
    nodes = sub.add_parser("nodes")
    for name in ("--kits", "--url", "--state", "--sites"):
        nodes.add_argument(name, required=True)
    nodes.add_argument("--inputs", type=int, required=True)
    nodes.add_argument("--outputs", type=int, required=True)
    nodes.add_argument("--timings", default=None)
    server = sub.add_parser("floor-server")
    server.add_argument("--cert", required=True)
    server.add_argument("--key", required=True)
    client = sub.add_parser("floor-clients")
    client.add_argument("--ca", required=True)
    client.add_argument("--port", type=int, required=True)
    for p in (server, client):
        p.add_argument("--clients", type=int, required=True)
        p.add_argument("--size", type=int, required=True)
        p.add_argument("--rounds", type=int, required=True)
    args = parser.parse_args(argv)
    {"nodes": nodes_main, "floor-server": floor_server_main, "floor-clients": floor_clients_main}[
        args.mode
    ](args)


if __name__ == "__main__":
    main()
