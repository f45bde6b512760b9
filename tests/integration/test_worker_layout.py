"""The worker package's shape: every module imports on its own, no module imports circle back, and a
subclass sees only the documented names (each checked in a fresh interpreter, as gevent patches it)."""

from __future__ import annotations

import ast
import json
import subprocess
import sys
from pathlib import Path

import pytest

from tests.rig.workers import PROJECT_ROOT

PACKAGE = PROJECT_ROOT / "worker" / "src" / "nsq_worker"
MODULES = sorted(f"nsq_worker.{path.stem}" for path in PACKAGE.glob("*.py") if path.stem != "__init__")

# What NsqProcessWorker defines for its subclasses; anything else is the subclass's own.
DOCUMENTED = {
    "handle_message", "preprocess_message", "validate_message", "give_up", "setup", "teardown",
    "publish", "mpublish", "dpublish", "run", "start", "stop", "join", "install_signal_handlers",
    "reader",
}  # fmt: skip
INSTANCE = {"topic", "channel", "nsqd_tcp_address", "nsqd_addr", "settings"}


def python(code: str) -> str:
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, timeout=60, check=False,
        env={"PYTHONPATH": str(PROJECT_ROOT / "worker" / "src"), "PATH": "/usr/bin:/bin"},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    return result.stdout


@pytest.mark.parametrize("module", MODULES)
def test_each_module_imports_on_its_own(module: str) -> None:
    assert python(f"import {module}; print({module}.__name__)").strip() == module


def imports_of(path: Path) -> set[str]:
    """The nsq_worker modules a file imports, at the top or inside functions."""
    found: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            found |= {alias.name for alias in node.names if alias.name.startswith("nsq_worker.")}
        elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("nsq_worker"):
            if node.module == "nsq_worker":
                found |= {f"nsq_worker.{alias.name}" for alias in node.names}
            else:
                found.add(node.module)
    return found & set(MODULES)


def test_no_module_imports_in_a_circle() -> None:
    graph = {f"nsq_worker.{path.stem}": imports_of(path) for path in PACKAGE.glob("*.py")}
    graph.pop("nsq_worker.__init__")

    def reaches(start: str, goal: str, seen: set[str]) -> bool:
        for nxt in graph.get(start, set()):
            if nxt == goal or (nxt not in seen and reaches(nxt, goal, seen | {nxt})):
                return True
        return False

    circles = sorted(module for module in graph if reaches(module, module, {module}))
    assert circles == []
    # The split the design asks for: the class and the command line never import each other.
    assert "nsq_worker.cli" not in graph["nsq_worker.worker"]
    assert "nsq_worker.worker" not in graph["nsq_worker.runner"]
    assert "nsq_worker.worker" not in graph["nsq_worker.runtime"]


def test_a_subclass_sees_only_the_documented_names() -> None:
    shown = json.loads(
        python(
            "import json\n"
            "from nsq_worker import NsqProcessWorker, Settings\n"
            "class Mine(NsqProcessWorker):\n"
            "    def handle_message(self, reader, message): pass\n"
            "w = Mine(Settings(topic='t', channel='c', nsqd_tcp_address='127.0.0.1:4150'))\n"
            "print(json.dumps({'class': [n for n in dir(NsqProcessWorker) if not n.startswith('_')],\n"
            "                  'instance': [n for n in vars(w) if not n.startswith('_')],\n"
            "                  'private': [n for n in vars(w) if n.startswith('_')]}))\n"
        )
    )
    assert set(shown["class"]) == DOCUMENTED
    assert set(shown["instance"]) == INSTANCE
    assert shown["private"] == ["_nsq_worker_runtime_"]  # the one name the machinery takes
