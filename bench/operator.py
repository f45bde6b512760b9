"""5. The operator: the previous design against v2, side by side in one run.

Both sides are the real `nsq-operator run --namespace NS --liveness URL` with the rig's admin
kubeconfig, against the rig's real control plane (etcd, kube-apiserver, kube-controller-manager,
kube-scheduler) and kwok's fake nodes, so the Deployments roll out into ReplicaSets and pods that go
Running without containers. The previous design runs from a git worktree of its commit (the main
venv's Python, its `operator/src` on PYTHONPATH); v2 from the work tree (`.venv/bin/nsq-operator`).
The nsqd exist only in a fake lookupd's answers (`bench/operator_rig.py`): nothing connects to them.

Every phase gets a control plane of its own, started fresh, so no side inherits the other's objects,
its garbage collection or its controller manager's backlog:
1. cold start (per size and side): the consumers are applied with no operator running; the operator
   is started and timed until the API server holds every Deployment (the arrival of the last one on
   a watch; a LIST confirms the count). At the smallest size the phase goes on: once every Deployment
   is rolled out, a steady window counts the lookupd's requests and the API server's own write
   counters (`apiserver_request_total`), and the operator's RSS is read.
2. churn (per side): a steady set of nsqd, then one new nsqd added to the lookupd's answer (and the
   oldest removed) every `operator_churn_every` seconds; per (new nsqd, consumer), the time from the
   moment the lookupd lists it to the arrival of its Deployment on the watch.
3. failover (v2 only): two operators with `--leader-election-namespace`; the Lease's holder is
   SIGKILLed and a new nsqd added at once; the time until its Deployments exist.
"""

from __future__ import annotations

import contextlib
import math
import re
import shlex
import shutil
import subprocess
import time
from collections.abc import Callable, Sequence
from functools import partial
from pathlib import Path
from typing import Any

from bench.common import TIMES, Config, rotate
from bench.harness import BenchError, cpu_seconds
from bench.operator_rig import (
    BenchCluster,
    DeploymentWatch,
    FakeLookupd,
    OperatorSide,
    RunningOperator,
    api_writes,
    apply_all,
    consumer,
    converged,
    count_deployments,
    create_namespace,
    leases,
    nsqd_address,
    nsqd_host,
    request_counts,
    wait,
)
from tests.rig.tools import PROJECT_ROOT

SIDES = ("previous", "v2")
LABELS = {"previous": "previous design", "v2": "v2"}
PREVIOUS_WORKTREE = Path("/tmp/nsqop-prev")
LEADER_FLAG = "--leader-election-namespace"
# Goals (v2).
COLD_GOAL_SECONDS = 60.0  # 10,000 Deployments from a cold start
RSS_GOAL_MIB = 100.0  # at 2,000 Deployments
FAILOVER_GOAL_SECONDS = 15.0

Log = Callable[[str], None]


# -- the two sides ---------------------------------------------------------------------------------


def _git(*args: str, cwd: Path = PROJECT_ROOT) -> str:
    result = subprocess.run(["git", *args], cwd=cwd, capture_output=True, text=True, timeout=120, check=False)
    if result.returncode != 0:
        raise BenchError(f"git {' '.join(args)} failed in {cwd}: {result.stderr.strip()}")
    return result.stdout.strip()


def previous_side(commit: str, log: Log) -> OperatorSide:
    """The previous design, from a worktree of `commit` at /tmp/nsqop-prev (made when missing)."""
    wanted = _git("rev-parse", "--verify", f"{commit}^{{commit}}")
    if not PREVIOUS_WORKTREE.exists():
        log(f"git worktree add {PREVIOUS_WORKTREE} {commit}")
        _git("worktree", "add", "--detach", str(PREVIOUS_WORKTREE), wanted)
    have = _git("rev-parse", "HEAD", cwd=PREVIOUS_WORKTREE)
    if have != wanted:
        raise BenchError(
            f"{PREVIOUS_WORKTREE} is at {have[:7]}, not {commit}: remove it "
            f"(git worktree remove {PREVIOUS_WORKTREE}) and run again"
        )
    return OperatorSide("previous", PREVIOUS_WORKTREE / "operator" / "src", wanted[:7])


def v2_side(source: Path | None) -> OperatorSide:
    """v2: the work tree (its entry point), or, to check the harness, any other operator/src."""
    if source is None:
        dirty = _git("status", "--porcelain", "--", "operator")
        commit = _git("rev-parse", "--short", "HEAD") + (" + uncommitted operator/ changes" if dirty else "")
        return OperatorSide("v2", None, f"work tree at {commit}")
    source = source.resolve()
    commit = _git("rev-parse", "--short", "HEAD", cwd=source)
    return OperatorSide("v2", source, commit)


def _describe(side: OperatorSide) -> dict[str, Any]:
    argv = [*side.command(), "run", "--namespace", "NS", "--liveness", "URL"]
    argv[0] = str(Path(argv[0]).relative_to(PROJECT_ROOT))  # .venv/bin/...
    command = shlex.join(argv)
    if side.source is not None:
        command = f"PYTHONPATH={side.source} {command}"
    source = str(side.source) if side.source else "work tree"
    return {"commit": side.commit, "source": source, "command": command}


# -- numbers ---------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float | None:
    """Nearest-rank percentile; `inf` stands for a sample that never arrived."""
    if not values:
        return None
    ordered = sorted(values)
    return ordered[max(0, math.ceil(q * len(ordered)) - 1)]


def _spread(values: Sequence[float]) -> dict[str, Any]:
    finite = [v for v in values if math.isfinite(v)]
    return {
        "n": len(values),
        "missing": len(values) - len(finite),
        "p50": percentile(values, 0.50),
        "p99": percentile(values, 0.99),
        "max": max(values) if values else None,
        "min": min(values) if values else None,
    }


def _json_safe(value: Any) -> Any:
    """results.json has no Infinity: a sample that never arrived is written as null."""
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_safe(v) for v in value]
    return value


# -- phases ----------------------------------------------------------------------------------------


class Phase:
    """One fresh control plane, a fake lookupd and a watch on one namespace; everything stopped after."""

    def __init__(self, root: Path, namespace: str) -> None:
        self.root = root
        self.namespace = namespace
        self.operators: list[RunningOperator] = []
        self.cluster: BenchCluster | None = None
        self.lookupd: FakeLookupd | None = None
        self.watch: DeploymentWatch | None = None

    def __enter__(self) -> Phase:
        try:
            self.cluster = BenchCluster.start_for_bench(self.root / "kube")
            self.session = self.cluster.session()
            self.lookupd = FakeLookupd()
            create_namespace(self.cluster, self.namespace)
        except BaseException:
            self.__exit__()
            raise
        return self

    @property
    def kube(self) -> BenchCluster:
        assert self.cluster is not None
        return self.cluster

    @property
    def fake(self) -> FakeLookupd:
        assert self.lookupd is not None
        return self.lookupd

    @property
    def watching(self) -> DeploymentWatch:
        assert self.watch is not None
        return self.watch

    def consumers(self, count: int, topic: str, poll: int, grace: int) -> list[str]:
        names = [f"c{i:03d}" for i in range(count)]
        bodies = [consumer(n, topic, f"ch-{n}", self.fake.url, poll, grace) for n in names]
        apply_all(self.kube, self.namespace, bodies)
        return names

    def start_watch(self) -> DeploymentWatch:
        self.watch = DeploymentWatch(self.kube, self.namespace).start()
        return self.watch

    def start_operator(self, side: OperatorSide, extra: Sequence[str] = ()) -> RunningOperator:
        name = f"operator-{side.key}-{len(self.operators)}"
        running = side.start(self.kube, self.namespace, self.root / "logs", name, extra)
        self.operators.append(running)
        return running

    def __exit__(self, *_: object) -> None:
        for running in self.operators:
            with contextlib.suppress(Exception):
                running.stop()
        for thing in (self.watch, self.lookupd):
            if thing is not None:
                with contextlib.suppress(Exception):
                    thing.stop() if isinstance(thing, DeploymentWatch) else thing.close()
        if self.cluster is not None:
            self.cluster.stop()
            shutil.rmtree(self.root / "kube" / "etcd", ignore_errors=True)  # thousands of objects' worth


def _wait_for_count(phase: Phase, running: RunningOperator, expected: int, timeout: float) -> float | None:
    """Until the watch has seen `expected` live Deployments: the arrival of the last one, or None."""
    deadline = running.started + timeout
    while time.monotonic() < deadline:
        if not running.process.alive():
            raise BenchError(f"{running.process.name} exited; see {running.process.log_path}")
        alive = phase.watching.alive()
        if len(alive) >= expected:
            return max(s.arrived for s in alive)
        time.sleep(0.2)
    return None


def cold_start(
    config: Config, side: OperatorSide, consumers: int, nsqd: int, steady: bool, root: Path, log: Log
) -> dict[str, Any]:
    """Consumers applied first, then the operator started and timed until every Deployment exists."""
    poll = config.operator_poll
    expected = consumers * nsqd
    timeout = min(config.operator_timeout, max(config.operator_timeout / 5, 0.09 * expected))
    record: dict[str, Any] = {"timeout": timeout}
    with Phase(root, "bench-cold") as phase:
        topic = "cold"
        phase.fake.set(topic, [nsqd_host(i) for i in range(1, nsqd + 1)])
        phase.consumers(consumers, topic, poll, grace=300)
        phase.start_watch()
        running = phase.start_operator(side)
        record["live_after"] = running.wait_live(timeout=120)
        last = _wait_for_count(phase, running, expected, timeout)
        record["created"] = phase.watching.count()
        record["listed"] = count_deployments(phase.kube, phase.session, phase.namespace)
        record["seconds"] = None if last is None else last - running.started
        record["timed_out"] = last is None
        record["cpu_seconds"] = _cpu(running)
        log(
            f"  {LABELS[side.key]}: "
            + (f"{expected:,} Deployments in {record['seconds']:.1f} s" if last is not None else
               f"only {record['created']:,} of {expected:,} Deployments within {timeout:.0f} s")
            + f" (operator CPU {record['cpu_seconds']:.0f} s)"
        )  # fmt: skip
        time.sleep(3 * poll)  # a few polls with nothing left to do
        record["memory"] = running.memory_mib()
        if steady and last is not None:
            record["steady"] = _steady(config, phase, running, topic, expected, log)
            record["memory"] = running.memory_mib()
        record["lookupd_hung_up"] = phase.fake.hung_up
        metrics = running.metrics()
        record["metrics"] = metrics is not None
        if metrics is not None:
            (root / f"metrics-{side.key}.txt").write_text(metrics)
        log(f"  {LABELS[side.key]}: RSS {record['memory'].get('rss', 0):.0f} MiB")
    return record


def _cpu(running: RunningOperator) -> float:
    return cpu_seconds(running.pid)


def _steady(
    config: Config, phase: Phase, running: RunningOperator, topic: str, expected: int, log: Log
) -> dict[str, Any]:
    """After every Deployment is rolled out: lookupd requests and API writes over a quiet window."""
    started = time.monotonic()
    rolled = wait(
        lambda: converged(phase.kube, phase.session, phase.namespace, expected),
        timeout=config.operator_converge_timeout,
        step=3.0,
    )
    settled = time.monotonic() - started
    time.sleep(2 * config.operator_poll)
    window = config.operator_window
    requests_before = phase.fake.count(topic)
    counts_before = request_counts(phase.kube, phase.session)
    cpu_before = _cpu(running)
    time.sleep(window)
    requests_after = phase.fake.count(topic)
    counts_after = request_counts(phase.kube, phase.session)
    cpu_after = _cpu(running)
    writes = api_writes(counts_before, counts_after)
    lookups = requests_after - requests_before
    result = {
        "rolled_out": rolled,
        "rollout_wait": settled,
        "window": window,
        "lookupd_requests": lookups,
        "lookupd_per_interval": lookups / (window / config.operator_poll),
        "writes": writes,
        "operator_writes": sum(writes["deployments"].values()) + sum(writes["nsqconsumers"].values()),
        "cpu_share": (cpu_after - cpu_before) / window,
    }
    log(
        f"  steady {window:.0f} s: {lookups} lookupd requests "
        f"({result['lookupd_per_interval']:.1f} per poll interval), "
        f"writes {writes['deployments'] or 'none'} to Deployments, "
        f"{writes['nsqconsumers'] or 'none'} to NsqConsumers"
    )
    return result


def churn(config: Config, side: OperatorSide, root: Path, log: Log) -> dict[str, Any]:
    """A new nsqd every few seconds (the oldest one leaving): how soon each gets its Deployments."""
    consumers, nsqd = config.operator_churn
    poll = config.operator_poll
    topic = "churn"
    with Phase(root, "bench-churn") as phase:
        hosts = [nsqd_host(i) for i in range(1, nsqd + 1)]
        phase.fake.set(topic, hosts)
        names = phase.consumers(consumers, topic, poll, grace=0)
        watch = phase.start_watch()
        running = phase.start_operator(side)
        running.wait_live(timeout=120)
        if _wait_for_count(phase, running, consumers * nsqd, config.operator_converge_timeout) is None:
            raise BenchError(f"{LABELS[side.key]}: the steady {consumers * nsqd} Deployments never all came")
        wait(
            lambda: converged(phase.kube, phase.session, phase.namespace, consumers * nsqd),
            timeout=config.operator_converge_timeout,
            step=2.0,
        )
        time.sleep(poll)
        added: dict[str, float] = {}
        removed: dict[str, float] = {}
        next_index = nsqd + 1
        started = time.monotonic()
        tick = started
        while tick < started + config.operator_churn_seconds:
            host = nsqd_host(next_index)
            next_index += 1
            added[host] = phase.fake.add(topic, host)
            oldest = hosts.pop(0)
            removed[oldest] = phase.fake.remove(topic, oldest)
            hosts.append(host)
            tick += config.operator_churn_every
            time.sleep(max(0.0, tick - time.monotonic()))
        # The last ones get at most this long; a Deployment that never comes counts as missing.
        patience = 3 * poll + 15

        def all_there() -> bool:
            found = watch.by_address()
            return all(len({s.consumer for s in found.get(nsqd_address(h), [])}) >= consumers for h in added)

        def all_gone() -> bool:
            found = watch.by_address()
            return all(s.deleted is not None for h in removed for s in found.get(nsqd_address(h), []))

        wait(all_there, timeout=patience, step=0.2)
        wait(all_gone, timeout=patience, step=0.2)
        found = watch.by_address()
        since_listed: list[float] = []
        since_served: list[float] = []
        per_nsqd: list[float] = []
        for host, at in added.items():
            arrivals: dict[str, float] = {}
            for seen in found.get(nsqd_address(host), []):
                arrivals[seen.consumer] = min(seen.arrived, arrivals.get(seen.consumer, math.inf))
            times = [arrivals.get(name, math.inf) - at for name in names]
            since_listed += times
            served = phase.fake.first_served.get((topic, host))
            since_served += [t + at - served if served is not None else math.inf for t in times]
            per_nsqd.append(max(times))
        removals = [
            (s.deleted if s.deleted is not None else math.inf) - at
            for host, at in removed.items()
            for s in found.get(nsqd_address(host), [])
        ]
        unmatched = len(found.get("", []))
        result: dict[str, Any] = {
            "consumers": consumers,
            "nsqd": nsqd,
            "every": config.operator_churn_every,
            "seconds": config.operator_churn_seconds,
            "new_nsqd": len(added),
            "since_listed": _spread(since_listed),
            "since_first_served": _spread(since_served),
            "all_consumers": _spread(per_nsqd),
            "removal": _spread(removals),
            "unmatched": unmatched,
            "watch_errors": watch.errors[-5:],
            "lookupd_hung_up": phase.fake.hung_up,
        }
        result["memory"] = running.memory_mib()
        p99 = result["since_listed"]["p99"]
        log(
            f"  {LABELS[side.key]}: {len(since_listed)} new Deployments, listed to created "
            f"p50 {result['since_listed']['p50']:.2f} s, p99 {p99:.2f} s, "
            f"missing {result['since_listed']['missing']}"
        )
    return result


def _holder(running: Sequence[RunningOperator], identity: str) -> RunningOperator | None:
    """The operator a Lease's holderIdentity names: the one whose pid is among its numbers."""
    numbers = set(re.findall(r"\d+", identity))
    matching = [r for r in running if str(r.pid) in numbers]
    return matching[0] if len(matching) == 1 else None


def _wait_leader(phase: Phase, pair: Sequence[RunningOperator]) -> tuple[str, RunningOperator] | None:
    """(holderIdentity, that operator) once a Lease in the namespace names one of `pair`, or None."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with contextlib.suppress(Exception):
            for lease in leases(phase.kube, phase.session, phase.namespace):
                identity = lease.get("spec", {}).get("holderIdentity") or ""
                leader = _holder(pair, identity)
                if leader is not None:
                    return identity, leader
        time.sleep(0.25)
    return None


def failover(config: Config, side: OperatorSide, root: Path, log: Log) -> dict[str, Any]:
    """Two v2 operators with leader election; SIGKILL the leader and time a new nsqd's Deployments."""
    help_text = side.help_text()
    if LEADER_FLAG not in help_text:
        return {"skipped": f"`nsq-operator run` ({side.commit}) has no {LEADER_FLAG} flag"}
    consumers, nsqd = config.operator_failover_size
    poll = config.operator_poll
    topic = "failover"
    runs: list[dict[str, Any]] = []
    with Phase(root, "bench-failover") as phase:
        phase.fake.set(topic, [nsqd_host(i) for i in range(1, nsqd + 1)])
        names = phase.consumers(consumers, topic, poll, grace=300)
        watch = phase.start_watch()
        extra = [LEADER_FLAG, phase.namespace]
        pair = [phase.start_operator(side, extra), phase.start_operator(side, extra)]
        for running in pair:
            running.wait_live(timeout=120, any_status=True)
        if pair[0].metrics() is None and pair[1].metrics() is None:
            return {"skipped": f"v2 ({side.commit}) serves no Prometheus text at /metrics"}
        if _wait_for_count(phase, pair[0], consumers * nsqd, config.operator_converge_timeout) is None:
            raise BenchError("failover: the first Deployments never all came")
        next_index = nsqd + 1
        for index in range(config.operator_failovers):
            found = _wait_leader(phase, pair)
            if found is None:
                held = [ls.get("spec", {}) for ls in leases(phase.kube, phase.session, phase.namespace)]
                return {"skipped": f"no Lease in the namespace names one of the operators' pids: {held}"}
            identity, leader = found
            standby = next(r for r in pair if r is not leader)
            time.sleep(2)  # the standby has seen the Lease renewed at least once
            host = nsqd_host(next_index)
            next_index += 1
            killed = time.monotonic()
            leader.process.kill()  # SIGKILL
            phase.fake.add(topic, host)
            taken_over: float | None = None
            first: float | None = None
            deadline = killed + config.operator_failover_timeout
            done: float | None = None
            while time.monotonic() < deadline:
                if taken_over is None:
                    with contextlib.suppress(Exception):
                        for lease in leases(phase.kube, phase.session, phase.namespace):
                            holder = lease.get("spec", {}).get("holderIdentity") or ""
                            if holder and holder != identity:
                                taken_over = time.monotonic()
                arrivals = [s.arrived for s in watch.by_address().get(nsqd_address(host), [])]
                if arrivals and first is None:
                    first = min(arrivals)
                if len(arrivals) >= len(names):
                    done = max(arrivals)
                    break
                time.sleep(0.2)
            run = {
                "seconds": None if done is None else done - killed,
                "first": None if first is None else first - killed,
                "lease_taken_over": None if taken_over is None else taken_over - killed,
                "timed_out": done is None,
                "holder_killed": identity,
            }
            runs.append(run)
            log(
                f"  failover {index + 1}: "
                + (f"Deployments for the new nsqd {run['seconds']:.1f} s after SIGKILL" if done else
                   f"no Deployments for the new nsqd within {config.operator_failover_timeout:.0f} s")
                + (f", Lease taken over after {run['lease_taken_over']:.1f} s" if taken_over else "")
            )  # fmt: skip
            replacement = phase.start_operator(side, extra)
            replacement.wait_live(timeout=120, any_status=True)
            pair = [standby, replacement]
    finished = [r["seconds"] for r in runs if r["seconds"] is not None]
    return {
        "consumers": consumers,
        "nsqd": nsqd,
        "runs": runs,
        "seconds": {
            "median": sorted(finished)[len(finished) // 2] if finished else None,
            "max": max(finished) if finished else None,
            "timed_out": sum(1 for r in runs if r["timed_out"]),
        },
        "timeout": config.operator_failover_timeout,
    }


def _guarded(what: str, log: Log, run: Callable[[], dict[str, Any]]) -> dict[str, Any]:
    """One phase; a failure is recorded (and the others still run) instead of ending the benchmark."""
    try:
        return run()
    except Exception as error:
        log(f"  {what} failed: {type(error).__name__}: {error}")
        return {"error": f"{type(error).__name__}: {str(error)[:500]}"}


def measure(config: Config, log: Log) -> dict[str, Any]:
    work = config.work / "operator"
    sides = {"previous": previous_side(config.operator_previous, log), "v2": v2_side(config.operator_v2)}
    harness_check = sides["v2"].source is not None and sides["v2"].source == sides["previous"].source
    result: dict[str, Any] = {
        "sides": {key: _describe(side) for key, side in sides.items()},
        "harness_check": harness_check,
        "poll_interval": config.operator_poll,
        "cold_start": [],
    }
    log(f"previous design: {sides['previous'].commit}; v2: {sides['v2'].commit}")
    for index, (consumers, nsqd) in enumerate(config.operator_cold):
        entry: dict[str, Any] = {"consumers": consumers, "nsqd": nsqd, "deployments": consumers * nsqd}
        order = rotate(SIDES, index)
        entry["order"] = order
        entry["sides"] = {}
        for key in order:
            log(f"cold start: {consumers} consumers {TIMES} {nsqd} nsqd, {LABELS[key]}")
            root = work / f"cold-{index}-{key}"
            entry["sides"][key] = _guarded(
                "cold start",
                log,
                partial(cold_start, config, sides[key], consumers, nsqd, index == 0, root, log),
            )
        result["cold_start"].append(entry)
    result["churn"] = {"order": rotate(SIDES, len(config.operator_cold))}
    for key in result["churn"]["order"]:
        log(f"churn: a new nsqd every {config.operator_churn_every:g} s, {LABELS[key]}")
        root = work / f"churn-{key}"
        result["churn"][key] = _guarded("churn", log, partial(churn, config, sides[key], root, log))
    log("failover (v2 only)")
    result["failover"] = _guarded(
        "failover", log, partial(failover, config, sides["v2"], work / "failover", log)
    )
    if "skipped" in result["failover"]:
        log(f"  skipped: {result['failover']['skipped']}")
    return _json_safe(result)  # type: ignore[no-any-return]


# -- the report ------------------------------------------------------------------------------------

# measure, previous design, v2, goal, v2's verdict, and the goal as a sentence (empty: context only)
Row = tuple[str, str, str, str, str, str]


def _verdict(value: float | None, target: float, timed_out: bool = False) -> str:
    """Met or missed (lower is better), with how far off; a timeout is missed."""
    if timed_out:
        return "**missed** (timed out)"
    if value is None:
        return "not measured"
    if value <= target:
        return "**met**"
    over = f" by {(value / target - 1) * 100:.0f} %" if target > 0 else ""
    return f"**missed**{over}"


def _cold_text(record: dict[str, Any] | None) -> str:
    if not record:
        return "n/a"
    if "error" in record:
        return f"error: {record['error'][:80]}"
    if record.get("timed_out"):
        return f"> {record['timeout']:.0f} s ({record.get('created', 0):,} made)"
    return f"{record['seconds']:.1f} s"


def _seconds(value: float | None, missing: int = 0) -> str:
    if value is None:
        return f"never ({missing} missing)" if missing else "n/a"
    return f"{value:.2f} s"


def _number(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.1f}"


def _mib(memory: dict[str, float]) -> str:
    return f"{memory['rss']:.0f} MiB ({memory['peak']:.0f})" if "rss" in memory else "n/a"


def _writes(steady: dict[str, Any] | None) -> str:
    """ "12 (NsqConsumers: 12 PATCH status)": the operator's writes in the steady window."""
    if not steady:
        return "n/a"
    parts = []
    for group, label in (("deployments", "Deployments"), ("nsqconsumers", "NsqConsumers")):
        verbs = steady["writes"][group]
        if verbs:
            parts.append(f"{label}: " + ", ".join(f"{n} {v}" for v, n in sorted(verbs.items())))
    total = steady["operator_writes"]
    return f"{total}" + (f" ({'; '.join(parts)})" if parts else "")


def _failover_text(fo: dict[str, Any]) -> tuple[str, str]:
    if "skipped" in fo or "error" in fo or not fo:
        return f"not measured: {fo.get('skipped') or fo.get('error') or 'not run'}", "not measured"
    seconds = fo.get("seconds") or {}
    med, worst, timed_out = seconds.get("median"), seconds.get("max"), seconds.get("timed_out", 0)
    text = f"{med:.1f} s (max {worst:.1f}, n={len(fo.get('runs', []))})" if med is not None else "n/a"
    if timed_out:
        text += f", {timed_out} timed out (> {fo.get('timeout', 0):.0f} s)"
    return text, _verdict(worst, FAILOVER_GOAL_SECONDS, bool(timed_out))


def rows(result: dict[str, Any]) -> list[Row]:
    """Every measure with both sides' figures and v2's verdict against its goal."""
    poll = result.get("poll_interval", 5)
    out: list[Row] = []
    entries = result.get("cold_start", [])
    for entry in entries:
        sides = entry.get("sides", {})
        v2 = sides.get("v2") or {}
        size = f"{entry['deployments']:,} ({entry['consumers']} consumers {TIMES} {entry['nsqd']} nsqd)"
        previous_text, v2_text = _cold_text(sides.get("previous")), _cold_text(v2)
        if entry is entries[-1] and len(entries) > 1:
            verdict = (
                "not measured"
                if "error" in v2 or not v2
                else _verdict(v2.get("seconds"), COLD_GOAL_SECONDS, bool(v2.get("timed_out")))
            )
            goal = f"≤ {COLD_GOAL_SECONDS:.0f} s"
            sentence = f"cold start to {entry['deployments']:,} Deployments {goal}"
            measure = f"Cold start to every Deployment: {size}"
            out.append((measure, previous_text, v2_text, goal, verdict, sentence))
        else:
            out.append((f"Cold start to every Deployment: {size}", previous_text, v2_text, "", "", ""))
    churn = result.get("churn", {})
    figures = {k: (churn.get(k) or {}).get("since_listed") or {} for k in SIDES}
    target = poll + 1.0
    for stat in ("p50", "p99"):
        texts = {k: _seconds(f.get(stat), f.get("missing", 0)) if f else "n/a" for k, f in figures.items()}
        measure = f"A new nsqd listed by lookupd to its Deployment, under churn, {stat}"
        if stat == "p50":
            out.append((measure, texts["previous"], texts["v2"], "", "", ""))
            continue
        v2_p99 = figures["v2"].get("p99")
        verdict = _verdict(v2_p99, target, bool(figures["v2"]) and v2_p99 is None)
        goal = f"≤ poll + 1 s = {target:.0f} s"
        sentence = f"a new nsqd to its Deployments under churn, p99 {goal}"
        out.append((measure, texts["previous"], texts["v2"], goal, verdict, sentence))
    first = entries[0] if entries else {"sides": {}}
    steady = {k: (first["sides"].get(k) or {}).get("steady") for k in SIDES}
    per_interval = {k: (s or {}).get("lookupd_per_interval") for k, s in steady.items()}
    consumers = first.get("consumers", 0)
    out.append(
        (
            f"lookupd requests per poll interval, {consumers} consumers of one topic, one lookupd",
            _number(per_interval["previous"]),
            _number(per_interval["v2"]),
            "1",
            _verdict(per_interval["v2"], 1.0),
            f"1 lookupd request per poll interval for {consumers} consumers of one topic",
        )
    )
    window = (steady["v2"] or steady["previous"] or {}).get("window", 0)
    out.append(
        (
            f"API writes by the operator in steady state, {window:.0f} s (Deployments, NsqConsumers)",
            _writes(steady["previous"]),
            _writes(steady["v2"]),
            "0",
            _verdict((steady["v2"] or {}).get("operator_writes"), 0.0),
            "no API writes in steady state (Deployments, NsqConsumers)",
        )
    )
    for index, entry in enumerate(entries):
        memory = {k: (entry["sides"].get(k) or {}).get("memory") or {} for k in SIDES}
        measure = f"Operator RSS at {entry['deployments']:,} Deployments (peak)"
        if index == 0:
            goal = f"≤ {RSS_GOAL_MIB:.0f} MiB"
            verdict = _verdict(memory["v2"].get("rss"), RSS_GOAL_MIB)
            sentence = f"RSS {goal} at {entry['deployments']:,} Deployments"
            out.append((measure, _mib(memory["previous"]), _mib(memory["v2"]), goal, verdict, sentence))
        else:
            out.append((measure, _mib(memory["previous"]), _mib(memory["v2"]), "", "", ""))
    fo_text, fo_verdict = _failover_text(result.get("failover") or {})
    goal = f"≤ {FAILOVER_GOAL_SECONDS:.0f} s"
    out.append(
        (
            "Failover: the leader SIGKILLed to a new nsqd's Deployments (two operators, one Lease)",
            "n/a (no leader election)",
            fo_text,
            goal,
            fo_verdict,
            f"failover (leader SIGKILLed) to a new nsqd's Deployments {goal}",
        )
    )
    return out


def goals(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The rows of BENCHMARKS.md's goals table: v2's figure, the previous design's beside it."""
    tag = " (harness check: both sides ran the previous design)" if result.get("harness_check") else ""
    return [
        (f"Operator v2{tag}: {sentence}", f"{v2} (previous design: {previous})", verdict)
        for _, previous, v2, _, verdict, sentence in rows(result)
        if sentence
    ]


def report(result: dict[str, Any], add: Callable[[str], None]) -> None:
    """The section of BENCHMARKS.md."""
    from bench.report import para

    poll = result.get("poll_interval", 5)
    churn = result.get("churn", {})
    spec: dict[str, Any] = next(
        (churn[k] for k in SIDES if isinstance(churn.get(k), dict) and "every" in churn[k]), {}
    )
    fo = result.get("failover") or {}
    add("## 5. Operator: previous design vs v2\n")
    add(
        para(f"""
        Both designs run as the real `nsq-operator run --namespace NS --liveness URL` with the rig's
        admin kubeconfig, against the rig's real etcd, kube-apiserver, kube-controller-manager and
        kube-scheduler, in the same run, taking turns. The nsqd exist only in the answers of a fake
        lookupd on loopback (`bench/operator_rig.py`), which counts its requests; worker pods (10m CPU,
        16Mi each) land on a kwok node with room for 20,000, so Deployments roll out into ReplicaSets
        and Running pods without containers. Every phase starts a control plane of its own, so no side
        inherits the other's objects or garbage collection. The controller manager's and scheduler's
        client limits are raised to 100 requests/s (from 20 and 50), so rollouts of thousands of
        Deployments finish in minutes; the whole control plane shares the machine's two cores with the
        operator. Every consumer polls every {poll} s (`spec.lookupd.pollIntervalSeconds`). Each
        figure comes from one run per side, so it carries the noise of a machine shared with other
        work; the load average at the start and end of the run is under "The machine".
        """)
    )
    add("| side | code | command |\n| --- | --- | --- |")
    for key in SIDES:
        side = result.get("sides", {}).get(key, {})
        add(f"| {LABELS[key]} | {side.get('commit', '?')} | `{side.get('command', '?')}` |")
    add("")
    if result.get("harness_check"):
        add(
            "> **Harness check:** the v2 column ran the previous design too (`--operator-v2` pointed at "
            "its worktree), so these figures validate the harness, not v2. "
            "`.venv/bin/python -m bench --only operator` measures the work tree's v2.\n"
        )
    add("| measure | previous design | v2 | goal (v2) | v2 |\n| --- | ---: | ---: | --- | --- |")
    for measure, previous, v2, goal, verdict, _ in rows(result):
        add(f"| {measure} | {previous} | {v2} | {goal} | {verdict} |")
    add("")
    add(
        para(f"""
        **How each figure is taken.** *Cold start:* the consumers are applied with no operator
        running; the clock starts when the operator process is started and stops at the arrival, on a
        metadata-only watch, of the last of its Deployments (label
        `app.kubernetes.io/managed-by=nsq-operator`); a LIST confirms the count. A side that has not
        made them all within its timeout shows "> timeout". *Steady state* (after the first cold
        start, once every Deployment is rolled out and {2 * poll} s more have passed): the fake
        lookupd's requests for the topic and the delta of the API server's own
        `apiserver_request_total` over the window, for the verbs POST, PUT, PATCH, APPLY, DELETE and
        DELETECOLLECTION on `deployments` (subresource "", since the controller manager writes only
        their status) and on `nsqconsumers` (any subresource). *RSS* is VmRSS of the operator's
        process (VmHWM, the peak, in brackets), read after the steady window at the first size and
        {3 * poll} s after the last Deployment at the others. *Churn:*
        {spec.get("consumers", "?")} consumers of one topic with {spec.get("nsqd", "?")} nsqd; then
        every {spec.get("every", "?")} s for {spec.get("seconds", "?")} s a new nsqd joins the
        lookupd's answer and the oldest leaves (removal grace 0); the figure is, per new nsqd and
        consumer, the time from when lookupd first lists it to the arrival of its Deployment on the
        watch (a Deployment that never came counts as infinitely late). *Failover:* two v2 operators
        with `--leader-election-namespace`; the one the Lease names is SIGKILLed, a new nsqd is added
        at once, and the clock stops when every consumer has its Deployment; then a fresh standby is
        started and the round repeats.
        """)
    )
    add(
        para("""
        **Why the misses.** *Cold start to 10,000:* the operator is not the bottleneck; its CPU time
        (below) is about half of the run, and the rest of the two cores goes to the API server, etcd
        and the controller manager, which turn every Deployment into a ReplicaSet and a pod while the
        operator writes; both designs land near the same rate of Deployments a second, which is what
        this control plane sustains on two shared cores. *RSS:* an idle v2 operator is already about
        100 MiB (the kubernetes client, kopf and aiohttp); the rest is the live state it keeps so it
        can repair drift without a LIST: one parsed view of every owned Deployment and NsqConsumer.
        *Failover:* the standby may take the Lease only once it has expired, and its duration is
        15 s (controller-runtime's default, `LEASE_DURATION` in `nsq_operator/leader.py`); the
        holder changed 13 to 15 s after the SIGKILL and the first reconcile adds a fraction of a
        second. A 10 s lease would meet the goal at the price of more renewals and less room for a
        slow API server, so the default stays.
        """)
    )
    context: list[str] = []
    for entry in result.get("cold_start", []):
        cpu = {k: (entry["sides"].get(k) or {}).get("cpu_seconds") for k in SIDES}
        if all(v is not None for v in cpu.values()):
            context.append(
                f"- Operator CPU time until the last of the {entry['deployments']:,} Deployments: previous "
                f"design {cpu['previous']:.0f} s, v2 {cpu['v2']:.0f} s."
            )
    first = (result.get("cold_start") or [{}])[0]
    shares = {k: ((first.get("sides", {}).get(k) or {}).get("steady") or {}).get("cpu_share") for k in SIDES}
    previous_share, v2_share = shares["previous"], shares["v2"]
    if previous_share is not None and v2_share is not None:
        context.append(
            f"- Operator CPU in the steady window at {first['deployments']:,} Deployments: previous design "
            f"{100 * previous_share:.0f} % of a core, v2 {100 * v2_share:.0f} %."
        )
    for key in SIDES:
        data = churn.get(key) or {}
        served, removal = data.get("since_first_served"), data.get("removal")
        if served and removal:
            context.append(
                f"- Churn, {LABELS[key]}: from lookupd's first answer naming the nsqd to its Deployment "
                f"p50 {_seconds(served['p50'])}, p99 {_seconds(served['p99'], served['missing'])}; from "
                f"an nsqd leaving lookupd to its Deployments deleted p50 {_seconds(removal['p50'])}, "
                f"p99 {_seconds(removal['p99'], removal['missing'])}; {data.get('new_nsqd', 0)} new "
                f"nsqd, {data['since_listed']['n']} Deployments."
            )
    takeovers = [r["lease_taken_over"] for r in fo.get("runs", []) if r.get("lease_taken_over") is not None]
    if takeovers:
        context.append(
            "- Failover: the Lease changed holder "
            + ", ".join(f"{t:.1f}" for t in takeovers)
            + " s after the SIGKILL (its duration bounds this)."
        )
    for entry in result.get("cold_start", []):
        for key in SIDES:
            rec = entry["sides"].get(key) or {}
            steady = rec.get("steady")
            if steady and not steady.get("rolled_out"):
                context.append(
                    f"- {LABELS[key]}: the {entry['deployments']:,} Deployments were not all rolled out "
                    "before the steady window; its figures include the rollout's tail."
                )
    if context:
        add("\n".join(context) + "\n")
