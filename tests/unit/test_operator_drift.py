"""`drift.covers`: what counts as someone having changed the operator's fields, and what does not."""

from __future__ import annotations

from decimal import Decimal
from typing import Any

import pytest

from nsq_operator import drift, live, manifests
from nsq_operator.spec import ConsumerSpec, parse

OWNER = manifests.Owner("orders", "team", "uid-1")
ADDRESS = "10.0.0.1:4150"


def spec(**worker: Any) -> ConsumerSpec:
    parsed = parse(
        {"topic": "t", "channel": "c", "lookupd": {"httpAddresses": ["http://l:4161"]}, "worker": worker}
    )
    assert isinstance(parsed, ConsumerSpec)
    return parsed


def served(body: dict[str, Any]) -> dict[str, Any]:
    """The Deployment the way the API server gives it back: defaults added, quantities canonical."""
    container = body["spec"]["template"]["spec"]["containers"][0]
    container["imagePullPolicy"] = "IfNotPresent"
    container["terminationMessagePath"] = "/dev/termination-log"
    container["livenessProbe"]["successThreshold"] = 1
    container["resources"] = {
        "limits": {"cpu": "1", "memory": "256Mi"},
        "requests": {"cpu": "1", "memory": "256Mi"},
    }
    body["spec"]["template"]["spec"]["dnsPolicy"] = "ClusterFirst"
    body["spec"]["progressDeadlineSeconds"] = 600
    body["metadata"]["uid"] = "d-1"
    body["metadata"]["generation"] = 1
    body["status"] = {"readyReplicas": 1}
    return body


def test_defaults_and_others_fields_are_not_drift() -> None:
    desired = manifests.deployment(OWNER, spec(), ADDRESS)
    thousandths = {"cpu": "1000m", "memory": "256Mi"}
    desired["spec"]["template"]["spec"]["containers"][0]["resources"] = {
        "limits": thousandths,
        "requests": thousandths,
    }
    live_body = served(manifests.deployment(OWNER, spec(), ADDRESS))
    live_body["metadata"]["labels"]["team"] = "billing"
    live_body["spec"]["template"]["spec"]["containers"][0]["env"].append({"name": "EXTRA", "value": "1"})
    assert drift.covers(live_body, desired)


@pytest.mark.parametrize(
    "edit",
    [
        lambda c: c.update(image="elsewhere/worker:bad"),
        lambda c: next(e for e in c["env"] if e["name"] == "NSQD_TCP_ADDRESS").update(value="1.2.3.4:4150"),
        lambda c: c["env"].pop(0),
        lambda c: c["securityContext"].update(readOnlyRootFilesystem=False),
        lambda c: c.pop("readinessProbe"),
    ],
)
def test_a_changed_or_removed_field_of_the_operator_is_drift(edit: Any) -> None:
    body = served(manifests.deployment(OWNER, spec(), ADDRESS))
    assert not live.drifted(body, OWNER, spec())
    edit(body["spec"]["template"]["spec"]["containers"][0])
    assert live.drifted(body, OWNER, spec())


def test_an_older_configuration_is_not_drift_but_a_change() -> None:
    """The planner rewrites it for its fingerprint; judging it against the new spec would say drift twice."""
    body = served(manifests.deployment(OWNER, spec(maxInFlight=5), ADDRESS))
    assert not live.drifted(body, OWNER, spec(maxInFlight=6))


def test_replicas_are_not_judged_here() -> None:
    body = served(manifests.deployment(OWNER, spec(), ADDRESS))
    body["spec"]["replicas"] = 5
    assert not live.drifted(body, OWNER, spec())


@pytest.mark.parametrize(
    ("text", "value"),
    [
        ("1", 1),
        ("1000m", 1),
        ("500m", Decimal("0.5")),
        ("0.5", Decimal("0.5")),
        ("128Mi", 128 * 2**20),
        ("1k", 1000),
        ("1e3", 1000),
    ],
)
def test_quantities_compare_by_value(text: str, value: Decimal) -> None:
    assert drift.quantity(text) == value


def test_lists_without_names_match_item_by_item() -> None:
    assert drift.covers({"args": ["a", "b"]}, {"args": ["a", "b"]})
    assert not drift.covers({"args": ["a", "b", "c"]}, {"args": ["a", "b"]})
    assert not drift.covers({"args": ["b", "a"]}, {"args": ["a", "b"]})
    assert not drift.covers({"x": True}, {"x": 1})
    assert not drift.covers({"name": "abc"}, {"name": "abd"})
