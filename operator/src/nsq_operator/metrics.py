"""The operator's own Prometheus metrics, in a registry of its own (served at /metrics).

Counters and histograms are updated where things happen (a poll, an API call). The per-consumer
gauges are not kept up to date at all: a collector reads them from the scheduler when scraped, so
there is nothing to forget when a consumer goes away.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram, generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector

REGISTRY = CollectorRegistry(auto_describe=True)
CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"

LOOKUPD_POLLS = Counter(
    "nsq_operator_lookupd_polls_total",
    "Lookups of a topic at one nsqlookupd (its URL, credentials redacted), by result (ok or failed).",
    ["lookupd", "result"],
    registry=REGISTRY,
)
LOOKUPD_POLL_SECONDS = Histogram(
    "nsq_operator_lookupd_poll_seconds",
    "How long one lookup of a topic at one nsqlookupd took, failures included.",
    ["lookupd"],
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10),
    registry=REGISTRY,
)
RECONCILES = Counter(
    "nsq_operator_reconciles_total",
    "Reconciles of one NsqConsumer, by result (ok, failed: an API call failed, timeout: past its deadline).",
    ["result"],
    registry=REGISTRY,
)
RECONCILE_SECONDS = Histogram(
    "nsq_operator_reconcile_seconds",
    "How long one reconcile of one NsqConsumer took.",
    buckets=(0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30),
    registry=REGISTRY,
)
API_REQUESTS = Counter(
    "nsq_operator_api_requests_total",
    "Calls to the Kubernetes API, by verb.",
    ["verb"],
    registry=REGISTRY,
)
API_ERRORS = Counter(
    "nsq_operator_api_errors_total",
    "Calls to the Kubernetes API that failed, by verb and HTTP status (none: no answer).",
    ["verb", "status"],
    registry=REGISTRY,
)
LEADER = Gauge(
    "nsq_operator_leader",
    "1 while this operator holds the leader Lease and reconciles, 0 while it stands by.",
    registry=REGISTRY,
)
ROLLOUTS_IN_PROGRESS = Gauge(
    "nsq_operator_rollouts_in_progress",
    "Worker Deployments rolling out now (or given a place for a new pod template), operator-wide.",
    registry=REGISTRY,
)
ROLLOUT_LIMIT = Gauge(
    "nsq_operator_rollout_limit",
    "At most this many worker Deployments roll out a new pod template at once (0: no limit).",
    registry=REGISTRY,
)
ROLLOUTS_STARTED = Counter(
    "nsq_operator_rollouts_started_total",
    "New pod templates written to existing worker Deployments, each within the rollout budget.",
    registry=REGISTRY,
)

NSQD_STATS_READS = Counter(
    "nsq_operator_nsqd_stats_reads_total",
    "Reads of one topic's /stats at one nsqd, for the autoscaler (one per nsqd and topic per poll).",
    registry=REGISTRY,
)


@dataclass(frozen=True)
class NsqdFigures:
    """The autoscaler's numbers for one nsqd of a consumer (None: its stats were unreadable)."""

    address: str
    depth: int | None
    in_flight: int | None
    replicas: int | None
    desired_replicas: int


@dataclass(frozen=True)
class ConsumerFigures:
    namespace: str
    name: str
    deployments: int
    ready_workers: int
    nsqds: tuple[NsqdFigures, ...] = ()  # only while the operator autoscales the consumer
    rollout_waiting: int = 0  # Deployments whose new pod template waits for the rollout budget


class ConsumerCollector(Collector):
    """Deployments and ready workers per consumer, read from live state at scrape time."""

    def __init__(self, read: Callable[[], Iterable[ConsumerFigures]]) -> None:
        self._read = read

    def collect(self) -> Iterator[GaugeMetricFamily]:
        deployments = GaugeMetricFamily(
            "nsq_operator_deployments",
            "Worker Deployments of an NsqConsumer (one per nsqd).",
            labels=["namespace", "consumer"],
        )
        ready = GaugeMetricFamily(
            "nsq_operator_ready_workers",
            "Ready worker pods of an NsqConsumer, over all its nsqd.",
            labels=["namespace", "consumer"],
        )
        per_nsqd = ["namespace", "consumer", "nsqd"]
        depth = GaugeMetricFamily(
            "nsq_operator_nsqd_depth",
            "Messages waiting in the consumer's channel on one nsqd.",
            labels=per_nsqd,
        )
        in_flight = GaugeMetricFamily(
            "nsq_operator_nsqd_in_flight",
            "Messages of the consumer's channel in flight to its workers on one nsqd.",
            labels=per_nsqd,
        )
        replicas = GaugeMetricFamily(
            "nsq_operator_nsqd_replicas",
            "Replicas of one nsqd's worker Deployment, as the autoscaler found them.",
            labels=per_nsqd,
        )
        desired = GaugeMetricFamily(
            "nsq_operator_nsqd_desired_replicas",
            "Replicas the autoscaler wants for one nsqd's worker Deployment.",
            labels=per_nsqd,
        )
        waiting = GaugeMetricFamily(
            "nsq_operator_rollout_waiting_deployments",
            "Worker Deployments of an NsqConsumer whose new pod template waits for the rollout budget.",
            labels=["namespace", "consumer"],
        )
        for figures in self._read():
            waiting.add_metric([figures.namespace, figures.name], figures.rollout_waiting)
            deployments.add_metric([figures.namespace, figures.name], figures.deployments)
            ready.add_metric([figures.namespace, figures.name], figures.ready_workers)
            for nsqd in figures.nsqds:
                labels = [figures.namespace, figures.name, nsqd.address]
                if nsqd.depth is not None:
                    depth.add_metric(labels, nsqd.depth)
                if nsqd.in_flight is not None:
                    in_flight.add_metric(labels, nsqd.in_flight)
                replicas.add_metric(labels, nsqd.replicas or 0)
                desired.add_metric(labels, nsqd.desired_replicas)
        yield from (deployments, ready, depth, in_flight, replicas, desired, waiting)


def watch_consumers(read: Callable[[], Iterable[ConsumerFigures]]) -> Collector:
    """Register the per-consumer collector (once per process: a second would duplicate the series)."""
    collector = ConsumerCollector(read)
    REGISTRY.register(collector)
    return collector


def exposition() -> bytes:
    return generate_latest(REGISTRY)
