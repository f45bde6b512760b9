"""How long to wait after failures: the per-message requeue delay and the consumer-wide pause.

Pure arithmetic and a small state machine, so the rules can be tested without a clock or nsqd.
gnsq's default requeue delay is 0 (a failing message comes straight back and spins); here the delay
doubles with every attempt, as pynsq and go-nsq grow theirs.
"""

from __future__ import annotations

import enum
from dataclasses import dataclass

# nsqd clamps REQ delays to --max-req-timeout (1 h by default); asking for more only logs noise there.
MAX_REQUEUE_DELAY = 3600.0
# Past this many consecutive failures the pause has long hit any sane cap; stop counting.
_MAX_LEVEL = 32


def requeue_delay(attempts: int, base: float, cap: float) -> float:
    """Seconds to delay the requeue of a message that failed on its `attempts`-th delivery.

    `base * 2**(attempts-1)`, capped at `cap`; a cap of 0 (or below `base`) keeps the delay at `base`.
    """
    if base <= 0:
        return 0.0
    exponent = min(max(attempts, 1) - 1, _MAX_LEVEL)
    delay = base * (1 << exponent)
    return min(delay, max(cap, base), MAX_REQUEUE_DELAY)


def pause_seconds(level: int, base: float, cap: float) -> float:
    """The consumer-wide pause after `level` consecutive failures (0 when backoff is off)."""
    if cap <= 0 or level <= 0:
        return 0.0
    return min(base * (1 << (min(level, _MAX_LEVEL) - 1)), cap)


class Action(enum.Enum):
    """What the consumer must do to its RDY count after a result."""

    NONE = "none"
    PAUSE = "pause"  # RDY 0 now, then RDY 1 after `BackoffState.pause` seconds
    RESUME = "resume"  # back to full RDY


@dataclass
class BackoffState:
    """go-nsq's consumer backoff: failures pause the whole consumer, successes step back out.

    After a failure that asks for backoff the consumer sends RDY 0 for a pause that doubles with
    each consecutive failure, then tests the water with RDY 1. Each success while testing lowers the
    level by one; at level 0 the full RDY returns. Results that arrive during a pause are ignored
    (they are from messages taken before it).
    """

    base: float
    cap: float
    level: int = 0
    paused: bool = False

    @property
    def enabled(self) -> bool:
        return self.cap > 0

    @property
    def pause(self) -> float:
        return pause_seconds(self.level, self.base, self.cap)

    def failure(self) -> Action:
        if not self.enabled or self.paused:
            return Action.NONE
        self.level = min(self.level + 1, _MAX_LEVEL)
        self.paused = True
        return Action.PAUSE

    def success(self) -> Action:
        if self.level == 0 or self.paused:
            return Action.NONE
        self.level -= 1
        if self.level == 0:
            return Action.RESUME
        self.paused = True
        return Action.PAUSE

    def pause_over(self) -> None:
        """The pause timer fired: the consumer now tests with RDY 1."""
        self.paused = False

    def reset(self) -> None:
        """A new connection starts with a clean slate."""
        self.level = 0
        self.paused = False


# Reconnecting: the first retry comes soon, each failure in a row doubles the wait up to the cap,
# and only a connection that stayed up for `stable_after` seconds starts the count again, so an
# nsqd that drops every connection right after SUB is not hammered twice a second forever.
RECONNECT_BASE = 0.5
RECONNECT_CAP = 30.0
RECONNECT_STABLE_AFTER = 10.0


def reconnect_delay(failures: int, base: float, cap: float, jitter: float) -> float:
    """Seconds before the next connection attempt after `failures` in a row ("equal jitter").

    Half of `base * 2**(failures-1)` (capped) is fixed, the other half scaled by `jitter` in [0, 1),
    so many workers dropped by one nsqd at once do not all come back in the same instant.
    """
    if failures <= 0:
        return 0.0
    nominal = min(base * (1 << min(failures - 1, _MAX_LEVEL)), cap)
    return nominal / 2 + nominal / 2 * min(max(jitter, 0.0), 1.0)


@dataclass
class ReconnectBackoff:
    """Counts the failures in a row of one worker's connection to its nsqd."""

    base: float = RECONNECT_BASE
    cap: float = RECONNECT_CAP
    stable_after: float = RECONNECT_STABLE_AFTER
    failures: int = 0

    def connect_failed(self) -> None:
        """The connection or its handshake failed."""
        self.failures = min(self.failures + 1, _MAX_LEVEL)

    def connection_ended(self, lasted: float) -> None:
        """A subscribed connection ended after `lasted` seconds: short-lived ones count as failures."""
        self.failures = 1 if lasted >= self.stable_after else min(self.failures + 1, _MAX_LEVEL)

    def delay(self, jitter: float) -> float:
        return reconnect_delay(self.failures, self.base, self.cap, jitter)
