"""What every benchmark shares: the run's configuration, the cores, summaries of repeated runs."""

from __future__ import annotations

import os
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.harness import BenchError, cpus

TIMES, DASH = "\u00d7", "\u2013"  # spelled out for ruff's confusable-character check
BENCHMARKS = (
    "throughput", "latency", "scaling", "pods", "operator", "repair", "autoscale", "autoscale_node", "frames",
)  # fmt: skip
# Needs the real node (root, containerd, a kubelet): not in the quick smoke run unless asked for.
NODE_BENCHMARKS = ("pods", "autoscale_node")
# Minutes even at quick sizes (a fresh control plane per phase): not in the quick run unless asked for.
SLOW_BENCHMARKS = ("operator", "repair")


@dataclass
class Config:
    """One `python -m bench` run. The defaults are the full benchmark; `quick()` is the smoke test."""

    work: Path
    out: Path
    only: tuple[str, ...] = BENCHMARKS
    repeats: int = 3
    # 1. throughput: at most this many messages per run, fewer where that would take more than
    #    `seconds` (measured by a short probe run first).
    messages: int = 1_000_000
    seconds: float = 6.0
    probe: bool = True
    profile: bool = True
    # 2. latency-bound handlers
    latency_messages: int = 10_000
    latency_scale: float = 1.0  # multiplies every sleep (the quick mode shrinks them)
    latency_seed: int = 7
    concurrency: int = 2500
    # 3. one process per nsqd: messages on each nsqd
    scaling_messages: int = 500_000
    # 8. large messages: bytes drained in each run, whatever the message size
    frames_bytes: int = 320 * 1024 * 1024
    # 5. the operator, previous design vs v2 (bench/operator.py)
    operator_previous: str = "d30979e"  # the previous design's commit, run from a git worktree
    operator_v2: Path | None = None  # an operator/src for the v2 side; None: the work tree
    operator_poll: int = 5  # every consumer's spec.lookupd.pollIntervalSeconds
    operator_cold: tuple[tuple[int, int], ...] = ((20, 100), (100, 100))  # (consumers, nsqd) per size
    operator_timeout: float = 900.0  # a cold start at the largest size; smaller ones get less
    operator_converge_timeout: float = 600.0  # every Deployment rolled out (pods Running on kwok)
    operator_window: float = 60.0  # the steady window after the first cold start
    operator_churn: tuple[int, int] = (20, 20)  # (consumers, nsqd) before the churn
    operator_churn_seconds: float = 60.0
    operator_churn_every: float = 1.5  # a new nsqd (and the oldest gone) this often
    operator_failover_size: tuple[int, int] = (5, 10)
    operator_failovers: int = 3
    operator_failover_timeout: float = 60.0
    quick: bool = False
    argv: list[str] = field(default_factory=list)

    @classmethod
    def quick_mode(cls, work: Path, out: Path, only: tuple[str, ...] = BENCHMARKS) -> Config:
        return cls(
            work=work,
            out=out,
            only=only,
            repeats=1,
            messages=3000,
            seconds=1.0,
            probe=False,
            latency_messages=200,
            latency_scale=0.05,
            scaling_messages=5000,
            frames_bytes=24 * 1024 * 1024,
            operator_poll=2,
            operator_cold=((2, 5), (4, 5)),
            operator_timeout=120.0,
            operator_converge_timeout=120.0,
            operator_window=6.0,
            operator_churn=(3, 3),
            operator_churn_seconds=6.0,
            operator_failover_size=(2, 2),
            operator_failovers=1,
            operator_failover_timeout=45.0,
            quick=True,
        )


@dataclass(frozen=True)
class Cores:
    """Where things run: nsqd (and redis, and this driver) on one core, the consumer on another."""

    broker: int
    consumer: int

    @classmethod
    def pick(cls) -> Cores:
        available = cpus()
        if len(available) < 2:
            raise BenchError(f"the benchmarks need two cores; this process may use only {available}")
        return cls(broker=available[0], consumer=available[-1])

    def pin_driver(self) -> None:
        os.sched_setaffinity(0, {self.broker})

    @staticmethod
    def unpin_driver() -> None:
        os.sched_setaffinity(0, set(range(os.cpu_count() or 1)))


def summary(values: Sequence[float]) -> dict[str, Any]:
    """Median and spread (min, max) of repeated measurements."""
    if not values:
        return {"median": None, "min": None, "max": None, "n": 0}
    return {
        "median": statistics.median(values),
        "min": min(values),
        "max": max(values),
        "n": len(values),
    }


def rotate(items: Sequence[str], by: int) -> list[str]:
    """Each round starts with a different competitor, so none is always first or last."""
    by %= len(items)
    return list(items[by:]) + list(items[:by])
