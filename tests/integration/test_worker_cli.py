"""Starting a worker: script with flags, gnsq_mp positional form, console script; --help; bad values."""

from __future__ import annotations

import sys

import pytest

from tests.rig.nsq import NsqCluster
from tests.rig.waiting import wait_for
from tests.rig.workers import NSQ_WORKER_SCRIPT, WorkerFactory, bodies, clients, settled
from tests.unit.test_worker_settings import CONTRACT

ONE_NSQD = pytest.mark.parametrize("nsq_cluster", [{"nsqd": 1}], indirect=True)


@pytest.mark.parametrize("form", ["script", "console", "module"])
def test_help_documents_every_environment_variable(workers: WorkerFactory, form: str) -> None:
    argv = {
        "script": [sys.executable, str(workers.script), "--help"],
        "console": [str(NSQ_WORKER_SCRIPT), "--help"],
        "module": [sys.executable, "-m", "nsq_worker", "--help"],
    }[form]
    result = workers.run(argv)
    assert result.returncode == 0, result.stderr
    for name in CONTRACT:
        assert name in result.stdout, name
    for flag in [
        "--topic",
        "--channel",
        "--nsqd-tcp-address",
        "--max-in-flight",
        "--concurrency",
        "--drain-timeout",
    ]:
        assert flag in result.stdout
    assert "default 200" in result.stdout


@pytest.mark.parametrize(
    ("argv", "env", "named"),
    [
        ([], {"NSQ_MAX_IN_FLIGHT": "many"}, "NSQ_MAX_IN_FLIGHT"),
        (["--concurrency", "-1"], {}, "--concurrency"),
        ([], {"NSQ_TOPIC": ""}, "NSQ_TOPIC"),
        ([], {"NSQ_COMPRESSION": "lz4"}, "NSQ_COMPRESSION"),
        ([], {"NSQ_TLS": "true", "NSQ_TLS_CA_FILE": "/nonexistent/ca.pem"}, "NSQ_TLS_CA_FILE"),
        (["--auth-secret", "hunter2"], {}, "NSQ_AUTH_SECRET"),
        (["--no-such-flag"], {}, "--no-such-flag"),
    ],
)
def test_bad_settings_exit_2_and_name_the_setting(
    workers: WorkerFactory, argv: list[str], env: dict[str, str], named: str
) -> None:
    base = {"NSQ_TOPIC": "t", "NSQ_CHANNEL": "c", "NSQD_TCP_ADDRESS": "127.0.0.1:1"}
    result = workers.run([sys.executable, str(workers.script), *argv], env={**base, **env})
    assert result.returncode == 2
    assert named in result.stderr
    assert "hunter2" not in result.stderr


def test_the_console_script_needs_a_worker_class(workers: WorkerFactory) -> None:
    env = {"NSQ_TOPIC": "t", "NSQ_CHANNEL": "c", "NSQD_TCP_ADDRESS": "127.0.0.1:1"}
    result = workers.run([str(NSQ_WORKER_SCRIPT)], env=env)
    assert (result.returncode, "NSQ_WORKER_CLASS" in result.stderr) == (2, True)
    result = workers.run([str(NSQ_WORKER_SCRIPT), "nsq_worker.examples:Nothing"], env=env)
    assert (result.returncode, "has no 'Nothing'" in result.stderr) == (2, True)
    result = workers.run([str(NSQ_WORKER_SCRIPT), "json:JSONDecoder"], env=env)
    assert (result.returncode, "not an NsqProcessWorker subclass" in result.stderr) == (2, True)


@ONE_NSQD
def test_the_gnsq_mp_positional_form(nsq_cluster: NsqCluster, workers: WorkerFactory) -> None:
    nsqd = nsq_cluster.nsqds[0]
    nsqd.create_topic("legacy", "mp")
    nsqd.publish("legacy", [b"from gnsq_mp"])
    # worker.py TOPIC NSQD_ADDR CHANNEL, exactly as NsqMPController spawned it.
    worker = workers.start(
        None,
        topic="",
        channel="",
        argv=[sys.executable, str(workers.script), "legacy", nsqd.tcp_address, "mp"],
    )
    wait_for(settled(nsqd, "legacy", "mp"))
    assert [r["body"] for r in worker.records("done")] == ["from gnsq_mp"]


@ONE_NSQD
def test_the_console_script_runs_an_example_class(nsq_cluster: NsqCluster, workers: WorkerFactory) -> None:
    nsqd = nsq_cluster.nsqds[0]
    nsqd.create_topic("work", "workers")
    nsqd.publish("work", [b"logged by LogWorker"])
    argv = [
        str(NSQ_WORKER_SCRIPT), "nsq_worker.examples:LogWorker",
        "--topic", "work", "--channel", "workers", "--nsqd-tcp-address", nsqd.tcp_address,
        "--log-format=json",
    ]  # fmt: skip
    worker = workers.start(None, topic="", channel="", argv=argv)
    wait_for(settled(nsqd, "work", "workers"))
    wait_for(lambda: "logged by LogWorker" in worker.log)
    worker.signal()
    assert worker.wait(timeout=10) == 0


@ONE_NSQD
def test_the_worker_class_from_the_environment(nsq_cluster: NsqCluster, workers: WorkerFactory) -> None:
    nsqd = nsq_cluster.nsqds[0]
    nsqd.create_topic("work", "workers")
    nsqd.publish("work", bodies({"sleep": 0.01}))
    worker = workers.start(
        nsqd,
        argv=[sys.executable, "-m", "nsq_worker"],
        NSQ_WORKER_CLASS="tests.worker_classes.recording:RecordingWorker",
    )
    wait_for(lambda: worker.records("done"))
    assert clients(nsqd, "work", "workers")[0]["user_agent"].startswith("nsq-worker/")
