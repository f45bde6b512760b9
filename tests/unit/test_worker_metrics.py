"""The Prometheus text rendering of the worker's counters."""

from __future__ import annotations

import re

from nsq_worker.metrics import CONNECTION_STATES, Gauges, Histogram, Metrics, render

LABELS = {"topic": "t", "channel": "c", "nsqd": "127.0.0.1:4150"}
BASE = '{topic="t",channel="c",nsqd="127.0.0.1:4150"}'


def _gauges(**changes: object) -> Gauges:
    values: dict[str, object] = {
        "in_flight": 3, "queued": 1, "handlers_running": 2, "concurrency": 10, "max_in_flight": 20, "rdy": 20,
        "connection_state": "subscribed", "connected": True, "last_frame_age": 0.25, "backoff_level": 0,
        "draining": False,
    }  # fmt: skip
    values.update(changes)
    return Gauges(**values)  # type: ignore[arg-type]


def test_histogram_is_cumulative_and_counts_the_bucket_edge_in() -> None:
    histogram = Histogram([0.1, 1.0])
    for value in (0.05, 0.1, 0.5, 7.0):
        histogram.observe(value)
    assert histogram.cumulative() == [("0.1", 2), ("1.0", 3), ("+Inf", 4)]
    assert histogram.count == 4
    assert abs(histogram.sum - 7.65) < 1e-9


def test_render_has_every_family_with_help_type_and_labels() -> None:
    metrics = Metrics(received=7, finished=5, requeued=1, given_up=1)
    metrics.handler_duration.observe(0.002)
    text = render(metrics, _gauges(), LABELS)
    assert text.endswith("\n")
    for name, value in [
        ("nsq_worker_messages_received_total", "7"),
        ("nsq_worker_messages_finished_total", "5"),
        ("nsq_worker_messages_requeued_total", "1"),
        ("nsq_worker_messages_given_up_total", "1"),
        ("nsq_worker_messages_in_flight", "3"),
        ("nsq_worker_handlers_running", "2"),
        ("nsq_worker_connected", "1"),
        ("nsq_worker_last_frame_age_seconds", "0.25"),
        ("nsq_worker_handler_duration_seconds_count", "1"),
    ]:
        assert f"{name}{BASE} {value}\n" in text
    assert "# TYPE nsq_worker_handler_duration_seconds histogram" in text
    assert (
        'nsq_worker_handler_duration_seconds_bucket{topic="t",channel="c",nsqd="127.0.0.1:4150",le="+Inf"} 1'
        in text
    )
    labels = 'topic="t",channel="c",nsqd="127.0.0.1:4150"'
    for state in CONNECTION_STATES:
        expected = 1 if state == "subscribed" else 0
        assert f'nsq_worker_connection_state{{{labels},state="{state}"}} {expected}' in text


def test_every_sample_line_is_well_formed() -> None:
    sample = re.compile(r'^[a-z_]+(\{([a-z_]+="[^"\\]*",?)*\})? -?[0-9.e+-]+$|^[a-z_]+\{.*\} [0-9]+$')
    text = render(Metrics(), _gauges(connection_state="draining", draining=True), {"topic": 'we"ird\\'})
    for line in text.splitlines():
        if line.startswith("#"):
            assert re.match(r"^# (HELP|TYPE) nsq_worker_[a-z_]+ .+$", line)
        else:
            assert sample.match(line) or 'we\\"ird\\\\' in line, line
