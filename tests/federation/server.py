"""A provisioned consortium and a real coordinator, in this process, for API tests.

``live_coordinator(root)`` provisions a consortium into ``root``, builds a
:class:`~medfed.federation.coordinator.server.Coordinator` and serves its app with a real
``uvicorn.Server`` over TLS on a free 127.0.0.1 port in a thread; on exit it cancels every
running job, joins the job runners, stops the server and joins its thread. With
``in_memory=True`` the same coordinator (app, SQLite, blobs, job runners) is served without a
socket (:meth:`Coordinator.in_memory`), and every client reaches it through an
:class:`~medfed.federation.transfer.transport.AsgiTransport`: same signatures and checks, no
TLS, no port (``tests/federation/inmemory.py``). Tests talk to it through the
participants' own signed clients (``live.client("bob")``) or, to forge and replay requests,
through ``live.send(...)``, which lets a test choose every header. ``db_url`` puts the state in
a fresh database on a server (PostgreSQL) instead of SQLite.

Use it as a module-scoped fixture: provisioning and a server start cost about a second, so each
test module shares one federation and keeps its tests independent by using a fresh job per
test::

    @pytest.fixture(scope="module")
    def live(tmp_path_factory):
        with live_coordinator(tmp_path_factory.mktemp("federation")) as running:
            yield running
"""

from __future__ import annotations

import functools
import hashlib
import json
import secrets
import socket
import ssl
import threading
import time
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import uvicorn

from medfed.federation.coordinator.jobs import JobConfig
from medfed.federation.coordinator.server import Coordinator, CoordinatorSettings
from medfed.federation.identity.kits import Kit, load_coordinator_kit, load_kit
from medfed.federation.identity.pki import provision
from medfed.federation.identity.signing import Identity, sign_request
from medfed.federation.transfer.client import ApiError, FederationClient, client_for_kit
from medfed.federation.transfer.transport import AsgiServer, AsgiTransport
from medfed.records import Params
from medfed.serde import params_to_bytes

CONSORTIUM = "test-consortium"
SITES = ("academic-centre", "community-north", "oncology-clinic", "rural-hospital")
ADMINS = ("alice",)
RESEARCHERS = ("bob", "carol")
ROLE_OF = {
    **dict.fromkeys(SITES, "site"),
    **dict.fromkeys(ADMINS, "admin"),
    **dict.fromkeys(RESEARCHERS, "researcher"),
}
_DIRS = {"site": "sites", "admin": "admins", "researcher": "researchers"}
TASK_FILE = Path(__file__).resolve().parents[2] / "examples" / "breast_mlp.py"


def write_consortium(path: Path, port: int, *, name: str = CONSORTIUM) -> Path:
    def names(items: tuple[str, ...]) -> str:
        return "[" + ", ".join(f'"{n}"' for n in items) + "]"

    path.write_text(
        f'name = "{name}"\n[coordinator]\nhost = "127.0.0.1"\nport = {port}\n'
        f"[participants]\nsites = {names(SITES)}\nadmins = {names(ADMINS)}\n"
        f"researchers = {names(RESEARCHERS)}\n"
    )
    return path


@dataclass
class LiveCoordinator:
    """A running coordinator and the kits of everyone in its consortium."""

    root: Path
    kits: Path
    port: int
    coordinator: Coordinator
    server: uvicorn.Server | None  # None: served in memory by ``asgi``
    thread: threading.Thread | None
    asgi: AsgiServer | None = None
    _kits: dict[str, Kit] = field(default_factory=dict)
    _clients: dict[str, FederationClient] = field(default_factory=dict)
    _raw: httpx.Client | None = None

    @property
    def url(self) -> str:
        return f"https://127.0.0.1:{self.port}"

    @property
    def in_memory(self) -> bool:
        return self.asgi is not None

    def transport(self) -> AsgiTransport | None:
        """A new in-memory transport to this coordinator (None when it is served over TLS)."""
        return None if self.asgi is None else self.asgi.transport(self.url, timeout=30)

    def kit(self, name: str) -> Kit:
        if name not in self._kits:
            self._kits[name] = load_kit(self.kits / _DIRS[ROLE_OF[name]] / name)
        return self._kits[name]

    def identity(self, name: str) -> Identity:
        return Identity.from_kit(self.kit(name))

    def client(self, name: str) -> FederationClient:
        """``name``'s own signed, pinned client (what nodes, researchers and admins use)."""
        if name not in self._clients:
            self._clients[name] = self.new_client(name)
        return self._clients[name]

    def new_client(self, name: str, **kwargs: Any) -> FederationClient:
        """A new client of ``name`` (the caller closes it), in memory if the server is."""
        kwargs.setdefault("timeout", 30)
        return client_for_kit(self.kit(name), transport=self.transport(), **kwargs)

    @property
    def raw(self) -> httpx.Client:
        """A plain HTTPS client that trusts the federation CA and signs nothing by itself."""
        if self._raw is None and self.asgi is not None:
            self._raw = httpx.Client(
                base_url=self.url, transport=self.asgi.connection(), timeout=30
            )
        elif self._raw is None:
            ca = self.kit(ADMINS[0]).ca_pem.decode()
            self._raw = httpx.Client(
                base_url=self.url, verify=ssl.create_default_context(cadata=ca), timeout=30
            )
        return self._raw

    def signed_headers(
        self,
        name: str,
        method: str,
        path: str,
        body: bytes = b"",
        *,
        now: float | None = None,
        identity: Identity | None = None,
    ) -> dict[str, str]:
        return sign_request(
            identity or self.identity(name), method=method, path=path, body=body, now=now
        )

    def send(
        self,
        method: str,
        path: str,
        *,
        body: bytes = b"",
        headers: Mapping[str, str] | None = None,
        content_type: str | None = "application/json",
    ) -> httpx.Response:
        """Send exactly these bytes and headers (no signing of its own, no status check)."""
        all_headers = dict(headers or {})
        if body and content_type:
            all_headers.setdefault("content-type", content_type)
        return self.raw.request(method, path, content=body or None, headers=all_headers)

    def signed(
        self, name: str, method: str, path: str, payload: Any = None, *, body: bytes | None = None
    ) -> httpx.Response:
        """One request signed by ``name``; the response whatever its status."""
        raw = body if body is not None else b"" if payload is None else json.dumps(payload).encode()
        return self.send(
            method, path, body=raw, headers=self.signed_headers(name, method, path, raw)
        )

    def audit(self, limit: int = 100) -> list[dict[str, Any]]:
        rows: list[dict[str, Any]] = self.client(ADMINS[0]).get_json(f"/v1/audit?limit={limit}")
        return rows

    def close(self) -> None:
        store = self.coordinator.store
        for job in store.jobs(status="running"):
            store.set_job_status(job.id, "cancelled", "the test federation stopped")
        self.coordinator.notify()
        for runner in list(self.coordinator.runners.values()):
            runner.join(timeout=15)
        for client in self._clients.values():  # idle keep-alive connections delay a shutdown
            client.close()
        if self._raw is not None:
            self._raw.close()
        if self.server is not None and self.thread is not None:
            self.server.should_exit = True
            self.thread.join(timeout=15)
        if self.asgi is not None:  # requests still running are cancelled
            self.asgi.close()
        store.close()


@contextmanager
def fresh_database(url: str | None) -> Iterator[str | None]:
    """A new, empty database on the server of ``url`` (dropped on exit); None for SQLite."""
    if url is None:
        yield None
        return
    from sqlalchemy import create_engine, text
    from sqlalchemy.engine import make_url

    server = make_url(url)
    name = f"medfed_api_{secrets.token_hex(4)}"
    admin = create_engine(server, isolation_level="AUTOCOMMIT")
    try:
        with admin.connect() as c:
            c.execute(text(f'CREATE DATABASE "{name}"'))
        try:
            yield server.set(database=name).render_as_string(hide_password=False)
        finally:
            with admin.connect() as c:
                c.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        admin.dispose()


@contextmanager
def live_coordinator(
    root: Path,
    *,
    max_upload_bytes: int = 4 << 30,
    db_url: str | None = None,
    body_stall_seconds: float = 30.0,
    in_memory: bool = False,
) -> Iterator[LiveCoordinator]:
    """Provision a consortium into ``root`` and serve its coordinator over TLS until exit
    (or, with ``in_memory``, in this process without a socket).

    The state is in SQLite under ``root``, or in a fresh database on the server ``db_url``
    names (e.g. PostgreSQL), dropped again on exit.
    """
    with fresh_database(db_url) as url:
        if in_memory:
            yield from _in_memory(root, max_upload_bytes, url, body_stall_seconds)
        else:
            yield from _live(root, max_upload_bytes, url, body_stall_seconds)


def _coordinator(
    root: Path, port: int, max_upload_bytes: int, db_url: str | None, body_stall_seconds: float
) -> Coordinator:
    provision(write_consortium(root / "consortium.toml", port), root / "kits")
    ck = load_coordinator_kit(root / "kits" / "coordinator")
    assert ck.tls_cert_path is not None and ck.tls_key_path is not None
    return Coordinator(
        CoordinatorSettings(
            consortium=ck.consortium,
            ca_cert_pem=ck.ca_pem,
            state_dir=root / "state",
            db_url=db_url,
            port=port,
            tls_cert=ck.tls_cert_path,
            tls_key=ck.tls_key_path,
            max_upload_bytes=max_upload_bytes,
            body_stall_seconds=body_stall_seconds,
        )
    )


def _in_memory(
    root: Path, max_upload_bytes: int, db_url: str | None, body_stall_seconds: float
) -> Iterator[LiveCoordinator]:
    port = 8443  # only named in the kits: nothing listens on it
    coordinator = _coordinator(root, port, max_upload_bytes, db_url, body_stall_seconds)
    with coordinator.in_memory() as asgi:
        live = LiveCoordinator(root, root / "kits", port, coordinator, None, None, asgi)
        try:
            yield live
        finally:
            live.close()


def _live(
    root: Path, max_upload_bytes: int, db_url: str | None, body_stall_seconds: float = 30.0
) -> Iterator[LiveCoordinator]:
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    sock.bind(("127.0.0.1", 0))  # bound before provisioning: no other process can take the port
    port = int(sock.getsockname()[1])
    try:
        coordinator = _coordinator(root, port, max_upload_bytes, db_url, body_stall_seconds)
        s = coordinator.settings
        config = uvicorn.Config(
            coordinator.app,
            host="127.0.0.1",
            port=port,
            log_level="warning",
            ssl_certfile=str(s.tls_cert),
            ssl_keyfile=str(s.tls_key),
            timeout_graceful_shutdown=3,
        )
        server = uvicorn.Server(config)
        thread = threading.Thread(
            target=server.run, kwargs={"sockets": [sock]}, name="coordinator", daemon=True
        )
        thread.start()
        deadline = time.monotonic() + 20
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the test coordinator did not start")
            time.sleep(0.02)
        live = LiveCoordinator(root, root / "kits", port, coordinator, server, thread)
        try:
            yield live
        finally:
            live.close()
    finally:
        sock.close()


# -- a job to work on ----------------------------------------------------------------------


@dataclass(frozen=True)
class Model:
    """The example task file and its initial weights (the breast-cancer MLP)."""

    task_bytes: bytes
    params: Params
    initial_bytes: bytes
    data_spec: dict[str, Any]


@functools.cache
def breast_mlp() -> Model:
    from medfed.data import load_dataset
    from medfed.site.task_loading import load_task

    spec = load_dataset("breast-cancer").spec
    params = load_task(f"{TASK_FILE}:task").initial_params(spec, seed=0)
    data_spec = {"kind": "binary", "input_shape": list(spec.input_shape), "n_classes": 2}
    return Model(TASK_FILE.read_bytes(), params, params_to_bytes(params), data_spec)


def submit_job(
    live: LiveCoordinator,
    researcher: str = "bob",
    *,
    rounds: int = 1,
    min_sites: int = 1,
    round_timeout: float = 120.0,
    name: str = "api-test",
) -> dict[str, Any]:
    """Upload the example task and its initial model, submit a job; returns the job's view."""
    config = JobConfig.from_json(
        {
            "rounds": rounds,
            "strategy": {"min_sites": min_sites},
            "round_timeout": round_timeout,
            "data_spec": breast_mlp().data_spec,
        }
    )
    return submit_config(live, config, researcher=researcher, name=name)


def submit_config(
    live: LiveCoordinator, config: JobConfig, *, researcher: str = "bob", name: str = "api-test"
) -> dict[str, Any]:
    """Submit the example task and its initial model as a job of ``config``; the job's view."""
    model = breast_mlp()
    client = live.client(researcher)
    job: dict[str, Any] = client.post_json(
        "/v1/jobs",
        {
            "name": name,
            "task_name": "breast_mlp",
            "bundle_sha256": client.upload_blob(model.task_bytes),
            "initial_sha256": client.upload_blob(model.initial_bytes),
            "config": config.to_json(),
        },
    )
    return job


def approve(live: LiveCoordinator, site: str, job_id: str, status: str = "approved") -> None:
    live.client(site).post_json(f"/v1/jobs/{job_id}/approval", {"status": status})


def wait_for_task(
    live: LiveCoordinator, site: str, job_id: str, *, operation: str = "train", timeout: float = 30
) -> dict[str, Any]:
    """Long-poll ``/v1/work`` as ``site`` until it hands out this job's task."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        task = live.client(site).get_json("/v1/work?wait=1")["task"]
        if task is not None and task["job_id"] == job_id and task["operation"] == operation:
            return dict(task)
    raise AssertionError(f"{site} got no {operation} task of {job_id} in {timeout} s")


def running_job(
    live: LiveCoordinator, site: str = SITES[0], researcher: str = "bob"
) -> tuple[dict[str, Any], dict[str, Any]]:
    """A fresh job that ``site`` approved, and the train task it handed to ``site``."""
    job = submit_job(live, researcher)
    approve(live, site, job["id"])
    return job, wait_for_task(live, site, job["id"])


def cancel(live: LiveCoordinator, job_id: str, researcher: str = "bob") -> None:
    live.client(researcher).post_json(f"/v1/jobs/{job_id}/cancel", {})


def update_bytes(
    params: Params | None = None, change: Callable[[dict[str, np.ndarray]], None] | None = None
) -> bytes:
    """A valid update (zeros shaped like the model), optionally changed in place first."""
    base = params or breast_mlp().params
    arrays = {k: np.zeros_like(v) for k, v in base.items()}
    if change is not None:
        change(arrays)
    return params_to_bytes(Params(arrays.items()))


def reply_header(task: dict[str, Any], site: str, *, num_examples: int | None = 10) -> dict:
    return {
        "site": site,
        "round": task["round"],
        "operation": task["operation"],
        "seconds": 0.5,
        "metrics": {"num_examples": 10, "loss": 0.5, "accuracy": 0.9},
        "failure": None,
        "num_examples": num_examples,
    }


def sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


# -- refusals --------------------------------------------------------------------------------


def outcome(call: Callable[[], Any]) -> tuple[int, Any]:
    """(status, detail) of a request made through a participant client or ``live.send``."""
    try:
        result = call()
    except ApiError as exc:
        return exc.status, exc.detail
    if isinstance(result, httpx.Response):
        try:
            detail = result.json().get("detail") if result.status_code >= 400 else None
        except (ValueError, AttributeError):
            detail = result.text
        return result.status_code, detail
    return 200, None


def assert_refused(
    live: LiveCoordinator,
    call: Callable[[], Any],
    status: int | tuple[int, ...],
    *,
    contains: str = "",
    principal: str | None = None,
) -> str:
    """``call`` is refused with ``status`` and a one-sentence ``detail`` that the audit log
    records as a refusal (read back through the admin's ``/v1/audit``); returns the detail."""
    last = live.coordinator.store.audit_log(limit=1)
    before = last[-1]["id"] if last else 0
    got, detail = outcome(call)
    allowed = (status,) if isinstance(status, int) else status
    assert got in allowed, f"expected {allowed}, got {got}: {detail!r}"
    assert 400 <= got < 500
    assert isinstance(detail, str) and len(detail.strip()) > 3, f"no sentence: {detail!r}"
    assert contains.lower() in detail.lower(), detail
    # a stored detail is cut at 2000 characters; FastAPI reads the detail back as we sent it
    rows = [
        r
        for r in live.audit(limit=50)
        if r["outcome"] == "refused" and r["detail"] == detail[:2000] and r["id"] > before
    ]
    assert rows, f"no audit row records the refusal {detail!r}"
    if principal is not None:
        assert rows[-1]["principal"] == principal, rows[-1]
    return detail
