"""The worker's /metrics: plain counters exposed through prometheus_client's own formats."""

from __future__ import annotations

from prometheus_client.openmetrics.parser import text_string_to_metric_families as parse_openmetrics
from prometheus_client.parser import text_string_to_metric_families

from nsq_worker.metrics import CONNECTION_STATES, Exposition, Gauges, Histogram, Metrics, render

LABELS = {"topic": "t", "channel": "c", "nsqd": "127.0.0.1:4150"}


def _gauges(**changes: object) -> Gauges:
    values: dict[str, object] = {
        "in_flight": 3, "queued": 1, "handlers_running": 2, "concurrency": 10, "max_in_flight": 20, "rdy": 20,
        "connection_state": "subscribed", "connected": True, "last_frame_age": 0.25, "backoff_level": 0,
        "draining": False,
    }  # fmt: skip
    values.update(changes)
    return Gauges(**values)  # type: ignore[arg-type]


def _samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def _key(name: str, **extra: str) -> tuple[str, tuple[tuple[str, str], ...]]:
    return name, tuple(sorted({**LABELS, **extra}.items()))


def test_histogram_is_cumulative_and_counts_the_bucket_edge_in() -> None:
    histogram = Histogram([0.1, 1.0])
    for value in (0.05, 0.1, 0.5, 7.0):
        histogram.observe(value)
    assert histogram.cumulative() == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert histogram.count == 4
    assert abs(histogram.sum - 7.65) < 1e-9


def test_every_family_keeps_its_name_type_and_labels() -> None:
    metrics = Metrics(received=7, finished=5, requeued=1, given_up=1, duplicates=2)
    metrics.handler_duration.observe(0.002)
    text = render(metrics, _gauges(), LABELS)
    samples = _samples(text)
    for name, value in [
        ("nsq_worker_messages_received_total", 7),
        ("nsq_worker_messages_finished_total", 5),
        ("nsq_worker_messages_requeued_total", 1),
        ("nsq_worker_messages_given_up_total", 1),
        ("nsq_worker_duplicates_total", 2),
        ("nsq_worker_messages_in_flight", 3),
        ("nsq_worker_handlers_running", 2),
        ("nsq_worker_connected", 1),
        ("nsq_worker_last_frame_age_seconds", 0.25),
        ("nsq_worker_handler_duration_seconds_count", 1),
        ("nsq_worker_handler_duration_seconds_sum", 0.002),
    ]:
        assert samples[_key(name)] == value, name
    assert "# TYPE nsq_worker_handler_duration_seconds histogram" in text
    assert "# TYPE nsq_worker_messages_received_total counter" in text
    assert samples[_key("nsq_worker_handler_duration_seconds_bucket", le="+Inf")] == 1
    assert samples[_key("nsq_worker_handler_duration_seconds_bucket", le="0.0025")] == 1
    assert samples[_key("nsq_worker_handler_duration_seconds_bucket", le="0.001")] == 0
    for state in CONNECTION_STATES:
        assert samples[_key("nsq_worker_connection_state", state=state)] == (state == "subscribed")


def test_label_values_are_escaped_by_the_library() -> None:
    weird = {"topic": 'we"ird\\\nname', "channel": "c", "nsqd": "a:1"}
    text = render(Metrics(received=1), _gauges(), weird)
    parsed = [s for f in text_string_to_metric_families(text) for s in f.samples]
    assert parsed
    assert all(sample.labels["topic"] == weird["topic"] for sample in parsed)


def test_openmetrics_when_the_scraper_asks_for_it() -> None:
    exposition = Exposition(Metrics(received=4), _gauges, LABELS)
    body, content_type = exposition.render("application/openmetrics-text; version=1.0.0")
    assert content_type.startswith("application/openmetrics-text")
    text = body.decode()
    assert text.endswith("# EOF\n")
    families = {family.name: family for family in parse_openmetrics(text)}  # type: ignore[no-untyped-call]
    received = families["nsq_worker_messages_received"]
    assert received.type == "counter"
    assert received.samples[0].value == 4
    plain, plain_type = exposition.render(None)
    assert plain_type.startswith("text/plain")
    assert b"# EOF" not in plain
