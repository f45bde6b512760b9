"""The local control loop: poll lookupd, plan with the operator's planner, run one process per nsqd."""

from __future__ import annotations

import hashlib
import logging
import os
import signal
import socket
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from types import FrameType

from nsq_operator.local.supervisor import RestartPolicy, Slot, Supervisor
from nsq_operator.local.view import Row, View, scrape
from nsq_operator.lookupd import lookup, redact
from nsq_operator.naming import worker_name
from nsq_operator.plan import Create, Delete, NsqdRecord, Scale, Target, Update, Worker, plan

log = logging.getLogger("nsq_operator.local")


@dataclass(frozen=True)
class LocalConfig:
    lookupds: tuple[str, ...]
    topic: str
    channel: str
    argv: tuple[str, ...]  # the worker command; it reads the same environment a worker pod gets
    log_dir: Path
    poll_interval: float = 5.0
    removal_grace: float = 30.0
    drain_timeout: float = 30.0
    pin: bool = True
    extra_env: Mapping[str, str] = field(default_factory=dict)
    policy: RestartPolicy = field(default_factory=RestartPolicy)


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class LocalController:
    """One instance per topic/channel; `run` blocks until SIGTERM or SIGINT, then drains and returns 0."""

    def __init__(self, config: LocalConfig, view: View, clock: Callable[[], float] = time.monotonic) -> None:
        self.config = config
        self.view = view
        self.clock = clock
        config.log_dir.mkdir(parents=True, exist_ok=True)
        self.supervisor = Supervisor(
            config.argv,
            self._env_for,
            config.log_dir,
            config.policy,
            config.drain_timeout,
            pin=config.pin,
            clock=clock,
        )
        self.records: dict[str, NsqdRecord] = {}
        fingerprint = hashlib.sha256("\0".join(config.argv).encode()).hexdigest()[:16]
        consumer = f"{config.topic}-{config.channel}".replace("#", "-")
        self.target = Target(
            name=lambda address: worker_name(consumer, address),
            fingerprint=lambda _address: fingerprint,
            replicas=1,
        )
        self._fingerprint = fingerprint
        self._failures: tuple[str, ...] = ()
        self._rates: dict[str, tuple[float, float]] = {}
        self._signals = 0

    def _env_for(self, slot: Slot) -> dict[str, str]:
        """The environment contract of a worker pod, plus this machine's environment."""
        # The worker's own drain deadline comes first, so the controller's SIGKILL is only a backstop.
        drain = max(1.0, self.config.drain_timeout - 5.0)
        return {
            **os.environ,
            **self.config.extra_env,
            "NSQ_TOPIC": self.config.topic,
            "NSQ_CHANNEL": self.config.channel,
            "NSQD_TCP_ADDRESS": slot.address,
            "NSQ_HEALTH_PORT": str(slot.health_port),
            "NSQ_HEALTH_HOST": "127.0.0.1",
            "NSQ_DRAIN_TIMEOUT": f"{drain:g}",
        }

    def poll(self) -> None:
        """One level-based pass: what lookupd lists against what runs."""
        answer = lookup(self.config.lookupds, self.config.topic)
        failures = tuple(f"{redact(f.lookupd)}: {f.reason}" for f in answer.failures)
        if failures != self._failures:
            for failure in failures:
                self.supervisor.event(logging.WARNING, f"lookupd unreachable or unusable: {failure}")
            if self._failures and not failures:
                self.supervisor.event(logging.INFO, "every lookupd answers again")
            self._failures = failures
        workers = [
            Worker(slot.name, slot.address, slot.fingerprint, 1) for slot in self.supervisor.slots.values()
        ]
        result = plan(
            answer.producers,
            workers,
            self.records,
            self.target,
            datetime.now(UTC),
            timedelta(seconds=self.config.removal_grace),
        )
        self._report_grace(result.nsqds)
        self.records = {record.address: record for record in result.nsqds}
        for action in result.actions:
            if isinstance(action, Create):
                self.supervisor.event(logging.INFO, f"nsqd {action.address} has topic {self.config.topic!r}")
                self.supervisor.add(action.name, action.address, self._fingerprint, _free_port())
            elif isinstance(action, Delete):
                self.supervisor.stop(action.name, action.reason)
            elif isinstance(action, Update):
                self.supervisor.stop(action.name, "its command changed")
                self.supervisor.add(action.name, action.address, self._fingerprint, _free_port())
            elif isinstance(action, Scale):
                pass  # one process per nsqd: there is nothing to scale locally

    def _report_grace(self, records: tuple[NsqdRecord, ...]) -> None:
        """Say when an nsqd drops out of lookupd (its worker stays for the grace) and when it returns."""
        for record in records:
            old = self.records.get(record.address)
            was_missing = old is not None and old.missing_since is not None
            if record.missing_since is not None and not was_missing:
                self.supervisor.event(
                    logging.INFO,
                    f"nsqd {record.address} is no longer listed by lookupd; "
                    f"its worker stays for {self.config.removal_grace:g}s",
                )
            elif record.missing_since is None and was_missing:
                self.supervisor.event(logging.INFO, f"nsqd {record.address} is back; its worker carries on")

    def rows(self) -> list[Row]:
        now = self.clock()
        rows = []
        for slot in [*self.supervisor.slots.values(), *self.supervisor.retiring]:
            metrics = scrape(slot.health_port) if slot.pid is not None else None
            finished = metrics.get("nsq_worker_messages_finished_total") if metrics else None
            in_flight = metrics.get("nsq_worker_messages_in_flight") if metrics else None
            rate = None
            if finished is not None:
                then = self._rates.get(slot.name)
                if then is not None and now > then[0] and finished >= then[1]:
                    rate = (finished - then[1]) / (now - then[0])
                self._rates[slot.name] = (now, finished)
            record = self.records.get(slot.address)
            state = slot.state.value
            if record is not None and record.missing_since is not None and slot.state.value == "running":
                state = "leaving"  # lookupd no longer lists it; kept for the grace period
            rows.append(
                Row(
                    slot.address,
                    slot.name,
                    state,
                    slot.pid,
                    slot.core,
                    slot.restarts,
                    rate,
                    None if in_flight is None else int(in_flight),
                    None if finished is None else int(finished),
                )
            )
        return rows

    def _on_signal(self, signum: int, _frame: FrameType | None) -> None:
        self._signals += 1
        if self._signals == 1:
            self.supervisor.stop_all(f"controller received {signal.Signals(signum).name}")
        else:
            self.supervisor.kill_all()

    def run(self) -> int:
        for signum in (signal.SIGTERM, signal.SIGINT):
            signal.signal(signum, self._on_signal)
        header = (
            f"nsq-operator local: topic {self.config.topic!r} channel {self.config.channel!r} "
            f"via {', '.join(map(redact, self.config.lookupds))}"
        )
        log.info("%s; worker logs in %s", header, self.config.log_dir)
        next_poll = next_view = 0.0
        while True:
            now = self.clock()
            if self._signals == 0 and now >= next_poll:
                self.poll()
                next_poll = now + self.config.poll_interval
            self.supervisor.tick()
            if self._signals and self.supervisor.idle:
                log.info("every worker has stopped; exiting")
                return 0 if self._signals == 1 else 1
            if now >= next_view:
                self.view.show(self.rows(), header, self.supervisor.events, now)
                next_view = now + 1.0
            time.sleep(0.1)
