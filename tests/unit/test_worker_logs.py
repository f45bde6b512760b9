"""Log lines carry the message id and friends as fields."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest

from nsq_worker import logs


@pytest.fixture(autouse=True)
def _restore_root_logger() -> Iterator[None]:
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)


def test_json_lines_with_static_and_extra_fields() -> None:
    stream = io.StringIO()
    logs.setup("json", "INFO", static={"topic": "t"}, stream=stream)
    logger = logging.getLogger("nsq_worker.test")
    try:
        raise ValueError("boom")
    except ValueError:
        logger.exception("handler failed on message %s", "abc", extra={"message_id": "abc", "attempts": 2})
    logger.debug("not shown")
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    record = json.loads(lines[0])
    assert record["message"] == "handler failed on message abc"
    assert (record["level"], record["logger"], record["topic"]) == ("error", "nsq_worker.test", "t")
    assert (record["message_id"], record["attempts"]) == ("abc", 2)
    assert record["error"] == "ValueError: boom"
    assert "Traceback" in record["traceback"]
    assert record["time"].endswith("+00:00")


def test_text_lines() -> None:
    stream = io.StringIO()
    logs.setup("text", "DEBUG", stream=stream)
    logging.getLogger("nsq_worker.test").info("requeued", extra={"message_id": "abc"})
    assert stream.getvalue().rstrip().endswith("INFO nsq_worker.test: requeued message_id=abc")
