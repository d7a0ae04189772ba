"""The network federation's cost: a real coordinator process and real nodes on loopback HTTPS.

Every case provisions a federation (``medfed.federation.identity.pki.provision``) into a temporary
folder, starts ``python -m medfed coordinator start --kit …`` as its own process, submits a
job through the researcher's signed client (as ``medfed job submit`` does) and runs the
nodes as threads of one other process (``_fed_nodes.py nodes``: one real ``NodeAgent`` per
site, each with its own client, state folder and copy of the model). The task is one
``nn.Linear(inputs, outputs, bias=False)`` whose training adds a constant, so a round costs
framework and transport, not learning. Jobs use ``evaluate_every=0`` (the driver still
evaluates after the last round). Round times come from the coordinator's own tables:
``rounds.finished_at`` (wall clock) and ``rounds_detail[].seconds`` (``GET /v1/jobs/{id}``).

    a  10 nodes × 10M float32 values: seconds per round (rounds 2..R-1: round 1 includes
       start-up, round R the final evaluation), against the floor of the same bytes over raw
       TLS sockets in the same run (10 client threads in one process each download and upload
       40 MB per round from one server process); target ≤ 2× the floor
    b  the coordinator's memory (VmRSS/VmHWM): idle, with 100 long-polling nodes connected,
       and during the rounds of a 100k-value model; no target
    c  rounds per minute, 50 nodes, 100k values, trivial training (rounds 2..R-1); no target

    python benchmarks/federation.py                     # full run, about 5 minutes on 2 cores
    python benchmarks/federation.py --quick --cases c   # CI smoke (10 nodes, 5 rounds)

Exits 0 when it ran (a missed target is a FAIL row; ``--strict`` exits 1 on a miss), 2 when
a job did not complete. Every child runs in its own process group, killed on the way out.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import signal
import socket
import sqlite3
import ssl
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_HERE = Path(__file__).resolve().parent
_REPO = _HERE.parent
sys.path.insert(0, str(_REPO))
sys.path.insert(0, str(_HERE))

from _fed_nodes import RESULT_MARK, Sampler, proc_status, spec_json, task_source  # noqa: E402

TARGET_RATIO = 2.0


@dataclass(frozen=True)
class Case:
    name: str
    nodes: int
    inputs: int
    outputs: int
    rounds: int
    quick_nodes: int
    quick_rounds: int

    @property
    def values(self) -> int:
        return self.inputs * self.outputs

    def size(self, quick: bool) -> tuple[int, int]:
        return (self.quick_nodes, self.quick_rounds) if quick else (self.nodes, self.rounds)


CASES = {
    "a": Case("a", 10, 10_000, 1_000, rounds=5, quick_nodes=10, quick_rounds=4),
    "b": Case("b", 100, 1_000, 100, rounds=3, quick_nodes=20, quick_rounds=2),
    "c": Case("c", 50, 1_000, 100, rounds=8, quick_nodes=10, quick_rounds=5),
}
SITE_POOL = max(c.nodes for c in CASES.values())


def site_name(i: int) -> str:
    return f"site-{i:03d}"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


# ---------------------------------------------------------------------------------------------
# a provisioned federation with real processes


def _child_env() -> dict[str, str]:
    """Children import medfed from the checkout this file lives in, like this process."""
    path = os.pathsep.join(p for p in (str(_REPO), os.environ.get("PYTHONPATH", "")) if p)
    return {**os.environ, "PYTHONPATH": path, "PYTHONUNBUFFERED": "1"}


@dataclass
class Federation:
    root: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    sampler: Sampler = field(default_factory=Sampler)

    sites: int = SITE_POOL

    def __post_init__(self) -> None:
        from medfed.federation.identity.pki import provision

        sites = ", ".join(f'"{site_name(i)}"' for i in range(self.sites))
        config = self.root / "consortium.toml"
        config.write_text(
            'name = "bench"\n[coordinator]\nhost = "127.0.0.1"\nport = 8443\n'
            f'[participants]\nsites = [{sites}]\nadmins = ["admin"]\nresearchers = ["researcher"]\n'
        )
        provision(config, self.root / "kits")
        self.kits = self.root / "kits"
        self.sampler.start()

    def spawn(self, log: str, cmd: Sequence[str], stdout: Any = None) -> subprocess.Popen[bytes]:
        err = open(self.root / f"{log}.log", "wb")  # noqa: SIM115 - the child owns it
        proc = subprocess.Popen(
            list(cmd),
            stdout=stdout if stdout is not None else err,
            stderr=err,
            start_new_session=True,
            env=_child_env(),
        )
        err.close()
        self.procs.append(proc)
        return proc

    def stop(self, proc: subprocess.Popen[bytes], sig: int = signal.SIGTERM) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, sig)
        try:
            proc.wait(15)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError, PermissionError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def close(self) -> None:
        self.sampler.stop()
        for proc in self.procs:
            self.stop(proc, signal.SIGKILL if proc.poll() is None else signal.SIGTERM)

    def log_tail(self, log: str, lines: int = 15) -> str:
        path = self.root / f"{log}.log"
        text = path.read_text(errors="replace") if path.exists() else ""
        return "\n".join(text.strip().splitlines()[-lines:])

    # -- the coordinator ------------------------------------------------------------------

    def start_coordinator(self, tag: str) -> tuple[subprocess.Popen[bytes], str, Path]:
        import httpx

        port, state = free_port(), self.root / tag / "state"
        proc = self.spawn(
            f"{tag}-coordinator",
            [sys.executable, "-m", "medfed", "coordinator", "start", "--kit",
             str(self.kits / "coordinator"), "--state", str(state), "--port", str(port)],
        )  # fmt: skip
        url = f"https://127.0.0.1:{port}"
        ca = ssl.create_default_context(cafile=str(self.kits / "ca" / "ca.pem"))
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{url}/v1/health", verify=ca, timeout=2).status_code == 200:
                    self.sampler.pids[f"{tag}-coordinator"] = proc.pid
                    return proc, url, state
            time.sleep(0.2)
        raise RuntimeError("the coordinator did not start:\n" + self.log_tail(f"{tag}-coordinator"))

    def client(self, role_dir: str, name: str, url: str) -> Any:
        from medfed.federation.identity.kits import load_kit
        from medfed.federation.transfer.client import client_for_kit

        return client_for_kit(load_kit(self.kits / role_dir / name), url=url, timeout=300)

    # -- nodes and jobs -----------------------------------------------------------------

    def start_nodes(self, tag: str, url: str, n: int, case: Case) -> subprocess.Popen[bytes]:
        proc = self.spawn(
            f"{tag}-nodes",
            [sys.executable, str(_HERE / "_fed_nodes.py"), "nodes", "--kits", str(self.kits),
             "--url", url, "--state", str(self.root / tag / "nodes"),
             "--sites", ",".join(site_name(i) for i in range(n)), "--inputs", str(case.inputs),
             "--outputs", str(case.outputs), "--timings", str(self.root / tag / "timings.json")],
        )  # fmt: skip
        self.sampler.pids[f"{tag}-nodes"] = proc.pid
        return proc

    def submit(self, url: str, case: Case, rounds: int, min_sites: int) -> str:
        from medfed.federation.coordinator.jobs import JobConfig
        from medfed.federation.node.job_context import spec_from_json
        from medfed.serde import params_to_bytes
        from medfed.site.task_loading import load_task

        path = self.root / f"task_{case.name}.py"
        path.write_text(task_source(case.inputs, case.outputs, f"bench-{case.name}"))
        spec = spec_from_json(spec_json(case.inputs, case.outputs))
        task = load_task(f"{path}:task")
        config = JobConfig.from_json({
            "rounds": rounds, "strategy": {"min_sites": min_sites}, "round_timeout": 600.0,
            "evaluation": {"every": 0}, "data_spec": spec_json(case.inputs, case.outputs),
        })  # fmt: skip
        initial = params_to_bytes(task.initial_params(spec, seed=0))
        with self.client("researchers", "researcher", url) as c:
            view = c.post_json(
                "/v1/jobs",
                {"name": f"bench-{case.name}", "task_name": task.name,
                 "bundle_sha256": c.upload_blob(path.read_bytes()),
                 "initial_sha256": c.upload_blob(initial), "config": config.to_json()},
            )  # fmt: skip
        return str(view["id"])

    def wait_job(self, url: str, job_id: str, timeout: float, watch: Sequence[Any]) -> Any:
        deadline = time.monotonic() + timeout
        with self.client("researchers", "researcher", url) as c:
            while time.monotonic() < deadline:
                view = c.get_json(f"/v1/jobs/{job_id}")
                if view["status"] != "running":
                    return view
                dead = [p for p in watch if p.poll() is not None]
                if dead:
                    raise RuntimeError(f"a child exited early (exit {dead[0].returncode})")
                time.sleep(1.0)
        raise TimeoutError(f"job {job_id} still running after {timeout:.0f} s")


def job_tables(state: Path, job_id: str) -> tuple[dict[int, float], list[dict[str, Any]]]:
    """The coordinator's rounds (round → finished_at) and tasks of one job, read-only."""
    db = sqlite3.connect(f"file:{state / 'coordinator.db'}?mode=ro", uri=True)
    try:
        rounds = dict(
            db.execute("SELECT round, finished_at FROM rounds WHERE job_id=?", (job_id,)).fetchall()
        )
        cols = ("round", "operation", "site", "created_at", "delivered_at", "finished_at")
        rows = db.execute(f"SELECT {', '.join(cols)} FROM tasks WHERE job_id=?", (job_id,))
        tasks = [dict(zip(cols, r, strict=True)) for r in rows.fetchall()]
    finally:
        db.close()
    return rounds, tasks


@dataclass
class RoundStats:
    timed: list[int]  # the rounds in the window
    per_round: float  # mean wall seconds per timed round (finished_at differences)
    driver_seconds: list[float]  # rounds_detail[].seconds of the timed rounds
    all_intervals: dict[int, float]  # round → finished_at[r] − finished_at[r−1] (r ≥ 2)
    phases: dict[str, float]  # coordinator-side split of a timed round, mean seconds
    window: tuple[float, float]


def round_stats(view: Any, rounds: dict[int, float], tasks: list[dict[str, Any]]) -> RoundStats:
    last = max(rounds)
    timed = list(range(2, last)) or [last]
    intervals = {r: rounds[r] - rounds[r - 1] for r in rounds if r - 1 in rounds}
    seconds = {d["round"]: d["seconds"] for d in view["rounds_detail"]}
    phases: dict[str, list[float]] = {"publish": [], "pickup": [], "nodes": [], "aggregate": []}
    for r in timed:
        train = [t for t in tasks if t["round"] == r and t["operation"] == "train"]
        first_created = min(t["created_at"] for t in train)
        phases["publish"].append(first_created - rounds[r - 1])
        phases["pickup"].append(
            statistics.fmean(t["delivered_at"] - t["created_at"] for t in train)
        )
        phases["nodes"].append(max(t["finished_at"] for t in train) - first_created)
        phases["aggregate"].append(rounds[r] - max(t["finished_at"] for t in train))
    window = (rounds[timed[0] - 1], rounds[timed[-1]])
    return RoundStats(
        timed=timed,
        per_round=(window[1] - window[0]) / len(timed),
        driver_seconds=[seconds[r] for r in timed],
        all_intervals=intervals,
        phases={k: statistics.fmean(v) for k, v in phases.items()},
        window=window,
    )


def node_phases(path: Path, st: RoundStats, nodes: int) -> dict[str, float]:
    """Mean seconds per node and round of each timed node-side phase in the timed rounds."""
    window, rounds = st.window, len(st.timed)
    if not path.exists():
        return {}
    totals: dict[str, float] = {}
    for _site, phase, start, end in json.loads(path.read_text()):
        if window[0] <= start <= window[1]:
            totals[phase] = totals.get(phase, 0.0) + (end - start)
    return {k: v / (rounds * nodes) for k, v in totals.items()}


# ---------------------------------------------------------------------------------------------
# the cases


def measure_floor(fed: Federation, nodes: int, nbytes: int, rounds: int) -> dict[str, Any]:
    helper = [sys.executable, str(_HERE / "_fed_nodes.py")]
    coord = fed.kits / "coordinator"
    counts = ["--clients", str(nodes), "--size", str(nbytes), "--rounds", str(rounds)]
    server = fed.spawn(
        "floor-server",
        [*helper, "floor-server", "--cert", str(coord / "tls.pem"), "--key", str(coord / "tls.key"),
         *counts],
        stdout=subprocess.PIPE,
    )  # fmt: skip
    assert server.stdout is not None
    line = server.stdout.readline().decode()
    if not line.startswith("PORT "):
        raise RuntimeError("the floor server did not start:\n" + fed.log_tail("floor-server"))
    clients = subprocess.run(
        [*helper, "floor-clients", "--ca", str(coord / "ca.pem"), "--port", line.split()[1],
         *counts],
        capture_output=True, text=True, timeout=600, start_new_session=True,
    )  # fmt: skip
    try:
        server_out, _ = server.communicate(timeout=60)
    finally:
        fed.stop(server)
    if clients.returncode != 0:
        raise RuntimeError("the floor clients failed:\n" + clients.stderr[-2000:])
    out = next(ln for ln in clients.stdout.splitlines() if ln.startswith(RESULT_MARK))
    result = dict(json.loads(out[len(RESULT_MARK) :]))
    cpu = [ln.split()[1] for ln in server_out.decode().splitlines() if ln.startswith("CPU ")]
    result["cpu_per_round"] = (result["cpu"] + float(cpu[0] if cpu else "nan")) / rounds
    return result


def run_a(fed: Federation, quick: bool) -> dict[str, Any]:
    case = CASES["a"]
    nodes, rounds = case.size(quick)
    nbytes = case.values * 4
    floor = measure_floor(fed, nodes, nbytes, 3 if quick else 5)
    coord, url, state = fed.start_coordinator("a")
    try:
        job = fed.submit(url, case, rounds, nodes)
        node_proc = fed.start_nodes("a", url, nodes, case)
        view = fed.wait_job(url, job, 900, [coord, node_proc])
        rounds_t, tasks = job_tables(state, job)
        hwm = proc_status(coord.pid).get("VmHWM", 0) / 1024
        node_hwm = proc_status(node_proc.pid).get("VmHWM", 0) / 1024
        fed.stop(node_proc)  # SIGTERM: the node process writes its timings
    finally:
        fed.stop(coord)
    if view["status"] != "complete":
        raise RuntimeError(f"case a: job ended {view['status']}: {view.get('error')}")
    st = round_stats(view, rounds_t, tasks)
    floor_s = statistics.median(floor["seconds"])
    t0, t1 = st.window
    return {
        "nodes": nodes, "rounds": rounds, "stats": st, "floor": floor, "floor_s": floor_s,
        "ratio": st.per_round / floor_s, "coord_hwm": hwm, "nodes_hwm": node_hwm,
        "coord": fed.sampler.window("a-coordinator", t0, t1),
        "node_proc": fed.sampler.window("a-nodes", t0, t1),
        "node_phases": node_phases(fed.root / "a" / "timings.json", st, nodes),
    }  # fmt: skip


def _count_sites(fed: Federation, url: str) -> int:
    with fed.client("admins", "admin", url) as c:
        return sum(p["role"] == "site" for p in c.get_json("/v1/participants"))


def run_b(fed: Federation, quick: bool) -> dict[str, Any]:
    case = CASES["b"]
    nodes, rounds = case.size(quick)
    coord, url, state = fed.start_coordinator("b")
    key = "b-coordinator"
    try:
        time.sleep(3)
        t = time.time()
        time.sleep(2)
        idle = fed.sampler.window(key, t, time.time())
        node_proc = fed.start_nodes("b", url, nodes, case)
        deadline = time.monotonic() + 120
        while _count_sites(fed, url) < nodes:
            if time.monotonic() > deadline or node_proc.poll() is not None:
                raise RuntimeError("case b: the nodes did not all connect")
            time.sleep(1)
        time.sleep(5 if quick else 10)  # let every node settle into its long poll
        t = time.time()
        time.sleep(5 if quick else 15)
        connected = fed.sampler.window(key, t, time.time())
        job = fed.submit(url, case, rounds, nodes)
        view = fed.wait_job(url, job, 600, [coord, node_proc])
        rounds_t, _tasks = job_tables(state, job)
        hwm = proc_status(coord.pid).get("VmHWM", 0) / 1024
        fed.stop(node_proc)
    finally:
        fed.stop(coord)
    if view["status"] != "complete":
        raise RuntimeError(f"case b: job ended {view['status']}: {view.get('error')}")
    first_start = rounds_t[1] - view["rounds_detail"][0]["seconds"]
    during = fed.sampler.window(key, first_start, max(rounds_t.values()))
    return {"nodes": nodes, "rounds": rounds, "idle": idle, "connected": connected,
            "during": during, "hwm": hwm}  # fmt: skip


def run_c(fed: Federation, quick: bool) -> dict[str, Any]:
    case = CASES["c"]
    nodes, rounds = case.size(quick)
    coord, url, state = fed.start_coordinator("c")
    try:
        job = fed.submit(url, case, rounds, nodes)
        node_proc = fed.start_nodes("c", url, nodes, case)
        view = fed.wait_job(url, job, 600, [coord, node_proc])
        rounds_t, tasks = job_tables(state, job)
        fed.stop(node_proc)
    finally:
        fed.stop(coord)
    if view["status"] != "complete":
        raise RuntimeError(f"case c: job ended {view['status']}: {view.get('error')}")
    st = round_stats(view, rounds_t, tasks)
    t0, t1 = st.window
    return {
        "nodes": nodes, "rounds": rounds, "stats": st, "per_minute": 60 / st.per_round,
        "coord": fed.sampler.window("c-coordinator", t0, t1),
        "node_proc": fed.sampler.window("c-nodes", t0, t1),
        "node_phases": node_phases(fed.root / "c" / "timings.json", st, nodes),
    }  # fmt: skip


# ---------------------------------------------------------------------------------------------
# the table


def _s(x: float) -> str:
    return f"{x:.3g}" if x < 1 else f"{x:.2f}"


def print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def _rounds(timed: list[int]) -> str:
    return f"round {timed[0]}" if len(timed) == 1 else f"rounds {timed[0]}–{timed[-1]}"


def _phases(st: RoundStats, proc: dict[str, dict[str, float]], nodes: dict[str, float]) -> str:
    n = len(st.timed)
    lines = [
        f"  coordinator's tables, mean of {_rounds(st.timed)}: publish the model "
        f"{_s(st.phases['publish'])} s · first task → last reply {_s(st.phases['nodes'])} s "
        f"(pickup {_s(st.phases['pickup'])} s) · last reply → round recorded "
        f"{_s(st.phases['aggregate'])} s; the driver's own seconds "
        + ", ".join(_s(x) for x in st.driver_seconds),
        "  every round (finished_at[r] − finished_at[r−1]): "
        + ", ".join(f"r{r} {_s(v)} s" for r, v in sorted(st.all_intervals.items())),
    ]
    if nodes:
        lines.append(
            "  per node and round (node-side): "
            + ", ".join(f"{k} {_s(v)} s" for k, v in sorted(nodes.items()))
        )
    lines.append(
        "  CPU per round: "
        + ", ".join(
            f"{k} {_s(v['cpu_s'] / n)} s (peak RSS {v['max_mb']:.0f} MB)" for k, v in proc.items()
        )
    )
    return "\n".join(lines)


def report(results: dict[str, dict[str, Any]]) -> bool:
    rows = [("case", "what", "measured", "floor", "ratio", "target", "result")]
    notes, ok = [], True
    if "a" in results:
        a = results["a"]
        passed = a["ratio"] <= TARGET_RATIO
        ok &= passed
        st = a["stats"]
        rows.append((
            "a", f"{a['nodes']} nodes × 10M float32, s/round ({_rounds(st.timed)})",
            f"{_s(st.per_round)} s", f"{_s(a['floor_s'])} s", f"{a['ratio']:.2f}×",
            f"≤ {TARGET_RATIO:g}×", "pass" if passed else "FAIL",
        ))  # fmt: skip
        n = len(st.timed)
        cpu = (a["coord"]["cpu_s"] + a["node_proc"]["cpu_s"]) / n
        floor_cpu = a["floor"]["cpu_per_round"]
        rows.append((
            "a/cpu", "same, CPU seconds per round (all processes)", f"{_s(cpu)} s",
            f"{_s(floor_cpu)} s", f"{cpu / floor_cpu:.2f}×", "—", "info",
        ))  # fmt: skip
        cipher = a["floor"]["cipher"]
        notes.append(
            f"a: medfed = (finished_at[{st.timed[-1]}] − finished_at[{st.timed[0] - 1}]) / "
            f"{len(st.timed)} from the coordinator's rounds table; floor = median of "
            f"{len(a['floor']['seconds'])} rounds ("
            + ", ".join(_s(x) for x in a["floor"]["seconds"])
            + f" s) of {a['nodes']} TLS clients (threads of one process) each downloading and "
            f"uploading {CASES['a'].values * 4 / 1e6:.0f} MB to one server process "
            f"({cipher[0] if cipher else '?'}). Peak RSS: coordinator {a['coord_hwm']:.0f} MB, "
            f"node process {a['nodes_hwm']:.0f} MB.\n"
            + _phases(
                st, {"coordinator": a["coord"], "nodes process": a["node_proc"]}, a["node_phases"]
            )
        )
    if "b" in results:
        b = results["b"]
        rows.append((
            "b", f"coordinator RSS, {b['nodes']} long-polling nodes",
            f"{b['idle']['max_mb']:.0f} / {b['connected']['max_mb']:.0f} / "
            f"{b['during']['max_mb']:.0f} MB", "—", "—", "—", "info",
        ))  # fmt: skip
        conn = b["connected"]
        notes.append(
            f"b: VmRSS max idle (no node) / {b['nodes']} nodes connected, no job / during "
            f"{b['rounds']} rounds of a 100k-value model; VmHWM {b['hwm']:.0f} MB; "
            f"{(conn['max_mb'] - b['idle']['max_mb']) * 1024 / b['nodes']:.0f} KB per connected "
            f"node. Idle long-polling costs the coordinator "
            f"{100 * conn['cpu_s'] / max(conn.get('wall_s', 1), 1e-9):.0f} % of a core "
            f"({conn['threads']} threads)."
        )
    if "c" in results:
        c = results["c"]
        st = c["stats"]
        rows.append((
            "c", f"{c['nodes']} nodes × 100k values, rounds/minute ({_rounds(st.timed)})",
            f"{c['per_minute']:.1f}", "—", "—", "—", "info",
        ))  # fmt: skip
        notes.append(
            f"c: 60 / mean seconds per round over {_rounds(st.timed)} ({_s(st.per_round)} s).\n"
            + _phases(
                st, {"coordinator": c["coord"], "nodes process": c["node_proc"]}, c["node_phases"]
            )
        )
    print_table(rows)
    print()
    for note in notes:
        print(note)
    return ok


def _tree() -> str:
    def git(*a: str) -> str:
        proc = subprocess.run(["git", *a], cwd=_REPO, capture_output=True, text=True)
        return proc.stdout if proc.returncode == 0 else ""

    head = git("rev-parse", "--short", "HEAD").strip()
    if not head:
        return f"{_REPO} (not a git checkout)"
    status = git("status", "--porcelain", "medfed").splitlines()
    dirty = [ln.split(maxsplit=1)[-1] for ln in status if ln.strip()]
    return f"commit {head}" + (
        f" + uncommitted changes in {', '.join(dirty)}" if dirty else ", clean"
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="fewer nodes and rounds (CI smoke)")
    parser.add_argument("--cases", default="a,b,c", help="comma-separated subset of a,b,c")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--keep", help="run in this folder and keep it (logs, databases)")
    args = parser.parse_args(argv)
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    if not names or any(n not in CASES for n in names):
        parser.error(f"choose cases from {', '.join(CASES)}")
    print(
        f"medfed network federation benchmark ({'quick' if args.quick else 'full'} run): python "
        f"{platform.python_version()}, {os.cpu_count()} CPUs, load average "
        f"{os.getloadavg()[0]:.2f} at start; nodes are threads of one process, the coordinator "
        "another\n",
        flush=True,
    )
    print(f"tree: {_tree()}\n", flush=True)
    runners = {"a": run_a, "b": run_b, "c": run_c}
    with contextlib.ExitStack() as stack:
        if args.keep:
            root = Path(args.keep)
            root.mkdir(parents=True, exist_ok=True)
        else:
            root = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="medfed-fed-")))
        fed = Federation(root, sites=max(CASES[n].size(args.quick)[0] for n in names))
        stack.callback(fed.close)
        results = {}
        try:
            for name in names:
                results[name] = runners[name](fed, args.quick)
        except (RuntimeError, TimeoutError) as exc:
            print(f"benchmark failed: {exc}", file=sys.stderr)
            for log in sorted(root.glob("*.log")):
                print(f"--- {log.name}\n{fed.log_tail(log.stem)}", file=sys.stderr)
            return 2
        ok = report(results)
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
