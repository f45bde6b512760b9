"""`python -m bench --quick`: the benchmark harness works end to end on tiny sizes.

Every competitor runs and consumes exactly the messages published to it, and the results file,
BENCHMARKS.md and the charts are written. No speed is asserted: the machine is shared.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.rig.tools import PROJECT_ROOT


def test_the_machine_has_the_two_cores_the_benchmarks_pin_to() -> None:
    assert len(os.sched_getaffinity(0)) >= 2, "the benchmarks pin nsqd and the consumer to different cores"


def assert_exact(runs: list[dict[str, Any]], published: int, what: str) -> None:
    assert runs, f"{what}: no run"
    for run in runs:
        assert run["count"] == published, f"{what}: consumed {run['count']} of {published}"
        assert run["exact"], f"{what}: not every message finished exactly once: {run}"


@pytest.fixture(scope="module")
def quick_run(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, Any]]:
    root = tmp_path_factory.mktemp("bench")
    out, work = root / "out", root / "work"
    result = subprocess.run(
        [sys.executable, "-m", "bench", "--quick", "--out", str(out), "--work", str(work)],
        cwd=PROJECT_ROOT,
        capture_output=True,
        text=True,
        timeout=540,
        check=False,
    )
    logs = "".join(
        f"\n--- {log.name}\n{log.read_text(errors='replace')[-3000:]}"
        for log in sorted((work / "logs").glob("*.log"))
    )
    assert result.returncode == 0, f"python -m bench --quick failed:\n{result.stderr[-6000:]}{logs}"
    results: dict[str, Any] = json.loads((out / "docs" / "bench" / "results.json").read_text())
    return out, results


def test_every_throughput_competitor_consumes_exactly_what_was_published(
    quick_run: tuple[Path, dict[str, Any]],
) -> None:
    _, results = quick_run
    ran = set()
    for setting in results["throughput"]["settings"]:
        for name, data in setting["competitors"].items():
            if "skipped" in data:
                assert name == "bench_reader", f"{name} skipped in {setting['key']}: {data['skipped']}"
                continue
            ran.add(name)
            assert_exact(data["runs"], data["count"], f"{setting['key']}/{name}")
            assert data["rate"]["median"] > 0
    assert ran == {"worker", "gnsq", "pynsq", "bench_reader"}
    profiles = results["throughput"]["profiles"]
    assert [p["key"] for p in profiles] == ["mif2500", "json"]
    for profile in profiles:
        assert "error" not in profile, profile
        assert profile["run"]["exact"]


def test_every_latency_competitor_finishes_every_task(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run
    latency = results["latency"]
    assert set(latency["competitors"]) == {"worker", "pynsq", "dramatiq", "worker-mif-all"}
    for name, data in latency["competitors"].items():
        assert_exact(data["runs"], latency["messages"], f"latency/{name}")
        # Nothing can finish before its longest task has slept.
        assert data["seconds"]["min"] >= latency["extra_floor"]
    assert latency["floor"] <= latency["fifo_bound"]


def test_both_process_layouts_drain_both_nsqd(quick_run: tuple[Path, dict[str, Any]]) -> None:
    _, results = quick_run
    for entry in results["scaling"]["handlers"]:
        for side, data in entry["sides"].items():
            assert_exact(data["runs"], 2 * entry["messages_per_nsqd"], f"scaling/{entry['key']}/{side}")
        assert entry["speedup"]["median"] > 0


def test_the_report_and_charts_are_written(quick_run: tuple[Path, dict[str, Any]]) -> None:
    out, results = quick_run
    report = (out / "BENCHMARKS.md").read_text()
    for heading in ("## Goals", "## The machine", "## How to reproduce", "## 1. Throughput on one core",
                    "## 2. Latency-bound handlers", "## 3. One process per nsqd"):  # fmt: skip
        assert heading in report
    assert "Quick mode" in report
    assert results["meta"]["command"] in report
    for chart in ("throughput.png", "latency.png", "scaling.png"):
        png = out / "docs" / "bench" / chart
        assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n", chart
        assert f"docs/bench/{chart}" in report


def test_the_autoscaling_simulation_runs_every_policy_through_both_scenarios(
    quick_run: tuple[Path, dict[str, Any]],
) -> None:
    out, results = quick_run
    section = results["autoscale"]
    assert section["kind"] == "simulation"
    assert set(section["scenarios"]) == {"one_hot", "moving"}
    for key, entry in section["scenarios"].items():
        assert set(entry["policies"]) == {
            "per_nsqd",
            "keda",
            "fixed",
            "per_nsqd_min0",
            "keda_min0",
            "keda_each",
        }
        for name, run in entry["policies"].items():
            assert run["pod_seconds"] > 0, f"{key}/{name}"
            assert run["drains"], f"{key}/{name}: no burst"
            assert all(d is not None and d > 0 for d in run["drains"]), f"{key}/{name}: {run['drains']}"
    report = (out / "BENCHMARKS.md").read_text()
    assert "## 7. Autoscaling: per-nsqd vs KEDA-style vs fixed" in report
    assert "docs/bench/autoscale.png" in report
    assert (out / "docs" / "bench" / "autoscale.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_large_messages_are_drained_whole_by_this_tree_and_the_previous_worker(
    quick_run: tuple[Path, dict[str, Any]],
) -> None:
    out, results = quick_run
    section = results["frames"]
    assert [entry["size"] for entry in section["sizes"]] == [64 * 1024, 1024 * 1024, 5 * 1024 * 1024]
    for entry in section["sizes"]:
        assert set(entry["competitors"]) == {"worker", "previous"}
        for name, data in entry["competitors"].items():
            assert_exact(data["runs"], entry["count"], f"frames/{entry['size']}/{name}")
    report = (out / "BENCHMARKS.md").read_text()
    assert "## 8. Large messages: linear reassembly" in report
    assert "**Linear or not.** From 1 MiB to 5 MiB" in report
