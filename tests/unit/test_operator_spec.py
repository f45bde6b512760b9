"""Spec parsing: defaults, and an error naming the field for every kind of bad input."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
import yaml

from nsq_operator import spec as spec_module
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


@pytest.mark.parametrize(
    "path", sorted((CRD.parents[2] / "examples").glob("nsqconsumer-*.yaml")), ids=lambda p: p.name
)
def test_the_examples_are_valid(path: Path) -> None:
    document = yaml.safe_load(path.read_text())
    assert (document["apiVersion"], document["kind"]) == ("nsqoperator.dev/v1alpha1", "NsqConsumer")
    parsed = parse(document["spec"])
    assert isinstance(parsed, ConsumerSpec), parsed
