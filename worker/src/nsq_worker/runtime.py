"""The machinery behind one NsqProcessWorker: connection, handler pool, backoff, drain, health.

It lives in an object of its own so that a user's subclass owns its whole attribute namespace: a
handler class that sets `self.session`, `self.state` or `self.metrics` in `setup()` changes its own
attributes and nothing here. The runtime reaches the user's code only through the documented hooks
(`handle_message`, `preprocess_message`, `validate_message`, `give_up`, `setup`, `teardown`).

Handlers run in a bounded pool of long-lived greenlets that drain a queue the reader fills in
batches, so a no-op handler costs a few microseconds and a slow one never stops the reader from
answering heartbeats.
"""

from __future__ import annotations

import nsq_worker._patch  # noqa: F401

# isort: split

import logging
import os
import random
import signal
import time
from bisect import bisect_left
from collections import OrderedDict, deque
from collections.abc import Sequence
from typing import Any, Protocol

import gevent
from gevent.event import Event
from gevent.hub import Waiter, get_hub
from gevent.pywsgi import WSGIServer
from gnsq.errors import NSQRequeueMessage

from nsq_worker import health, metrics
from nsq_worker.backoff import Action, BackoffState, ReconnectBackoff, requeue_delay
from nsq_worker.handshake import connect, make_ssl_context
from nsq_worker.message import Message
from nsq_worker.session import ConnectionLostError, PublishError, Session
from nsq_worker.settings import Settings

log = logging.getLogger("nsq_worker")

# A worker that has run handlers for this long without yielding lets the reader and writer run,
# so CPU-bound handlers still get their FINs out and heartbeats answered.
TIME_SLICE = 0.02
# ...and also after this many messages, so the writer sends their FINs while the rest of a large
# batch is handled: nsqd refills the RDY window as it goes instead of after the whole batch (the
# way go-nsq's buffered writer flushes every 4 KiB, about 200 FINs).
FLUSH_EVERY = 200
CLOSE_TIMEOUT = 3.0
# Handlers still running when the drain deadline passes are killed; this is how long they get to
# unwind (their `finally` blocks) before teardown() runs anyway.
ABANDON_TIMEOUT = 2.0
# The watchdog greenlet notes the time every WATCHDOG_INTERVAL; a note older than LOOP_STALL_LIMIT
# means the gevent loop stopped turning for that long (see health.py for what a probe then sees).
WATCHDOG_INTERVAL = 1.0
LOOP_STALL_LIMIT = 5.0
# Where the runtime hangs on its worker: a name no subclass picks by accident.
ATTRIBUTE = "_nsq_worker_runtime_"


class Hooks(Protocol):
    """What the runtime calls on the user's worker (NsqProcessWorker's documented methods)."""

    def handle_message(self, reader: Any, message: Message) -> None: ...

    def preprocess_message(self, message: Message) -> Message | None: ...

    def validate_message(self, message: Message) -> bool: ...

    def give_up(self, message: Message) -> None: ...

    def setup(self) -> None: ...

    def teardown(self) -> None: ...


def of(worker: object) -> Runtime:
    """The runtime of a worker instance (for the runner, tools and tests; not for handlers)."""
    runtime: Runtime = object.__getattribute__(worker, ATTRIBUTE)
    return runtime


class Runtime:
    """Runs one worker: consume one topic/channel from one nsqd until drained."""

    def __init__(self, worker: Hooks, settings: Settings, overridden: frozenset[str]) -> None:
        object.__setattr__(worker, ATTRIBUTE, self)
        self.worker = worker
        self.settings = settings
        self.metrics = metrics.Metrics()
        self.session: Session | None = None
        self.state = "starting"
        self.exit_code = 0

        self._queue: deque[Message] = deque()
        self._idle: list[Waiter] = []
        self._pool: set[gevent.Greenlet] = set()
        self._running = 0
        self._wake_scheduled = False
        self._loop = get_hub().loop
        self._backoff = BackoffState(base=settings.requeue_delay, cap=settings.backoff_cap)
        self._backoff_timer: gevent.Greenlet | None = None
        self._draining = False
        self._starting = False
        self._drain_started_at = 0.0
        self._loop_turned_at = time.monotonic()
        self._connection_error = "connecting"
        self._fatal: str | None = None
        self._termination_path = health.termination_message_path()
        self._stop_requested = Event()
        self._stopped = Event()
        self._last_frame_at = time.monotonic()
        self._ssl_context = make_ssl_context(settings) if settings.tls else None
        self._health_server: WSGIServer | None = None
        self._greenlets: list[gevent.Greenlet] = []
        # Decided once: hooks left as they are cost the hot path nothing.
        self._preprocess = "preprocess_message" in overridden
        self._validate = "validate_message" in overridden
        # Ids finished by this process, oldest first (an O(1) ring); None: dedup is off.
        self._finished_ids: OrderedDict[bytes, None] | None = OrderedDict() if settings.dedup_window else None
        labels = {"topic": settings.topic, "channel": settings.channel, "nsqd": settings.nsqd_tcp_address}
        self._exposition = metrics.Exposition(self.metrics, self.gauges, labels)

    # -- starting and stopping ------------------------------------------------------------------

    def start(self) -> None:
        """Serve the probes, run `setup()`, then connect and touch in the background.

        The probes answer first so a slow setup shows as alive but not ready ("starting").
        Raises what `setup()` raised (after saying so in the termination message).
        """
        self._starting = True
        try:
            self._serve_health()
            self._greenlets.append(gevent.spawn(self._watchdog))
            self._run_setup()
        except BaseException:
            self._starting = False
            self._stopped.set()
            if self._health_server is not None:
                self._health_server.stop(timeout=1)
            raise
        self._starting = False
        self._loop_turned_at = time.monotonic()  # a setup that blocked the loop is no liveness problem
        if self._draining:  # a signal came during setup: drain now that setup() is done
            gevent.spawn(self._drain)
            return
        self.state = "connecting"
        connection = gevent.spawn(self._connection_loop)
        connection.link_exception(self._connection_loop_died)
        self._greenlets += [connection, gevent.spawn(self._touch_loop)]

    def _serve_health(self) -> None:
        settings = self.settings
        if not settings.health_port:
            return
        try:
            self._health_server = health.serve(settings.health_host, settings.health_port, self)
        except OSError as error:
            self.last_words(f"health server on {settings.health_host}:{settings.health_port}: {error}")
            raise
        log.info(
            "health and metrics on http://%s:%d", settings.health_host, self._health_server.server_port,
            extra={"port": self._health_server.server_port},
        )  # fmt: skip

    def _run_setup(self) -> None:
        try:
            self.worker.setup()
        except BaseException as error:
            self.last_words(f"setup() failed: {describe(error)}")
            raise

    def install_signal_handlers(self) -> None:
        """SIGTERM/SIGINT drain and exit 0; a second one exits at once."""
        for signum in (signal.SIGTERM, signal.SIGINT):
            gevent.signal_handler(signum, self._on_signal, signum)

    def _on_signal(self, signum: int) -> None:
        name = signal.Signals(signum).name
        if self._draining:
            log.warning("second %s: exiting now; nsqd redelivers what is still in flight", name)
            self.last_words(
                f"second {name} while draining: exited at once; nsqd redelivers what was in flight"
            )
            logging.shutdown()
            os._exit(128 + signum)
        log.info("%s: draining", name, extra={"signal": name})
        self.stop()

    def stop(self) -> None:
        """Stop taking messages, let running handlers finish within the drain timeout, close."""
        if self._draining:
            return
        self._draining = True
        self._drain_started_at = time.monotonic()
        self.state = "draining"
        self._stop_requested.set()
        if not self._starting:  # otherwise start() drains once setup() returns
            gevent.spawn(self._drain)

    def join(self, timeout: float | None = None) -> bool:
        return bool(self._stopped.wait(timeout))

    @property
    def port(self) -> int | None:
        """The health server's port (useful with NSQ_HEALTH_PORT=0, picked by the OS)."""
        return self._health_server.server_port if self._health_server else None

    # -- publishing ----------------------------------------------------------------------------

    def publish(self, topic: str, body: bytes) -> None:
        self._session_for_publish().publish(topic, body)

    def mpublish(self, topic: str, bodies: Sequence[bytes]) -> None:
        self._session_for_publish().mpublish(topic, bodies)

    def dpublish(self, topic: str, body: bytes, delay_ms: int) -> None:
        self._session_for_publish().dpublish(topic, body, delay_ms)

    def _session_for_publish(self) -> Session:
        session = self.session
        if session is None or session.closed:
            self.metrics.publish_errors += 1
            raise PublishError("not connected to nsqd")
        return session

    # -- the connection -------------------------------------------------------------------------

    def _connection_loop(self) -> None:
        """Connect, consume, and on any failure connect again, backing off, until the drain.

        Connections that end soon after SUB count as failures like refused ones, so an nsqd that
        keeps dropping this worker sees it come back less and less often (with jitter), and only a
        connection that stayed up starts the count again.
        """
        settings = self.settings
        backoff = ReconnectBackoff()
        while not self._draining:
            self.state = "connecting"
            try:
                session = connect(settings, self._ssl_context, self, self.metrics)
            except Exception as error:
                backoff.connect_failed()
                delay = backoff.delay(random.random())
                self.state = "disconnected"
                self._connection_error = describe(error)
                log.warning(
                    "cannot subscribe on nsqd %s: %s; retrying in %.1fs",
                    settings.nsqd_tcp_address, describe(error), delay,
                    extra={"retry_in": round(delay, 3), "failures": backoff.failures},
                )  # fmt: skip
                self._stop_requested.wait(delay)
                continue
            if self._draining:
                session.close_gracefully(CLOSE_TIMEOUT)
                break
            subscribed_at = time.monotonic()
            try:
                self._attach(session)
                session.run()
            except ConnectionLostError as error:
                log.warning("lost the connection to nsqd %s: %s", settings.nsqd_tcp_address, error)
                self._connection_error = f"connection lost: {error}"
            except Exception as error:
                log.exception("the connection to nsqd %s failed", settings.nsqd_tcp_address)
                session.close("internal error")
                self._connection_error = f"connection failed: {describe(error)}"
            self._detach(session)
            if self._draining:
                break
            self.metrics.reconnects += 1
            lasted = time.monotonic() - subscribed_at
            backoff.connection_ended(lasted)
            delay = backoff.delay(random.random())
            log.info(
                "reconnecting to nsqd %s in %.2fs (the connection lasted %.1fs; %d short-lived in a row)",
                settings.nsqd_tcp_address, delay, lasted, backoff.failures - 1,
                extra={"retry_in": round(delay, 3), "failures": backoff.failures},
            )  # fmt: skip
            self._stop_requested.wait(delay)

    def _connection_loop_died(self, greenlet: gevent.Greenlet) -> None:
        """A bug ended the reconnecting loop: nothing will consume again, so give up for good."""
        error = greenlet.exception
        log.error("the connection loop failed: %s", describe(error) if error else "?", exc_info=error)
        self._fatal = f"connection loop failed: {describe(error) if error else 'unknown error'}"
        self.exit_code = 1
        self.stop()

    def _attach(self, session: Session) -> None:
        self.session = session
        session.finished_ids = self._finished_ids
        self.state = "subscribed"
        self._connection_error = ""
        self._backoff.reset()
        self._cancel_backoff_timer()
        settings = self.settings
        if settings.max_in_flight > session.max_rdy_count:
            log.warning(
                "max in flight %d is above nsqd's --max-rdy-count %d; using %d",
                settings.max_in_flight, session.max_rdy_count, session.max_rdy_count,
            )  # fmt: skip
        log.info(
            "subscribed to %s/%s on nsqd %s",
            settings.topic, settings.channel, settings.nsqd_tcp_address,
            extra={
                "msg_timeout": session.msg_timeout,
                "max_rdy_count": session.max_rdy_count,
                "max_msg_size": session.max_msg_size,
                "tls": settings.tls,
                "compression": settings.compression,
                "auth": session.auth_response is not None,
            },
        )  # fmt: skip
        self._update_rdy()

    def _detach(self, session: Session) -> None:
        self._last_frame_at = session.last_frame_at
        self.session = None
        self._cancel_backoff_timer()
        # Messages of the lost connection that never reached a handler: nsqd redelivers them.
        self._queue.clear()
        left = [m for m in session.in_flight.values() if not m._responded]
        if left and not self._draining:
            self.state = "disconnected"
            log.warning(
                "%d messages in flight on the lost connection; nsqd redelivers them after msg_timeout",
                len(left), extra={"message_ids": [m.message_id for m in left[:50]]},
            )  # fmt: skip

    def _update_rdy(self) -> None:
        session = self.session
        if session is None or session.closed:
            return
        backoff = self._backoff
        if self._draining or backoff.paused:
            count = 0
        elif backoff.level > 0:
            count = 1
        else:
            count = self.settings.max_in_flight
        session.watch_success = backoff.level > 0 and not backoff.paused
        session.ready(count)
        if not self._draining:
            self.state = "backoff" if backoff.level > 0 else "subscribed"

    # -- backoff (called by the session on results) --------------------------------------------

    def result(self, success: bool) -> None:
        action = self._backoff.success() if success else self._backoff.failure()
        if action is Action.PAUSE:
            pause = self._backoff.pause
            log.info(
                "backing off for %.2fs after failures (level %d)", pause, self._backoff.level,
                extra={"backoff_seconds": pause, "backoff_level": self._backoff.level},
            )  # fmt: skip
            self._cancel_backoff_timer()
            self._backoff_timer = gevent.spawn_later(pause, self._end_pause)
            self._update_rdy()
        elif action is Action.RESUME:
            log.info("backoff over: back to RDY %d", self.settings.max_in_flight)
            self._update_rdy()

    def _end_pause(self) -> None:
        self._backoff_timer = None
        self._backoff.pause_over()
        self._update_rdy()

    def _cancel_backoff_timer(self) -> None:
        if self._backoff_timer is not None:
            self._backoff_timer.kill(block=False)
            self._backoff_timer = None

    # -- handlers -------------------------------------------------------------------------------

    def deliver(self, messages: list[Message]) -> None:
        """Called by the reader with every message of one read."""
        if self._draining:
            for message in messages:
                self._requeue_now(message)
            return
        self._queue.extend(messages)
        if not self._wake_scheduled:
            self._wake_scheduled = True
            self._loop.run_callback(self._wake)

    def _wake(self) -> None:
        # Runs in the hub, i.e. only once the greenlet that scheduled it yields: when a handler blocks
        # or the queue is drained. So a no-op batch is handled by one greenlet without a switch.
        self._wake_scheduled = False
        if not self._queue or self._draining:
            return
        if self._idle:
            self._idle.pop().switch(None)
        elif len(self._pool) < self.settings.concurrency:
            greenlet = gevent.spawn(self._work)
            self._pool.add(greenlet)
            greenlet.link(self._pool.discard)

    def _work(self) -> None:
        queue = self._queue
        idle = self._idle
        perf = time.perf_counter
        durations = self.metrics.handler_duration
        buckets, bounds = durations.counts, durations.bounds
        worker = self.worker
        handle = worker.handle_message
        max_attempts = self.settings.max_attempts
        screened = self._preprocess or self._validate
        finished_ids = self._finished_ids
        screen = self._screen
        slice_start = end = perf()
        handled = 0
        while True:
            if not queue:
                waiter = Waiter()
                idle.append(waiter)
                waiter.get()
                slice_start = perf()
                handled = 0
                continue
            message = queue.popleft()
            if queue and not self._wake_scheduled:
                self._wake_scheduled = True
                self._loop.run_callback(self._wake)
            try:
                if message._responded:
                    continue
                if finished_ids is not None and message.id in finished_ids:
                    self._duplicate(message)
                    continue
                if max_attempts and message.attempts > max_attempts:
                    # Delivered again after its last attempt (it timed out, or another consumer requeued it).
                    self._give_up(message)
                    continue
                if screened:
                    screened_message = screen(message)
                    if screened_message is None:
                        end = perf()
                        continue
                    message = screened_message
                self._running += 1
                start = perf()
                try:
                    handle(worker, message)
                except (Exception, gevent.Timeout) as error:
                    end = perf()
                    self._running -= 1
                    durations.observe(end - start)  # not the hot path: the method, not its inlined copy
                    self._failed(message, error)
                else:
                    end = perf()
                    self._running -= 1
                    buckets[bisect_left(bounds, end - start)] += 1  # Histogram.observe, inlined
                    durations.sum += end - start
                    if not message._responded and not message._async:
                        message._responded = True
                        message._connection.finish(message)
            except Exception:
                # A bug here must not kill the pool greenlet; nsqd redelivers the message after its timeout.
                log.exception(
                    "internal error around message %s",
                    message.message_id,
                    extra={"message_id": message.message_id},
                )
                end = perf()
            handled += 1
            if handled >= FLUSH_EVERY or end - slice_start > TIME_SLICE:
                gevent.sleep(0)
                slice_start = perf()
                handled = 0

    def _duplicate(self, message: Message) -> None:
        """A redelivery of an id this process finished before: finish it, do not handle it again."""
        self.metrics.duplicates += 1
        log.info(
            "message %s was finished by this process before: finished again without handling it",
            message.message_id,
            extra={"message_id": message.message_id, "attempts": message.attempts},
        )
        message._responded = True
        message._connection.finish(message)

    def _screen(self, message: Message) -> Message | None:
        """The opt-in steps before the handler; None when the message was dealt with here."""
        worker = self.worker
        try:
            if self._preprocess:
                returned = worker.preprocess_message(message)
                if returned is not None and returned is not message:
                    raise TypeError(
                        f"preprocess_message must return the message it was given (or None), "
                        f"not {type(returned).__name__}"
                    )
            if self._validate and not worker.validate_message(message):
                self.metrics.invalid += 1
                log.info(
                    "message %s is not valid: finished without handling it",
                    message.message_id,
                    extra={"message_id": message.message_id, "attempts": message.attempts},
                )
                if not message._responded:
                    message._responded = True
                    message._connection.finish(message)
                return None
        except (Exception, gevent.Timeout) as error:
            self._failed(message, error)
            return None
        return message

    def _failed(self, message: Message, error: BaseException) -> None:
        fields: dict[str, Any] = {"message_id": message.message_id, "attempts": message.attempts}
        if message._responded:
            log.error(
                "handler raised after responding to message %s",
                message.message_id,
                exc_info=error,
                extra=fields,
            )
            return
        requested = isinstance(error, NSQRequeueMessage)
        if not requested:
            self.metrics.handler_errors += 1
        settings = self.settings
        max_attempts = settings.max_attempts
        if max_attempts and message.attempts >= max_attempts:
            log.error(
                "handler failed on message %s, attempt %d of %d: giving up",
                message.message_id, message.attempts, max_attempts, exc_info=error, extra=fields,
            )  # fmt: skip
            self._give_up(message)
            return
        delay = requeue_delay(message.attempts, settings.requeue_delay, settings.backoff_cap)
        backoff = True
        if requested:
            backoff = True if error.backoff is None else bool(error.backoff)  # type: ignore[attr-defined]
        log.warning(
            "handler failed on message %s, attempt %d: requeued with a %.2fs delay",
            message.message_id, message.attempts, delay,
            exc_info=None if requested else error, extra={**fields, "delay": delay},
        )  # fmt: skip
        message._responded = True
        message._connection.requeue(message, int(delay * 1000), backoff)

    def _give_up(self, message: Message) -> None:
        try:
            self.worker.give_up(message)
        except (Exception, gevent.Timeout) as error:
            settings = self.settings
            delay = requeue_delay(message.attempts, settings.requeue_delay, settings.backoff_cap)
            log.error(
                "give-up hook failed for message %s; requeued with a %.2fs delay",
                message.message_id, delay, exc_info=error,
                extra={"message_id": message.message_id, "attempts": message.attempts, "delay": delay},
            )  # fmt: skip
            if not message._responded:
                message._responded = True
                message._connection.requeue(message, int(delay * 1000), False)
            return
        self.metrics.given_up += 1
        if not message._responded:
            message._responded = True
            message._connection.finish(message)

    def _requeue_now(self, message: Message) -> None:
        if not message._responded:
            message._responded = True
            message._connection.requeue(message, 0, False)

    # -- keeping long handlers' messages alive --------------------------------------------------

    def _touch_loop(self) -> None:
        while not self._stopped.is_set():
            session = self.session
            self._stopped.wait(max(0.2, session.msg_timeout / 4) if session is not None else 0.5)
            session = self.session
            if not self.settings.touch or session is None or session.closed:
                continue
            threshold = time.monotonic() - session.msg_timeout / 2
            for message in list(session.in_flight.values()):
                if not message._responded and message._touched_at <= threshold:
                    session.touch(message)

    # -- shutdown -------------------------------------------------------------------------------

    def _drain(self) -> None:
        """Drain, then teardown() once no handler runs any more, then say why the worker stopped."""
        finished, requeued = self.metrics.finished, self.metrics.requeued
        problems = [f"gave up: {self._fatal}"] if self._fatal else []
        abandoned = 0
        try:
            abandoned = self._drain_session()
        except Exception as error:
            log.exception("draining failed")
            self.exit_code = 1
            problems.append(f"draining failed: {describe(error)}")
        try:
            self.worker.teardown()
        except Exception as error:
            log.exception("teardown failed")
            self.exit_code = 1
            problems.append(f"teardown() failed: {describe(error)}")
        if self._health_server is not None:
            self._health_server.stop(timeout=1)
        self.state = "closed"
        log.info("stopped", extra=self._counts())
        done = self.metrics.finished - finished, self.metrics.requeued - requeued
        self.last_words(self._exit_reason(problems, abandoned, *done))
        self._stopped.set()

    def _exit_reason(self, problems: list[str], abandoned: int, finished: int, requeued: int) -> str:
        """The termination message: why the worker stopped, then what its drain did (no bodies)."""
        took = time.monotonic() - self._drain_started_at
        counts = f"{finished} finished, {requeued} requeued in {took:.1f}s"
        if abandoned:
            problems.append(f"drain deadline passed: {abandoned} handlers abandoned")
        return f"{'; '.join(problems)}; {counts}" if problems else f"drained: {counts}"

    def last_words(self, reason: str) -> None:
        """Write the termination message (the one line Kubernetes keeps after the container exits)."""
        if health.write_termination_message(self._termination_path, reason):
            log.debug("termination message written to %s", self._termination_path)

    def _busy(self, session: Session | None) -> bool:
        """A handler runs, or a message of the open connection waits for its (async) answer."""
        if self._running:
            return True
        return session is not None and not session.closed and bool(session.in_flight)

    def _drain_session(self) -> int:
        """RDY 0, requeue what waits, wait for running handlers; how many were abandoned.

        teardown() runs after this returns, so it must not return while a handler still runs: at
        the deadline the unanswered messages are requeued and the handlers still running are
        killed (and given a moment to unwind), and the log says which of the two happened.
        """
        self._cancel_backoff_timer()
        self._update_rdy()
        session = self.session
        waiting = len(self._queue)
        while self._queue:
            self._requeue_now(self._queue.popleft())
        in_flight = len(session.in_flight) if session is not None and not session.closed else 0
        log.info(
            "draining: RDY 0, %d queued messages requeued, waiting up to %.1fs for %d in flight and "
            "%d handlers running",
            waiting, self.settings.drain_timeout, in_flight, self._running,
        )  # fmt: skip
        deadline = time.monotonic() + self.settings.drain_timeout
        while self._busy(session) and time.monotonic() < deadline:
            gevent.sleep(0.05)
        left = []
        if session is not None and not session.closed:
            left = [message for message in session.in_flight.values() if not message._responded]
            if left:
                log.warning(
                    "drain timeout: requeueing %d messages whose handlers have not finished", len(left),
                    extra={"message_ids": [m.message_id for m in left[:50]]},
                )  # fmt: skip
                for message in left:
                    self._requeue_now(message)
        running = self._running
        if running:
            log.warning(
                "drain deadline passed: abandoning %d handlers still running (killed) before teardown()",
                running, extra={"abandoned": running},
            )  # fmt: skip
            gevent.killall(list(self._pool), block=True, timeout=ABANDON_TIMEOUT)
            self._running = 0
        else:
            log.info("every handler has finished; closing the connection and running teardown()")
        if session is not None and not session.closed:
            session.close_gracefully(CLOSE_TIMEOUT)
        return max(len(left), running)

    # -- health ---------------------------------------------------------------------------------

    def last_frame_age(self) -> float:
        session = self.session
        last = session.last_frame_at if session is not None else self._last_frame_at
        return time.monotonic() - last

    def _watchdog(self) -> None:
        """Note the time every second: a stale note means the loop stopped turning."""
        while not self._stopped.is_set():
            self._loop_turned_at = time.monotonic()
            self._stopped.wait(WATCHDOG_INTERVAL)

    def healthz(self) -> tuple[bool, dict[str, Any]]:
        """Alive: the loop turns and the worker has not given up. nsqd's state is readiness's."""
        stall = time.monotonic() - self._loop_turned_at
        detail: dict[str, Any] = {
            "state": self.state,
            "loop_stall": round(stall, 3),
            "loop_stall_limit": LOOP_STALL_LIMIT,
            "last_frame_age": round(self.last_frame_age(), 3),
        }
        if self._fatal:
            detail["reason"] = f"gave up: {self._fatal}"
        elif stall > LOOP_STALL_LIMIT:
            detail["reason"] = f"the event loop stalled for {stall:.1f}s (limit {LOOP_STALL_LIMIT:.0f}s)"
        return "reason" not in detail, detail

    def readyz(self) -> tuple[bool, dict[str, Any]]:
        """Ready: subscribed, nsqd's heartbeats arriving, not starting or draining."""
        reason = self._not_ready_reason()
        detail: dict[str, Any] = {"state": self.state, "draining": self._draining}
        if reason:
            detail["reason"] = reason
        return reason is None, detail

    def _not_ready_reason(self) -> str | None:
        if self._starting:
            return "starting: setup() running"
        if self._draining:
            return "stopped" if self._stopped.is_set() else "draining"
        session = self.session
        address = self.settings.nsqd_tcp_address
        if session is None or session.closed:
            error = self._connection_error or (session.close_reason if session else "") or "connecting"
            return f"not connected to nsqd {address}: {error}"
        age = self.last_frame_age()
        interval = self.settings.heartbeat_interval
        if age > 2 * interval + 1.0:
            return f"no frame from nsqd {address} for {age:.1f}s (heartbeats every {interval:g}s)"
        return None

    def gauges(self) -> metrics.Gauges:
        session = self.session
        connected = session is not None and not session.closed
        return metrics.Gauges(
            in_flight=len(session.in_flight) if session is not None else 0,
            queued=len(self._queue),
            handlers_running=self._running,
            concurrency=self.settings.concurrency,
            max_in_flight=self.settings.max_in_flight,
            rdy=session.rdy if session is not None and connected else 0,
            connection_state="connecting" if self.state == "starting" else self.state,
            connected=connected,
            last_frame_age=self.last_frame_age(),
            backoff_level=self._backoff.level,
            draining=self._draining,
        )

    def metrics_exposition(self, accept: str | None) -> tuple[bytes, str]:
        """/metrics in the format the scraper asked for (OpenMetrics or Prometheus text)."""
        return self._exposition.render(accept)

    def _counts(self) -> dict[str, int]:
        m = self.metrics
        return {
            "received": m.received,
            "finished": m.finished,
            "requeued": m.requeued,
            "given_up": m.given_up,
        }


def describe(error: BaseException) -> str:
    text = str(error)
    return f"{type(error).__name__}: {text}" if text else type(error).__name__
