"""NsqProcessWorker: gnsq_mp's API on a consumer built for one nsqd and many messages a second.

Subclass it, define `handle_message(self, reader, message)`, call `MyWorker.run(block=True)`.
Returning finishes the message; raising requeues it with a growing delay; past max attempts the
`give_up` hook runs.

The class is small on purpose: its machinery (connection, settings, state, metrics, pool) lives
in a private runtime object (nsq_worker.runtime), so a subclass owns every attribute name but the
documented ones below, and `self.session = requests.Session()` in `setup()` breaks nothing.
"""

from __future__ import annotations

import nsq_worker._patch  # noqa: F401

# isort: split

import logging
from collections.abc import Mapping, Sequence
from typing import Any, ClassVar

from nsq_worker import runner, runtime
from nsq_worker.message import Message
from nsq_worker.settings import Settings

log = logging.getLogger("nsq_worker")

_HOOKS = ("preprocess_message", "validate_message")


class NsqProcessWorker:
    """Consume one topic/channel from one nsqd. Override `handle_message`; maybe the other hooks.

    Documented names, the only ones the worker defines on an instance: `topic`, `channel`,
    `nsqd_tcp_address` (and gnsq_mp's `nsqd_addr`), `settings` (a copy for reading; the worker
    never reads it back), the hooks, `publish`/`mpublish`/`dpublish`, and the control methods
    `run`, `start`, `stop`, `join`, `install_signal_handlers`.
    """

    #: gnsq_mp exposed the running instance's reader as a class attribute; kept for old handlers.
    reader: ClassVar[NsqProcessWorker | None] = None

    def __init__(self, settings: Settings) -> None:
        self.topic = settings.topic
        self.channel = settings.channel
        self.nsqd_tcp_address = settings.nsqd_tcp_address
        self.nsqd_addr = settings.nsqd_tcp_address  # gnsq_mp's name
        self.settings = settings
        cls = type(self)
        overridden = frozenset(
            name for name in _HOOKS if getattr(cls, name) is not getattr(NsqProcessWorker, name)
        )
        runtime.Runtime(self, settings, overridden)

    # -- what subclasses override -------------------------------------------------------------

    def handle_message(self, reader: NsqProcessWorker, message: Message) -> None:
        """Handle one message. Return to finish it, raise to requeue it (gnsq_mp's signature)."""
        raise NotImplementedError(f"{type(self).__name__} must define handle_message(self, reader, message)")

    def preprocess_message(self, message: Message) -> Message | None:
        """Runs before `validate_message` and the handler, e.g. to decode or decrypt the body once.

        Assign `message.body` to replace the body the handler sees, and return `message` (None
        means the same). Anything else returned is a failure. Raising fails the message as a
        handler would (requeue, then give-up).
        """
        return message

    def validate_message(self, message: Message) -> bool:
        """False finishes the message without calling the handler (logged, counted as invalid).

        Raising fails the message as a handler would (requeue, then give-up).
        """
        return True

    def give_up(self, message: Message) -> None:
        """A message failed max_attempts times. Log it and dead-letter it; then it is finished.

        The log line has the body's size, and its first `log_body_preview` bytes only when that
        setting asks for them (by default none: a body may hold what no log should).
        Raise to keep the message instead (it is requeued and comes back here later).
        """
        settings = runtime.of(self).settings
        fields: dict[str, Any] = {
            "message_id": message.message_id,
            "attempts": message.attempts,
            "body_bytes": len(message.body),
            "dead_letter_topic": settings.dead_letter_topic,
        }
        if settings.log_body_preview > 0:
            fields["body"] = message.body[: settings.log_body_preview].decode("utf-8", "backslashreplace")
        log.error(
            "giving up on message %s after %d attempts", message.message_id, message.attempts, extra=fields
        )
        if settings.dead_letter_topic:
            self.publish(settings.dead_letter_topic, message.body)

    def setup(self) -> None:
        """Runs once before connecting (open clients, warm caches). Raising stops the worker."""

    def teardown(self) -> None:
        """Runs once on shutdown, after every handler has finished (or been abandoned at the deadline)."""

    # -- publishing from handlers --------------------------------------------------------------

    def publish(self, topic: str, body: bytes) -> None:
        """PUB to `topic` on this worker's nsqd and wait for its OK (raises PublishError)."""
        runtime.of(self).publish(topic, body)

    def mpublish(self, topic: str, bodies: Sequence[bytes]) -> None:
        """MPUB `bodies` to `topic` in one command (all or none) and wait for nsqd's OK."""
        runtime.of(self).mpublish(topic, bodies)

    def dpublish(self, topic: str, body: bytes, delay_ms: int) -> None:
        """DPUB: nsqd delivers `body` on `topic` after `delay_ms` milliseconds; waits for its OK."""
        runtime.of(self).dpublish(topic, body, delay_ms)

    # -- running ------------------------------------------------------------------------------

    @classmethod
    def run(
        cls,
        block: bool = True,
        argv: Sequence[str] | None = None,
        environ: Mapping[str, str] | None = None,
    ) -> NsqProcessWorker:
        """Read settings from the command line and environment, start, and (block=True) serve until a
        signal; then exit the process with the worker's status. block=False returns the started worker.
        """
        started: NsqProcessWorker = runner.run_class(cls, argv, environ, block=block)
        return started

    def start(self) -> None:
        """Serve the probes, run `setup()`, then connect in the background (returns at once)."""
        NsqProcessWorker.reader = self
        runtime.of(self).start()

    def stop(self) -> None:
        """Stop taking messages, let running handlers finish within the drain timeout, then close
        and run `teardown()`. Returns at once; `join()` waits."""
        runtime.of(self).stop()

    def join(self, timeout: float | None = None) -> bool:
        """Wait until the worker has stopped; False when `timeout` passed first."""
        return runtime.of(self).join(timeout)

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT drain and exit 0; a second one exits at once."""
        runtime.of(self).install_signal_handlers()
