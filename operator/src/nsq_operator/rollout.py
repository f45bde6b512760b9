"""Gradual rollout of pod-template changes: at most N worker Deployments roll at once, operator-wide.

An operator release (or a spec change) that changes the rendered pod template would otherwise rewrite
every worker Deployment of every consumer at once and restart every worker together. Instead a
Deployment whose template must change takes a place in the operator-wide budget first; one that finds
the budget full keeps its old template (its replicas are still reconciled) until a place frees.

Whether a Deployment is mid-rollout is read from the Deployment itself, the way `kubectl rollout
status` reads it, so an operator that restarts (or a standby that takes over) knows from its first
list of the Deployments which ones are rolling, and keeps the bound:

- the controller has not seen its latest spec yet (`observedGeneration < generation`), or
- fewer pods run the new template than the spec asks (`updatedReplicas < replicas`), or pods of
  the old template still run (`status.replicas > updatedReplicas`), or
- new pods are not available yet, while the rollout has not yet once completed (the Deployment's
  `Progressing` condition is not `NewReplicaSetAvailable`). A worker that completed its rollout and
  crashes later is not rolling: it is failing, and `Ready` says so.

A rollout past its progress deadline (`Progressing=False ProgressDeadlineExceeded`, 600 s by default)
has failed, as for kubectl: it is reported as stalled and frees its place, so one consumer's broken
image delays the others' rollouts by at most the deadline. A Deployment with 0 replicas rolls no pod,
so it never waits for a place. New Deployments (a new nsqd) and deletions never wait either; while
their pods start they do count as rolling.

The decisions are pure functions of the Deployment; `Budget` is the one piece of shared state, kept
current by the watch on the operator's loop and asked by the reconcile threads (hence its lock).
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Any

DEFAULT_MAX_CONCURRENT = 2
MAX_CONCURRENT_ENV = "NSQ_OPERATOR_MAX_CONCURRENT_ROLLOUTS"
COMPLETE = "NewReplicaSetAvailable"  # the Deployment controller's reason once a rollout completed
STALLED = "ProgressDeadlineExceeded"
# A place taken for a write the watch has not shown yet is given back after this long: the watch
# shows a write within a second or two, so only a lost event (or a bug) could keep one longer.
PENDING_SECONDS = 60.0

Key = tuple[str, str]  # (namespace, Deployment name)


@dataclass(frozen=True, slots=True)
class Progress:
    """What a Deployment's own status says about its rollout."""

    generation: int = 0
    observed_generation: int = 0
    replicas: int | None = None  # spec.replicas (None: unset, the API server's default is 1)
    status_replicas: int = 0  # pods of any template (not terminating)
    updated: int = 0  # pods of the current template
    available: int = 0
    progressing: str | None = None  # the reason of the Progressing condition, when there is one


NO_PROGRESS = Progress()


def progress(body: Mapping[str, Any]) -> Progress:
    meta = body.get("metadata") or {}
    status = body.get("status") or {}
    replicas = (body.get("spec") or {}).get("replicas")
    conditions = status.get("conditions") or []
    reason = next(
        (c.get("reason") for c in conditions if isinstance(c, Mapping) and c.get("type") == "Progressing"),
        None,
    )
    return Progress(
        generation=int(meta.get("generation") or 0),
        observed_generation=int(status.get("observedGeneration") or 0),
        replicas=None if replicas is None else int(replicas),
        status_replicas=int(status.get("replicas") or 0),
        updated=int(status.get("updatedReplicas") or 0),
        available=int(status.get("availableReplicas") or 0),
        progressing=reason if isinstance(reason, str) else None,
    )


def in_progress(p: Progress) -> bool:
    """Whether the Deployment is rolling: `kubectl rollout status` would still wait for it."""
    if p.observed_generation < p.generation:
        return True
    if p.progressing == STALLED:
        return False  # failed, not rolling: see `stalled`
    wanted = 1 if p.replicas is None else p.replicas
    if p.updated < wanted or p.status_replicas > p.updated:
        return True
    return p.available < p.updated and p.progressing != COMPLETE


def stalled(p: Progress) -> bool:
    """Whether its rollout failed: it made no progress within the Deployment's progress deadline."""
    return p.observed_generation >= p.generation and p.progressing == STALLED


def needs_place(current_replicas: int | None, wanted_replicas: int | None) -> bool:
    """Whether writing a new template to a Deployment rolls pods, and so needs a place in the budget.

    One at 0 replicas that stays at 0 (paused, scaled to zero) rolls nothing."""
    now = 1 if current_replicas is None else current_replicas
    after = now if wanted_replicas is None else wanted_replicas
    return now > 0 or after > 0


def admit(limit: int, rolling: frozenset[Key] | set[Key], key: Key) -> bool:
    """Whether `key` may start rolling: it rolls already, or fewer than `limit` do (0: no limit)."""
    return limit <= 0 or key in rolling or len(rolling) < limit


class Budget:
    """The operator-wide count of rolling worker Deployments, and the places given out.

    `observe` runs on the loop for every watch event; `acquire`, `written` and `release` run in the
    reconcile threads. A place given out counts from `acquire` until the watch shows the Deployment
    at the generation the write made (from then on its own status says whether it rolls).
    """

    def __init__(self, limit: int, on_change: Callable[[int], None] | None = None) -> None:
        self.limit = max(0, limit)
        self._lock = threading.Lock()
        self._rolling: set[Key] = set()  # by the Deployments' own status
        self._pending: dict[Key, tuple[float, int | None]] = {}  # given out: (when, generation written)
        self._on_change = on_change

    def observe(self, key: Key, generation: int, rolling: bool, deleted: bool = False) -> bool:
        """A watch event; True when it freed a place (someone waiting may take it now)."""
        with self._lock:
            before = len(self._in_use())
            pending = self._pending.get(key)
            if deleted or (pending is not None and pending[1] is not None and generation >= pending[1]):
                self._pending.pop(key, None)
            if rolling and not deleted:
                self._rolling.add(key)
            else:
                self._rolling.discard(key)
            after = len(self._in_use())
        self._changed(after)
        return after < before

    def acquire(self, key: Key) -> bool:
        """Take a place for `key` (or keep the one it has); False when every place is taken."""
        with self._lock:
            self._expire()
            taken = self._in_use()
            if not admit(self.limit, taken, key):
                return False
            if key not in taken:
                self._pending[key] = (time.monotonic(), None)
            after = len(self._in_use())
        self._changed(after)
        return True

    def written(self, key: Key, generation: int) -> None:
        """The new template was written: the place holds until the watch shows this generation."""
        with self._lock:
            if key in self._pending:
                self._pending[key] = (time.monotonic(), generation)

    def release(self, key: Key) -> None:
        """The write failed: give the place back (unless the Deployment rolls anyway)."""
        with self._lock:
            self._pending.pop(key, None)
            after = len(self._in_use())
        self._changed(after)

    def rolling(self, key: Key) -> bool:
        with self._lock:
            return key in self._in_use()

    def in_use(self) -> int:
        with self._lock:
            self._expire()
            return len(self._in_use())

    def _in_use(self) -> set[Key]:
        return self._rolling | self._pending.keys()

    def _expire(self) -> None:
        now = time.monotonic()
        for key in [k for k, (since, _) in self._pending.items() if now - since > PENDING_SECONDS]:
            del self._pending[key]

    def _changed(self, in_use: int) -> None:
        if self._on_change is not None:
            self._on_change(in_use)


UNLIMITED = Budget(0)  # for callers that have no operator-wide budget (tests, tools)


@dataclass(frozen=True)
class Summary:
    """One consumer's rollout, as its status and events tell it."""

    total: int  # its worker Deployments
    rolling: int  # rolling now
    waiting: int  # needing a new template, waiting for a place
    stalled: tuple[str, ...] = ()  # names of those whose rollout failed (past their progress deadline)
    limit: int = DEFAULT_MAX_CONCURRENT

    @property
    def active(self) -> bool:
        return bool(self.rolling or self.waiting or self.stalled)

    @property
    def updated(self) -> int:
        return self.total - self.rolling - self.waiting - len(self.stalled)


ROLLOUT_PROGRESSING = "RolloutProgressing"
REASON_ROLLING = "RollingOut"
REASON_WAITING = "WaitingForRolloutBudget"
REASON_STALLED = "RolloutStalled"
REASON_DONE = "UpToDate"


def condition(summary: Summary) -> tuple[str, str, str]:
    """The RolloutProgressing condition: (status, reason, message)."""
    s = summary
    if not s.active:
        return "False", REASON_DONE, f"All {s.total} worker Deployments run the current pod template."
    budget = "no limit" if s.limit <= 0 else f"at most {s.limit} at a time, operator-wide"
    counted = (
        f"{s.updated} of {s.total} worker Deployments updated, {s.rolling} rolling out, "
        f"{s.waiting} waiting for the rollout budget ({budget})"
    )
    if s.stalled:
        shown = ", ".join(s.stalled[:3]) + (f" and {len(s.stalled) - 3} more" if len(s.stalled) > 3 else "")
        return "True", REASON_STALLED, f"{counted}; past their progress deadline: {shown}."
    if s.waiting:
        return "True", REASON_WAITING, f"{counted}."
    return "True", REASON_ROLLING, f"{counted}."
