"""Spec parsing: defaults, and an error naming the field for every kind of bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from nsq_operator import spec as spec_module
from nsq_operator.autoscale import AutoscalingSpec
from nsq_operator.spec import ConsumerSpec, SpecError, WorkerSpec, parse

CRD = Path(__file__).resolve().parents[2] / "deploy" / "crds" / "nsqconsumers.nsqoperator.dev.yaml"


def minimal(**extra: Any) -> dict[str, Any]:
    lookupd = {"httpAddresses": ["http://lookupd:4161"]}
    return {"topic": "orders", "channel": "billing", "lookupd": lookupd, **extra}


def test_minimal_spec_gets_every_default() -> None:
    parsed = parse(minimal())
    assert isinstance(parsed, ConsumerSpec)
    assert parsed.lookupd.http_addresses == ("http://lookupd:4161",)
    assert parsed.lookupd.poll_interval_seconds == 10
    assert parsed.nsqd_removal_grace_seconds == 300
    assert parsed.paused is False
    assert parsed.worker == WorkerSpec()
    assert parsed.worker.image == "nsq-operator/worker:0.1.0"
    assert parsed.worker.max_in_flight == 200
    assert parsed.worker.health_port == 8080
    assert parsed.worker.replicas_per_nsqd == 1
    one_cpu = {"cpu": "1", "memory": "256Mi"}
    assert parsed.worker.resources["requests"] == parsed.worker.resources["limits"] == one_cpu
    assert parsed.replicas == 1


def test_paused_means_zero_replicas() -> None:
    parsed = parse(minimal(paused=True, worker={"replicasPerNsqd": 3}))
    assert isinstance(parsed, ConsumerSpec)
    assert parsed.replicas == 0


def test_full_spec() -> None:
    parsed = parse(
        minimal(
            topic="events#ephemeral",
            lookupd={"httpAddresses": ["https://a:4161/", "http://b:4161"], "pollIntervalSeconds": 2},
            nsqdRemovalGraceSeconds=0,
            worker={
                "maxInFlight": 2500,
                "concurrency": 8,
                "maxAttempts": 0,
                "tls": {"secretName": "tls"},
                "auth": {"secretName": "auth"},
                "msgTimeoutSeconds": 900,
                "deadLetterTopic": "dead",
            },
        )
    )
    assert isinstance(parsed, ConsumerSpec)
    assert parsed.topic == "events#ephemeral"
    assert parsed.lookupd.http_addresses == ("https://a:4161", "http://b:4161")
    assert parsed.worker.tls is not None
    assert parsed.worker.tls.verify is True
    assert parsed.worker.auth is not None
    assert parsed.worker.auth.key == "secret"


@pytest.mark.parametrize(
    ("raw", "field"),
    [
        (None, "spec"),
        ("text", "spec"),
        ({}, "spec.lookupd"),
        (minimal(topic=None), "spec.topic"),
        (minimal(topic=""), "spec.topic"),
        (minimal(topic="a" * 65), "spec.topic"),
        (minimal(topic="bad topic"), "spec.topic"),
        (minimal(channel="c#persistent"), "spec.channel"),
        (minimal(lookupd={"httpAddresses": []}), "spec.lookupd.httpAddresses"),
        (minimal(lookupd={"httpAddresses": "http://a:4161"}), "spec.lookupd.httpAddresses"),
        (minimal(lookupd={"httpAddresses": ["tcp://a:4160"]}), "spec.lookupd.httpAddresses[0]"),
        (minimal(lookupd={"httpAddresses": ["http://a:4161", "a:4161"]}), "spec.lookupd.httpAddresses[1]"),
        (
            minimal(lookupd={"httpAddresses": ["http://a"], "pollIntervalSeconds": 0}),
            "spec.lookupd.pollIntervalSeconds",
        ),
        (
            minimal(lookupd={"httpAddresses": ["http://a"], "pollIntervalSeconds": "10"}),
            "spec.lookupd.pollIntervalSeconds",
        ),
        (minimal(nsqdRemovalGraceSeconds=-1), "spec.nsqdRemovalGraceSeconds"),
        (minimal(paused="yes"), "spec.paused"),
        (minimal(worker=[]), "spec.worker"),
        (minimal(worker={"maxInFlight": 0}), "spec.worker.maxInFlight"),
        (minimal(worker={"maxInFlight": 2501}), "spec.worker.maxInFlight"),
        (minimal(worker={"maxInFlight": 1.5}), "spec.worker.maxInFlight"),
        (minimal(worker={"maxInFlight": True}), "spec.worker.maxInFlight"),
        (minimal(worker={"concurrency": 0}), "spec.worker.concurrency"),
        (minimal(worker={"healthPort": 70000}), "spec.worker.healthPort"),
        (minimal(worker={"replicasPerNsqd": 0}), "spec.worker.replicasPerNsqd"),
        (minimal(worker={"msgTimeoutSeconds": 901}), "spec.worker.msgTimeoutSeconds"),
        (minimal(worker={"deadLetterTopic": "no good"}), "spec.worker.deadLetterTopic"),
        (minimal(worker={"imagePullPolicy": "Sometimes"}), "spec.worker.imagePullPolicy"),
        (minimal(worker={"image": ""}), "spec.worker.image"),
        (minimal(worker={"command": "python"}), "spec.worker.command"),
        (minimal(worker={"env": [{"value": "x"}]}), "spec.worker.env[0].name"),
        (
            minimal(worker={"env": [{"name": "A"}, {"name": "NSQ_TOPIC", "value": "other"}]}),
            "spec.worker.env[1].name",
        ),
        (minimal(worker={"nodeSelector": {"disk": 1}}), "spec.worker.nodeSelector.disk"),
        (minimal(worker={"tolerations": {"key": "x"}}), "spec.worker.tolerations"),
        (
            minimal(worker={"imagePullSecrets": [{"name": "Bad_Name"}]}),
            "spec.worker.imagePullSecrets[0].name",
        ),
        (minimal(worker={"tls": {}}), "spec.worker.tls.secretName"),
        (minimal(worker={"tls": {"secretName": "s", "verify": "no"}}), "spec.worker.tls.verify"),
        (minimal(worker={"auth": {"secretName": "s", "key": ""}}), "spec.worker.auth.key"),
    ],
)
def test_invalid_specs_name_the_field(raw: Any, field: str) -> None:
    error = parse(raw)
    assert isinstance(error, SpecError), error
    assert error.field == field
    assert str(error).startswith(f"{field}: ")


def test_the_auth_secret_cannot_be_written_in_the_spec() -> None:
    error = parse(minimal(worker={"env": [{"name": "NSQ_AUTH_SECRET", "value": "hunter2"}]}))
    assert isinstance(error, SpecError)
    assert "set by the operator" in error.message


AUTOSCALING_FIELDS = {  # spec.autoscaling's keys and AutoscalingSpec's fields
    "minReplicas": "min_replicas",
    "maxReplicas": "max_replicas",
    "targetBacklogPerReplica": "target_backlog_per_replica",
    "scaleDownStabilizationSeconds": "scale_down_stabilization_seconds",
    "maxScaleUpStep": "max_scale_up_step",
}


def _crd_spec_schema() -> dict[str, Any]:
    crd = yaml.safe_load(CRD.read_text())
    schema: dict[str, Any] = crd["spec"]["versions"][0]["schema"]["openAPIV3Schema"]["properties"]["spec"]
    return schema


def test_crd_defaults_equal_the_operator_defaults() -> None:
    schema = _crd_spec_schema()
    worker = schema["properties"]["worker"]["properties"]
    lookupd = schema["properties"]["lookupd"]["properties"]
    assert lookupd["pollIntervalSeconds"]["default"] == spec_module.DEFAULT_POLL_INTERVAL_SECONDS
    grace = schema["properties"]["nsqdRemovalGraceSeconds"]
    assert grace["default"] == spec_module.DEFAULT_REMOVAL_GRACE_SECONDS
    assert schema["properties"]["paused"]["default"] is False
    assert schema["properties"]["worker"]["default"] == {}
    expected = {
        "maxInFlight": spec_module.DEFAULT_MAX_IN_FLIGHT,
        "concurrency": spec_module.DEFAULT_CONCURRENCY,
        "maxAttempts": spec_module.DEFAULT_MAX_ATTEMPTS,
        "requeueDelaySeconds": spec_module.DEFAULT_REQUEUE_DELAY_SECONDS,
        "drainTimeoutSeconds": spec_module.DEFAULT_DRAIN_TIMEOUT_SECONDS,
        "healthPort": spec_module.DEFAULT_HEALTH_PORT,
        "replicasPerNsqd": spec_module.DEFAULT_REPLICAS_PER_NSQD,
        "resources": spec_module.DEFAULT_RESOURCES,
    }
    assert {key: worker[key]["default"] for key in expected} == expected
    assert "default" not in worker["image"], "the operator's NSQ_OPERATOR_DEFAULT_WORKER_IMAGE decides"
    assert worker["auth"]["properties"]["key"]["default"] == spec_module.DEFAULT_AUTH_KEY
    assert worker["tls"]["properties"]["verify"]["default"] is True
    autoscaling = schema["properties"]["autoscaling"]["properties"]
    assert autoscaling["enabled"]["default"] is False
    defaults = AutoscalingSpec()
    assert {key: autoscaling[key]["default"] for key in AUTOSCALING_FIELDS} == {
        key: getattr(defaults, field) for key, field in AUTOSCALING_FIELDS.items()
    }
    assert set(autoscaling) == {"enabled", *AUTOSCALING_FIELDS}, "a field the operator does not read"


def test_crd_patterns_equal_the_operator_patterns() -> None:
    schema = _crd_spec_schema()
    assert schema["properties"]["topic"]["pattern"] == spec_module.NAME_PATTERN.pattern
    assert schema["properties"]["channel"]["pattern"] == spec_module.NAME_PATTERN.pattern
    urls = schema["properties"]["lookupd"]["properties"]["httpAddresses"]
    assert urls["items"]["pattern"] == spec_module.LOOKUPD_URL_PATTERN.pattern
    assert urls["minItems"] == 1
    worker = schema["properties"]["worker"]["properties"]
    in_flight = worker["maxInFlight"]
    assert (in_flight["minimum"], in_flight["maximum"]) == (1, spec_module.MAX_RDY_COUNT)
    autoscaling = schema["properties"]["autoscaling"]["properties"]
    limits = {
        key: (autoscaling[key]["minimum"], autoscaling[key].get("maximum")) for key in AUTOSCALING_FIELDS
    }
    assert limits == {
        "minReplicas": (0, spec_module.MAX_REPLICAS),
        "maxReplicas": (1, spec_module.MAX_REPLICAS),
        "targetBacklogPerReplica": (1, None),
        "scaleDownStabilizationSeconds": (0, spec_module.MAX_STABILIZATION_SECONDS),
        "maxScaleUpStep": (1, spec_module.MAX_REPLICAS),
    }
    for key, (low, high) in limits.items():  # the operator refuses exactly what the API server refuses
        for bad in (low - 1, *(() if high is None else (high + 1,))):
            error = parse(minimal(autoscaling={key: bad}))
            assert isinstance(error, SpecError), (key, bad)
            assert error.field == f"spec.autoscaling.{key}"
        for good in (low, *(() if high is None else (high,))):
            widest = {"minReplicas": 0, "maxReplicas": spec_module.MAX_REPLICAS, key: good}
            assert isinstance(parse(minimal(autoscaling=widest)), ConsumerSpec), (key, good)


def test_a_crd_defaulted_spec_parses_to_the_same_value_as_a_bare_one() -> None:
    """What the API server stores (every default filled in) means the same as what the user wrote."""
    worker_schema = _crd_spec_schema()["properties"]["worker"]["properties"]
    defaulted = minimal(
        lookupd={"httpAddresses": ["http://lookupd:4161"], "pollIntervalSeconds": 10},
        nsqdRemovalGraceSeconds=300,
        paused=False,
        worker={k: v["default"] for k, v in worker_schema.items() if "default" in v},
    )
    assert parse(defaulted) == parse(minimal())
    autoscaling_schema = _crd_spec_schema()["properties"]["autoscaling"]["properties"]
    autoscaling = {k: v["default"] for k, v in autoscaling_schema.items()}
    assert parse(dict(defaulted, autoscaling=autoscaling)) == parse(minimal())  # enabled: false
    enabled = parse(dict(defaulted, autoscaling=dict(autoscaling, enabled=True)))
    assert enabled == parse(minimal(autoscaling={"enabled": True}))
    assert isinstance(enabled, ConsumerSpec)
    assert enabled.autoscaling == AutoscalingSpec()


@pytest.mark.parametrize(
    "path", sorted((CRD.parents[2] / "examples").glob("nsqconsumer-*.yaml")), ids=lambda p: p.name
)
def test_the_examples_are_valid(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    assert (document["apiVersion"], document["kind"]) == ("nsqoperator.dev/v1alpha1", "NsqConsumer")
    parsed = parse(document["spec"])
    assert isinstance(parsed, ConsumerSpec), parsed


# --- spec.autoscaling ------------------------------------------------------------------------------------


def test_autoscaling_is_off_unless_enabled() -> None:
    for autoscaling in (None, {}, {"enabled": False}, {"enabled": False, "minReplicas": 2, "maxReplicas": 9}):
        parsed = parse(minimal(autoscaling=autoscaling, worker={"replicasPerNsqd": 3}))
        assert isinstance(parsed, ConsumerSpec), autoscaling
        assert parsed.autoscaling is None
        assert parsed.autoscaled is None
        assert parsed.replicas == 3


def test_autoscaling_gets_every_default() -> None:
    parsed = parse(minimal(autoscaling={"enabled": True}))
    assert isinstance(parsed, ConsumerSpec)
    assert parsed.autoscaling == AutoscalingSpec(
        min_replicas=1,
        max_replicas=4,
        target_backlog_per_replica=1000,
        scale_down_stabilization_seconds=300,
        max_scale_up_step=4,
    )
    assert parsed.autoscaled == parsed.autoscaling
    assert parsed.replicas is None, "the autoscaler decides nsqd by nsqd"


def test_autoscaling_with_every_field() -> None:
    raw = {
        "enabled": True,
        "minReplicas": 0,
        "maxReplicas": 1000,
        "targetBacklogPerReplica": 50,
        "scaleDownStabilizationSeconds": 0,
        "maxScaleUpStep": 2.0,  # an integral float is an integer (JSON has only numbers)
    }
    parsed = parse(minimal(autoscaling=raw))
    assert isinstance(parsed, ConsumerSpec)
    assert parsed.autoscaling == AutoscalingSpec(0, 1000, 50, 0, 2)


def test_paused_wins_over_autoscaling() -> None:
    parsed = parse(minimal(paused=True, autoscaling={"enabled": True, "minReplicas": 2}))
    assert isinstance(parsed, ConsumerSpec)
    assert parsed.replicas == 0
    assert parsed.autoscaled is None
    assert parsed.autoscaling == AutoscalingSpec(min_replicas=2), "kept for when it resumes"


def test_autoscaling_and_an_external_owner_are_fine_while_autoscaling_is_off() -> None:
    parsed = parse(minimal(autoscaling={"enabled": False}, worker={"replicasOwner": "External"}))
    assert isinstance(parsed, ConsumerSpec)
    assert parsed.replicas is None
    assert parsed.autoscaling is None


@pytest.mark.parametrize(
    ("topic", "channel", "enabled", "minimum"),
    [
        ("orders", "billing#ephemeral", False, 0),
        ("orders#ephemeral", "billing", False, 0),
        ("orders", "billing#ephemeral", True, 1),
        ("orders", "billing", True, 0),
    ],
)
def test_ephemeral_names_and_min_zero_that_are_fine(
    topic: str, channel: str, enabled: bool, minimum: int
) -> None:
    autoscaling = {"enabled": enabled, "minReplicas": minimum}
    assert isinstance(parse(minimal(topic=topic, channel=channel, autoscaling=autoscaling)), ConsumerSpec)


@pytest.mark.parametrize(
    ("autoscaling", "extra", "field", "words"),
    [
        ([], {}, "spec.autoscaling", "must be an object"),
        ("on", {}, "spec.autoscaling", "must be an object"),
        (
            {"enabled": True, "minReplicas": 5, "maxReplicas": 4},
            {},
            "spec.autoscaling.minReplicas",
            "(4), not 5",
        ),
        ({"enabled": True, "minReplicas": 5}, {}, "spec.autoscaling.minReplicas", "maxReplicas (4)"),
        ({"enabled": False, "minReplicas": 5}, {}, "spec.autoscaling.minReplicas", "maxReplicas"),
        ({"minReplicas": -1}, {}, "spec.autoscaling.minReplicas", "at least 0"),
        ({"maxReplicas": 0}, {}, "spec.autoscaling.maxReplicas", "at least 1"),
        ({"maxReplicas": 1001}, {}, "spec.autoscaling.maxReplicas", "at most 1000"),
        ({"targetBacklogPerReplica": 0}, {}, "spec.autoscaling.targetBacklogPerReplica", "at least 1"),
        ({"scaleDownStabilizationSeconds": -1}, {}, "spec.autoscaling.scaleDownStabilizationSeconds", "0"),
        (
            {"scaleDownStabilizationSeconds": 4000},
            {},
            "spec.autoscaling.scaleDownStabilizationSeconds",
            "3600",
        ),
        ({"maxScaleUpStep": 0}, {}, "spec.autoscaling.maxScaleUpStep", "at least 1"),
        ({"enabled": "yes"}, {}, "spec.autoscaling.enabled", "true or false"),
        ({"enabled": 1}, {}, "spec.autoscaling.enabled", "true or false"),
        ({"minReplicas": "1"}, {}, "spec.autoscaling.minReplicas", "integer"),
        ({"maxReplicas": 2.5}, {}, "spec.autoscaling.maxReplicas", "integer"),
        ({"maxReplicas": True}, {}, "spec.autoscaling.maxReplicas", "integer"),
        ({"targetBacklogPerReplica": [1000]}, {}, "spec.autoscaling.targetBacklogPerReplica", "integer"),
        ({"maxScaleUpStep": float("inf")}, {}, "spec.autoscaling.maxScaleUpStep", "integer"),
        (
            {"enabled": True},
            {"worker": {"replicasOwner": "External"}},
            "spec.autoscaling.enabled",
            "replicasOwner is External",
        ),
        (
            {"enabled": True, "minReplicas": 0},
            {"channel": "billing#ephemeral"},
            "spec.autoscaling.minReplicas",
            "#ephemeral",
        ),
        (
            {"enabled": True, "minReplicas": 0},
            {"topic": "orders#ephemeral"},
            "spec.autoscaling.minReplicas",
            "#ephemeral",
        ),
    ],
)
def test_bad_autoscaling_names_the_field(
    autoscaling: Any, extra: dict[str, Any], field: str, words: str
) -> None:
    error = parse(minimal(autoscaling=autoscaling, **extra))
    assert isinstance(error, SpecError), error
    assert error.field == field
    assert words in error.message, error.message


json_scalars = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=6)
autoscaling_values = st.integers(-3, 1100) | json_scalars | st.lists(json_scalars, max_size=2)
raw_autoscaling = st.fixed_dictionaries(
    {},
    optional={
        "enabled": st.booleans() | json_scalars,
        **{key: autoscaling_values for key in AUTOSCALING_FIELDS},
    },
)


@settings(max_examples=300, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    autoscaling=raw_autoscaling | json_scalars,
    channel=st.sampled_from(["billing", "billing#ephemeral"]),
    owner=st.sampled_from(["Operator", "External"]),
)
def test_any_autoscaling_gives_a_valid_spec_or_an_error_naming_its_field(
    autoscaling: Any, channel: str, owner: str
) -> None:
    result = parse(minimal(channel=channel, autoscaling=autoscaling, worker={"replicasOwner": owner}))
    if isinstance(result, SpecError):
        assert result.field.startswith("spec.autoscaling"), result
        return
    assert isinstance(result, ConsumerSpec)
    found = result.autoscaling
    if found is None:
        assert not (isinstance(autoscaling, dict) and autoscaling.get("enabled") is True)
        return
    assert isinstance(autoscaling, dict)
    assert autoscaling["enabled"] is True
    assert owner == "Operator"
    assert 0 <= found.min_replicas <= found.max_replicas <= spec_module.MAX_REPLICAS
    assert found.target_backlog_per_replica >= 1
    assert 0 <= found.scale_down_stabilization_seconds <= spec_module.MAX_STABILIZATION_SECONDS
    assert 1 <= found.max_scale_up_step <= spec_module.MAX_REPLICAS
    if channel.endswith("#ephemeral"):
        assert found.min_replicas >= 1
    for key, field in AUTOSCALING_FIELDS.items():
        if isinstance(autoscaling.get(key), int):
            assert getattr(found, field) == autoscaling[key]
