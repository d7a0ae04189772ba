"""The coordinator process: the API served over HTTPS, and one runner thread per running job.

On start it resumes every job the store says is running, from its last checkpointed round.
:meth:`Coordinator.in_memory` serves the same app and runners in this process without a
socket, for clients built on :class:`~medfed.federation.transfer.transport.AsgiTransport`.
"""

from __future__ import annotations

import logging
import ssl
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from medfed.federation.coordinator.app import ApiSettings, create_app
from medfed.federation.coordinator.blobs import BlobStore
from medfed.federation.coordinator.jobs import JobRunner
from medfed.federation.coordinator.remote_backend import Wakeup
from medfed.federation.coordinator.store import Store
from medfed.federation.transfer.transport import AsgiServer

__all__ = ["Coordinator", "CoordinatorSettings"]

log = logging.getLogger("medfed.coordinator")


@dataclass(frozen=True)
class CoordinatorSettings:
    consortium: str
    ca_cert_pem: bytes
    state_dir: Path
    db_url: str | None = None
    host: str = "127.0.0.1"
    port: int = 8443
    tls_cert: Path | None = None
    tls_key: Path | None = None
    insecure: bool = False
    max_upload_bytes: int = 4 << 30
    body_stall_seconds: float = 30.0  # a request body that stops arriving this long is refused

    @property
    def url(self) -> str:
        return self.db_url or f"sqlite:///{self.state_dir / 'coordinator.db'}"


class Coordinator:
    def __init__(self, settings: CoordinatorSettings) -> None:
        self.settings = settings
        settings.state_dir.mkdir(parents=True, exist_ok=True)
        self.store = Store(settings.url)
        self.blobs = BlobStore(settings.state_dir)
        self.wakeup = Wakeup()
        self.runners: dict[str, JobRunner] = {}
        self._lock = threading.Lock()
        self.app = create_app(
            store=self.store,
            blobs=self.blobs,
            ca_cert_pem=settings.ca_cert_pem,
            settings=ApiSettings(
                consortium=settings.consortium,
                max_upload_bytes=settings.max_upload_bytes,
                body_stall_seconds=settings.body_stall_seconds,
            ),
            start_job=self.start_job,
            notify=self.notify,
            changes=lambda: (self.wakeup.tasks, self.wakeup.jobs),
            announce_job=lambda: self.wakeup.bump("jobs"),
        )

    def notify(self) -> None:
        with self.wakeup:
            self.wakeup.notify_all()

    def start_job(self, job_id: str) -> None:
        with self._lock:
            runner = self.runners.get(job_id)
            if runner is not None and runner.is_alive():
                return
            runner = JobRunner(self.store, self.blobs, job_id, self.wakeup)
            self.runners[job_id] = runner
            runner.start()

    def resume_jobs(self) -> list[str]:
        """Restart the runner of every job that was running when the coordinator stopped."""
        resumed = [job.id for job in self.store.jobs(status="running")]
        for job_id in resumed:
            log.info("resuming %s", job_id)
            self.start_job(job_id)
        return resumed

    @contextmanager
    def in_memory(self) -> Iterator[AsgiServer]:
        """Serve the API in this process until exit, without uvicorn or a socket.

        Running jobs are resumed as by :meth:`serve`, and jobs started through the API get
        their runner threads; requests reach the app through ``server.transport(...)``
        (an :class:`~medfed.federation.transfer.transport.AsgiTransport`), signed and checked
        exactly as over HTTPS. On exit, requests still running are cancelled; stopping the
        job runners is the caller's (as it is when uvicorn stops).
        """
        server = AsgiServer(self.app)
        try:
            self.resume_jobs()
            yield server
        finally:
            server.close()

    def serve(self) -> None:
        """Serve until interrupted (uvicorn handles SIGINT/SIGTERM)."""
        import uvicorn

        s = self.settings
        kwargs: dict[str, Any] = {}
        if not s.insecure:
            if s.tls_cert is None or s.tls_key is None:
                raise ValueError("TLS needs a certificate and a key (or --insecure)")
            kwargs.update(
                ssl_certfile=str(s.tls_cert),
                ssl_keyfile=str(s.tls_key),
                ssl_version=ssl.PROTOCOL_TLS_SERVER,
            )
        self.resume_jobs()
        config = uvicorn.Config(
            self.app, host=s.host, port=s.port, log_level="warning", timeout_keep_alive=30, **kwargs
        )
        uvicorn.Server(config).run()
