"""A whole federation in this process: the real coordinator and real node agents, no sockets.

``in_memory_federation(root)`` provisions a consortium into ``root`` (kits, CA, certificates as
``medfed provision`` makes them), builds the :class:`Coordinator` (SQLite file and blob store
under ``root``) and serves its app in memory (:meth:`Coordinator.in_memory`); job runners are
the coordinator's own threads. ``fed.start_node(site)`` runs a :class:`NodeAgent` in a thread,
with the site's own kit, state folder and data, talking to the app through an
:class:`~medfed.federation.transfer.transport.AsgiTransport`. Every request is signed and
checked exactly as over HTTPS; only the socket and TLS are gone (tests of those, of real
processes and of a proxy stay in ``server.py``/``conftest.py``).

Waits are events, not sleeps: a node's events are a condition to wait on, and a job's end is
its runner thread ending.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from medfed.data import load_dataset
from medfed.federation.coordinator.jobs import JobConfig
from medfed.federation.node.agent import NodeAgent, NodeSettings
from medfed.federation.transfer.client import FederationClient
from medfed.site.datasets import DatasetRegistry
from tests.federation.server import LiveCoordinator, breast_mlp, live_coordinator, submit_config

DATA = "breast-cancer"


@contextmanager
def in_memory_coordinator(root: Path, **kwargs: Any) -> Iterator[LiveCoordinator]:
    """:func:`live_coordinator` served in memory: the same API, state and helpers."""
    with live_coordinator(root, in_memory=True, **kwargs) as live:
        yield live


@dataclass
class Node:
    """A node agent serving in a thread; ``events`` is what it said (its terminal)."""

    site: str
    agent: NodeAgent
    client: FederationClient
    thread: threading.Thread
    events: list[str] = field(default_factory=list)
    failed: list[BaseException] = field(default_factory=list)
    changed: threading.Condition = field(default_factory=threading.Condition)

    @property
    def state(self) -> Path:
        return self.agent.settings.state_dir

    @property
    def text(self) -> str:
        with self.changed:
            return "\n".join(self.events)

    def said(self, message: str) -> None:
        with self.changed:
            self.events.append(message)
            self.changed.notify_all()

    def wait_for(self, needle: str, timeout: float = 60) -> None:
        """Until the node says something containing ``needle`` (or stops serving)."""
        with self.changed:
            ok = self.changed.wait_for(
                lambda: any(needle in e for e in self.events) or not self.thread.is_alive(),
                timeout,
            )
        assert ok and self.thread.is_alive(), f"{self.site} never said {needle!r}: {self.text}"

    def stop(self, timeout: float = 15) -> None:
        self.agent.stop()
        with self.changed:
            self.changed.notify_all()
        self.thread.join(timeout)
        self.client.close()
        assert not self.thread.is_alive(), f"{self.site} did not stop"
        assert not self.failed, self.failed


@dataclass
class InMemoryFederation:
    live: LiveCoordinator
    nodes: dict[str, Node] = field(default_factory=dict)

    @property
    def coordinator(self) -> Any:
        return self.live.coordinator

    def start_node(
        self,
        site: str,
        *,
        auto_approve: bool = True,
        require: frozenset[str] = frozenset(),
        state: Path | None = None,
        poll_wait: float = 0.5,
        dataset: str | None = None,
    ) -> Node:
        """Start ``site``'s agent on the bundled breast-cancer data (as ``medfed node start
        --data breast-cancer`` does), or on the data set registered at the node as
        ``dataset``; its state in the site's kit folder by default.

        Its first poll is made here, before the thread starts: when this returns, the
        coordinator knows the site (as it does a node process that started a while ago).
        """
        kit = self.live.kit(site)
        state_dir = state or self.live.kits / "sites" / site / "state"
        contract_sha256 = data_problem = None
        if dataset is None:
            bundled = load_dataset(DATA)
            data, spec = bundled.site(site), bundled.spec
        else:  # registered at this node (medfed node dataset add), as `node start` serves it
            served = DatasetRegistry.in_state(state_dir).load(dataset)
            data, spec, contract_sha256 = served.data, served.spec, served.entry.contract_sha256
            if served.report is not None and not served.report.passed:
                data_problem = served.report.summary()
        client = self.live.new_client(site)
        node: Node
        agent = NodeAgent(
            client=client,
            site=site,
            data=data,
            spec=spec,
            settings=NodeSettings(
                state_dir=state_dir,
                auto_approve=auto_approve,
                require=require,
                poll_wait=poll_wait,
                max_backoff=poll_wait,
            ),
            on_event=lambda message: node.said(message),
            dataset=dataset or DATA,
            kit=kit,
            contract_sha256=contract_sha256,
            data_problem=data_problem,
        )

        def serve() -> None:
            try:
                agent.run()
            except BaseException as exc:  # the test sees it in node.failed
                node.failed.append(exc)
                raise

        thread = threading.Thread(target=serve, name=f"node-{site}", daemon=True)
        node = Node(site, agent, client, thread)
        self.nodes[site] = node
        agent.step()
        thread.start()
        return node

    def submit(
        self,
        *,
        rounds: int = 1,
        min_sites: int = 1,
        round_timeout: float = 60.0,
        privacy: dict[str, Any] | None = None,
        researcher: str = "bob",
        name: str = "in-memory",
    ) -> dict[str, Any]:
        """Submit the example task as ``medfed job submit examples/breast_mlp.py --data
        breast-cancer`` does (the data set named in the data spec)."""
        model = breast_mlp()
        run: dict[str, Any] = {
            "rounds": rounds,
            "strategy": {"min_sites": min_sites},
            "round_timeout": round_timeout,
        }
        if privacy:  # secure aggregation only when the test asks for it
            run["privacy"] = {"secure_aggregation": False, **privacy}
        config = JobConfig.from_json({**run, "data_spec": {**model.data_spec, "data": DATA}})
        return submit_config(self.live, config, researcher=researcher, name=name)

    def wait_for_job(self, job_id: str, timeout: float = 120) -> dict[str, Any]:
        """Until the job's runner has ended (or the job ended without one); its view."""
        deadline = time.monotonic() + timeout
        c = self.coordinator
        while time.monotonic() < deadline:
            runner = c.runners.get(job_id)
            if runner is not None:
                runner.join(max(0.0, deadline - time.monotonic()))
                if not runner.is_alive():
                    break
            job = c.store.job(job_id)
            if job is not None and job.status != "running":
                break
            with c.wakeup:  # the runner starts at submit, or when the coordinator resumes
                c.wakeup.wait(0.2)
        view: dict[str, Any] = self.live.client("bob").get_json(f"/v1/jobs/{job_id}")
        assert view["status"] != "running", f"{job_id} still running: {self.logs()}"
        return view

    def logs(self) -> str:
        return "\n".join(f"[{n.site}] {n.text}" for n in self.nodes.values())

    def close(self) -> None:
        for node in self.nodes.values():
            node.agent.stop()
        for node in self.nodes.values():
            node.stop()


@contextmanager
def in_memory_federation(root: Path, **kwargs: Any) -> Iterator[InMemoryFederation]:
    with in_memory_coordinator(root, **kwargs) as live:
        fed = InMemoryFederation(live)
        try:
            yield fed
        finally:
            fed.close()
