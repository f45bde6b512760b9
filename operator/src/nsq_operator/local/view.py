"""What a person sees while local mode runs: a table redrawn in place on a terminal, plain lines otherwise."""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TextIO

import requests

_SAMPLE = re.compile(r"^(nsq_worker_[a-z_]+)(?:\{[^}]*\})? (\S+)$", re.MULTILINE)


def parse_metrics(text: str) -> dict[str, float]:
    """The unlabelled view of a worker's /metrics: family name -> value (labels dropped, last wins)."""
    return {name: float(value) for name, value in _SAMPLE.findall(text)}


def scrape(port: int, timeout: float = 0.3) -> dict[str, float] | None:
    """A worker's metrics, or None when it does not answer (starting, stopping, wedged)."""
    try:
        response = requests.get(f"http://127.0.0.1:{port}/metrics", timeout=timeout)
    except requests.RequestException:
        return None
    return parse_metrics(response.text) if response.status_code == 200 else None


@dataclass(frozen=True)
class Row:
    address: str
    worker: str
    state: str
    pid: int | None
    core: int | None
    restarts: int
    rate: float | None  # messages finished per second since the last refresh
    in_flight: int | None
    finished: int | None


def render_table(rows: Sequence[Row], header: str) -> str:
    """The table, one row per nsqd (pure, so it is tested without a terminal)."""
    lines = [header, ""]
    fmt = "{:<24} {:<11} {:>8} {:>5} {:>9} {:>10} {:>10} {:>12}"
    lines.append(fmt.format("NSQD", "STATE", "PID", "CORE", "RESTARTS", "MSG/S", "IN-FLIGHT", "FINISHED"))
    for row in sorted(rows, key=lambda r: r.address):
        lines.append(
            fmt.format(
                row.address[:24],
                row.state,
                _or_dash(row.pid),
                _or_dash(row.core),
                row.restarts,
                "-" if row.rate is None else f"{row.rate:,.0f}",
                _or_dash(row.in_flight),
                _or_dash(row.finished),
            )
        )
    if not rows:
        lines.append("(no nsqd has the topic yet)")
    return "\n".join(lines)


def _or_dash(value: int | None) -> str:
    return "-" if value is None else f"{value:,}"


class View:
    """Live (ANSI redraw in place) when `stream` is a terminal; otherwise a summary line now and then."""

    def __init__(self, stream: TextIO, live: bool, summary_every: float = 10.0) -> None:
        self.stream = stream
        self.live = live
        self.summary_every = summary_every
        self._last_summary = float("-inf")

    def show(self, rows: Sequence[Row], header: str, events: Sequence[str], now: float) -> None:
        if self.live:
            recent = "\n".join(f"  {event}" for event in list(events)[-8:])
            # Home the cursor and clear the screen, then draw: a flicker-free enough refresh.
            self.stream.write(
                "\x1b[H\x1b[2J" + render_table(rows, header) + "\n\nRecent events:\n" + recent + "\n"
            )
            self.stream.flush()
        elif now - self._last_summary >= self.summary_every:
            self._last_summary = now
            total = sum(r.rate or 0 for r in rows)
            parts = ", ".join(
                f"{r.address} {r.state} {r.rate or 0:.0f}/s" for r in sorted(rows, key=lambda r: r.address)
            )
            self.stream.write(f"{header}: {len(rows)} workers, {total:,.0f} msg/s [{parts}]\n")
            self.stream.flush()
