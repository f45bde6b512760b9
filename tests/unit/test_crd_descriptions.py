"""Every field of the NsqConsumer CRD, spec and status, says what it is (`kubectl explain` shows it)."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
CRD_NAME = "nsqconsumers.nsqoperator.dev.yaml"
SOURCE = ROOT / "deploy" / "crds" / CRD_NAME
CHART_COPY = ROOT / "deploy" / "helm" / "nsq-operator" / "files" / CRD_NAME


def schemas(node: Mapping[str, Any], path: str) -> Iterator[tuple[str, Mapping[str, Any]]]:
    """`node` and every schema below it, by path: properties, array items and map values."""
    yield path, node
    for name, child in (node.get("properties") or {}).items():
        yield from schemas(child, f"{path}.{name}")
    if isinstance(node.get("items"), Mapping):
        yield from schemas(node["items"], f"{path}[]")
    if isinstance(node.get("additionalProperties"), Mapping):
        yield from schemas(node["additionalProperties"], f"{path}{{}}")


# The API server refuses anything but name and generateName under the root's metadata, a description
# included; `kubectl explain` shows ObjectMeta's own there.
EXEMPT = ("metadata",)


def undescribed(crd: Mapping[str, Any]) -> list[str]:
    """Every schema path of every version without a non-empty description."""
    missing = []
    for version in crd["spec"]["versions"]:
        root = version["schema"]["openAPIV3Schema"]
        exempt = {f"{version['name']}.{name}" for name in EXEMPT}
        for path, schema in schemas(root, version["name"]):
            description = schema.get("description")
            if path not in exempt and (not isinstance(description, str) or not description.strip()):
                missing.append(path)
    return missing


def load(path: Path) -> dict[str, Any]:
    loaded: dict[str, Any] = yaml.safe_load(path.read_text())
    return loaded


def test_the_chart_ships_a_byte_identical_copy() -> None:
    assert CHART_COPY.read_bytes() == SOURCE.read_bytes(), (
        "the chart's CRD is out of date: run `make chart-crd`"
    )


@pytest.mark.parametrize("path", [SOURCE, CHART_COPY], ids=["deploy/crds", "chart"])
def test_every_field_has_a_description(path: Path) -> None:
    missing = undescribed(load(path))
    assert not missing, (
        f"{len(missing)} fields of {path.relative_to(ROOT)} have no description:\n" + "\n".join(missing)
    )


def test_the_walk_reaches_every_kind_of_nested_schema() -> None:
    """The check above means something only if the walk sees status, list items and map values."""
    paths = {
        path for path, _ in schemas(load(SOURCE)["spec"]["versions"][0]["schema"]["openAPIV3Schema"], "v")
    }
    for expected in (
        "v.spec.lookupd.httpAddresses[]",
        "v.spec.worker.env[].valueFrom",
        "v.spec.worker.tolerations[].tolerationSeconds",
        "v.spec.worker.resources.limits{}",
        "v.spec.worker.podLabels{}",
        "v.status.nsqds[].missingSince",
        "v.status.conditions[].lastTransitionTime",
    ):
        assert expected in paths, expected


def test_a_missing_description_is_named() -> None:
    crd = {
        "spec": {
            "versions": [
                {
                    "name": "v1",
                    "schema": {
                        "openAPIV3Schema": {
                            "description": "root",
                            "properties": {
                                "metadata": {"type": "object"},
                                "a": {"description": "  ", "items": {"type": "string"}},
                                "b": {"description": "b", "additionalProperties": {"type": "string"}},
                            },
                        }
                    },
                }
            ]
        }
    }
    assert undescribed(crd) == ["v1.a", "v1.a[]", "v1.b{}"]
