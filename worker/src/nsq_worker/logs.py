"""Structured logs: one JSON object per line for collectors, or readable text at a terminal.

Anything passed as `extra=` (message_id, attempts, delay, ...) becomes a field, so a failing
message can be found by its id. Every line also carries the topic, channel and nsqd.
"""

from __future__ import annotations

import json
import logging
import sys
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, TextIO

_RESERVED = frozenset(logging.LogRecord("", 0, "", 0, "", (), None).__dict__) | {
    "message",
    "asctime",
    "taskName",
}


def record_fields(record: logging.LogRecord) -> dict[str, Any]:
    """The `extra=` fields of a record."""
    return {
        key: value
        for key, value in record.__dict__.items()
        if key not in _RESERVED and not key.startswith("_")
    }


class JsonFormatter(logging.Formatter):
    """{"time", "level", "logger", "message", <static fields>, <extra fields>, "error"?, "traceback"?}."""

    def __init__(self, static: Mapping[str, Any] | None = None) -> None:
        super().__init__()
        self.static = dict(static or {})

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds"),
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
            **self.static,
            **record_fields(record),
        }
        if record.exc_info and record.exc_info[1] is not None:
            error = record.exc_info[1]
            data["error"] = f"{type(error).__name__}: {error}"
            data["traceback"] = self.formatException(record.exc_info)
        return json.dumps(data, default=str, ensure_ascii=False)


class TextFormatter(logging.Formatter):
    """`time LEVEL logger: message key=value ...`, then the traceback."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s: %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        text = super().format(record)
        extras = record_fields(record)
        if extras:
            first, sep, rest = text.partition("\n")
            first += " " + " ".join(f"{key}={value}" for key, value in extras.items())
            text = first + sep + rest
        return text


def setup(
    log_format: str, level: str, static: Mapping[str, Any] | None = None, stream: TextIO | None = None
) -> None:
    """Route every logger to stderr in the chosen format (replacing earlier handlers)."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter(static) if log_format == "json" else TextFormatter())
    root = logging.getLogger()
    for old in list(root.handlers):
        root.removeHandler(old)
    root.addHandler(handler)
    root.setLevel(level)
    # gnsq logs every connection detail at INFO; keep it for DEBUG runs only.
    logging.getLogger("gnsq").setLevel(max(logging.getLevelName(level), logging.WARNING))
