"""Bad worker settings: exit status 2 before connecting, with a message naming the flag and the variable."""

from __future__ import annotations

import os
import subprocess
import sys

from tests.reliability.support import PROJECT_ROOT, Row

BASE_ENV = {"NSQ_TOPIC": "orders", "NSQ_CHANNEL": "billing", "NSQD_TCP_ADDRESS": "127.0.0.1:1"}
BAD_SETTINGS: list[tuple[list[str], dict[str, str], str]] = [
    ([], {"NSQD_TCP_ADDRESS": "nsqd-without-port"}, "NSQD_TCP_ADDRESS"),
    ([], {"NSQD_TCP_ADDRESS": "127.0.0.1:99999"}, "NSQD_TCP_ADDRESS"),
    ([], {"NSQ_TOPIC": "orders\n"}, "NSQ_TOPIC"),
    ([], {"NSQ_CHANNEL": "c" * 65}, "NSQ_CHANNEL"),
    ([], {"NSQ_CHANNEL": "has space"}, "NSQ_CHANNEL"),
    (["--max-in-flight", "0"], {}, "--max-in-flight"),
    ([], {"NSQ_CONCURRENCY": "100001"}, "NSQ_CONCURRENCY"),
    ([], {"NSQ_MAX_ATTEMPTS": "-1"}, "NSQ_MAX_ATTEMPTS"),
    ([], {"NSQ_REQUEUE_DELAY": "1x"}, "NSQ_REQUEUE_DELAY"),
    ([], {"NSQ_BACKOFF_CAP": "1e999"}, "NSQ_BACKOFF_CAP"),
    ([], {"NSQ_MSG_TIMEOUT": "0.5"}, "NSQ_MSG_TIMEOUT"),
    ([], {"NSQ_HEARTBEAT_INTERVAL": "0"}, "NSQ_HEARTBEAT_INTERVAL"),
    ([], {"NSQ_TOUCH": "maybe"}, "NSQ_TOUCH"),
    ([], {"NSQ_DRAIN_TIMEOUT": "-1"}, "NSQ_DRAIN_TIMEOUT"),
    ([], {"NSQ_HEALTH_PORT": "70000"}, "NSQ_HEALTH_PORT"),
    ([], {"NSQ_LOG_LEVEL": "LOUD"}, "NSQ_LOG_LEVEL"),
    ([], {"NSQ_LOG_FORMAT": "xml"}, "NSQ_LOG_FORMAT"),
    ([], {"NSQ_DEAD_LETTER_TOPIC": "dead letters"}, "NSQ_DEAD_LETTER_TOPIC"),
    ([], {"NSQ_COMPRESSION": "zip"}, "NSQ_COMPRESSION"),
    ([], {"NSQ_AUTH_SECRET_FILE": "/nonexistent/secret"}, "NSQ_AUTH_SECRET_FILE"),
    ([], {"NSQ_TLS": "true", "NSQ_TLS_CERT_FILE": "/etc/hostname"}, "NSQ_TLS_KEY_FILE"),
    ([], {"NSQ_TLS_CA_FILE": "/etc/hostname"}, "NSQ_TLS"),
]


def test_bad_worker_settings_exit_2_naming_the_setting(row: Row) -> None:
    row.order, row.section = 4.6, "Bad input"
    row.scenario = "Bad worker flags and environment variables"
    row.load = f"{len(BAD_SETTINGS)} bad settings, one at a time, `nsq-worker nsq_worker.examples:LogWorker`"
    row.fault = "values out of range, malformed, or contradicting each other"
    clean = {k: v for k, v in os.environ.items() if not k.startswith("NSQ")}
    wrong: list[str] = []
    for argv, env, named in BAD_SETTINGS:
        command = [sys.executable, "-m", "nsq_worker", "nsq_worker.examples:LogWorker", *argv]
        try:
            result = subprocess.run(
                command, env={**clean, "PYTHONPATH": str(PROJECT_ROOT), **BASE_ENV, **env},
                capture_output=True, text=True, timeout=8, check=False,
            )  # fmt: skip
        except subprocess.TimeoutExpired:
            wrong.append(f"{argv or env}: accepted; the worker started instead of exiting 2")
            continue
        if result.returncode != 2 or named not in result.stderr or "Traceback" in result.stderr:
            wrong.append(f"{argv or env}: exit {result.returncode}, stderr {result.stderr.strip()[-200:]!r}")
    row.see(
        f"{len(BAD_SETTINGS) - len(wrong)} of {len(BAD_SETTINGS)} exited 2 before connecting, with one "
        "line naming the flag and variable, e.g. 'nsq-worker: error: --touch / NSQ_TOUCH: 'maybe' is not "
        "true or false'"
    )
    for problem in wrong:
        row.see(f"WRONG: {problem}")
    assert not wrong, wrong
