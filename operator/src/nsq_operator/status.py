"""The NsqConsumer's status and conditions, built from one poll's observations. Pure.

Conditions follow the Kubernetes convention (a list-map keyed by `type`; `lastTransitionTime` moves
only when `status` flips). The status also carries the planner's grace memory (`nsqds[].missingSince`)
so an operator restart does not restart the grace clock. Anyone who may read the NsqConsumer reads
its status: lookupd URLs (and any URL a message quotes) appear with their credentials redacted.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from nsq_operator import naming, rollout
from nsq_operator.lookupd import Lookup, redact
from nsq_operator.plan import NsqdRecord, Plan
from nsq_operator.rollout import Summary as RolloutSummary
from nsq_operator.spec import SpecError

READY = "Ready"
LOOKUPD_REACHABLE = "LookupdReachable"
SPEC_VALID = "SpecValid"
SCALING_ACTIVE = "ScalingActive"  # only while the operator's autoscaler is on
ROLLOUT_PROGRESSING = rollout.ROLLOUT_PROGRESSING  # a new pod template rolling out, within the budget
CONDITION_TYPES = (READY, LOOKUPD_REACHABLE, SPEC_VALID, SCALING_ACTIVE, ROLLOUT_PROGRESSING)

# Fields that change on every poll without meaning anything changed.
VOLATILE_FIELDS = ("lastLookupTime",)
# The backlog moves all the time: written with any other change, and on their own at most this
# often, so a busy autoscaled consumer costs one status write per this many seconds, not per poll
# (its live figures are in the operator's metrics).
FIGURES = ("depth", "inFlight")
FIGURES_REFRESH_SECONDS = 30.0
VOLATILE_NSQD_FIELDS = ("lastSeen", *FIGURES)
MAX_PROBLEMS_SHOWN = 3  # in the Ready message; every one is in status.nsqds[].problem


def timestamp(when: datetime) -> str:
    """RFC 3339 in UTC with second precision, the way Kubernetes writes times."""
    return when.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def parse_timestamp(value: object) -> datetime | None:
    if not isinstance(value, str):
        return None
    try:
        return datetime.strptime(value, "%Y-%m-%dT%H:%M:%SZ").replace(tzinfo=UTC)
    except ValueError:
        return None


@dataclass(frozen=True)
class NsqdScaling:
    """The autoscaler's view of one nsqd at one poll."""

    depth: int | None  # None: its stats could not be read
    in_flight: int | None
    current: int | None  # replicas of its Deployment before this poll; None: it had none
    desired: int
    reason: str  # of the last decision that changed something (or held for want of stats)
    unreadable: str | None = None  # why its stats could not be read


@dataclass(frozen=True)
class Observation:
    """Everything one poll learned, as the status builder needs it."""

    consumer: str
    generation: int | None
    now: datetime
    spec_error: SpecError | None = None
    lookup: Lookup | None = None
    plan: Plan | None = None
    replicas: int = 1  # desired replicas per nsqd (0 when paused)
    desired_total: int | None = None  # when an autoscaler owns replicas: the sum of theirs
    paused: bool = False
    ready: Mapping[str, int] = field(default_factory=dict)  # ready replicas by Deployment name
    failures: tuple[str, ...] = ()  # API calls that failed this poll
    problems: Mapping[str, str] = field(default_factory=dict)  # why a worker is not running, by nsqd
    applied: bool = True  # the spec was carried out in full; only then observedGeneration moves
    scaling: Mapping[str, NsqdScaling] | None = None  # None: the operator's autoscaler is off
    rollout: RolloutSummary | None = None  # None: not judged this poll (invalid spec)


def records_from_status(status: Mapping[str, Any] | None) -> dict[str, NsqdRecord]:
    """The planner's memory as a previous poll left it in the status."""
    records: dict[str, NsqdRecord] = {}
    for entry in (status or {}).get("nsqds") or []:
        if isinstance(entry, Mapping) and isinstance(entry.get("address"), str):
            address = entry["address"]
            records[address] = NsqdRecord(
                address, parse_timestamp(entry.get("lastSeen")), parse_timestamp(entry.get("missingSince"))
            )
    return records


def build(observation: Observation, previous: Mapping[str, Any] | None) -> dict[str, Any]:
    """The status to write. With an invalid spec only the conditions move; the rest is left as it was."""
    previous = previous or {}
    obs = observation
    observed = obs.generation if obs.applied else previous.get("observedGeneration")
    status: dict[str, Any] = {} if observed is None else {"observedGeneration": observed}
    if obs.plan is not None:
        nsqds = [_nsqd_entry(obs, record) for record in obs.plan.nsqds]
        desired = len(nsqds) * obs.replicas if obs.desired_total is None else obs.desired_total
        status |= {
            "nsqdCount": len(nsqds),
            "desiredWorkers": desired,
            "readyWorkers": sum(entry["readyReplicas"] for entry in nsqds),
            "lastLookupTime": timestamp(obs.now),
            "nsqds": nsqds,
        }
    conditions = {c["type"]: c for c in previous.get("conditions") or [] if isinstance(c, Mapping)}
    fresh = [
        _spec_valid(obs),
        *_lookupd_reachable(obs),
        _ready(obs, status),
        *_scaling_active(obs),
        *_rollout_progressing(obs),
    ]
    if obs.spec_error is None and obs.scaling is None:
        conditions.pop(SCALING_ACTIVE, None)  # autoscaling off (or paused): nothing to say
    for type_, state, reason, message in fresh:
        conditions[type_] = _condition(conditions.get(type_), type_, state, reason, message, obs)
    status["conditions"] = [conditions[t] for t in CONDITION_TYPES if t in conditions]
    return status


def needs_write(previous: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether `new` says something `previous` does not. Timestamps alone never are news: a steady
    consumer costs no write at all (each lookup shows in the operator's metrics instead)."""
    if previous is None:
        return True
    return _steady({**previous, **new}) != _steady(previous)


def figures_changed(previous: Mapping[str, Any] | None, new: Mapping[str, Any]) -> bool:
    """Whether the backlog figures in `new` differ from those already written."""

    def figures(status: Mapping[str, Any] | None) -> list[tuple[Any, ...]]:
        entries = [e for e in (status or {}).get("nsqds") or [] if isinstance(e, Mapping)]
        return [tuple(entry.get(k) for k in ("address", *FIGURES)) for entry in entries]

    return figures(previous) != figures(new)


def _steady(status: Mapping[str, Any]) -> dict[str, Any]:
    steady = {k: v for k, v in status.items() if k not in VOLATILE_FIELDS}
    if isinstance(steady.get("nsqds"), list):
        steady["nsqds"] = [
            {k: v for k, v in entry.items() if k not in VOLATILE_NSQD_FIELDS}
            if isinstance(entry, Mapping)
            else entry
            for entry in steady["nsqds"]
        ]
    return steady


def _nsqd_entry(obs: Observation, record: NsqdRecord) -> dict[str, Any]:
    name = naming.worker_name(obs.consumer, record.address)
    entry: dict[str, Any] = {
        "address": record.address,
        "deployment": name,
        "readyReplicas": obs.ready.get(name, 0),
    }
    if record.last_seen is not None:
        entry["lastSeen"] = timestamp(record.last_seen)
    if record.missing_since is not None:
        entry["missingSince"] = timestamp(record.missing_since)
    if record.address in obs.problems:
        entry["problem"] = obs.problems[record.address]
    scaling = (obs.scaling or {}).get(record.address)
    if scaling is not None:
        if scaling.depth is not None:
            entry["depth"] = scaling.depth
        if scaling.in_flight is not None:
            entry["inFlight"] = scaling.in_flight
        entry["replicas"] = scaling.current if scaling.current is not None else 0
        entry["desiredReplicas"] = scaling.desired
        entry["scaleReason"] = scaling.reason
    return entry


Fresh = tuple[str, str, str, str]  # type, status, reason, message


def _spec_valid(obs: Observation) -> Fresh:
    if obs.spec_error is not None:
        return SPEC_VALID, "False", "InvalidSpec", str(obs.spec_error)
    return SPEC_VALID, "True", "Valid", "The spec is valid."


def _lookupd_reachable(obs: Observation) -> Iterable[Fresh]:
    if obs.lookup is None:
        return []  # not asked this poll (invalid spec): keep what we knew
    total = len(obs.lookup.answers)
    failures = obs.lookup.failures
    detail = "; ".join(f"{redact(f.lookupd)}: {f.reason}" for f in failures)
    if not failures:
        return [(LOOKUPD_REACHABLE, "True", "AllReachable", f"All {total} nsqlookupd answered.")]
    if obs.lookup.reachable:
        return [
            (
                LOOKUPD_REACHABLE,
                "True",
                "PartiallyReachable",
                f"{total - len(failures)} of {total} nsqlookupd answered; {detail}",
            )
        ]
    return [
        (
            LOOKUPD_REACHABLE,
            "False",
            "Unreachable",
            f"No nsqlookupd answered, so no worker is removed; {detail}",
        )
    ]


def _ready(obs: Observation, status: Mapping[str, Any]) -> Fresh:
    if obs.spec_error is not None:
        return READY, "False", "InvalidSpec", str(obs.spec_error)
    if obs.failures:
        return READY, "False", "ReconcileFailed", "; ".join(obs.failures)
    if obs.lookup is not None and not obs.lookup.reachable:
        return READY, "Unknown", "LookupdUnreachable", "The nsqd set is unknown while no nsqlookupd answers."
    if obs.paused:
        return READY, "False", "Paused", "The consumer is paused: every worker is scaled to 0."
    count = status.get("nsqdCount", 0)
    desired, ready = status.get("desiredWorkers", 0), status.get("readyWorkers", 0)
    if count == 0:
        return READY, "True", "NoProducers", "nsqlookupd lists no nsqd for the topic, so no worker is needed."
    counted = f"{ready} of {desired} workers ready for {count} nsqd"
    if ready < desired and obs.problems:
        return READY, "False", "WorkersFailing", f"{counted}; {_problems_sentence(obs.problems)}"
    if ready < desired:
        return READY, "False", "WorkersNotReady", f"{counted}."
    return READY, "True", "AllWorkersReady", f"{counted}."


def _scaling_active(obs: Observation) -> Iterable[Fresh]:
    if obs.scaling is None or obs.spec_error is not None:
        return []
    blind = {a: s.unreadable for a, s in obs.scaling.items() if s.unreadable is not None}
    if blind:
        said = "; ".join(f"nsqd {a}: {blind[a]}" for a in sorted(blind)[:MAX_PROBLEMS_SHOWN])
        more = len(blind) - MAX_PROBLEMS_SHOWN
        tail = f"; and {more} more" if more > 0 else ""
        return [
            (
                SCALING_ACTIVE,
                "False",
                "StatsUnreadable",
                f"{len(blind)} of {len(obs.scaling)} nsqd cannot be read, so their replicas are held "
                f"(never scaled down on missing data); {said}{tail}",
            )
        ]
    return [
        (
            SCALING_ACTIVE,
            "True",
            "BacklogPerNsqd",
            f"Replicas of each of {len(obs.scaling)} nsqd follow that nsqd's own backlog.",
        )
    ]


def _rollout_progressing(obs: Observation) -> Iterable[Fresh]:
    if obs.rollout is None or obs.spec_error is not None:
        return []  # not judged: keep what was said
    return [(ROLLOUT_PROGRESSING, *rollout.condition(obs.rollout))]


def _problems_sentence(problems: Mapping[str, str], shown: int = MAX_PROBLEMS_SHOWN) -> str:
    """The first few problems in full (each is capped already), then how many more the status lists."""
    said = [f"nsqd {address}: {problems[address]}" for address in sorted(problems)[:shown]]
    more = len(problems) - shown
    return "; ".join(said) + (f"; and {more} more (see status.nsqds[].problem)" if more > 0 else "")


def _condition(
    previous: Mapping[str, Any] | None, type_: str, state: str, reason: str, message: str, obs: Observation
) -> dict[str, Any]:
    kept = previous.get("lastTransitionTime") if previous and previous.get("status") == state else None
    return {
        "type": type_,
        "status": state,
        "reason": reason,
        "message": redact(message),  # whatever a message quotes, no URL's credentials reach the status
        "lastTransitionTime": kept or timestamp(obs.now),
        "observedGeneration": obs.generation,
    }


def condition(status: Mapping[str, Any] | None, type_: str) -> Mapping[str, Any] | None:
    """One condition of a status, by type."""
    conditions: Sequence[Mapping[str, Any]] = (status or {}).get("conditions") or []
    return next((c for c in conditions if c.get("type") == type_), None)
