"""Pure pieces of local mode: the restart backoff, the metrics reader and the table."""

from __future__ import annotations

import io

import pytest

from nsq_operator.local.supervisor import RestartPolicy
from nsq_operator.local.view import Row, View, parse_metrics, render_table


@pytest.mark.parametrize(
    ("failures", "delay"), [(0, 1.0), (1, 1.0), (2, 2.0), (3, 4.0), (7, 60.0), (30, 60.0)]
)
def test_restart_delay_doubles_up_to_the_cap(failures: int, delay: float) -> None:
    assert RestartPolicy(initial=1.0, cap=60.0).delay(failures) == delay


def test_parse_metrics_drops_labels_and_ignores_comments() -> None:
    text = (
        "# HELP nsq_worker_messages_finished_total Messages finished.\n"
        "# TYPE nsq_worker_messages_finished_total counter\n"
        'nsq_worker_messages_finished_total{topic="t",channel="c"} 1234\n'
        "nsq_worker_messages_in_flight 7\n"
        "other_metric 5\n"
    )
    assert parse_metrics(text) == {
        "nsq_worker_messages_finished_total": 1234.0,
        "nsq_worker_messages_in_flight": 7.0,
    }


def row(address: str, state: str = "running", rate: float | None = 10.0) -> Row:
    return Row(address, f"w-{address}", state, 42, 1, 2, rate, 3, 100)


def test_table_has_one_row_per_nsqd_in_address_order() -> None:
    table = render_table([row("127.0.0.1:4152"), row("127.0.0.1:4150", "backoff", None)], "header")
    lines = table.splitlines()
    assert lines[0] == "header"
    assert lines[2].split()[:3] == ["NSQD", "STATE", "PID"]
    assert lines[3].split()[:2] == ["127.0.0.1:4150", "backoff"]
    assert lines[3].split()[5] == "-"  # no rate yet
    assert lines[4].split()[:2] == ["127.0.0.1:4152", "running"]


def test_table_says_when_no_nsqd_has_the_topic() -> None:
    assert "no nsqd has the topic yet" in render_table([], "header")


def test_live_view_redraws_in_place_and_plain_view_prints_a_summary_now_and_then() -> None:
    live, plain = io.StringIO(), io.StringIO()
    View(live, live=True).show([row("a:1")], "h", ["started"], now=0.0)
    assert live.getvalue().startswith("\x1b[H\x1b[2J")
    assert "started" in live.getvalue()
    view = View(plain, live=False, summary_every=10.0)
    for now in (0.0, 5.0, 10.0):
        view.show([row("a:1")], "h", [], now=now)
    assert plain.getvalue().count("\n") == 2
    assert "\x1b" not in plain.getvalue()
    assert "1 workers, 10 msg/s" in plain.getvalue()
