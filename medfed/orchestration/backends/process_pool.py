"""Sites run in parallel in a pool of worker processes on this machine.

Each site is pinned to one worker for the whole run, so it is built once (its data loaded
once, in the worker) and keeps its state across rounds. Between processes only JSON headers
and safetensors blobs travel — no pickled records — and a round's global params are encoded
once per exchange, not once per site.

A worker that dies or overruns the timeout turns its outstanding requests into failure
replies; it is restarted for the next exchange, its sites rebuilt from the factory and their
state read back from the factory's state folder (:mod:`medfed.site.state`).
"""

from __future__ import annotations

import contextlib
import json
import multiprocessing as mp
import os
import signal
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from typing import Any, cast

from medfed.orchestration.backends.base import Request, SiteFactory
from medfed.records import Instruction, Reply, SiteFailure
from medfed.serde import (
    instruction_from_wire,
    instruction_to_wire,
    params_from_bytes,
    params_to_bytes,
    reply_from_wire,
    reply_to_wire,
)
from medfed.site.runtime import SiteRuntime

__all__ = ["ProcessPoolBackend"]


@dataclass
class _Worker:
    index: int
    process: Any
    conn: Connection


def _send(conn: Connection, header: dict[str, Any], blobs: Sequence[bytes] = ()) -> None:
    conn.send_bytes(json.dumps(header).encode())
    for blob in blobs:
        conn.send_bytes(blob)


def _worker_main(conn: Connection, factory: SiteFactory, threads: int) -> None:
    # Ctrl-C is the coordinator's to handle: it stops the run and then the workers
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    os.environ.setdefault("OMP_NUM_THREADS", str(threads))
    sites: dict[str, SiteRuntime] = {}
    torch_threads_set = False
    while True:
        try:
            header = json.loads(conn.recv_bytes())
        except (EOFError, OSError):
            return
        if header["kind"] == "stop":
            return
        params = {}
        for key in header["blobs"]:
            p, _ = params_from_bytes(conn.recv_bytes())
            for arr in p.values():
                arr.flags.writeable = False
            params[key] = p
        for item in header["items"]:
            name = item["site"]
            instruction = instruction_from_wire(item["instruction"], params[item["params"]])
            try:
                site = sites.get(name)
                if site is None:
                    site = sites[name] = factory.make(name)
                if not torch_threads_set:
                    torch_threads_set = _limit_torch_threads(threads)
                reply = site.handle(instruction)
            except Exception as exc:
                reply = Reply(
                    site=name,
                    round=instruction.round,
                    operation=instruction.operation,
                    failure=SiteFailure(type(exc).__name__, f"could not start the site: {exc}"),
                )
            out, blob = reply_to_wire(reply)
            out["req"] = item["req"]
            out["has_blob"] = blob is not None
            _send(conn, out, [blob] if blob is not None else [])


def _limit_torch_threads(threads: int) -> bool:
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return False
    torch.set_num_threads(threads)
    return True


class ProcessPoolBackend:
    """``workers`` processes; site ``i`` lives in worker ``i mod workers``."""

    def __init__(
        self,
        factory: SiteFactory,
        *,
        workers: int = 2,
        threads_per_worker: int = 1,
        start_method: str = "spawn",
    ) -> None:
        if workers < 1:
            raise ValueError("workers must be at least 1")
        self._factory = factory
        self._names = list(factory.site_names)
        self._n = min(workers, max(1, len(self._names)))
        self._threads = threads_per_worker
        self._ctx: Any = mp.get_context(start_method)
        self._workers: dict[int, _Worker] = {}
        self._home = {name: i % self._n for i, name in enumerate(self._names)}

    @property
    def site_names(self) -> list[str]:
        return list(self._names)

    def _worker(self, index: int) -> _Worker:
        w = self._workers.get(index)
        if w is not None and w.process.is_alive():
            return w
        parent, child = self._ctx.Pipe(duplex=True)
        proc = self._ctx.Process(
            target=_worker_main,
            args=(child, self._factory, self._threads),
            name=f"medfed-site-worker-{index}",
            daemon=True,
        )
        proc.start()
        child.close()
        w = self._workers[index] = _Worker(index, proc, parent)
        return w

    def _discard(self, w: _Worker) -> None:
        if w.process.is_alive():
            w.process.kill()
        w.process.join(timeout=5)
        w.conn.close()
        self._workers.pop(w.index, None)

    def exchange(
        self, requests: Sequence[Request], *, timeout: float | None = None
    ) -> Iterator[Reply]:
        deadline = None if timeout is None else time.monotonic() + timeout
        blob_cache: dict[int, bytes] = {}
        per_worker: dict[int, list[tuple[int, str, Instruction]]] = {}
        for req, (name, instruction) in enumerate(requests):
            if name not in self._home:
                raise KeyError(f"unknown site {name!r}")
            per_worker.setdefault(self._home[name], []).append((req, name, instruction))

        owner: dict[Connection, _Worker] = {}
        outstanding: dict[Connection, set[int]] = {}
        for index, items in per_worker.items():
            w = self._worker(index)
            keys: list[int] = []
            for _, _, ins in items:
                key = id(ins.params)
                if key not in blob_cache:
                    blob_cache[key] = params_to_bytes(ins.params)
                if key not in keys:
                    keys.append(key)
            header = {
                "kind": "batch",
                "blobs": keys,
                "items": [
                    {
                        "req": r,
                        "site": n,
                        "params": id(i.params),
                        "instruction": instruction_to_wire(i),
                    }
                    for r, n, i in items
                ],
            }
            _send(w.conn, header, [blob_cache[k] for k in keys])
            owner[w.conn] = w
            outstanding[w.conn] = {r for r, _, _ in items}
        blob_cache.clear()

        try:
            yield from self._collect(requests, owner, outstanding, deadline, timeout)
        finally:
            # the consumer stopped early: replies still on their way would arrive in the next
            # exchange, so those workers are replaced
            for conn, pending in outstanding.items():
                if pending:
                    self._discard(owner[conn])

    def _collect(
        self,
        requests: Sequence[Request],
        owner: dict[Connection, _Worker],
        outstanding: dict[Connection, set[int]],
        deadline: float | None,
        timeout: float | None,
    ) -> Iterator[Reply]:
        ready: dict[int, Reply] = {}
        next_req = 0
        while next_req < len(requests):
            while next_req in ready:
                yield ready.pop(next_req)
                next_req += 1
            if next_req >= len(requests):
                break
            live = [c for c, pending in outstanding.items() if pending]
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            conns = wait(live, timeout=remaining) if live else []
            if not conns:  # timed out: whatever is still outstanding fails
                for conn in live:
                    self._fail(
                        owner[conn],
                        outstanding[conn],
                        requests,
                        ready,
                        "Timeout",
                        f"no reply within {timeout:g} s",
                    )
                    outstanding[conn] = set()
                continue
            for ready_conn in conns:
                conn = cast(Connection, ready_conn)
                try:
                    header = json.loads(conn.recv_bytes())
                    blob = conn.recv_bytes() if header.pop("has_blob") else None
                except (EOFError, OSError):
                    self._fail(
                        owner[conn],
                        outstanding[conn],
                        requests,
                        ready,
                        "WorkerDied",
                        "the worker process running this site stopped unexpectedly",
                    )
                    outstanding[conn] = set()
                    continue
                req = int(header.pop("req"))
                outstanding[conn].discard(req)
                ready[req] = reply_from_wire(header, blob)

    def _fail(
        self,
        w: _Worker,
        reqs: set[int],
        requests: Sequence[Request],
        ready: dict[int, Reply],
        kind: str,
        message: str,
    ) -> None:
        self._discard(w)
        for r in reqs:
            name, ins = requests[r]
            ready[r] = Reply(
                site=name,
                round=ins.round,
                operation=ins.operation,
                failure=SiteFailure(kind, message),
            )

    def close(self) -> None:
        for w in list(self._workers.values()):
            with contextlib.suppress(OSError, ValueError):
                _send(w.conn, {"kind": "stop"})
        for w in list(self._workers.values()):
            w.process.join(timeout=5)
            self._discard(w)

    def __enter__(self) -> ProcessPoolBackend:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
