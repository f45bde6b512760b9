"""Keep each local worker process alive: restart it with capped exponential backoff, report crash loops."""

from __future__ import annotations

import contextlib
import enum
import logging
import signal
import subprocess
from collections import deque
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from nsq_operator.local.spawn import available_cores, spawn

log = logging.getLogger("nsq_operator.local")


class State(enum.Enum):
    RUNNING = "running"
    BACKOFF = "backoff"  # exited unexpectedly; waiting before the next start
    CRASHLOOP = "crashloop"  # exited too often lately; still retried, at the capped delay
    STOPPING = "stopping"  # asked to drain; killed if it outlives the deadline


@dataclass(frozen=True)
class RestartPolicy:
    """Backoff between restarts: initial * 2**n up to cap; a run longer than `stable_after` resets n."""

    initial: float = 1.0
    cap: float = 60.0
    stable_after: float = 30.0
    crashloop_exits: int = 5  # this many unexpected exits ...
    crashloop_window: float = 120.0  # ... within this many seconds is a crash loop

    def delay(self, failures: int) -> float:
        return float(min(self.cap, self.initial * 2 ** max(0, failures - 1)))


@dataclass
class Slot:
    """One worker: the nsqd it serves and the process that serves it now (if any)."""

    name: str
    address: str
    fingerprint: str
    core: int | None
    health_port: int
    log_path: Path
    process: subprocess.Popen[bytes] | None = None
    state: State = State.BACKOFF
    started_at: float = 0.0
    restarts: int = 0
    failures: int = 0  # consecutive unexpected exits
    next_start: float = 0.0
    kill_at: float = 0.0
    last_exit: int | None = None
    recent_exits: deque[float] = field(default_factory=deque)

    @property
    def pid(self) -> int | None:
        return self.process.pid if self.process is not None and self.process.poll() is None else None


EnvFor = Callable[[Slot], Mapping[str, str]]


class Supervisor:
    """The set of local worker processes, driven by `tick` from the controller's single thread."""

    def __init__(
        self,
        argv: Sequence[str],
        env_for: EnvFor,
        log_dir: Path,
        policy: RestartPolicy,
        drain_timeout: float,
        pin: bool = True,
        clock: Callable[[], float] | None = None,
    ) -> None:
        import time

        self.argv = list(argv)
        self.env_for = env_for
        self.log_dir = log_dir
        self.policy = policy
        self.drain_timeout = drain_timeout
        self.cores = available_cores() if pin else []
        self.clock = clock or time.monotonic
        self.slots: dict[str, Slot] = {}  # the live workers, by name
        self.retiring: list[Slot] = []  # draining workers; a new slot of the same name may already run
        self.events: deque[str] = deque(maxlen=200)

    def event(self, level: int, text: str) -> None:
        """Log it and keep it for the live view."""
        self.events.append(text)
        log.log(level, text)

    def _pick_core(self) -> int | None:
        """The allowed core with the fewest workers: spread one worker per core first."""
        if not self.cores:
            return None
        load = {core: 0 for core in self.cores}
        for slot in self.slots.values():
            if slot.core in load:
                load[slot.core] += 1
        return min(self.cores, key=lambda core: (load[core], core))

    def add(self, name: str, address: str, fingerprint: str, health_port: int) -> Slot:
        slot = Slot(name, address, fingerprint, self._pick_core(), health_port, self.log_dir / f"{name}.log")
        self.slots[name] = slot
        self._start(slot)
        return slot

    def _start(self, slot: Slot) -> None:
        env = self.env_for(slot)
        with slot.log_path.open("ab") as output:
            slot.process = spawn(self.argv, env, slot.core, output)
        slot.state = State.RUNNING
        slot.started_at = self.clock()
        core = "unpinned" if slot.core is None else f"core {slot.core}"
        self.event(
            logging.INFO,
            f"worker {slot.name} for nsqd {slot.address} started (pid {slot.process.pid}, {core})",
        )

    def stop(self, name: str, reason: str) -> None:
        """Drain one worker: SIGTERM now, SIGKILL after the drain timeout; the slot goes when it exits."""
        slot = self.slots.pop(name, None)
        if slot is None:
            return
        self.retiring.append(slot)
        slot.state = State.STOPPING
        slot.kill_at = self.clock() + self.drain_timeout
        if slot.process is not None and slot.process.poll() is None:
            slot.process.send_signal(signal.SIGTERM)
        self.event(logging.INFO, f"worker {slot.name} for nsqd {slot.address} stopping: {reason}")

    def stop_all(self, reason: str) -> None:
        for name in list(self.slots):
            self.stop(name, reason)

    def tick(self) -> None:
        """Reap exits, restart what is due, kill what outlived its drain."""
        now = self.clock()
        for slot in list(self.retiring):
            code = slot.process.poll() if slot.process is not None else None
            if slot.process is None or code is not None:
                self.event(logging.INFO, f"worker {slot.name} stopped (exit {code})")
                self.retiring.remove(slot)
            elif now >= slot.kill_at and slot.kill_at > 0:
                with contextlib.suppress(ProcessLookupError):
                    slot.process.kill()
                slot.kill_at = 0.0  # killed once; reaped on a later tick
                self.event(logging.WARNING, f"worker {slot.name} outlived its drain timeout: killed")
        for slot in list(self.slots.values()):
            code = slot.process.poll() if slot.process is not None else None
            if slot.state is State.RUNNING and code is not None:
                self._exited(slot, code, now)
            elif slot.state in (State.BACKOFF, State.CRASHLOOP) and now >= slot.next_start:
                slot.restarts += 1
                self._start(slot)

    def _exited(self, slot: Slot, code: int, now: float) -> None:
        slot.last_exit = code
        slot.failures = 1 if now - slot.started_at >= self.policy.stable_after else slot.failures + 1
        slot.recent_exits.append(now)
        while slot.recent_exits and now - slot.recent_exits[0] > self.policy.crashloop_window:
            slot.recent_exits.popleft()
        delay = self.policy.delay(slot.failures)
        slot.next_start = now + delay
        how = f"killed by signal {-code}" if code < 0 else f"exit {code}"
        if len(slot.recent_exits) >= self.policy.crashloop_exits:
            slot.state = State.CRASHLOOP
            self.event(
                logging.ERROR,
                f"worker {slot.name} for nsqd {slot.address} is crash-looping "
                f"({len(slot.recent_exits)} exits in {self.policy.crashloop_window:.0f}s, "
                f"last {how}); next try in {delay:.0f}s; its log: {slot.log_path}",
            )
        else:
            slot.state = State.BACKOFF
            self.event(
                logging.WARNING,
                f"worker {slot.name} for nsqd {slot.address} exited ({how}); restarting in {delay:.1f}s",
            )

    @property
    def idle(self) -> bool:
        """Nothing runs and nothing drains."""
        return not self.slots and not self.retiring

    def kill_all(self) -> None:
        for slot in [*self.slots.values(), *self.retiring]:
            if slot.process is not None and slot.process.poll() is None:
                slot.process.kill()
                slot.process.wait()
        self.slots.clear()
        self.retiring.clear()
