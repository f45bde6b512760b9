"""Fuzzing the NsqConsumer spec parser: any raw spec gives a ConsumerSpec or a SpecError naming a field,
never an exception; what it accepts obeys NSQ's own rules; and whatever it accepts, the worker it starts
accepts too (the operator must not make Deployments whose pods exit 2 on their settings).
"""

from __future__ import annotations

import re
from typing import Any

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nsq_operator import manifests
from nsq_operator.spec import ConsumerSpec, SpecError, parse
from nsq_worker.settings import SettingsError
from nsq_worker.settings import parse as parse_worker_settings

FUZZ = settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
# NSQ's rule (nsqio/nsq internal/protocol/names.go), matched against the whole name as Go's regexp does.
NSQ_NAME = re.compile(r"[.a-zA-Z0-9_-]+(#ephemeral)?")
OWNER = manifests.Owner(name="orders", namespace="default", uid="uid-1")

json_scalars = (
    st.none()
    | st.booleans()
    | st.integers()
    | st.floats(allow_nan=False, allow_infinity=False)
    | st.text(max_size=12)
)
json_values = st.recursive(
    json_scalars,
    lambda children: (
        st.lists(children, max_size=4) | st.dictionaries(st.text(max_size=8), children, max_size=4)
    ),
    max_leaves=12,
)
names = st.one_of(st.from_regex(r"\A[.a-zA-Z0-9_-]{1,60}(#ephemeral)?\Z"), st.text(max_size=70))
WORKER_KEYS = [
    "image", "imagePullPolicy", "command", "args", "env", "envFrom", "maxInFlight", "concurrency",
    "maxAttempts", "requeueDelaySeconds", "msgTimeoutSeconds", "drainTimeoutSeconds", "deadLetterTopic",
    "healthPort", "resources", "replicasPerNsqd", "serviceAccountName", "nodeSelector", "tolerations",
    "affinity", "imagePullSecrets", "podLabels", "podAnnotations", "tls", "auth",
]  # fmt: skip
raw_specs = st.fixed_dictionaries(
    {},
    optional={
        "topic": names | json_values,
        "channel": names | json_values,
        "lookupd": st.fixed_dictionaries({}, optional={
            "httpAddresses": st.lists(st.from_regex(r"\Ahttps?://[a-z0-9.:-]{1,20}(/[a-z]*)?\Z") | st.text(
                max_size=20), max_size=3) | json_values,
            "pollIntervalSeconds": st.integers(-5, 100) | json_values,
        }) | json_values,
        "nsqdRemovalGraceSeconds": st.integers(-5, 1000) | json_values,
        "paused": st.booleans() | json_values,
        "worker": st.dictionaries(st.sampled_from(WORKER_KEYS), json_values | st.integers(), max_size=8)
        | json_values,
    },
)  # fmt: skip


def is_value(result: object) -> bool:
    if isinstance(result, ConsumerSpec):
        return True
    return (
        isinstance(result, SpecError)
        and result.field.startswith("spec")
        and bool(result.message)
        and str(result).startswith(result.field)
    )


@FUZZ
@given(raw=raw_specs | json_values)
def test_any_raw_spec_gives_a_spec_or_an_error_naming_a_field(raw: Any) -> None:
    assert is_value(parse(raw))


@FUZZ
@given(raw=raw_specs)
def test_accepted_names_are_nsq_names(raw: dict[str, Any]) -> None:
    result = parse(raw)
    if isinstance(result, ConsumerSpec):
        for name in (result.topic, result.channel, result.worker.dead_letter_topic):
            assert name is None or (len(name) <= 64 and NSQ_NAME.fullmatch(name)), name


@FUZZ
@given(
    value=st.sampled_from([float("inf"), float("-inf"), float("nan")]),
    key=st.sampled_from(["pollIntervalSeconds", "nsqdRemovalGraceSeconds", "maxInFlight", "concurrency"]),
)
def test_non_finite_numbers_are_a_spec_error(value: float, key: str) -> None:
    # JSON from the API server cannot carry them, but the local backend and embedders hand in Python values.
    raw: dict[str, Any] = {"topic": "t", "channel": "c", "lookupd": {"httpAddresses": ["http://l:4161"]}}
    if key == "pollIntervalSeconds":
        raw["lookupd"][key] = value
    elif key == "nsqdRemovalGraceSeconds":
        raw[key] = value
    else:
        raw["worker"] = {key: value}
    assert isinstance(parse(raw), SpecError)


def test_a_name_with_a_trailing_newline_is_refused() -> None:
    # Python's `$` also matches before a final newline; NSQ's (Go's) does not, and nsqd refuses the name.
    base = {"topic": "orders", "channel": "billing", "lookupd": {"httpAddresses": ["http://l:4161"]}}
    for field, value in [("topic", "orders\n"), ("channel", "billing\n")]:
        assert isinstance(parse({**base, field: value}), SpecError), field
    assert isinstance(parse({**base, "lookupd": {"httpAddresses": ["http://l:4161\n"]}}), SpecError)


# -- the operator's spec and the worker's settings agree ---------------------------------------------------

valid_workers = st.fixed_dictionaries({}, optional={
    "maxInFlight": st.integers(1, 2500),
    "concurrency": st.integers(1, 100_000),
    "maxAttempts": st.integers(0, 65535),
    "requeueDelaySeconds": st.integers(0, 900),
    "msgTimeoutSeconds": st.integers(1, 900),
    "drainTimeoutSeconds": st.integers(1, 10**7),
    "deadLetterTopic": st.from_regex(r"\A[.a-zA-Z0-9_-]{1,64}\Z"),
    "healthPort": st.integers(1, 65535),
    "replicasPerNsqd": st.integers(1, 100),
})  # fmt: skip


@FUZZ
@given(
    worker=valid_workers,
    topic=st.from_regex(r"\A[.a-zA-Z0-9_-]{1,54}(#ephemeral)?\Z"),
    channel=st.from_regex(r"\A[.a-zA-Z0-9_-]{1,54}(#ephemeral)?\Z"),
    address=st.sampled_from(["10.0.0.1:4150", "nsqd-0.nsqd.default.svc:4150", "[fd00::1]:4150"]),
)
def test_whatever_the_operator_accepts_its_worker_accepts(
    worker: dict[str, Any], topic: str, channel: str, address: str
) -> None:  # fmt: skip
    lookupd = {"httpAddresses": ["http://l:4161"]}
    raw = {"topic": topic, "channel": channel, "lookupd": lookupd, "worker": worker}
    spec = parse(raw)
    assert isinstance(spec, ConsumerSpec), spec
    env = {e["name"]: e["value"] for e in manifests.worker_env(spec, address) if "value" in e}
    try:
        settings_, _ = parse_worker_settings([], env, stderr_is_tty=False)
    except SettingsError as error:
        raise AssertionError(f"the operator accepted {worker} but its worker exits 2: {error}") from None
    assert (settings_.topic, settings_.channel, settings_.nsqd_tcp_address) == (topic, channel, address)
    assert settings_.max_in_flight == spec.worker.max_in_flight
    assert settings_.concurrency == spec.worker.concurrency


def test_a_concurrency_beyond_the_workers_limit_is_refused_by_the_operator() -> None:
    raw = {"topic": "t", "channel": "c", "lookupd": {"httpAddresses": ["http://l:4161"]},
           "worker": {"concurrency": 100_001}}  # fmt: skip
    error = parse(raw)
    assert isinstance(error, SpecError)
    assert error.field == "spec.worker.concurrency"
