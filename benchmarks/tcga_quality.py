"""Quality on Fed-TCGA-BRCA: FedAvg vs pooled vs each local-only model, over 5 seeds.

The data is FLamby's Fed-TCGA-BRCA split (6 geographic regions, 866 training and 222 test
patients, 39 clinical features, overall survival); it is not shipped with medfed, so the
script reads ``--data-dir`` (default ``<repo>/../shared/data/tcga_brca``) and, when that
folder is absent, prints one line saying so and exits 0.

Each seed is one ``medfed.simulate`` run with ``evaluation.baselines = true``: the default
survival task (a linear Cox model, 39 → 1, no bias), FedAvg over the 6 regions, and with the
same trainer, rounds and local epochs a local-only model per region and a pooled model
(``run_baselines``). Every model is evaluated with Harrell's C-index on each region's own
test set; the headline figure is the mean over the 6 regions (FLamby's metric).

FLamby evaluates each local model on *all six* test sets and averages; medfed's comparison
evaluates it on its own region only. So that the local-only figures can be set next to
FLamby's, the script also retrains each local-only model (identically: same seed, same
rounds, checked) and evaluates it on every region (the "FLamby-style" columns).

    python benchmarks/tcga_quality.py             # 5 seeds (0-4), about 30 s on 2 cores
    python benchmarks/tcga_quality.py --tune      # the tuning grid, on seed 99 only (~70 s)
    python benchmarks/tcga_quality.py --quick     # CI smoke: 1 seed, 3 rounds

Protocol (the defaults; see ``--tune`` for how they were chosen): batch size 8 as FLamby;
Adam, learning rate 0.01; 10 rounds × 3 local epochs, so every arm sees 30 epochs of its
data (FLamby's pooled budget): pooled = 30 epochs over all 866 patients, each local-only
model = 30 epochs over its region, federated = 30 epochs at each region between the
averagings (the same total number of examples processed as pooled).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import textwrap
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

_REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(_REPO))

import medfed  # noqa: E402
from medfed.config import RunConfig, config_from_dict  # noqa: E402

DEFAULT_DATA_DIR = _REPO.parent / "shared" / "data" / "tcga_brca"
SEEDS = (0, 1, 2, 3, 4)
TUNE_SEED = 99  # not one of the reported seeds

# FLamby (Ogier du Terrail et al., NeurIPS 2022), mean over 5 seeds of the per-region
# C-index averaged over the 6 test sets, as given in ../shared/data/README.md.
FLAMBY_POOLED = 0.676
FLAMBY_FEDAVG = 0.732
FLAMBY_LOCAL_RANGE = (0.498, 0.750)


@dataclass(frozen=True)
class Setting:
    """One training configuration, the same for the federated, local-only and pooled arms."""

    rounds: int = 10
    local_epochs: int = 3
    optimizer: str = "adam"
    learning_rate: float = 0.01
    batch_size: int = 8

    @property
    def label(self) -> str:
        return (
            f"{self.optimizer} lr={self.learning_rate:g}, {self.rounds} rounds × "
            f"{self.local_epochs} local epoch{'s' if self.local_epochs > 1 else ''}, "
            f"batch {self.batch_size}"
        )


# The tuning grid (--tune): every arm gets rounds × local_epochs = 30 epochs of its data.
TUNE_GRID = tuple(
    Setting(rounds=r, local_epochs=e, optimizer=opt, learning_rate=lr)
    for opt in ("sgd", "adam")
    for lr in (0.01, 0.03, 0.1)
    for r, e in ((30, 1), (15, 2), (10, 3))
)


def run_config(data_dir: Path, setting: Setting, seed: int) -> RunConfig:
    return config_from_dict(
        {
            "seed": seed,
            "rounds": setting.rounds,
            "data": {"name": "tcga-brca", "dir": str(data_dir)},
            "train": {
                "local_epochs": setting.local_epochs,
                "batch_size": setting.batch_size,
                "learning_rate": setting.learning_rate,
                "optimizer": setting.optimizer,
            },
            "strategy": {"name": "fedavg", "fraction": 1.0, "min_sites": 6},
            # every = 0: the federated model is evaluated once, after the last round
            "evaluation": {"baselines": True, "every": 0},
        }
    )


# ---------------------------------------------------------------------------------------------
# one seed


@dataclass
class SeedResult:
    seed: int
    sites: list[str]
    federated: dict[str, float | None]
    local: dict[str, float | None]  # region k's own model on region k's test set
    pooled: dict[str, float | None]
    cross: dict[str, dict[str, float | None]] | None  # local model k → {test region j: C}
    seconds: float


def _c(metrics: Any) -> float | None:
    return None if metrics is None else metrics.c_index


def run_seed(data_dir: Path, setting: Setting, seed: int, *, cross: bool) -> SeedResult:
    config = run_config(data_dir, setting, seed)
    start = time.perf_counter()
    result = medfed.simulate(config)
    seconds = time.perf_counter() - start
    comparison = result.comparison
    out = SeedResult(
        seed=seed,
        sites=[c.site for c in comparison],
        federated={c.site: _c(c.federated) for c in comparison},
        local={c.site: _c(c.local) for c in comparison},
        pooled={c.site: _c(c.pooled) for c in comparison},
        cross=None,
        seconds=seconds,
    )
    if cross:
        out.cross = local_models_everywhere(config)
        for site in out.sites:  # the retrained model must be run_baselines' model
            own = out.cross[site][site]
            if own != out.local[site]:
                print(
                    f"warning: seed {seed}, {site}: the retrained local-only model scores "
                    f"{own} on its own test set, run_baselines' {out.local[site]}",
                    file=sys.stderr,
                )
    return out


def local_models_everywhere(config: RunConfig) -> dict[str, dict[str, float | None]]:
    """Each region's local-only model evaluated on every region's test set (FLamby's view).

    The public result holds each local model's score on its own region only, so this trains
    the local models again exactly as ``run_baselines`` does (FedAvg over one site, the same
    seed, initial params and rounds) and evaluates each at all sites.
    """
    from medfed.orchestration.driver import RoundDriver
    from medfed.orchestration.simulation import (
        Simulation,
        SubsetBackend,
        evaluate_everywhere,
        make_backend,
    )

    sim = Simulation(config)
    backend = make_backend(config, sim.factory)
    out: dict[str, dict[str, float | None]] = {}
    try:
        for name in backend.site_names:
            driver = RoundDriver(
                strategy=medfed.FedAvg(min_sites=1),
                backend=SubsetBackend(backend, [name]),
                seed=config.seed,
                evaluate_every=0,
            )
            params = driver.run(sim.initial, rounds=config.rounds)
            scores = evaluate_everywhere(backend, params, seed=config.seed)
            out[name] = {
                site: m.c_index if isinstance(m, medfed.Metrics) else None
                for site, m in scores.items()
            }
    finally:
        backend.close()
    return out


# ---------------------------------------------------------------------------------------------
# summaries


def mean_defined(values: Sequence[float | None]) -> float | None:
    """Mean over the values that are defined (a C-index is None without a comparable pair)."""
    defined = [v for v in values if v is not None]
    return statistics.fmean(defined) if defined else None


def region_mean(per_site: dict[str, float | None]) -> float | None:
    return mean_defined(list(per_site.values()))


def flamby_local(r: SeedResult, site: str) -> float | None:
    """Local model of ``site``, mean C-index over all six test sets (FLamby's bar)."""
    assert r.cross is not None
    return mean_defined(list(r.cross[site].values()))


def _f(x: float | None) -> str:
    return "n/a" if x is None else f"{x:.3f}"


def _diff(a: float | None, b: float | None) -> str:
    if a is None or b is None:
        return "n/a"
    d = round(a - b, 3)
    return f"{d:+.3f}" if d else "0.000"


def comparable_pairs(y: Any) -> int:
    """Pairs Harrell's C-index can compare (the shorter time had the event), as medfed counts."""
    t, e = y[:, 0], y[:, 1] > 0
    return sum(int(((t[i] < t) | ((t[i] == t) & ~e)).sum()) for i in range(len(t)) if e[i])


def spread(values: Sequence[float | None]) -> tuple[str, str, str]:
    """(median, mean, "min–max") over seeds, ignoring undefined values (counted in the text)."""
    defined = [v for v in values if v is not None]
    if not defined:
        return "n/a", "n/a", "n/a"
    missing = len(values) - len(defined)
    note = f" ({missing} undefined)" if missing else ""
    return (
        f"{statistics.median(defined):.3f}",
        f"{statistics.fmean(defined):.3f}",
        f"{min(defined):.3f}–{max(defined):.3f}{note}",
    )


def med_range(values: Sequence[float | None]) -> str:
    median, _, span = spread(values)
    return median if median == "n/a" or len(values) == 1 else f"{median} [{span}]"


def print_table(rows: Sequence[Sequence[str]]) -> None:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    for n, row in enumerate(rows):
        print("  ".join(cell.ljust(w) for cell, w in zip(row, widths, strict=True)).rstrip())
        if n == 0:
            print("  ".join("-" * w for w in widths))


def report(results: list[SeedResult], dataset: Any) -> None:
    seeds = ", ".join(str(r.seed) for r in results)
    fed = [region_mean(r.federated) for r in results]
    loc = [region_mean(r.local) for r in results]
    poo = [region_mean(r.pooled) for r in results]
    cross = results[0].cross is not None
    sites = results[0].sites

    print(f"Mean over the 6 regions of the per-region test C-index; seeds {seeds}.\n")
    rows: list[tuple[str, ...]] = [
        ("arm", "median", "mean", "min–max over seeds", "FLamby published (mean of 5 seeds)")
    ]
    rows.append(("FedAvg (federated)", *spread(fed), f"{FLAMBY_FEDAVG} (FedAvg)"))
    rows.append(("pooled", *spread(poo), f"{FLAMBY_POOLED}"))
    rows.append(("local-only, own region (mean of 6)", *spread(loc), "— (see below)"))
    if cross:
        flamby_mean = [mean_defined([flamby_local(r, s) for s in sites]) for r in results]
        lo, hi = FLAMBY_LOCAL_RANGE
        rows.append(
            (
                "local-only, FLamby-style (mean of 6)",
                *spread(flamby_mean),
                f"{lo:.3f}–{hi:.3f} by region",
            )
        )
    print_table(rows)

    print(
        "\nPer region: median [min–max] over seeds of the test C-index; test pairs = the pairs\n"
        "of test patients the C-index can compare (it moves in steps of about 1/pairs)."
    )
    header = ["region", "train/test", "deaths train/test", "test pairs", "federated", "local-only",
              "pooled"]  # fmt: skip
    if cross:
        header.append("local model on all 6 test sets")
    rows = [tuple(header)]
    for site in dataset.sites:
        name = site.name
        row = [
            name,
            f"{site.num_train}/{site.num_test}",
            f"{int(site.y_train[:, 1].sum())}/{int(site.y_test[:, 1].sum())}",
            str(comparable_pairs(site.y_test)),
            med_range([r.federated[name] for r in results]),
            med_range([r.local[name] for r in results]),
            med_range([r.pooled[name] for r in results]),
        ]
        if cross:
            row.append(med_range([flamby_local(r, name) for r in results]))
        rows.append(tuple(row))
    print_table(rows)
    if cross:
        medians = [
            statistics.median(v)
            for s in sites
            if (v := [x for r in results if (x := flamby_local(r, s)) is not None])
        ]
        lo, hi = FLAMBY_LOCAL_RANGE
        print(
            f"Local models averaged over all 6 test sets (FLamby's bars): {min(medians):.3f}–"
            f"{max(medians):.3f} by region (median over seeds); FLamby {lo:.3f}–{hi:.3f}."
        )

    print("\nPer seed (mean over regions): federated − local-only and federated − pooled.")
    rows = [
        ("seed", "federated", "local-only", "pooled", "fed − local", "fed − pooled", "simulate s")
    ]
    for r, f, lo_, p in zip(results, fed, loc, poo, strict=True):
        rows.append(
            (
                str(r.seed), _f(f), _f(lo_), _f(p),
                _diff(f, lo_), _diff(f, p),
                f"{r.seconds:.1f}",
            )
        )  # fmt: skip
    print_table(rows)
    if len(results) > 1:
        wins_local = sum(
            f is not None and x is not None and f > x for f, x in zip(fed, loc, strict=True)
        )
        wins_pooled = sum(
            f is not None and x is not None and f > x for f, x in zip(fed, poo, strict=True)
        )
        print(
            f"FedAvg beats the average local-only model in {wins_local}/{len(results)} seeds "
            f"and the pooled model in {wins_pooled}/{len(results)}."
        )
    undefined = [
        f"seed {r.seed} {arm} {s}"
        for r in results
        for arm, d in (("federated", r.federated), ("local", r.local), ("pooled", r.pooled))
        for s, v in d.items()
        if v is None
    ]
    if undefined:
        print(
            "Undefined C-index (no comparable pair, left out of the means): " + "; ".join(undefined)
        )


# ---------------------------------------------------------------------------------------------
# tuning


def tune(data_dir: Path, seed: int) -> None:
    print(
        f"Tuning grid on seed {seed} (not a reported seed); the same setting for all three arms.\n"
        "Criterion, fixed before looking: the mean of the three arms' region-averaged C-index.\n"
    )
    rows: list[tuple[str, ...]] = [
        ("optimizer", "lr", "rounds × epochs", "federated", "local-only", "pooled", "mean")
    ]
    best: tuple[float, Setting] | None = None
    for setting in TUNE_GRID:
        try:
            r = run_seed(data_dir, setting, seed, cross=False)
        except medfed.MedfedError as exc:
            rows.append(
                (setting.optimizer, f"{setting.learning_rate:g}",
                 f"{setting.rounds} × {setting.local_epochs}", "failed", str(exc)[:60], "", "")
            )  # fmt: skip
            continue
        arms = [region_mean(r.federated), region_mean(r.local), region_mean(r.pooled)]
        score = mean_defined(arms)
        if score is not None and (best is None or score > best[0]):
            best = (score, setting)
        rows.append(
            (setting.optimizer, f"{setting.learning_rate:g}",
             f"{setting.rounds} × {setting.local_epochs}", *(_f(a) for a in arms), _f(score))
        )  # fmt: skip
    print_table(rows)
    if best is not None:
        print(f"\nBest by the criterion: {best[1].label} (mean {best[0]:.3f}).")


# ---------------------------------------------------------------------------------------------


def main(argv: list[str] | None = None) -> int:
    default = Setting()
    parser = argparse.ArgumentParser(description=(__doc__ or "").split("\n")[0])
    parser.add_argument("--data-dir", type=Path, default=DEFAULT_DATA_DIR)
    parser.add_argument("--seeds", default=",".join(map(str, SEEDS)), help="comma-separated")
    parser.add_argument("--rounds", type=int, default=default.rounds)
    parser.add_argument("--local-epochs", type=int, default=default.local_epochs)
    parser.add_argument("--optimizer", choices=("sgd", "adam"), default=default.optimizer)
    parser.add_argument("--lr", type=float, default=default.learning_rate)
    parser.add_argument("--batch-size", type=int, default=default.batch_size)
    parser.add_argument("--quick", action="store_true", help="CI smoke: 1 seed, 3 rounds × 1")
    parser.add_argument("--tune", action="store_true", help="run the tuning grid instead")
    parser.add_argument("--tune-seed", type=int, default=TUNE_SEED)
    parser.add_argument(
        "--no-cross", action="store_true", help="skip the FLamby-style local evaluation"
    )
    args = parser.parse_args(argv)

    data_dir: Path = args.data_dir.expanduser()
    if not (data_dir / "brca.csv").is_file() and (data_dir / "tcga_brca" / "brca.csv").is_file():
        data_dir = data_dir / "tcga_brca"  # the shared data folder that holds tcga_brca/
    if not (data_dir / "brca.csv").is_file():
        print(
            f"tcga_quality: skipped, this benchmark needs the Fed-TCGA-BRCA folder (brca.csv, "
            f"train_test_split.csv) at {data_dir}; pass --data-dir"
        )
        return 0
    try:
        dataset = medfed.load_dataset("tcga-brca", data_dir=data_dir)
    except medfed.DataError as exc:
        print(f"tcga_quality: {exc}", file=sys.stderr)
        return 2

    mode = "tuning" if args.tune else "quick" if args.quick else "full"
    print(
        f"medfed Fed-TCGA-BRCA quality benchmark ({mode} "
        f"run): python {platform.python_version()}, {os.cpu_count()} CPUs, data {data_dir}\n"
    )
    start = time.perf_counter()
    if args.tune:
        tune(data_dir, args.tune_seed)
        print(f"\ntotal {time.perf_counter() - start:.0f} s")
        return 0

    setting = Setting(
        rounds=3 if args.quick else args.rounds,
        local_epochs=1 if args.quick else args.local_epochs,
        optimizer=args.optimizer,
        learning_rate=args.lr,
        batch_size=args.batch_size,
    )
    seeds = [int(s) for s in args.seeds.split(",") if s.strip()]
    if args.quick:
        seeds = seeds[:1]
    protocol = (
        f"Protocol: the default survival task (linear Cox, 39 → 1, no bias) on FLamby's "
        f"features; {setting.label}; the same trainer and budget for every arm (medfed's "
        f"run_baselines): federated = FedAvg over the 6 regions, all of them every round; "
        f"local-only = each region alone for the same rounds; pooled = one site holding all "
        f"866 training patients for the same rounds. Every arm sees "
        f"{setting.rounds * setting.local_epochs} epochs of its data. Metric: Harrell's "
        f"C-index on each region's own test set."
    )
    print(textwrap.fill(protocol, width=100) + "\n", flush=True)
    results: list[SeedResult] = []
    for seed in seeds:
        try:
            results.append(run_seed(data_dir, setting, seed, cross=not args.no_cross))
        except medfed.MedfedError as exc:
            print(f"tcga_quality: seed {seed} failed: {exc}", file=sys.stderr)
            return 2
        print(f"seed {seed}: {results[-1].seconds:.1f} s", file=sys.stderr, flush=True)
    report(results, dataset)
    print(f"\ntotal {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
