"""Plain counters updated on the hot path, rendered in the Prometheus text format on demand.

prometheus_client takes a lock and walks label dicts on every increment; an attribute `+= 1` is
an order of magnitude cheaper, and one process serves one (topic, channel, nsqd), so every sample
carries the same constant labels.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

# Handler durations in seconds: sub-millisecond no-ops up to handlers that need TOUCH.
DURATION_BUCKETS: tuple[float, ...] = (
    0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
    30.0, 60.0, 300.0,
)  # fmt: skip

CONNECTION_STATES: tuple[str, ...] = (
    "connecting",
    "subscribed",
    "backoff",
    "draining",
    "disconnected",
    "closed",
)


class Histogram:
    """Per-bucket counts (not cumulative) plus sum and count; cumulated when rendered."""

    __slots__ = ("bounds", "count", "counts", "sum")

    def __init__(self, bounds: Iterable[float] = DURATION_BUCKETS) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0
        self.count = 0

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value
        self.count += 1

    def cumulative(self) -> list[tuple[str, int]]:
        """(le, count of observations <= le) for every bound and +Inf."""
        running = 0
        out: list[tuple[str, int]] = []
        for bound, count in zip((*self.bounds, math.inf), self.counts, strict=True):
            running += count
            out.append((_number(bound), running))
        return out


@dataclass
class Metrics:
    """Everything the worker counts. Attributes are bumped directly by the hot path."""

    received: int = 0
    finished: int = 0
    requeued: int = 0
    given_up: int = 0
    handler_errors: int = 0
    touched: int = 0
    reconnects: int = 0
    published: int = 0
    publish_errors: int = 0
    invalid: int = 0
    duplicates: int = 0
    handler_duration: Histogram = field(default_factory=Histogram)


@dataclass(frozen=True)
class Gauges:
    """Point-in-time values read from the worker when /metrics is scraped."""

    in_flight: int
    queued: int
    handlers_running: int
    concurrency: int
    max_in_flight: int
    rdy: int
    connection_state: str
    connected: bool
    last_frame_age: float
    backoff_level: int
    draining: bool


def _number(value: float) -> str:
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return f"{value:.1f}"
    return repr(float(value))


def _escape(value: str) -> str:
    return value.replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(base: Mapping[str, str], extra: Mapping[str, str] | None = None) -> str:
    merged = {**base, **(extra or {})}
    if not merged:
        return ""
    return "{" + ",".join(f'{key}="{_escape(value)}"' for key, value in merged.items()) + "}"


PREFIX = "nsq_worker_"

_COUNTERS: tuple[tuple[str, str, str], ...] = (
    ("messages_received_total", "received", "Messages delivered by nsqd."),
    ("messages_finished_total", "finished", "Messages finished (FIN), including those given up."),
    ("messages_requeued_total", "requeued", "Messages requeued (REQ), by failure, drain or the handler."),
    ("messages_given_up_total", "given_up", "Messages handed to the give-up hook after max attempts."),
    ("handler_errors_total", "handler_errors", "Handler calls that raised."),
    ("messages_touched_total", "touched", "TOUCH commands sent to keep long handlers' messages alive."),
    ("reconnects_total", "reconnects", "Connections to nsqd lost and tried again."),
    ("published_total", "published", "Messages published (PUB, MPUB, DPUB) and acknowledged by nsqd."),
    ("publish_errors_total", "publish_errors", "Publish calls refused by nsqd or not sent."),
    ("invalid_total", "invalid", "Messages finished unhandled because validate_message returned False."),
    ("duplicates_total", "duplicates", "Redeliveries of ids finished here before, finished unhandled."),
)


def render(metrics: Metrics, gauges: Gauges, labels: Mapping[str, str]) -> str:
    """The Prometheus text exposition (format 0.0.4) of one worker."""
    lines: list[str] = []
    base = _labels(labels)

    def family(name: str, kind: str, help_text: str) -> str:
        full = PREFIX + name
        lines.append(f"# HELP {full} {help_text}")
        lines.append(f"# TYPE {full} {kind}")
        return full

    for name, attribute, help_text in _COUNTERS:
        full = family(name, "counter", help_text)
        lines.append(f"{full}{base} {getattr(metrics, attribute)}")

    simple_gauges: tuple[tuple[str, float, str], ...] = (
        ("messages_in_flight", gauges.in_flight, "Messages received and not yet finished or requeued."),
        ("messages_queued", gauges.queued, "Messages waiting for a free handler."),
        ("handlers_running", gauges.handlers_running, "Handler calls running right now."),
        ("concurrency", gauges.concurrency, "The most handler calls allowed at once."),
        ("max_in_flight", gauges.max_in_flight, "The most messages allowed in flight."),
        ("rdy", gauges.rdy, "The RDY count last sent to nsqd."),
        ("connected", int(gauges.connected), "1 while subscribed to nsqd."),
        ("last_frame_age_seconds", gauges.last_frame_age, "Seconds since nsqd last sent anything."),
        ("backoff_level", gauges.backoff_level, "Consecutive failures the consumer is backing off for."),
        ("draining", int(gauges.draining), "1 while shutting down."),
    )
    for name, value, help_text in simple_gauges:
        full = family(name, "gauge", help_text)
        lines.append(f"{full}{base} {_value(value)}")

    full = family("connection_state", "gauge", "1 for the state the nsqd connection is in.")
    for state in CONNECTION_STATES:
        lines.append(f"{full}{_labels(labels, {'state': state})} {int(state == gauges.connection_state)}")

    histogram = metrics.handler_duration
    full = family("handler_duration_seconds", "histogram", "Time spent in handle_message.")
    for le, count in histogram.cumulative():
        lines.append(f"{full}_bucket{_labels(labels, {'le': le})} {count}")
    lines.append(f"{full}_sum{base} {_value(histogram.sum)}")
    lines.append(f"{full}_count{base} {histogram.count}")
    return "\n".join(lines) + "\n"


def _value(value: float) -> str:
    if isinstance(value, int):
        return str(value)
    return repr(round(value, 6))
