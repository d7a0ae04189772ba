"""Secure aggregation (SecAgg+) cost: site masking, coordinator unmasking, bytes on the wire.

Each case runs whole rounds with :func:`medfed.secagg.run_in_memory` (real X25519, AES-GCM,
AES-CTR, Ed25519 and Shamir sharing; every message through JSON, vectors as bytes) among n
sites holding float32 vectors of 1M values, with 0% or 30% of the sites dropping out at the
masked-input stage (the costly case: their pairwise masks must be rebuilt from key shares).
Reported, as the median over runs:

    site mask s     one site's encoding + masking of its vector (median over sites)
    unmask s        the coordinator closing the unmask stage: rebuilding seeds and keys from
                    shares and removing every mask (summing arrives with the inputs: see sum s)
    sum s/site      the coordinator checking and adding one masked vector as it arrives
    sent/plain      bytes a site sends (masked vector + all protocol messages) over the bytes
                    of the plain FedAvg float32 update
    overhead KB     protocol messages only (keys, signatures, sealed shares), sent / received

Targets: site mask ≤ 0.2 s, unmask ≤ 2.5 s, sent/plain ≤ 1.1. The first run of each case
checks that the unmasked sum equals the sum of the encoded inputs bit for bit.

    python benchmarks/secagg.py            # 10 and 50 sites × 1M values, 0% and 30% dropout
    python benchmarks/secagg.py --quick    # smoke run: 10 sites × 100k values, one run

Exits 0 when it ran (a missed target shows FAIL; ``--strict`` exits 1 on a miss) and 2 when a
sum is wrong.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from medfed.secagg import SecAggConfig, Stage, run_in_memory

MASK_TARGET_S = 0.2
UNMASK_TARGET_S = 2.5
BYTES_TARGET = 1.1


def _inputs(sites: int, length: int) -> dict[str, tuple[np.ndarray, float]]:
    rng = np.random.default_rng(7)
    return {
        f"hospital-{i:03d}": (
            rng.uniform(-1, 1, length).astype(np.float32),
            float(rng.integers(50, 5000)),
        )
        for i in range(sites)
    }


def _expected(
    config: SecAggConfig, inputs: dict[str, tuple[np.ndarray, float]], survivors: tuple[str, ...]
) -> np.ndarray:
    codec = config.codec
    total = np.zeros(config.vector_length + 1, codec.dtype)
    for s in survivors:
        total += codec.encode(*inputs[s])
    return total.astype(np.uint64)


@dataclass(frozen=True)
class Row:
    sites: int
    dropout: float
    t: int
    k: int
    scale: int
    mask: float
    unmask: float
    add: float
    ratio: float
    sent_kb: float
    recv_kb: float
    correct: bool

    @property
    def ok(self) -> bool:
        return (
            self.mask <= MASK_TARGET_S
            and self.unmask <= UNMASK_TARGET_S
            and self.ratio <= BYTES_TARGET
        )


def run_case(sites: int, dropout: float, length: int, repeats: int) -> Row:
    config = SecAggConfig(num_sites=sites, vector_length=length)
    inputs = _inputs(sites, length)
    rng = np.random.default_rng(sites)
    dropped = set(rng.choice(sorted(inputs), size=round(dropout * sites), replace=False).tolist())
    mask, unmask, add, ratio, sent_kb, recv_kb = [], [], [], [], [], []
    correct = True
    for run in range(repeats):
        result = run_in_memory(
            config, inputs, drop={Stage.MASKED_INPUT: dropped}, job="bench", round=run
        )
        if run == 0:
            correct = np.array_equal(
                result.encoded_sum, _expected(config, inputs, result.survivors)
            )
        survivors = result.survivors
        mask.append(statistics.median(result.site_seconds[Stage.MASKED_INPUT].values()))
        unmask.append(result.server_seconds[Stage.UNMASK])
        add.append(result.receive_seconds[Stage.MASKED_INPUT] / len(survivors))
        plain = length * 4
        per_site = [result.bytes_sent[s] + result.vector_bytes_sent[s] for s in survivors]
        ratio.append(statistics.median(per_site) / plain)
        sent_kb.append(statistics.median(result.bytes_sent[s] for s in survivors) / 1e3)
        recv_kb.append(statistics.median(result.bytes_received[s] for s in survivors) / 1e3)
    assert config.scale_bits is not None
    return Row(
        sites=sites,
        dropout=dropout,
        t=config.shares_needed,
        k=config.degree,
        scale=config.scale_bits,
        mask=statistics.median(mask),
        unmask=statistics.median(unmask),
        add=statistics.median(add),
        ratio=statistics.median(ratio),
        sent_kb=statistics.median(sent_kb),
        recv_kb=statistics.median(recv_kb),
        correct=correct,
    )


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="10 sites × 100k values, one run")
    parser.add_argument("--sites", default="10,50", help="comma-separated site counts")
    parser.add_argument("--dropouts", default="0,0.3", help="comma-separated dropout fractions")
    parser.add_argument("--length", type=int, default=1_000_000, help="values per vector")
    parser.add_argument("--repeats", type=int, default=3, help="runs per case (median)")
    parser.add_argument("--strict", action="store_true", help="exit 1 when a target is missed")
    args = parser.parse_args(argv)
    sites = [10] if args.quick else [int(s) for s in args.sites.split(",")]
    dropouts = [float(d) for d in args.dropouts.split(",")]
    length = 100_000 if args.quick else args.length
    repeats = 1 if args.quick else args.repeats
    print(
        f"secure aggregation, {length:,} float32 values per site, median of {repeats} run(s); "
        f"python {platform.python_version()}, {os.cpu_count()} CPUs, {platform.machine()}"
    )
    header = (
        f"{'sites':>5} {'drop':>5} {'t':>3} {'k':>3} {'s':>3} {'site mask s':>11} "
        f"{'unmask s':>9} {'sum s/site':>10} {'sent/plain':>10} {'overhead KB':>14} "
        f"{'sum':>6} {'targets':>7}"
    )
    print(header)
    print("-" * len(header))
    missed, wrong = False, False
    start = time.perf_counter()
    for n in sites:
        for d in dropouts:
            r = run_case(n, d, length, repeats)
            missed |= not r.ok
            wrong |= not r.correct
            overhead = f"{r.sent_kb:.1f} / {r.recv_kb:.1f}"
            print(
                f"{n:>5} {d:>5.0%} {r.t:>3} {r.k:>3} {r.scale:>3} {r.mask:>11.3f} "
                f"{r.unmask:>9.3f} {r.add:>10.4f} {r.ratio:>10.4f} {overhead:>14} "
                f"{'exact' if r.correct else 'WRONG':>6} {'ok' if r.ok else 'FAIL':>7}",
                flush=True,
            )
    print(
        f"targets: site mask ≤ {MASK_TARGET_S} s, unmask ≤ {UNMASK_TARGET_S} s, sent/plain ≤ "
        f"{BYTES_TARGET}; 32-bit modulus, s = fractional bits of the fixed-point encoding; "
        f"{time.perf_counter() - start:.0f} s in all"
    )
    if wrong:
        return 2
    return 1 if missed and args.strict else 0


if __name__ == "__main__":
    sys.exit(main())
