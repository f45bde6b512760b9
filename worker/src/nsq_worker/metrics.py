"""Plain counters updated on the hot path; prometheus_client turns them into /metrics on demand.

prometheus_client's own Counter takes a lock and walks label dicts on every increment; an
attribute `+= 1` is an order of magnitude cheaper, and one process serves one (topic, channel,
nsqd), so every sample carries the same constant labels. A custom collector reads the counters
when scraped and yields metric families, so the exposition (escaping, the Prometheus text format
and OpenMetrics) is the library's.
"""

from __future__ import annotations

import math
from bisect import bisect_left
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field

from prometheus_client.exposition import choose_encoder
from prometheus_client.metrics_core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

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
    """Per-bucket counts (not cumulative) and their sum; cumulated when rendered.

    The hot path may inline `observe` (`counts[bisect_left(bounds, v)] += 1; sum += v`): the count
    is derived from the buckets, so those two updates are the whole of it.
    """

    __slots__ = ("bounds", "counts", "sum")

    def __init__(self, bounds: Iterable[float] = DURATION_BUCKETS) -> None:
        self.bounds = tuple(sorted(bounds))
        self.counts = [0] * (len(self.bounds) + 1)
        self.sum = 0.0

    @property
    def count(self) -> int:
        return sum(self.counts)

    def observe(self, value: float) -> None:
        self.counts[bisect_left(self.bounds, value)] += 1
        self.sum += value

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
    """A bucket bound as Prometheus spells it: 0.1, 1.0, +Inf."""
    if math.isinf(value):
        return "+Inf" if value > 0 else "-Inf"
    if float(value).is_integer():
        return f"{value:.1f}"
    return repr(float(value))


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

_GAUGES: tuple[tuple[str, str, str], ...] = (
    ("messages_in_flight", "in_flight", "Messages received and not yet finished or requeued."),
    ("messages_queued", "queued", "Messages waiting for a free handler."),
    ("handlers_running", "handlers_running", "Handler calls running right now."),
    ("concurrency", "concurrency", "The most handler calls allowed at once."),
    ("max_in_flight", "max_in_flight", "The most messages allowed in flight."),
    ("rdy", "rdy", "The RDY count last sent to nsqd."),
    ("connected", "connected", "1 while subscribed to nsqd."),
    ("last_frame_age_seconds", "last_frame_age", "Seconds since nsqd last sent anything."),
    ("backoff_level", "backoff_level", "Consecutive failures the consumer is backing off for."),
    ("draining", "draining", "1 while shutting down."),
)


class WorkerCollector(Collector):
    """Yields the worker's metric families from its plain counters and a gauge snapshot."""

    def __init__(self, metrics: Metrics, gauges: Callable[[], Gauges], labels: Mapping[str, str]) -> None:
        self.metrics = metrics
        self.gauges = gauges
        self.label_names = list(labels)
        self.label_values = list(labels.values())

    def collect(self) -> Iterator[Metric]:
        names, values = self.label_names, self.label_values
        for name, attribute, help_text in _COUNTERS:
            counter = CounterMetricFamily(PREFIX + name, help_text, labels=names)
            counter.add_metric(values, getattr(self.metrics, attribute))
            yield counter
        gauges = self.gauges()
        for name, attribute, help_text in _GAUGES:
            gauge = GaugeMetricFamily(PREFIX + name, help_text, labels=names)
            gauge.add_metric(values, float(getattr(gauges, attribute)))
            yield gauge
        state = GaugeMetricFamily(
            PREFIX + "connection_state",
            "1 for the state the nsqd connection is in.",
            labels=[*names, "state"],
        )
        for name in CONNECTION_STATES:
            state.add_metric([*values, name], float(name == gauges.connection_state))
        yield state
        histogram = self.metrics.handler_duration
        family = HistogramMetricFamily(
            PREFIX + "handler_duration_seconds", "Time spent in handle_message.", labels=names
        )
        family.add_metric(values, histogram.cumulative(), histogram.sum)
        yield family


class Exposition:
    """One worker's /metrics: a registry of its own holding only its collector."""

    def __init__(self, metrics: Metrics, gauges: Callable[[], Gauges], labels: Mapping[str, str]) -> None:
        self.registry = CollectorRegistry(auto_describe=False)
        self.registry.register(WorkerCollector(metrics, gauges, labels))

    def render(self, accept: str | None = None) -> tuple[bytes, str]:
        """(body, content type) in the format `accept` asks for: OpenMetrics or Prometheus text."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type


def render(metrics: Metrics, gauges: Gauges, labels: Mapping[str, str]) -> str:
    """The Prometheus text exposition (format 0.0.4) of one worker."""
    body, _ = Exposition(metrics, lambda: gauges, labels).render()
    return body.decode()
