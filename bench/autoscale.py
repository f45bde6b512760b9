"""7. Autoscaling per nsqd against a KEDA-style policy and a fixed count: a simulation, not a replay.

Nothing here runs nsqd or Kubernetes, and no recorded /stats are replayed: a discrete-time model of
ten nsqd and their worker Deployments produces, at every poll, the numbers nsqd's
`/stats?format=json&topic=T&channel=C` would report (`depth`, `in_flight_count`), and each policy
turns them into replicas. The per-nsqd policy is the operator's own `nsq_operator.autoscale.decide`,
called as the operator calls it (per nsqd, its history carried from poll to poll, the ceiling from
`feedable`); the other two are written here from their documented algorithms.

The model, per nsqd (a fluid one: message counts are real numbers):
- `unfinished` = messages published and not yet FINed (depth + in flight). Arrivals come at a rate
  per nsqd and scenario; a burst adds messages at once.
- a pod is asked for at a poll and takes messages `startup` seconds later; it counts in pod-seconds
  from the moment it is asked for until it is removed (CPU reserved: one CPU a pod). Removed pods go
  at once, pods still starting first (the ReplicaSet deletes not-ready pods before ready ones).
- a ready pod holds up to `max_in_flight` messages, each in its handler for `handler_seconds`
  (= max_in_flight / rate_per_replica), so it finishes at most `rate_per_replica` msg/s, and only
  messages of its own nsqd (one worker per nsqd is the product). In flight = min(unfinished, ready
  pods x max_in_flight): nsqd pushes a message to a consumer as soon as the consumer has RDY to
  spare. So a consumer that keeps up still has messages in flight (arrival rate x handler time, as
  Little's law says), and its depth is 0.
- drained: a burst is drained when the nsqd has finished as many messages as had been published to it
  by the end of the burst (exact when nsqd hands messages out in order, as its in-memory queue does).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from bench.common import TIMES, Config
from nsq_operator.autoscale import AutoscalingSpec, ChannelStats, Recommendation, decide, feedable

Log = Callable[[str], None]

POLICIES = ("per_nsqd", "keda", "fixed", "per_nsqd_min0", "keda_min0", "keda_each")
LABELS = {
    "per_nsqd": "per-nsqd (this operator), min 1",
    "keda": "KEDA-style (one summed metric, spread evenly), min 1",
    "fixed": "fixed",
    "per_nsqd_min0": "per-nsqd, min 0",
    "keda_min0": "KEDA-style, min 0 (KEDA's default minReplicaCount)",
    "keda_each": "KEDA, one ScaledObject on every Deployment (context)",
}
SCENARIOS = ("one_hot", "moving")
CHARTED = ("per_nsqd", "keda", "fixed", "keda_min0")  # their series go to results.json, for the chart
BUCKET = 15.0  # seconds: the chart's backlog is the highest of each bucket (a drain lasts about that)
# The goal: drain as fast as the KEDA-style policy or faster, with at most this share of its pod-seconds.
POD_SECONDS_GOAL = 0.5
SOURCES = (
    "KEDA's documentation, *Scalers: NSQ* (keda.sh/docs/2.18/scalers/nsq: `depthThreshold`, "
    "`activationDepthThreshold`), and its source, `pkg/scalers/nsq_scaler.go` (kedacore/keda): the metric "
    "is the channel's depth summed over every nsqd that lookupd lists for the topic, paused channels left "
    "out, in-flight not read, one error failing the whole metric",
    "KEDA's documentation, *ScaledObject specification*: `pollingInterval` 30 s, `cooldownPeriod` 300 s, "
    "`minReplicaCount` 0, triggers' `metricType` AverageValue by default",
    "Kubernetes' documentation, *Horizontal Pod Autoscaling*: desiredReplicas = ceil(currentReplicas "
    f"{TIMES} currentMetricValue / desiredMetricValue), skipped within the 0.1 tolerance; for an "
    "AverageValue target on an external metric that is ceil(metric / target); default behavior: scale "
    "up by the larger of 100 % and 4 pods per 15 s with no stabilization, scale down to the highest "
    "recommendation of the last 300 s",
)


@dataclass(frozen=True)
class Model:
    """Every figure the simulation uses (kept in results.json beside what it measured)."""

    nsqd: int = 10
    seconds: float = 1200.0  # the length of each scenario
    warmup: float = 600.0  # trickle alone before it, not counted: each policy starts in its steady state
    dt: float = 0.05  # the simulation's step (a fifth of the handler time: the fluid model stays stable)
    poll: float = 5.0  # every policy decides this often, from /stats read at that moment
    startup: float = 3.0  # a new pod takes messages this long after it was asked for
    rate_per_replica: float = 1000.0  # msg/s a ready pod finishes when it has work
    max_in_flight: int = 250
    max_rdy_count: int = 2500  # nsqd's default --max-rdy-count, for the operator's ceiling (feedable)
    target: int = 1000  # backlog per replica: the operator's targetBacklogPerReplica, KEDA's depthThreshold
    min_replicas: int = 1
    max_replicas: int = 8  # per Deployment, every policy
    window: int = 300  # scale-down stabilization, both autoscalers (the HPA's default)
    step: int = 4  # the operator's maxScaleUpStep (the HPA's default adds at least 4 pods per 15 s too)
    fixed: int = 5  # the fixed policy's replicas on every nsqd (see report())
    trickle: float = 50.0  # msg/s on an nsqd that is not hot
    hot_rate: float = 1500.0  # msg/s on the hot nsqd
    burst: int = 50_000  # published at once to an nsqd when it becomes hot
    offset: float = 2.5  # the burst comes this long after a poll (half a poll: the average wait)
    hot_spots: int = 5  # scenario "moving": so many hot spots, one after another
    move_every: float = 180.0
    hpa_tolerance: float = 0.1
    hpa_period: float = 15.0  # of the HPA's default scale-up policies
    keda_cooldown: float = 300.0  # KEDA: inactive this long before a scale to zero

    @property
    def handler_seconds(self) -> float:
        return self.max_in_flight / self.rate_per_replica


QUICK = Model(
    seconds=120.0,
    warmup=60.0,
    dt=0.1,
    burst=10_000,
    hot_spots=3,
    move_every=30.0,
    window=30,
    keda_cooldown=30.0,
)


@dataclass(frozen=True)
class Scenario:
    key: str
    label: str
    hot: tuple[tuple[float, float, int], ...]  # (from, until, nsqd): hot_rate there instead of the trickle


def scenarios(model: Model) -> list[Scenario]:
    start = model.offset
    moves = tuple(
        (start + k * model.move_every, start + (k + 1) * model.move_every, k % model.nsqd)
        for k in range(model.hot_spots)
    )
    return [
        Scenario("one_hot", "A. one hot nsqd among ten", ((start, model.seconds, 0),)),
        Scenario("moving", f"B. a hot spot that moves every {model.move_every:g} s", moves),
    ]


# -- the policies --------------------------------------------------------------------------------------


class Policy(Protocol):
    def replicas(self, now: float, stats: Sequence[ChannelStats], current: Sequence[int]) -> list[int]: ...


class PerNsqd:
    """The operator's function, once per nsqd per poll, each nsqd with its own history."""

    def __init__(self, model: Model, minimum: int) -> None:
        self.spec = AutoscalingSpec(
            min_replicas=minimum,
            max_replicas=model.max_replicas,
            target_backlog_per_replica=model.target,
            scale_down_stabilization_seconds=model.window,
            max_scale_up_step=model.step,
        )
        self.ceiling = feedable(model.max_rdy_count, model.max_in_flight)
        self.history: list[tuple[Recommendation, ...]] = [() for _ in range(model.nsqd)]

    def replicas(self, now: float, stats: Sequence[ChannelStats], current: Sequence[int]) -> list[int]:
        out = []
        for i, (numbers, replicas) in enumerate(zip(stats, current, strict=True)):
            decision = decide(self.spec, numbers, replicas, self.history[i], now, self.ceiling)
            self.history[i] = decision.history
            out.append(decision.replicas)
        return out


class Hpa:
    """One HorizontalPodAutoscaler on KEDA's external metric (AverageValue target), default behavior."""

    def __init__(self, model: Model, minimum: int, maximum: int) -> None:
        self.model, self.minimum, self.maximum = model, minimum, maximum
        self.recommendations: list[tuple[float, int]] = []
        self.scale_ups: list[tuple[float, int]] = []  # (when, pods added): the scale-up policies' period

    def desired(self, now: float, metric: float, current: int) -> int:
        m = self.model
        ratio = metric / (m.target * current)
        raw = current if abs(1.0 - ratio) <= m.hpa_tolerance else math.ceil(metric / m.target)
        self.recommendations = [r for r in self.recommendations if now - r[0] < m.window] + [(now, raw)]
        stabilized = max(current, raw)  # up: no stabilization window
        stabilized = min(stabilized, max(r for _, r in self.recommendations))  # down: the window's highest
        self.scale_ups = [s for s in self.scale_ups if now - s[0] < m.hpa_period]
        start = current - sum(n for _, n in self.scale_ups)
        up_limit = max(current, math.ceil(start * 2.0), start + 4)  # 100 % or 4 pods, the larger
        new = min(max(min(stabilized, up_limit), self.minimum), self.maximum)  # down: 100 %, no limit
        if new > current:
            self.scale_ups.append((now, new - current))
        return new

    def reset(self) -> None:
        self.recommendations, self.scale_ups = [], []


def _depth(stats: Sequence[ChannelStats]) -> int:
    """KEDA's NSQ metric: depth summed over every nsqd, paused channels left out, in-flight ignored."""
    return sum(s.depth for s in stats if not s.paused)


class KedaSpread:
    """One ScaledObject (one HPA) over the whole topic; its replicas spread evenly over the Deployments.

    KEDA scales one workload per ScaledObject; with a Deployment per nsqd, the nearest one can do is
    one HPA for the sum and its count shared out, ceil(total / nsqd) each. With min 0, KEDA's own
    activation: to zero after `cooldownPeriod` with the metric at or under `activationDepthThreshold`
    (0), and back to one (on every Deployment) when it is over it.
    """

    def __init__(self, model: Model, minimum: int) -> None:
        self.model, self.minimum = model, minimum
        # Awake, every Deployment has at least one pod (KEDA gives the HPA minReplicas >= 1).
        self.hpa = Hpa(model, model.nsqd * max(1, minimum), model.max_replicas * model.nsqd)
        self.total = model.nsqd * model.min_replicas  # what runs at the start: one a Deployment
        self.last_active: float | None = None  # KEDA counts the cooldown from the object's creation first

    def replicas(self, now: float, stats: Sequence[ChannelStats], current: Sequence[int]) -> list[int]:
        metric = _depth(stats)
        if metric > 0 or self.last_active is None:
            self.last_active = now
        if self.minimum == 0 and self.total == 0:
            # KEDA activates 0 -> 1 (on every Deployment); the HPA takes over from there.
            self.total = self.model.nsqd if metric > 0 else 0
        elif self.minimum == 0 and now - self.last_active >= self.model.keda_cooldown:
            self.total = 0
            self.hpa.reset()
        else:
            self.total = self.hpa.desired(now, metric, self.total)
        each = math.ceil(self.total / self.model.nsqd)
        return [min(each, self.model.max_replicas)] * self.model.nsqd


class KedaEach:
    """A ScaledObject on every Deployment, each with the topic's trigger: each sees the whole sum."""

    def __init__(self, model: Model, minimum: int) -> None:
        self.hpas = [Hpa(model, max(1, minimum), model.max_replicas) for _ in range(model.nsqd)]

    def replicas(self, now: float, stats: Sequence[ChannelStats], current: Sequence[int]) -> list[int]:
        metric = _depth(stats)
        return [hpa.desired(now, metric, replicas) for hpa, replicas in zip(self.hpas, current, strict=True)]


class Fixed:
    def __init__(self, model: Model) -> None:
        self.count = model.fixed

    def replicas(self, now: float, stats: Sequence[ChannelStats], current: Sequence[int]) -> list[int]:
        return [self.count] * len(current)


def policy(key: str, model: Model) -> Policy:
    makers: dict[str, Callable[[], Policy]] = {
        "per_nsqd": lambda: PerNsqd(model, model.min_replicas),
        "keda": lambda: KedaSpread(model, model.min_replicas),
        "fixed": lambda: Fixed(model),
        "per_nsqd_min0": lambda: PerNsqd(model, 0),
        "keda_min0": lambda: KedaSpread(model, 0),
        "keda_each": lambda: KedaEach(model, model.min_replicas),
    }
    return makers[key]()


# -- the simulation ------------------------------------------------------------------------------------


def simulate(model: Model, scenario: Scenario, key: str) -> dict[str, Any]:
    """One policy through one scenario: pod-seconds, drain times, peaks, and a series per poll."""
    n, dt, h, mif = model.nsqd, model.dt, model.handler_seconds, model.max_in_flight
    warm = round(model.warmup / dt)
    steps = warm + round(model.seconds / dt)
    poll_steps, startup_steps = round(model.poll / dt), round(model.startup / dt)
    chooser = policy(key, model)
    first = model.fixed if key == "fixed" else model.min_replicas  # what runs before the scenario
    ready = [first] * n
    starting: list[list[int]] = [[] for _ in range(n)]  # per nsqd: the step each starting pod is ready
    unfinished = [0.0] * n
    finished = [0.0] * n
    published = [0.0] * n
    rates = [model.trickle] * n
    hot_changes: dict[int, list[tuple[int, float]]] = {}
    bursts: dict[int, list[int]] = {}
    for start, until, nsqd in scenario.hot:
        hot_changes.setdefault(warm + round(start / dt), []).append((nsqd, model.hot_rate))
        hot_changes.setdefault(warm + round(until / dt), []).append((nsqd, model.trickle))
        bursts.setdefault(warm + round(start / dt), []).append(nsqd)
    pending: list[list[tuple[float, float]]] = [[] for _ in range(n)]  # (published by then, since when)
    drains: list[float | None] = []
    drain_index: dict[tuple[int, float], int] = {}
    pod_steps = 0
    backlog_area = 0.0
    peak_pods = peak_one = 0
    published_before = 0.0
    series: list[list[float]] = []
    for k in range(steps):
        now = (k - warm) * dt  # the scenario starts at 0; the warm-up runs before it
        counted = k >= warm
        for nsqd, rate in hot_changes.get(k, ()):
            rates[nsqd] = rate
        for nsqd in bursts.get(k, ()):
            unfinished[nsqd] += model.burst
            published[nsqd] += model.burst
            pending[nsqd].append((published[nsqd], now))
            drain_index[(nsqd, now)] = len(drains)
            drains.append(None)
        if k % poll_steps == 0:
            stats = []
            for i in range(n):
                in_flight = min(unfinished[i], ready[i] * mif)
                stats.append(ChannelStats(depth=round(unfinished[i] - in_flight), in_flight=round(in_flight)))
            current = [ready[i] + len(starting[i]) for i in range(n)]
            for i, wanted in enumerate(chooser.replicas(now, stats, current)):
                if wanted > current[i]:
                    starting[i].extend([k + startup_steps] * (wanted - current[i]))
                elif wanted < current[i]:
                    gone = current[i] - wanted
                    keep = max(0, len(starting[i]) - gone)
                    gone -= len(starting[i]) - keep
                    del starting[i][keep:]
                    ready[i] -= gone
            if counted:
                total = sum(ready[i] + len(starting[i]) for i in range(n))
                series.append([round(now, 2), total, round(sum(unfinished))])
        if k == warm:
            published_before = sum(published)
        requested = 0
        area = 0.0
        for i in range(n):
            waiting = starting[i]
            while waiting and waiting[0] <= k:
                waiting.pop(0)
                ready[i] += 1
            pods = ready[i] + len(waiting)
            requested += pods
            if pods > peak_one and counted:
                peak_one = pods
            capacity = ready[i] * mif
            left = unfinished[i]
            done = (left if left < capacity else capacity) * dt / h
            arrived = rates[i] * dt
            unfinished[i] = left + arrived - done
            finished[i] += done
            published[i] += arrived
            area += left
            queue = pending[i]
            while queue and finished[i] >= queue[0][0] - 0.5:
                drains[drain_index[(i, queue[0][1])]] = now + dt - queue[0][1]
                queue.pop(0)
        if counted:
            pod_steps += requested
            backlog_area += area * dt
            peak_pods = max(peak_pods, requested)
    total_published = sum(published) - published_before
    done_drains = [d for d in drains if d is not None]
    return {
        "pod_seconds": pod_steps * dt,
        "drains": drains,
        "drain_max": max(done_drains) if len(done_drains) == len(drains) and drains else None,
        "drain_mean": sum(done_drains) / len(done_drains) if done_drains else None,
        "peak_pods": peak_pods,
        "peak_pods_one_nsqd": peak_one,
        "published": total_published,
        "unfinished_at_end": sum(unfinished),
        # Little's law: the mean time from publish to FIN is the mean backlog over the mean arrival rate.
        "mean_seconds_to_fin": backlog_area / total_published if total_published else None,
        "series": series,
    }


# How the comparison moves when one figure of the model changes (per-nsqd against KEDA-style, same min).
VARIANTS: tuple[tuple[str, Callable[[Model], Model]], ...] = (
    ("as above", lambda m: m),
    ("runs half as long", lambda m: replace(m, seconds=m.seconds / 2)),
    ("runs twice as long", lambda m: replace(m, seconds=m.seconds * 2)),
    ("bursts four times as large", lambda m: replace(m, burst=m.burst * 4)),
    ("hot inflow 800 msg/s (one pod keeps up)", lambda m: replace(m, hot_rate=800.0)),
    ("pods ready in 2 s", lambda m: replace(m, startup=2.0)),
    ("a poll every 15 s (the HPA's default sync)", lambda m: replace(m, poll=15.0)),
    ("no trickle, min 0 on both sides", lambda m: replace(m, trickle=0.0, min_replicas=0)),
)


def _compact(series: list[list[float]], poll: float) -> dict[str, Any]:
    """The pods asked for where they change, and the highest backlog of each BUCKET seconds."""
    changed_at: list[float] = []
    pods: list[float] = []
    for when, count, _ in series:
        if not pods or count != pods[-1]:
            changed_at.append(when)
            pods.append(count)
    per = max(1, round(BUCKET / poll))
    peaks = [max(p[2] for p in series[i : i + per]) for i in range(0, len(series), per)]
    return {"pods_changed_at": changed_at, "pods": pods, "bucket": per * poll, "backlog_peaks": peaks}


def _pair(ours: dict[str, Any], keda: dict[str, Any]) -> dict[str, Any]:
    """[per-nsqd, KEDA-style] of each figure."""
    return {
        "pod_seconds": [ours["pod_seconds"], keda["pod_seconds"]],
        "drain_max": [ours["drain_max"], keda["drain_max"]],
        "drain_mean": [ours["drain_mean"], keda["drain_mean"]],
    }


def measure(config: Config, log: Log) -> dict[str, Any]:
    model = QUICK if config.quick else Model()
    result: dict[str, Any] = {
        "kind": "simulation",
        "model": {**asdict(model), "handler_seconds": model.handler_seconds},
        "ceiling": feedable(model.max_rdy_count, model.max_in_flight),
        "sources": list(SOURCES),
        "scenarios": {},
        "variants": [],
    }
    for scenario in scenarios(model):
        entry: dict[str, Any] = {
            "label": scenario.label,
            "hot": [list(h) for h in scenario.hot],
            "policies": {},
        }
        for key in POLICIES:
            started = time.monotonic()
            run = simulate(model, scenario, key)
            series = run.pop("series")
            if key in CHARTED:
                run["chart"] = _compact(series, model.poll)
            entry["policies"][key] = run
            log(
                f"  {scenario.key}, {LABELS[key]}: {run['pod_seconds']:,.0f} pod-seconds, drain "
                f"{_s(run['drain_max'])}, peak {run['peak_pods']} pods ({time.monotonic() - started:.1f} s)"
            )
        result["scenarios"][scenario.key] = entry
    for label, change in VARIANTS[1:]:
        variant = change(model)
        pairs = {
            sc.key: _pair(simulate(variant, sc, "per_nsqd"), simulate(variant, sc, "keda"))
            for sc in scenarios(variant)
        }
        result["variants"].append({"label": label, "seconds": variant.seconds, "scenarios": pairs})
    log(f"  {len(VARIANTS) - 1} variants of the model")
    return result


# -- the report ----------------------------------------------------------------------------------------


def _s(value: float | None) -> str:
    return "not drained" if value is None else f"{value:.1f} s"


def _ratio(value: float | None, base: float | None) -> float | None:
    return None if value is None or not base else value / base


def _x(value: float | None) -> str:
    return "n/a" if value is None else f"{value:.2f}{TIMES}"


def verdicts(result: dict[str, Any]) -> list[tuple[str, str, str, bool]]:
    """Per scenario: (scenario label, measured in words, verdict, met)."""
    out = []
    for key in SCENARIOS:
        entry = result["scenarios"].get(key)
        if not entry:
            continue
        ours, keda = entry["policies"]["per_nsqd"], entry["policies"]["keda"]
        pods = _ratio(ours["pod_seconds"], keda["pod_seconds"])
        fast = ours["drain_max"] is not None and (
            keda["drain_max"] is None or ours["drain_max"] <= keda["drain_max"] + 1e-9
        )
        mean_fast = ours["drain_mean"] is not None and (
            keda["drain_mean"] is None or ours["drain_mean"] <= keda["drain_mean"] + 1e-9
        )
        cheap = pods is not None and pods <= POD_SECONDS_GOAL
        met = fast and mean_fast and cheap
        worst = "" if len(ours["drains"]) == 1 else "worst "
        measured = (
            f"{worst}drain {_s(ours['drain_max'])} (KEDA-style {_s(keda['drain_max'])}), pod-seconds "
            f"{_x(pods)} KEDA-style's"
        )
        misses = []
        if not (fast and mean_fast):
            misses.append("drains slower")
        if not cheap and pods is not None:
            over = 100 * (pods / POD_SECONDS_GOAL - 1)
            misses.append(f"pod-seconds {_x(pods)}, {over:.0f} % over {POD_SECONDS_GOAL:g}{TIMES}")
        elif not cheap:
            misses.append("no pod-seconds")
        out.append((entry["label"], measured, "**met**" if met else f"**missed** ({', '.join(misses)})", met))
    return out


def goals(result: dict[str, Any]) -> list[tuple[str, str, str]]:
    """The rows of BENCHMARKS.md's goals table."""
    return [
        (
            f"Autoscaling per nsqd ({label}, simulated): drain ≤ KEDA-style's with ≤ "
            f"{POD_SECONDS_GOAL:g}{TIMES} its pod-seconds",
            measured,
            verdict,
        )
        for label, measured, verdict, _ in verdicts(result)
    ]


def chart(result: dict[str, Any], directory: Path) -> str:
    """Pods and backlog over time, both scenarios; returns the file name."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    colours = {"per_nsqd": "#1f77b4", "keda": "#d62728", "fixed": "#7f7f7f", "keda_min0": "#ff9896"}
    seconds = result["model"]["seconds"]
    entries = [result["scenarios"][k] for k in SCENARIOS if k in result["scenarios"]]
    fig, axes = plt.subplots(2, len(entries), figsize=(6 * len(entries), 6), squeeze=False, sharex="col")
    for column, entry in enumerate(entries):
        top, bottom = axes[0][column], axes[1][column]
        for key, colour in colours.items():
            drawn = entry["policies"][key].get("chart")
            if not drawn:
                continue
            style = "--" if key.endswith("min0") else "-"
            times = [t / 60 for t in [*drawn["pods_changed_at"], seconds]]
            top.step(times, [*drawn["pods"], drawn["pods"][-1]], where="post", color=colour,
                     linestyle=style, label=LABELS[key], linewidth=1.2)  # fmt: skip
            buckets = [i * drawn["bucket"] / 60 for i in range(len(drawn["backlog_peaks"]))]
            bottom.step(buckets, drawn["backlog_peaks"], where="post", color=colour, linestyle=style,
                        linewidth=1.0)  # fmt: skip
        top.set_title(entry["label"], fontsize=10)
        top.set_ylabel("pods asked for (all nsqd)")
        top.set_ylim(bottom=0)
        bottom.set_ylabel(f"unfinished messages, all nsqd\n(highest of each {BUCKET:g} s)")
        bottom.set_yscale("log")
        bottom.set_xlabel("minutes")
    fig.legend(*axes[0][0].get_legend_handles_labels(), loc="lower center", ncol=2, fontsize=8)
    fig.tight_layout(rect=(0, 0.08, 1, 1))
    fig.savefig(directory / "autoscale.png", dpi=100)
    plt.close(fig)
    return "autoscale.png"


def report(
    result: dict[str, Any], results: dict[str, Any], drawn: dict[str, str], chart_dir: str, add: Log
) -> None:
    """The section of BENCHMARKS.md. `results` is the whole file: for section 4's figure and the node run."""
    from bench.report import para

    m = result["model"]
    n, rate, mif, target = m["nsqd"], m["rate_per_replica"], m["max_in_flight"], m["target"]
    pod_start = ((results.get("pods") or {}).get("first_message") or {}).get("median")
    measured_start = (
        f"section 4 measured {pod_start:.1f} s from `kubectl apply` to the first message handled on the "
        "real node, one operator poll of 1 s included"
        if pod_start is not None
        else "section 4, the real node, is not in this file"
    )
    add("## 7. Autoscaling: per-nsqd vs KEDA-style vs fixed\n")
    add(
        para(f"""
        **A simulation, not a replay.** No recorded `/stats` are replayed and nothing runs on nsqd or
        Kubernetes: a discrete-time model ({m["dt"]:g} s steps, `bench/autoscale.py`) of {n} nsqd, each
        with its own worker Deployment, produces at every {m["poll"]:g} s poll the numbers nsqd's
        `/stats` would report for the channel (depth, in flight), and each policy turns them into
        replicas. The per-nsqd policy is the operator's own `nsq_operator.autoscale.decide`, called once
        per nsqd per poll with that nsqd's numbers and its history carried over, its ceiling
        `feedable({m["max_rdy_count"]:,}, {mif})` = {result["ceiling"]}. Every policy and scenario runs
        in the same run, from the same model and the same arrivals.
        """)
    )
    add("**The model.**\n")
    add(
        f"- A ready pod holds up to {mif} messages (max in flight), each in its handler "
        f"{m['handler_seconds']:g} s, so it finishes at most {rate:,.0f} msg/s: an I/O-bound handler "
        "(a call to another service). The worker's own cost is far below that (section 1: hundreds of "
        "thousands of no-op msg/s on a core; section 3: over 10,000 msg/s per core with 50 µs of CPU "
        "work a message), so the handler sets the rate. A pod takes messages only from its own nsqd."
    )
    add(
        f"- In flight = min(unfinished, ready pods {TIMES} {mif}); depth = the rest. nsqd pushes a message "
        "out as soon as a consumer has RDY to spare, so a consumer that keeps up shows depth 0 and "
        f"(arrival rate {TIMES} handler time) in flight, as Little's law says."
    )
    add(
        f"- A pod asked for at a poll takes messages {m['startup']:g} s later ({measured_start}). It counts "
        "in pod-seconds from being asked for until it is removed; a removed pod goes at once (the "
        "worker's drain on SIGTERM is not modelled), pods still starting first, as a ReplicaSet does."
    )
    default = " (the HPA's default)" if m["window"] == 300 else ""
    add(
        f"- Every policy: target {target:,} messages of backlog per replica, per-Deployment max "
        f"{m['max_replicas']}, min {m['min_replicas']} (min 0 as a variant), scale-down window "
        f"{m['window']} s{default}, a decision every {m['poll']:g} s from the numbers read "
        "then (the HPA's default sync is 15 s and KEDA's pollingInterval 30 s: the shared 5 s poll "
        f"favours the KEDA-style side). Each scenario starts after {m['warmup']:g} s of trickle alone, "
        "not counted, so every policy starts from its own steady state."
    )
    add(
        f"- **per-nsqd**: `decide`: clamp(ceil((depth + in flight) / {target:,}), min, max) for each nsqd, "
        f"up by at most {m['step']} a decision, down to the highest recommendation of the window."
    )
    add(
        f"- **KEDA-style**: KEDA's NSQ metric (depth summed over all {n} nsqd, in flight ignored) into one "
        f"HPA with an AverageValue target of {target:,}: desired = ceil(sum / {target:,}), unchanged "
        f"within the {m['hpa_tolerance']:g} tolerance, with the HPA's default behavior (up by the larger "
        f"of 100 % and 4 pods per {m['hpa_period']:g} s, down to the highest recommendation of the last "
        f"{m['window']} s). KEDA scales one workload per ScaledObject, so the total is spread evenly: "
        f"ceil(total / {n}) on every Deployment, at least one each, at most the max. With min 0, KEDA's "
        f"activation: every Deployment to zero after {m['keda_cooldown']:g} s (`cooldownPeriod`) with "
        "the summed depth at 0 (`activationDepthThreshold`), and back to one when it is over 0."
    )
    add(
        "- **KEDA, one ScaledObject on every Deployment** (context): the topic's trigger on each "
        f"Deployment; every HPA sees the whole sum, so every Deployment gets ceil(sum / {target:,})."
    )
    add(
        f"- **fixed**: {m['fixed']} on every nsqd: a user who sets a count cannot know which nsqd will be "
        f"hot, so every nsqd gets enough for the hot inflow ({m['hot_rate']:,.0f} msg/s, "
        f"{math.ceil(m['hot_rate'] / rate)} pods) and room to work off a burst in seconds rather than "
        "minutes. It is the count a cautious user would pick, not an optimum."
    )
    add("")
    add("Sources for the KEDA-style policy (read, not copied):\n")
    for source in result.get("sources", []):
        add(f"- {source}.")
    add("")
    tail = m["seconds"] - m["offset"] - m["hot_spots"] * m["move_every"]
    add(
        para(f"""
        **The scenarios**, {m["seconds"] / 60:g} minutes each. Every nsqd gets a trickle of
        {m["trickle"]:g} msg/s. **A:** one nsqd becomes hot {m["offset"]:g} s after a poll: a burst of
        {m["burst"]:,} messages published at once, then {m["hot_rate"]:,.0f} msg/s for the rest of
        the run (more than one pod can take). **B:** the same hot spot ({m["burst"]:,} at once, then
        {m["hot_rate"]:,.0f} msg/s) moves to the next nsqd every {m["move_every"]:g} s,
        {m["hot_spots"]} times; the last {tail:g} s are trickle only.
        """)
    )
    add(
        para(f"""
        **What is measured.** *Pod-seconds*: the sum over time of the pods asked for on every nsqd, from
        the moment each is asked for until it is removed (the CPU reserved, one CPU a pod). *Drain*:
        from a burst to the moment its nsqd has finished as many messages as had been published to it
        by then (the burst's last message, when nsqd hands them out in order); B has {m["hot_spots"]}
        bursts: the worst and, in brackets, the mean. *Peak pods*: the most pods asked for at once
        over all nsqd, and on one nsqd. *Mean time to FIN*: from publish to FIN over every message of
        the run (the mean backlog over the arrival rate, Little's law), handler time included: it
        shows a backlog that lingers after the drain.
        """)
    )
    if "autoscale" in drawn:
        add(f"![autoscale]({chart_dir}/{drawn['autoscale']})\n")
    for key in SCENARIOS:
        entry = result["scenarios"].get(key)
        if not entry:
            continue
        keda = entry["policies"]["keda"]
        several = len(keda["drains"]) > 1
        add(f"### {entry['label']}\n")
        add(
            "| policy | pod-seconds | ÷ KEDA-style | drain | ÷ KEDA-style | peak pods (one nsqd) "
            "| mean time to FIN |"
        )
        add("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
        for name in POLICIES:
            run = entry["policies"][name]
            label = f"{LABELS[name]}, {m['fixed']} each" if name == "fixed" else LABELS[name]
            drain = _s(run["drain_max"]) + (f" ({_s(run['drain_mean'])})" if several else "")
            fin = run["mean_seconds_to_fin"]
            pods = _x(_ratio(run["pod_seconds"], keda["pod_seconds"]))
            add(
                f"| {label} | {run['pod_seconds']:,.0f} | {pods} | {drain} | "
                f"{_x(_ratio(run['drain_max'], keda['drain_max']))} | {run['peak_pods']} "
                f"({run['peak_pods_one_nsqd']}) | {'n/a' if fin is None else f'{fin:.2f} s'} |"
            )
        add("")
    add(
        "**The goal**: the same drain time as the KEDA-style policy or better (worst and mean), with at "
        f"most {POD_SECONDS_GOAL:g}{TIMES} its pod-seconds, both at min {m['min_replicas']}.\n"
    )
    for label, measured, verdict, _ in verdicts(result):
        add(f"- {label}: {measured}: {verdict}.")
    add("")
    _why(result, add)
    _variants(result, add)
    node = results.get("autoscale_node")
    add("### The real-node run beside it\n")
    if not node:
        add(
            "Not in this run: results.json has no `autoscale_node` entry (the same comparison with real nsqd "
            "and pods on the rig's node).\n"
        )
    else:
        add(f"{node.get('note', '')} Measured {node.get('measured', '?')} by `{node.get('command', '?')}`.\n")
        add("| policy | pod-seconds | drain | peak pods |\n| --- | ---: | ---: | ---: |")
        for name, row in (node.get("policies") or {}).items():
            add(
                f"| {LABELS.get(name, name)} | {row.get('pod_seconds', 0):,.0f} | "
                f"{_s(row.get('drain_seconds'))} | {row.get('peak_pods', '?')} |"
            )
        add("")
    add(f"Reproduce this section alone (seconds, no rig): `{result.get('command', '')}`.\n")


def _why(result: dict[str, Any], add: Log) -> None:
    """Why the figures come out as they do, in this run's numbers."""
    from bench.report import para

    m = result["model"]
    n, target, low = m["nsqd"], m["target"], m["min_replicas"]
    a, b = result["scenarios"].get("one_hot"), result["scenarios"].get("moving")
    if not a or not b or low < 1:
        return
    ours, keda = a["policies"]["per_nsqd"], a["policies"]["keda"]
    floor = n * low * m["seconds"]
    above = _ratio(ours["pod_seconds"] - floor, keda["pod_seconds"] - floor)
    b_ours, b_keda = b["policies"]["per_nsqd"], b["policies"]["keda"]
    slower = "slower" if (keda["drain_max"] or math.inf) > (ours["drain_max"] or math.inf) else "no faster"
    more = "more" if keda["pod_seconds"] > ours["pod_seconds"] else "no more"
    later = (
        "which is why its later bursts drain faster than its first"
        if (b_keda["drain_mean"] or 0) < (b_keda["drain_max"] or 0)
        else "yet its bursts drain no faster"
    )
    add(
        para(f"""
        **Why.** KEDA's one metric cannot say which nsqd the backlog is on. For A's burst it asks for
        pods on every Deployment, and the hot nsqd gets only its share: at most
        {keda["peak_pods_one_nsqd"]} pods there ({keda["peak_pods"]} in all), where the per-nsqd policy
        gives it {ours["peak_pods_one_nsqd"]} ({ours["peak_pods"]} in all), so it drains {slower} with
        {more} pods, and holds them all for the {m["window"]} s window. Under the steady inflow after the
        burst, which one pod cannot take, the hot nsqd gets a second pod only when the summed depth is
        over about {n * target * (1 + m["hpa_tolerance"]):,.0f} ({n} Deployments {TIMES} the target,
        plus the HPA's tolerance), and then every Deployment gets one more; the per-nsqd policy adds
        pods to that nsqd alone (the mean time to FIN shows the difference). Both drop the hot nsqd
        to its minimum once a window has passed with a small backlog and scale it up again at the
        next one: a backlog target sees a queue, not a rate.
        """)
    )
    add(
        para(f"""
        **The floor.** Both sides keep min {low} on each of the {n}
        Deployments: {floor:,.0f} of the {m["seconds"]:g} s run's pod-seconds are that floor, the same
        for both. Above it, the per-nsqd policy adds {ours["pod_seconds"] - floor:,.0f} pod-seconds in A
        against KEDA-style's {keda["pod_seconds"] - floor:,.0f} ({_x(above)}), but with the floor
        the ratio is {_x(_ratio(ours["pod_seconds"], keda["pod_seconds"]))}, and the longer the run the
        more the floor weighs (see the variants below). In B every new hot spot gets
        {b_ours["peak_pods_one_nsqd"]} pods while the last one still holds its own for the window (up
        to {b_ours["peak_pods"]} pods in all), and KEDA-style, with a new burst before its window
        ends, keeps its pods on every Deployment, {later}
        (burst by burst, KEDA-style {_each(b_keda["drains"])}; per-nsqd {_each(b_ours["drains"])}): pods
        already waiting on every nsqd can beat pods asked for when a burst is seen, and KEDA-style
        pays for them with {_x(_ratio(b_keda["pod_seconds"], b_ours["pod_seconds"]))} the per-nsqd
        policy's pod-seconds.
        """)
    )
    zero, zero_keda = b["policies"]["per_nsqd_min0"], b["policies"]["keda_min0"]
    add(
        para(f"""
        **Min 0.** It changes nothing for the per-nsqd policy here ({zero["pod_seconds"]:,.0f}
        pod-seconds in B against {b_ours["pod_seconds"]:,.0f} at min 1): the trickle keeps messages in
        flight on every nsqd, and a consumer with messages in flight is not idle. KEDA-style at min 0
        scales every Deployment to zero once the summed depth has been 0 for
        {m["keda_cooldown"]:g} s, busy consumers included, and the trickle's
        messages then wait for the next poll and a pod's start ({zero_keda["pod_seconds"]:,.0f}
        pod-seconds, mean time to FIN {zero_keda["mean_seconds_to_fin"]:.2f} s against
        {b_keda["mean_seconds_to_fin"]:.2f} s at min 1). Where the idle nsqd are really idle, min 0
        is what saves the floor: see the last variant.
        """)
    )


def _each(drains: list[float | None]) -> str:
    return ", ".join("not drained" if d is None else f"{d:.1f}" for d in drains) + " s"


def _variants(result: dict[str, Any], add: Log) -> None:
    variants = result.get("variants") or []
    if not variants:
        return
    add(
        "**The same comparison with one figure changed** (per-nsqd ÷ KEDA-style, same min; B: worst drain):\n"
    )
    add("| model | A: pod-seconds | A: drain | B: pod-seconds | B: drain |")
    add("| --- | ---: | ---: | ---: | ---: |")
    here = result["scenarios"]
    rows = [
        ("as above", {k: _pair(here[k]["policies"]["per_nsqd"], here[k]["policies"]["keda"]) for k in here})
    ]
    rows += [(v["label"], v["scenarios"]) for v in variants]
    for label, pairs in rows:
        cells = []
        for key in SCENARIOS:
            pair = pairs.get(key) or {}
            pods, drain = pair.get("pod_seconds") or [None, None], pair.get("drain_max") or [None, None]
            cells += [_x(_ratio(pods[0], pods[1])), _x(_ratio(drain[0], drain[1]))]
        add(f"| {label} | " + " | ".join(cells) + " |")
    add("")
