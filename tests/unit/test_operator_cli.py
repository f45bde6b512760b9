"""`nsq-operator run`, and the planner staying free of Kubernetes for the local backend."""

from __future__ import annotations

import subprocess
import sys

import pytest

from nsq_operator.cli import build_parser


def test_run_defaults_to_every_namespace_without_election() -> None:
    args = build_parser().parse_args(["run"])
    assert args.namespace == []
    assert args.leader_election_namespace is None  # no election unless asked (the chart asks)
    assert args.liveness == "http://0.0.0.0:8080/healthz"


def test_run_takes_several_namespaces() -> None:
    args = build_parser().parse_args(["run", "-n", "a", "--namespace", "b", "--liveness", "none"])
    assert args.namespace == ["a", "b"]


def test_namespaces_and_all_namespaces_exclude_each_other(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["run", "-n", "a", "--all-namespaces"])
    assert "not allowed with" in capsys.readouterr().err


def test_planning_and_lookups_do_not_need_kubernetes_or_kopf() -> None:
    """The local backend reuses these; importing them must not drag in either."""
    code = (
        "import sys, nsq_operator.plan, nsq_operator.lookupd, nsq_operator.spec, nsq_operator.naming\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('kubernetes', 'kopf')))"
    )
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert result.stdout.strip() == "[]"


def test_local_help_says_it_runs_a_fixed_number_per_nsqd(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit):
        build_parser().parse_args(["local", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "fixed number of workers, one per nsqd" in text
    assert "autoscaling" in text
