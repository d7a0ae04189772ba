"""Framework overhead per round, against the bare numpy floor measured in the same run.

Local training is trivial (each site returns ``params + c``), so whatever medfed costs on
top of a plain Python loop is what this script measures. Three sides take turns::

    floor   for each site: new = {k: v + c}; acc[k] += n * new[k]      then acc / total
    work    the floor + what medfed's design adds per site (delta = new − old, finite check)
    medfed  RoundDriver(FedAvg, InProcessBackend) over SiteApps whose fit returns {k: v + c}

Cases (sites × float32 values in one tensor × rounds): a = 10 × 100k × 10,
b = 10 × 10M × 5, c = 100 × 100k × 5, and d = case a with the values split over 100 tensors
(informative: real models have many). Targets: per round ≤ 1.5× the floor; ≤ 1.5 s from
process start to the end of round 1 (case a, fresh process); peak memory of (b) ≤ 1.5× the
floor's (each side in its own fresh process).

    python benchmarks/overhead.py                      # full run, under a minute on 2 cores
    python benchmarks/overhead.py --quick --cases a    # CI smoke
    python benchmarks/overhead.py --flower --flower-python /tmp/flwr-venv/bin/python

``--flower`` runs the same cases with Flower's simulation (``flwr[simulation]``) in a child
process of the given interpreter, so Flower never needs to be installed next to medfed.
The script exits 0 when it ran (missed targets are reported as FAIL in the table; add
``--strict`` to exit 1 on a miss) and 2 when medfed's result differs from the floor's.
"""

from __future__ import annotations

import argparse
import contextlib
import gc
import json
import os
import platform
import resource
import signal
import statistics
import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any

import numpy as np

# Child processes that must not load medfed (the floor's memory run, Flower's side in another
# venv) set this variable; everything else measures the checkout this file lives in.
_NO_MEDFED_ENV = "OVERHEAD_NO_MEDFED"
_REPO = Path(__file__).resolve().parents[1]
if os.environ.get(_NO_MEDFED_ENV) != "1":
    sys.path.insert(0, str(_REPO))
    from medfed.orchestration.backends import InProcessBackend, ProcessPoolBackend
    from medfed.orchestration.driver import RoundDriver, RoundResult
    from medfed.records import Instruction, Metrics, Params
    from medfed.site.app import FitResult
    from medfed.site.runtime import SiteRuntime
    from medfed.strategies import FedAvg
_T_IMPORTED = time.monotonic()

RESULT_MARK = "OVERHEAD-RESULT "
TARGET_RATIO = 1.5
TARGET_STARTUP_S = 1.5
TARGET_MEMORY_RATIO = 1.5


@dataclass(frozen=True)
class Case:
    name: str
    sites: int
    size: int
    rounds: int
    reps: int  # timed repetitions in a full run
    tensors: int = 1  # the values are split evenly over this many named tensors
    has_target: bool = True

    @property
    def label(self) -> str:
        split = f" in {self.tensors} tensors" if self.tensors > 1 else ""
        return f"{self.sites} × {_count(self.size)}{split} × {self.rounds}"


CASES = {
    "a": Case("a", sites=10, size=100_000, rounds=10, reps=15),
    "b": Case("b", sites=10, size=10_000_000, rounds=5, reps=5),
    "c": Case("c", sites=100, size=100_000, rounds=5, reps=9),
    # not in the issue: real models have many tensors, so per-tensor costs show here
    "d": Case("d", sites=10, size=100_000, rounds=10, reps=9, tensors=100, has_target=False),
}


def _count(n: int) -> str:
    return f"{n // 1_000_000}M" if n >= 1_000_000 else f"{n // 1000}k"


def site_constant(i: int) -> np.float32:
    return np.float32(1e-3 * (i + 1))


def site_examples(i: int) -> int:
    return 100 * (i + 1)


def initial_params(case: Case) -> dict[str, np.ndarray]:
    values = np.random.default_rng(0).standard_normal(case.size, dtype=np.float32)
    if case.tensors == 1:
        return {"w": values}
    return {f"layer{i}": part.copy() for i, part in enumerate(np.split(values, case.tensors))}


# ---------------------------------------------------------------------------------------------
# the floor: what a person writes with numpy and no framework


def bare_fit(params: dict[str, np.ndarray], c: np.float32) -> dict[str, np.ndarray]:
    return {k: v + c for k, v in params.items()}


def floor_run(params: dict[str, np.ndarray], sites: int, rounds: int) -> dict[str, np.ndarray]:
    for _ in range(rounds):
        acc = {k: np.zeros_like(v) for k, v in params.items()}
        total = 0
        for i in range(sites):
            new = bare_fit(params, site_constant(i))
            n = site_examples(i)
            for k, v in new.items():
                acc[k] += n * v
            total += n
        params = {k: a / total for k, a in acc.items()}
    return params


def work_run(params: dict[str, np.ndarray], sites: int, rounds: int) -> dict[str, np.ndarray]:
    """The floor plus the two passes medfed's design adds per site, still without a framework:
    the update is a delta (``new − old``, in place) and the coordinator checks it is finite.
    The gap between this and medfed is the framework's own cost."""
    for _ in range(rounds):
        acc = {k: np.zeros_like(v) for k, v in params.items()}
        total = 0
        for i in range(sites):
            new = bare_fit(params, site_constant(i))
            n = site_examples(i)
            for k, v in new.items():
                np.subtract(v, params[k], out=v)
                if not np.isfinite(v).all():
                    raise ValueError("non-finite update")
                acc[k] += n * v
            total += n
        params = {k: params[k] + a / total for k, a in acc.items()}
    return params


# ---------------------------------------------------------------------------------------------
# medfed: the same work through the round driver


@dataclass(frozen=True)
class ConstantApp:
    """Training adds a constant (fresh arrays, as FitResult asks); evaluation is free."""

    c: np.float32
    num_examples: int

    def fit(self, params: Params, instruction: Instruction) -> FitResult:
        new = Params({k: np.add(v, self.c) for k, v in params.items()})
        return FitResult(new, self.num_examples, Metrics(num_examples=self.num_examples))

    def evaluate(self, params: Params, instruction: Instruction) -> Metrics:
        return Metrics(num_examples=self.num_examples)


@dataclass(frozen=True)
class ConstantSites:
    """Picklable factory (the process pool rebuilds sites in its workers)."""

    n: int

    @property
    def site_names(self) -> list[str]:
        return [f"site-{i}" for i in range(self.n)]

    def make(self, name: str) -> SiteRuntime:
        i = int(name.rsplit("-", 1)[1])
        return SiteRuntime(name, ConstantApp(site_constant(i), site_examples(i)))


def medfed_driver(sites: int, backend: Any = None, observers: tuple[Any, ...] = ()) -> RoundDriver:
    return RoundDriver(
        strategy=FedAvg(min_sites=sites),
        backend=backend if backend is not None else InProcessBackend(ConstantSites(sites)),
        seed=0,
        evaluate_every=0,  # the driver still evaluates after the last round (free here)
        observers=observers,
    )


def medfed_run(params: dict[str, np.ndarray], sites: int, rounds: int) -> dict[str, np.ndarray]:
    return dict(medfed_driver(sites).run(Params(params), rounds=rounds))


# ---------------------------------------------------------------------------------------------
# measurements in this process


def _timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    gc.collect()
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return list(a) == list(b) and all(np.allclose(a[k], b[k], rtol=1e-5, atol=1e-6) for k in a)


SIDES: dict[str, Callable[[dict[str, np.ndarray], int, int], dict[str, np.ndarray]]] = {
    "floor": floor_run,
    "work": work_run,
    "medfed": medfed_run,
}


@dataclass
class RoundTimes:
    floor: float  # median seconds per round
    work: float
    medfed: float
    reps: int

    @property
    def ratio(self) -> float:
        return self.medfed / self.floor


def time_case(case: Case, reps: int) -> RoundTimes:
    """The sides take turns (the order rotates each repetition); medians of seconds per round."""
    params = initial_params(case)
    warm = 1 if case.size >= 1_000_000 else case.rounds
    for run in SIDES.values():
        run(params, case.sites, warm)
    times: dict[str, list[float]] = {name: [] for name in SIDES}
    order = list(SIDES)
    for rep in range(reps):
        out = {}
        for name in order[rep % 3 :] + order[: rep % 3]:
            run = SIDES[name]
            seconds, out[name] = _timed(partial(run, params, case.sites, case.rounds))
            times[name].append(seconds / case.rounds)
        for name in ("work", "medfed"):
            if not _same(out["floor"], out[name]):
                print(f"case {case.name}: the {name} side's params differ from the floor's")
                raise SystemExit(2)
        del out
    med = {name: statistics.median(t) for name, t in times.items()}
    return RoundTimes(med["floor"], med["work"], med["medfed"], reps)


@dataclass
class PoolTimes:
    per_round: float
    first_round: float  # includes spawning the workers and building the sites
    reps: int


def time_process_pool(case: Case, reps: int, workers: int = 2) -> PoolTimes:
    params = Params(initial_params(case))
    with ProcessPoolBackend(ConstantSites(case.sites), workers=workers) as backend:
        driver = medfed_driver(case.sites, backend)
        first, result = _timed(partial(driver.run_round, 1, params))
        timed_rounds = partial(driver.run, result.params, rounds=case.rounds + 1, first_round=2)
        per_round = [_timed(timed_rounds)[0] / case.rounds for _ in range(reps)]
    return PoolTimes(statistics.median(per_round), first, reps)


# ---------------------------------------------------------------------------------------------
# measurements in fresh child processes


def _child_cmd(python: str, *args: str) -> list[str]:
    return [python, str(Path(__file__).resolve()), "--child", *args]


def _child_env(no_medfed: bool) -> dict[str, str]:
    env = dict(os.environ)
    env.pop(_NO_MEDFED_ENV, None)
    if no_medfed:
        env[_NO_MEDFED_ENV] = "1"
    return env


def _parse_result(stdout: str, what: str) -> dict[str, Any]:
    for line in reversed(stdout.splitlines()):
        if line.startswith(RESULT_MARK):
            return dict(json.loads(line[len(RESULT_MARK) :]))
    raise RuntimeError(f"{what}: the child printed no result")


def _run_child(
    cmd: list[str], env: dict[str, str], what: str, timeout: float, on_start: Any = None
) -> tuple[float, dict[str, Any]]:
    """Run a child in its own process group; returns (monotonic launch time, its result)."""
    t0 = time.monotonic()
    proc = subprocess.Popen(
        cmd,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        start_new_session=True,
    )
    if on_start is not None:
        on_start(proc.pid)
    try:
        stdout, stderr = proc.communicate(timeout=timeout)
    finally:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(proc.pid, signal.SIGKILL)  # leftovers of this child only (Ray, workers)
        proc.wait()
    if proc.returncode != 0:
        tail = "\n".join(stderr.strip().splitlines()[-15:])
        raise RuntimeError(f"{what} failed (exit {proc.returncode}):\n{tail}")
    return t0, _parse_result(stdout, what)


@dataclass
class Startup:
    seconds: float  # median, parent's launch to the end of round 1
    imports: float  # median, parent's launch to the end of the child's imports
    floor: float  # the bare numpy script, same measure
    reps: int


def measure_startup(reps: int) -> Startup:
    total, imports, floor = [], [], []
    for _ in range(reps):
        t0, out = _run_child(
            _child_cmd(sys.executable, "startup", "--side", "medfed"),
            _child_env(False),
            "start-up (medfed)",
            120,
        )
        total.append(out["round1_end"] - t0)
        imports.append(out["imported"] - t0)
        t0, out = _run_child(
            _child_cmd(sys.executable, "startup", "--side", "floor"),
            _child_env(True),
            "start-up (floor)",
            120,
        )
        floor.append(out["round1_end"] - t0)
    return Startup(
        statistics.median(total), statistics.median(imports), statistics.median(floor), reps
    )


@dataclass
class Memory:
    floor_mb: float
    medfed_mb: float
    floor_base_mb: float  # RSS after imports, before the params exist
    medfed_base_mb: float

    @property
    def ratio(self) -> float:
        return self.medfed_mb / self.floor_mb


def measure_memory(case: Case) -> Memory:
    results = {}
    for side in ("floor", "medfed"):
        _, results[side] = _run_child(
            _child_cmd(sys.executable, "peak", "--side", side, "--cases", case.name),
            _child_env(side == "floor"),
            f"peak memory ({side})",
            600,
        )
    return Memory(
        results["floor"]["peak_mb"],
        results["medfed"]["peak_mb"],
        results["floor"]["base_mb"],
        results["medfed"]["base_mb"],
    )


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def _peak_rss_mb() -> float:
    """This process's peak RSS (VmHWM). Not ru_maxrss: after fork + exec that one still holds
    the parent's RSS at the fork, which would hide the child's own peak."""
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def child_main(mode: str, side: str, case_name: str) -> None:
    case = CASES[case_name]
    out: dict[str, Any] = {"imported": _T_IMPORTED}
    if mode == "startup":
        params = initial_params(case)
        if side == "floor":
            floor_run(params, case.sites, 1)
            out["round1_end"] = time.monotonic()
        else:
            stamps: dict[int, float] = {}

            class Stamp:
                def on_round_end(self, result: RoundResult) -> None:
                    stamps.setdefault(result.round, time.monotonic())

            medfed_driver(case.sites, observers=(Stamp(),)).run(Params(params), rounds=case.rounds)
            out["round1_end"] = stamps[1]
    elif mode == "peak":
        out["base_mb"] = _rss_mb()
        params = initial_params(case)
        run = floor_run if side == "floor" else medfed_run
        run(params, case.sites, case.rounds)
        out["peak_mb"] = _peak_rss_mb()
    elif mode == "flower":
        from _flower_side import flower_child

        out.update(flower_child(case))
    print(RESULT_MARK + json.dumps(out), flush=True)


@dataclass
class FlowerFigures:
    version: str
    per_round: float  # (end of the last round − start of round 1) / rounds
    steady: float  # median duration of rounds 2..R (round 1 starts Ray's actors)
    startup: float  # parent's launch to the end of round 1
    tree_peak_mb: float
    driver_peak_mb: float
    checksum: float


def measure_flower(python: str, case: Case) -> FlowerFigures:
    from _flower_side import TreeMemory

    mem = TreeMemory()
    try:
        t0, out = _run_child(
            _child_cmd(python, "flower", "--cases", case.name),
            _child_env(True),
            f"Flower case {case.name}",
            1800,
            on_start=mem.start,
        )
    finally:
        mem.stop()
    steady = statistics.median(out["rounds"][1:] or out["rounds"])
    return FlowerFigures(
        out["version"],
        out["per_round"],
        steady,
        out["round1_end"] - t0,
        mem.peak_mb,
        out["driver_peak_mb"],
        out["checksum"],
    )


def flower_python(requested: str | None) -> tuple[str | None, str]:
    python = requested or sys.executable
    probe = subprocess.run(
        [python, "-c", "import flwr, ray; print(flwr.__version__)"],
        capture_output=True,
        text=True,
        env=_child_env(True),
    )
    if probe.returncode != 0:
        return None, (
            f"Flower comparison skipped: `import flwr, ray` fails under {python}. Install "
            "Flower into a separate venv (python -m venv /tmp/flwr-venv && "
            "/tmp/flwr-venv/bin/pip install 'flwr[simulation]' numpy) and pass "
            "--flower --flower-python /tmp/flwr-venv/bin/python"
        )
    return python, probe.stdout.strip()


# ---------------------------------------------------------------------------------------------
# the table


def _verdict(ok: bool) -> str:
    return "pass" if ok else "FAIL"


def _s(x: float) -> str:
    return f"{x:.3g}" if x < 1 else f"{x:.2f}"


def print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def report_rounds(names: list[str], quick: bool) -> tuple[bool, dict[str, float]]:
    rows = [
        ("case", "sites × values × rounds", "reps", "floor s/round", "work s/round",
         "medfed s/round", "medfed/floor", "target", "result", "medfed/work"),
    ]  # fmt: skip
    ok, floors = True, {}
    for name in names:
        case = CASES[name]
        reps = min(case.reps, 1 if name == "b" else 3) if quick else case.reps
        t = time_case(case, reps)
        floors[name] = t.floor
        passed = t.ratio <= TARGET_RATIO
        ok &= passed or not case.has_target
        target, verdict = (
            (f"≤ {TARGET_RATIO}×", _verdict(passed)) if case.has_target else ("—", "info")
        )
        rows.append((
            name, case.label, str(reps), _s(t.floor), _s(t.work), _s(t.medfed),
            f"{t.ratio:.2f}×", target, verdict, f"{t.medfed / t.work:.2f}×",
        ))  # fmt: skip
        if name == "a":
            pool = time_process_pool(case, 1 if quick else 3)
            rows.append((
                "a/pool", f"{case.label}, 2 workers", str(pool.reps), _s(t.floor), "",
                _s(pool.per_round), f"{pool.per_round / t.floor:.2f}×", "—", "info",
                f"round 1 incl. spawn {_s(pool.first_round)} s",
            ))  # fmt: skip
    print_table(rows)
    print(
        "\nfloor: plain numpy, per site new = {k: v + c}; acc += n * new; then acc / total.\n"
        "work: the floor plus the passes medfed's design adds (delta = new − old in place; a\n"
        "finite check of each update), still without a framework: medfed/work is the framework's\n"
        "own cost. medfed: RoundDriver(FedAvg, InProcessBackend).run(params, rounds=R) / R —\n"
        "sample, train, validate, aggregate; evaluate_every=0, so only the last round evaluates\n"
        "(a constant Metrics, free). No run store / checkpointing in the timed path. The sides\n"
        "take turns; medians of the repetitions. a/pool: ProcessPoolBackend (2 workers), workers\n"
        "spawned and sites built in an untimed first round; no target.\n"
    )
    return ok, floors


def report_startup(quick: bool) -> bool:
    st = measure_startup(1 if quick else 3)
    passed = st.seconds <= TARGET_STARTUP_S
    print(
        f"start-up, process launch → end of round 1 (case a, fresh process, median of {st.reps}): "
        f"medfed {st.seconds:.2f} s (interpreter + imports {st.imports:.2f} s); bare numpy "
        f"script {st.floor:.2f} s; target ≤ {TARGET_STARTUP_S} s: {_verdict(passed)}"
    )
    return passed


def report_memory() -> bool:
    mem = measure_memory(CASES["b"])
    passed = mem.ratio <= TARGET_MEMORY_RATIO
    print(
        f"peak memory, case b (peak RSS = VmHWM, each side in its own fresh process): floor "
        f"{mem.floor_mb:.0f} MB, medfed {mem.medfed_mb:.0f} MB, ratio {mem.ratio:.2f}× (RSS after "
        f"imports: floor {mem.floor_base_mb:.0f} MB, medfed {mem.medfed_base_mb:.0f} MB); "
        f"target ≤ {TARGET_MEMORY_RATIO}×: {_verdict(passed)}"
    )
    return passed


def report_flower(names: list[str], floors: dict[str, float], requested: str | None) -> None:
    python, info = flower_python(requested)
    if python is None:
        print(info)
        return
    rows = [
        ("case", "floor s/round", "Flower s/round", "ratio", "rounds 2+ s/round", "ratio",
         "start → end of round 1 s", "peak MB (tree PSS)", "driver peak RSS MB"),
    ]  # fmt: skip
    for name in names:
        case = CASES[name]
        fl = measure_flower(python, case)
        expected = floor_run(initial_params(case), case.sites, case.rounds)
        if not np.isclose(fl.checksum, sum(np.sum(a, dtype=np.float64) for a in expected.values()),
                          rtol=1e-4):  # fmt: skip
            print(f"warning: Flower's case {name} result differs from the floor's")
        floor = floors[name]
        rows.append((
            name, _s(floor), _s(fl.per_round), f"{fl.per_round / floor:.0f}×", _s(fl.steady),
            f"{fl.steady / floor:.0f}×", f"{fl.startup:.1f}", f"{fl.tree_peak_mb:.0f}",
            f"{fl.driver_peak_mb:.0f}",
        ))  # fmt: skip
    print(
        f"Flower {info}: run_simulation, NumPyClient returning params + c, FedAvg, no evaluation,\n"
        "Ray backend with num_cpus=1 per client; one run per case (Flower s/round = all rounds,\n"
        "round 1 starts the Ray actors); peak MB = summed PSS of the whole process tree, sampled\n"
        "every 0.1 s:"
    )
    print_table(rows)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="few repetitions (CI smoke)")
    parser.add_argument("--cases", default="a,b,c,d", help="comma-separated subset of a,b,c,d")
    parser.add_argument("--flower", action="store_true", help="add Flower's simulation")
    parser.add_argument("--flower-python", help="an interpreter with flwr[simulation]")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    parser.add_argument("--child", help=argparse.SUPPRESS)
    parser.add_argument("--side", default="medfed", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    names = [c.strip() for c in args.cases.split(",") if c.strip()]
    unknown = [n for n in names if n not in CASES]
    if unknown or not names:
        parser.error(f"unknown case(s) {unknown}; choose from {', '.join(CASES)}")
    if args.child:
        child_main(args.child, args.side, "a" if args.child == "startup" else names[0])
        return 0

    print(
        f"medfed overhead benchmark ({'quick' if args.quick else 'full'} run): python "
        f"{platform.python_version()}, numpy {np.__version__}, {os.cpu_count()} CPUs, "
        f"load average {os.getloadavg()[0]:.2f} at start\n"
    )
    ok, floors = report_rounds(names, args.quick)
    if "a" in names:
        ok &= report_startup(args.quick)
    if "b" in names:
        ok &= report_memory()
    if args.flower:
        print()
        report_flower(names, floors, args.flower_python)
    return 1 if args.strict and not ok else 0


if __name__ == "__main__":
    sys.exit(main())
