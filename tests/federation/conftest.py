"""Real processes on 127.0.0.1: a provisioned federation, a coordinator, nodes."""

from __future__ import annotations

import os
import random
import socket
import ssl
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest

SITES = ("academic-centre", "community-north", "oncology-clinic")


def free_port() -> int:
    """A free 127.0.0.1 port for a coordinator process that binds it later (after provisioning).

    Not from the kernel's ephemeral range, where any outgoing connection or ``bind(0)`` of the
    other pytest-xdist worker could take it in the meantime: each worker draws from its own
    block of 1000 ports below 32768 (``PYTEST_XDIST_WORKER`` is ``gw0``, ``gw1``, ...)."""
    worker = os.environ.get("PYTEST_XDIST_WORKER", "gw0").removeprefix("gw")
    base = 20000 + 1000 * (int(worker) % 12 if worker.isdigit() else 0)
    for port in random.sample(range(base, base + 1000), 1000):
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    raise AssertionError(f"no free port in {base}..{base + 999}")


def medfed(*args: str, timeout: float = 180, **kwargs) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "medfed", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
        **kwargs,
    )


@dataclass
class Federation:
    root: Path
    port: int
    procs: dict[str, subprocess.Popen[str]] = field(default_factory=dict)
    logs: dict[str, Any] = field(default_factory=dict)
    data: str = "breast-cancer"  # the bundled data set start_node serves

    @property
    def kits(self) -> Path:
        return self.root / "kits"

    def kit(self, role: str, name: str) -> Path:
        return self.kits / role / name

    def spawn(self, key: str, *args: str) -> subprocess.Popen[str]:
        log = open(self.root / f"{key}.log", "w")  # noqa: SIM115 - closed in stop()
        self.logs[key] = log
        proc = subprocess.Popen(
            [sys.executable, "-m", "medfed", *args],
            stdout=log,
            stderr=subprocess.STDOUT,
            text=True,
            env={**os.environ, "PYTHONUNBUFFERED": "1"},
        )
        self.procs[key] = proc
        return proc

    def start_coordinator(self) -> None:
        self.spawn("coordinator", "coordinator", "start", "--kit", str(self.kits / "coordinator"))
        ca = ssl.create_default_context(cafile=str(self.kits / "coordinator" / "ca.pem"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            try:
                if (
                    httpx.get(f"https://127.0.0.1:{self.port}/v1/health", verify=ca).status_code
                    == 200
                ):
                    return
            except httpx.HTTPError:
                time.sleep(0.2)
        raise AssertionError("coordinator did not start: " + self.log("coordinator"))

    def start_node(self, site: str, *extra: str) -> None:
        self.spawn(
            site,
            "node",
            "start",
            "--kit",
            str(self.kit("sites", site)),
            "--data",
            self.data,
            *extra,
        )

    def stop(self, key: str, *, kill: bool = False) -> None:
        proc = self.procs.pop(key)
        if kill:
            proc.kill()
        else:
            proc.terminate()
        proc.wait(30)
        self.logs.pop(key).close()

    def log(self, key: str) -> str:
        return (self.root / f"{key}.log").read_text()

    def close(self) -> None:
        for key in list(self.procs):
            self.stop(key, kill=True)


@pytest.fixture
def federation(tmp_path: Path) -> Iterator[Federation]:
    port = free_port()
    (tmp_path / "consortium.toml").write_text(
        'name = "test-consortium"\n[coordinator]\nhost = "127.0.0.1"\n'
        f"port = {port}\n[participants]\nsites = {list(SITES)!r}\n"
        'admins = ["alice"]\nresearchers = ["bob"]\n'.replace("'", '"')
    )
    proc = medfed("provision", str(tmp_path / "consortium.toml"), "--out", str(tmp_path / "kits"))
    assert proc.returncode == 0, proc.stderr
    fed = Federation(tmp_path, port)
    try:
        yield fed
    finally:
        fed.close()


@pytest.fixture
def inmemory_federation(tmp_path: Path) -> Iterator[Any]:
    """A provisioned consortium, its coordinator and (``start_node``) node agents, all in this
    process and connected in memory: no ports, no processes (tests/federation/inmemory.py)."""
    from tests.federation.inmemory import in_memory_federation

    with in_memory_federation(tmp_path) as fed:
        yield fed
