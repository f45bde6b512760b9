"""Leader election with a coordination.k8s.io/v1 Lease, so that of two operator replicas only one reconciles.

The semantics are client-go's leaderelection: a Lease is free when it names no holder or when its
renewTime + leaseDurationSeconds has passed; the holder renews it every retry period; everyone else
polls it (with jitter) and takes it once it is free. Every write carries the resourceVersion read, so of
two candidates racing for a free Lease one gets 409 Conflict and stays standby.

Fencing: a leader whose renewals fail stops considering itself leader `renew_deadline` after the
renewTime it last wrote, which is `lease_duration - renew_deadline` seconds before anyone else may take
the Lease (the margin covers clock skew between replicas). `is_leader` checks that deadline itself, so
it turns False on time even when the event loop is too busy to run the elector.

`decide` is the pure part (what to do with a Lease as read); `LeaderElection` does the I/O with raw JSON
requests (no generated models) on a worker thread, each with a timeout shorter than the retry period.
"""

from __future__ import annotations

import asyncio
import enum
import json
import logging
import math
import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any, TypeGuard
from urllib.parse import quote

import urllib3
from kubernetes import client
from kubernetes.client.exceptions import ApiException

log = logging.getLogger(__name__)

# controller-runtime's defaults, in seconds.
LEASE_DURATION = 15.0
RENEW_DEADLINE = 10.0
RETRY_PERIOD = 2.0
JITTER_FACTOR = 1.2  # a standby waits retry_period * (1 + JITTER_FACTOR * U[0, 1)), as client-go does
REQUEST_SHARE = 0.8  # each API call may take this share of the retry period
MIN_WAIT = 0.01  # never spin: the shortest wait between two reads of the Lease
LEASE_API = "/apis/coordination.k8s.io/v1"


class Action(enum.Enum):
    """What a candidate does with the Lease it just read."""

    ACQUIRE = "acquire"  # write ourselves in as the new holder
    RENEW = "renew"  # we hold it: write a fresh renewTime
    STANDBY = "standby"  # someone else holds it: read again after Decision.wait


@dataclass(frozen=True)
class LeaseView:
    """The parts of a Lease's spec the election reads; None where the Lease lacks the field."""

    holder: str | None = None
    acquire_time: datetime | None = None
    renew_time: datetime | None = None
    duration: float | None = None  # leaseDurationSeconds
    transitions: int = 0

    @classmethod
    def from_lease(cls, lease: Mapping[str, Any]) -> LeaseView:
        """Read a Lease as the API returns it; malformed fields count as missing, never as errors."""
        spec = lease.get("spec") or {}
        holder = spec.get("holderIdentity")
        duration = spec.get("leaseDurationSeconds")
        transitions = spec.get("leaseTransitions")
        return cls(
            holder=holder if isinstance(holder, str) and holder else None,
            acquire_time=parse_time(spec.get("acquireTime")),
            renew_time=parse_time(spec.get("renewTime")),
            duration=float(duration) if _is_number(duration) else None,
            transitions=transitions
            if isinstance(transitions, int) and not isinstance(transitions, bool)
            else 0,
        )


@dataclass(frozen=True)
class Decision:
    """The outcome of `decide`: the action, how long until the next read, and the spec to write."""

    action: Action
    wait: float  # seconds until the next attempt
    spec: dict[str, Any] | None = None  # the Lease spec fields to write (ACQUIRE and RENEW)
    holder: str | None = None  # who holds the Lease after this decision (None: nobody yet)


def _is_number(value: object) -> TypeGuard[int | float]:
    return isinstance(value, int | float) and not isinstance(value, bool)


def format_time(moment: datetime) -> str:
    """RFC 3339 MicroTime, the format of a Lease's times: 2026-12-02T01:02:03.123456Z."""
    return moment.astimezone(UTC).replace(tzinfo=None).isoformat(timespec="microseconds") + "Z"


def parse_time(value: object) -> datetime | None:
    """A Lease time as an aware UTC datetime; None when absent or unreadable (naive times count as UTC)."""
    if not isinstance(value, str) or not value:
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def jittered(retry_period: float, draw: float) -> float:
    """A standby's wait for a uniform `draw` in [0, 1): spread so that standbys do not poll in step."""
    return retry_period * (1.0 + JITTER_FACTOR * draw)


def expires_at(lease: LeaseView, lease_duration: float = LEASE_DURATION) -> datetime | None:
    """When the holder's claim runs out; None when the Lease is free (no holder, or no time to go by).

    A Lease without leaseDurationSeconds is judged by our own `lease_duration`: waiting is the safe
    reading of a record we cannot fully understand.
    """
    renewed = lease.renew_time or lease.acquire_time
    if not lease.holder or renewed is None:
        return None
    duration = lease.duration if lease.duration is not None else lease_duration
    return renewed + timedelta(seconds=duration)


def _spec(
    identity: str, acquired: datetime, renewed: datetime, lease_duration: float, transitions: int
) -> dict[str, Any]:
    return {
        "holderIdentity": identity,
        "leaseDurationSeconds": max(1, math.ceil(lease_duration)),  # rounded up: others wait longer, not less
        "acquireTime": format_time(acquired),
        "renewTime": format_time(renewed),
        "leaseTransitions": transitions,
    }


def decide(
    lease: LeaseView | None,
    identity: str,
    now: datetime,
    *,
    lease_duration: float = LEASE_DURATION,
    retry_period: float = RETRY_PERIOD,
    jitter: float = 0.0,
) -> Decision:
    """What `identity` does with `lease` (None: there is no Lease yet) at `now`.

    Pure: `jitter` is the random draw in [0, 1) for a standby's wait, passed in so tests choose it. A
    standby never waits past the holder's expiry, so a crashed leader is replaced as soon as allowed.
    leaseTransitions counts changes of holder: 0 on create, +1 on every takeover, kept on renewal.
    """
    if lease is None:
        return Decision(Action.ACQUIRE, retry_period, _spec(identity, now, now, lease_duration, 0), identity)
    if lease.holder and lease.holder == identity:
        acquired = lease.acquire_time or now
        spec = _spec(identity, acquired, now, lease_duration, lease.transitions)
        return Decision(Action.RENEW, retry_period, spec, identity)
    expiry = expires_at(lease, lease_duration)
    if expiry is None or expiry < now:
        spec = _spec(identity, now, now, lease_duration, lease.transitions + 1)
        return Decision(Action.ACQUIRE, retry_period, spec, identity)
    until_free = (expiry - now).total_seconds()
    wait = max(MIN_WAIT, min(jittered(retry_period, jitter), until_free))
    return Decision(Action.STANDBY, wait, None, lease.holder)


def released_spec(lease: LeaseView, now: datetime) -> dict[str, Any]:
    """The spec that gives a Lease up: no holder, so it is free at once; the transition count stays."""
    return {
        "holderIdentity": None,
        "leaseDurationSeconds": 1,
        "acquireTime": format_time(now),
        "renewTime": format_time(now),
        "leaseTransitions": lease.transitions,
    }


class LeaseError(RuntimeError):
    """One read or write of the Lease failed (refused, timed out, forbidden); the next round retries."""


class LeaderElection:
    """Contend for one Lease; `run` reports becoming and ceasing to be the leader through `on_change`."""

    def __init__(
        self,
        api_client: client.ApiClient,
        namespace: str,
        name: str,
        identity: str,
        *,
        lease_duration: float = LEASE_DURATION,
        renew_deadline: float = RENEW_DEADLINE,
        retry_period: float = RETRY_PERIOD,
    ) -> None:
        # client-go's checks: the deadline must pass before the Lease can expire, and leave room for retries.
        if not identity:
            raise ValueError("the leader election identity must not be empty")
        if retry_period <= 0:
            raise ValueError("retry_period must be positive")
        if renew_deadline <= JITTER_FACTOR * retry_period:
            raise ValueError(f"renew_deadline must be greater than {JITTER_FACTOR} * retry_period")
        if lease_duration <= renew_deadline:
            raise ValueError("lease_duration must be greater than renew_deadline")
        self._api: Any = api_client  # raw calls (param_serialize / call_api) are untyped
        self.namespace, self.name, self.identity = namespace, name, identity
        self.lease_duration = lease_duration
        self.renew_deadline = renew_deadline
        self.retry_period = retry_period
        self._collection = f"{LEASE_API}/namespaces/{quote(namespace, safe='')}/leases"
        self._path = f"{self._collection}/{quote(name, safe='')}"
        self._request_timeout = REQUEST_SHARE * retry_period
        self._leader = False
        self._deadline = 0.0  # time.monotonic() at which leading ends unless a renewal succeeds first
        self._released = False
        self._lock = asyncio.Lock()  # one round or release at a time
        self._on_change: Callable[[bool], None] | None = None
        self._holder_seen: str | None = None
        self._last_error: str | None = None

    @property
    def is_leader(self) -> bool:
        """True only while the last renewal is younger than renew_deadline: check it before acting."""
        return self._leader and time.monotonic() < self._deadline

    @property
    def _where(self) -> str:
        return f"{self.namespace}/{self.name}"

    async def run(self, on_change: Callable[[bool], None]) -> None:
        """Acquire and renew the Lease until cancelled (or released); on_change must not block or raise."""
        self._on_change = on_change
        try:
            while not self._released:
                async with self._lock:
                    if self._released:
                        break
                    wait = await self._round()
                if self._leader:
                    wait = min(wait, self._deadline - time.monotonic())  # wake to step down on time
                await asyncio.sleep(max(wait, 0.0))
        finally:
            if self._leader:
                self._step_down("the elector stopped", logging.INFO)

    async def release(self) -> None:
        """Stop leading and give the Lease up, so a standby takes over at once; for a clean shutdown.

        Releases the Lease only while it still names us, and stops `run`. A failure is logged, not
        raised: the standby then takes over when the Lease expires.
        """
        self._released = True
        async with self._lock:
            if self._leader:  # stop acting before anyone else may start
                self._leader = False
                self._notify(False)
            try:
                released = await self._give_up()
            except LeaseError as error:
                log.warning("could not release lease %s (free when it expires): %s", self._where, error)
                return
        if released:
            log.info("released lease %s held as %s", self._where, self.identity)

    async def _round(self) -> float:
        """One read (and maybe write) of the Lease; returns the seconds to wait before the next."""
        if self._leader and time.monotonic() >= self._deadline:
            self._step_down(f"no renewal within {self.renew_deadline:g}s ({self._last_error or 'no answer'})")
        try:
            decision, decided_at = await self._try_acquire_or_renew()
        except LeaseError as error:
            # Said once per run of failures (a missing RBAC rule, an unreachable API), not every retry.
            log.log(
                logging.DEBUG if self._last_error else logging.WARNING, "lease %s: %s", self._where, error
            )
            self._last_error = str(error)
            return self.retry_period if self._leader else jittered(self.retry_period, random.random())
        self._last_error = None
        if decision.action is Action.STANDBY:
            if self._leader:
                self._step_down(f"the lease is held by {decision.holder}")
            elif decision.holder != self._holder_seen:
                log.info("standing by: lease %s is held by %s", self._where, decision.holder)
            self._holder_seen = decision.holder
            return decision.wait
        self._deadline = decided_at + self.renew_deadline
        self._holder_seen = self.identity
        if not self._leader:
            self._leader = True
            transitions = (decision.spec or {}).get("leaseTransitions")
            log.info(
                "became the leader as %s (lease %s, transitions %s)", self.identity, self._where, transitions
            )
            self._notify(True)
        return decision.wait

    async def _try_acquire_or_renew(self) -> tuple[Decision, float]:
        """Read the Lease, decide, and write; the decision and the monotonic time its renewTime was taken."""
        for _ in range(2):  # after a 409 or 404 (someone wrote first), read once more and decide again
            status, lease = await self._call("GET", self._path)
            now, decided_at = datetime.now(UTC), time.monotonic()
            view = LeaseView.from_lease(lease) if lease is not None else None
            decision = decide(
                view,
                self.identity,
                now,
                lease_duration=self.lease_duration,
                retry_period=self.retry_period,
                jitter=random.random(),
            )
            if decision.action is Action.STANDBY:
                return decision, decided_at
            if lease is None:
                body = {
                    "apiVersion": "coordination.k8s.io/v1",
                    "kind": "Lease",
                    "metadata": {"name": self.name, "namespace": self.namespace},
                    "spec": decision.spec,
                }
                status, _ = await self._call("POST", self._collection, body)
            else:  # the metadata read carries its resourceVersion: optimistic concurrency
                body = {**lease, "spec": {**(lease.get("spec") or {}), **(decision.spec or {})}}
                status, _ = await self._call("PUT", self._path, body)
            if status in (200, 201):
                return decision, decided_at
        raise LeaseError(f"lease {self._where} changed under us twice in a row")

    async def _give_up(self) -> bool:
        """Clear the holder when the Lease names us; False when it does not (nothing to release)."""
        for _ in range(2):
            _, lease = await self._call("GET", self._path)
            if lease is None:
                return False
            view = LeaseView.from_lease(lease)
            if view.holder != self.identity:
                return False
            spec = {**(lease.get("spec") or {}), **released_spec(view, datetime.now(UTC))}
            status, _ = await self._call("PUT", self._path, {**lease, "spec": spec})
            if status == 200:
                return True
        raise LeaseError(f"lease {self._where} changed under us twice in a row")

    def _step_down(self, reason: str, level: int = logging.WARNING) -> None:
        self._leader = False
        log.log(level, "no longer the leader (lease %s): %s", self._where, reason)
        self._notify(False)

    def _notify(self, leading: bool) -> None:
        if self._on_change is not None:
            self._on_change(leading)

    async def _call(
        self, method: str, path: str, body: Mapping[str, Any] | None = None
    ) -> tuple[int, dict[str, Any] | None]:
        """One request on a worker thread; a leader's is cut short at its renew deadline."""
        timeout = self._request_timeout
        if self._leader:
            timeout = min(timeout, self._deadline - time.monotonic())
            if timeout <= 0:
                raise LeaseError(f"{method} lease {self._where}: the renew deadline passed")
        try:
            return await asyncio.wait_for(asyncio.to_thread(self._http, method, path, body, timeout), timeout)
        except TimeoutError as error:
            raise LeaseError(f"{method} lease {self._where}: no answer within {timeout:.2f}s") from error

    def _http(
        self, method: str, path: str, body: Mapping[str, Any] | None, timeout: float
    ) -> tuple[int, dict[str, Any] | None]:
        """The blocking request: (status, JSON body); 404 and 409 are answers, other failures LeaseError."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        try:
            method, url, headers, payload, _ = self._api.param_serialize(
                method,
                path,
                header_params=headers,
                body=dict(body) if body else None,
                auth_settings=["BearerToken"],
            )
            response = self._api.call_api(
                method, url, header_params=headers, body=payload, _request_timeout=timeout
            )
            data = response.read()
        except ApiException as error:
            raise LeaseError(f"{method} lease {self._where}: {error.status} {error.reason}") from error
        except (urllib3.exceptions.HTTPError, OSError) as error:
            raise LeaseError(f"{method} lease {self._where}: {type(error).__name__}: {error}") from error
        if response.status in (404, 409):
            return response.status, None
        if not 200 <= response.status <= 299:
            raise LeaseError(f"{method} lease {self._where}: {response.status} {_message(data)}")
        try:
            found = json.loads(data)
        except ValueError as error:
            raise LeaseError(f"{method} lease {self._where}: the answer is not JSON: {error}") from error
        if not isinstance(found, dict):
            raise LeaseError(f"{method} lease {self._where}: the answer is not an object")
        return response.status, found


def _message(data: bytes | None) -> str:
    """The API's error message from a Status body, or the body itself."""
    text = (data or b"").decode(errors="replace")
    try:
        message = json.loads(text).get("message")
    except (ValueError, AttributeError):
        message = None
    return str(message or text[:200])
