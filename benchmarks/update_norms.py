"""How far an honest site's update stands out from its round: the measurement behind
``bounds.norm_factor`` and ``bounds.examples_factor`` (medfed.orchestration.validate).

The coordinator scales an update down when its L2 norm exceeds ``norm_factor`` times the
round's lower-median update norm. The default must leave honest sites alone on every kind of
consortium, including sites that differ tenfold in size (and so in local steps per epoch) and
several local epochs. Each row here is a real ``medfed.simulate`` run with FedAvg on a bundled
data set, every site honest; for every round the script takes the largest update norm over the
round's lower median, and reports the largest ratio over rounds and seeds, and the largest
claimed number of examples over the round's lower-median claim. The defaults are then checked
against those figures: ``clipped`` counts the honest updates the default would have clipped
(it must be 0).

    python benchmarks/update_norms.py            # about two minutes on 2 cores
    python benchmarks/update_norms.py --quick    # one seed, fewer rounds (CI smoke)
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import dataclass
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from medfed.config import DataConfig, EvaluationConfig, RunConfig, TrainSettings, UpdateBounds
from medfed.orchestration.driver import RoundResult
from medfed.orchestration.simulation import simulate
from medfed.orchestration.validate import (
    DEFAULT_EXAMPLES_FACTOR,
    DEFAULT_NORM_FACTOR,
)


@dataclass(frozen=True)
class Scenario:
    label: str
    data: DataConfig
    epochs: int
    batch_size: int = 32


SCENARIOS = [
    Scenario("breast-cancer, 4 sites", DataConfig("breast-cancer", sites=4), 1),
    Scenario("breast-cancer, 8 sites, 5 epochs", DataConfig("breast-cancer", sites=8), 5),
    Scenario("lung, 8 institutions", DataConfig("lung"), 1),
    Scenario(
        "synthetic-ehr, 10 sites, size skew 1.5",
        DataConfig("synthetic-ehr", sites=10, options={"size_skew": 1.5, "alpha": 0.5}),
        1,
    ),
    Scenario(
        "synthetic-ehr, 10 sites, size skew 2.0",
        DataConfig("synthetic-ehr", sites=10, options={"size_skew": 2.0, "alpha": 0.5}),
        1,
    ),
    Scenario(
        "synthetic-ehr, 5 sites, 5 epochs, size skew 1.0",
        DataConfig("synthetic-ehr", sites=5, options={"size_skew": 1.0}),
        5,
    ),
    Scenario(
        "synthetic-imaging, 4 sites",
        DataConfig("synthetic-imaging", sites=4, options={"num_images": 800}),
        1,
    ),
]


def _lower_median(values: list[float]) -> float:
    positive = sorted(v for v in values if v > 0)
    return positive[(len(positive) - 1) // 2]


def measure(scenario: Scenario, *, seed: int, rounds: int) -> tuple[float, float, int]:
    norm_ratios: list[float] = []
    example_ratios: list[float] = []
    clipped = 0

    class Watch:
        def on_round_end(self, result: RoundResult) -> None:
            nonlocal clipped
            norms = list(result.update_norms.values())
            claims = [float(m.num_examples) for m in result.train_metrics.values()]
            norm_ratios.append(max(norms) / _lower_median(norms))
            example_ratios.append(max(claims) / _lower_median(claims))
            clipped += len(result.bounded)

    config = RunConfig(
        rounds=rounds,
        seed=seed,
        data=scenario.data,
        train=TrainSettings(local_epochs=scenario.epochs, batch_size=scenario.batch_size),
        evaluation=EvaluationConfig(every=0),
        bounds=UpdateBounds(),  # a federation's defaults (a simulation has none unless asked)
    )
    simulate(config, observers=[Watch()])
    return max(norm_ratios), max(example_ratios), clipped


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="one seed, 3 rounds")
    args = parser.parse_args()
    seeds = [0] if args.quick else [0, 1, 2]
    rounds = 3 if args.quick else 10
    print(
        f"defaults: norm_factor {DEFAULT_NORM_FACTOR:g}, examples_factor "
        f"{DEFAULT_EXAMPLES_FACTOR:g}; {len(seeds)} seeds x {rounds} rounds per scenario\n"
    )
    print(
        "| scenario | max norm / round's lower-median norm | max claim / lower-median claim "
        "| honest updates clipped by the defaults | seconds |"
    )
    print("|---|---|---|---|---|")
    worst = 0.0
    for scenario in SCENARIOS:
        start = time.perf_counter()
        results = [measure(scenario, seed=s, rounds=rounds) for s in seeds]
        norm = max(r[0] for r in results)
        claim = max(r[1] for r in results)
        clipped = sum(r[2] for r in results)
        worst = max(worst, norm)
        print(
            f"| {scenario.label} | {norm:.2f} | {claim:.2f} | {clipped} | "
            f"{time.perf_counter() - start:.1f} |"
        )
    print(
        f"\nlargest honest ratio {worst:.2f}; default norm_factor {DEFAULT_NORM_FACTOR:g} "
        f"leaves a margin of {DEFAULT_NORM_FACTOR / worst:.1f}x"
    )


if __name__ == "__main__":
    main()
