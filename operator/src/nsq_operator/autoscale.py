"""How many workers one nsqd's Deployment should run, from that nsqd's own backlog. Pure.

Each nsqd is judged on its own numbers, not on a sum over the topic: a hot nsqd gets pods while
idle ones keep their minimum (KEDA's NSQ scaler sums depth over every nsqd into one target, so nine
idle hosts get as many pods as the hot one, and it ignores in-flight, so a busy consumer with an
empty queue is scaled down under its own feet).

The algorithm is the HPA's, per nsqd:
- recommendation = clamp(ceil(backlog / target per replica), min, max), where backlog = depth + in
  flight (a paused channel has none), and max is also capped at what the nsqd can feed;
- up at once, by at most `max_scale_up_step` replicas a decision;
- down only to the highest recommendation of the stabilization window, so a burst shorter than the
  window never takes pods away and brings them back;
- no numbers (nsqd's /stats unreadable): hold, and start the window afresh when they return.
  Missing data never scales anything down.
- zero only when the channel exists on the nsqd, so messages published meanwhile wait there.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

Recommendation = tuple[float, int]  # (when, in seconds; the replicas that moment's backlog wanted)


@dataclass(frozen=True)
class AutoscalingSpec:
    """`spec.autoscaling` of an NsqConsumer (present only when enabled). Defaults as in the CRD."""

    min_replicas: int = 1
    max_replicas: int = 4
    target_backlog_per_replica: int = 1000
    scale_down_stabilization_seconds: int = 300
    max_scale_up_step: int = 4


@dataclass(frozen=True)
class ChannelStats:
    """One channel on one nsqd, as its /stats tells it."""

    depth: int  # memory + disk
    in_flight: int
    deferred: int = 0
    paused: bool = False
    channel_exists: bool = True  # False: the topic has no such channel yet (nothing waits for us)

    @property
    def backlog(self) -> int:
        """Messages that want a worker now. Deferred ones do not yet; a paused channel hands out none."""
        return 0 if self.paused else self.depth + self.in_flight


@dataclass(frozen=True)
class Unreadable:
    """The nsqd's numbers could not be read this poll, and why (a sentence for status and events)."""

    reason: str


NsqdStats = ChannelStats | Unreadable


@dataclass(frozen=True)
class Decision:
    replicas: int
    reason: str  # why, in words: for status.nsqds[].scaleReason and the DeploymentScaled event
    history: tuple[Recommendation, ...]  # the recommendations still inside the window, oldest first


def feedable(max_rdy_count: int, max_in_flight: int) -> int:
    """Most replicas one nsqd can keep busy: each takes `max_in_flight`, nsqd hands out `max_rdy_count`."""
    return max(1, max_rdy_count // max(1, max_in_flight))


def decide(
    spec: AutoscalingSpec,
    stats: NsqdStats,
    current: int | None,
    history: tuple[Recommendation, ...],
    now: float,
    ceiling: int,
) -> Decision:
    """The replicas for one nsqd's Deployment now.

    current: its replicas now, None when it has no Deployment yet. history: what this function
    returned last time for it (empty after an operator restart: then the window starts afresh from
    `current`, so a restart never scales down early). ceiling: `feedable` for this nsqd.
    """
    top = max(1, min(spec.max_replicas, ceiling))
    bottom = min(spec.min_replicas, top)
    if isinstance(stats, Unreadable):
        held = current if current is not None else max(bottom, 1)
        # The window restarts when numbers return: one reading after an outage is not enough to
        # scale down on, just as after an operator restart.
        return Decision(held, f"held at {held}: {stats.reason}", ())

    backlog = stats.backlog
    wanted = math.ceil(backlog / spec.target_backlog_per_replica)
    recommendation = min(max(wanted, bottom), top)
    why = _backlog_words(stats, wanted, spec)
    if recommendation < wanted:
        why += f", capped at {top}" + (" (what the nsqd can feed)" if top < spec.max_replicas else " (max)")
    elif recommendation > wanted:
        why += f", raised to the minimum {recommendation}"
    if recommendation == 0 and not stats.channel_exists:
        recommendation = 1  # nothing would keep messages for us while no pod is subscribed
        why += "; kept at 1 until the channel exists on the nsqd"

    window = spec.scale_down_stabilization_seconds
    start = current if current is not None else recommendation
    kept = tuple(r for r in history if now - r[0] < window) if history else ((now, start),)
    kept += ((now, recommendation),)

    if current is None:
        return Decision(recommendation, why, kept)
    if current > top:  # the limits changed: obey them at once
        return Decision(top, f"{why}; within max {top}", kept)
    base = max(current, bottom)  # under a raised minimum (or just resumed from a pause): from there
    if recommendation > base:
        step = min(recommendation, base + spec.max_scale_up_step)
        limited = f" (at most {spec.max_scale_up_step} more a decision)" if step < recommendation else ""
        return Decision(step, f"{why}: up from {current}{limited}", kept)
    if base > current:
        return Decision(base, f"{why}; within min {bottom}", kept)
    if recommendation < current:
        stabilized = min(max(r for _, r in kept), current)
        if stabilized < current:
            return Decision(stabilized, f"{why}: down from {current} after {window} s", kept)
        return Decision(current, f"{why}; holding {current} for the {window} s window", kept)
    return Decision(current, why, kept)


def _backlog_words(stats: ChannelStats, wanted: int, spec: AutoscalingSpec) -> str:
    if stats.paused:
        return f"channel paused (depth {stats.depth}), so no backlog: wants {wanted}"
    return (
        f"backlog {stats.backlog} (depth {stats.depth} + in flight {stats.in_flight}) at "
        f"{spec.target_backlog_per_replica} per replica wants {wanted}"
    )
