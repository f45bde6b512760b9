"""Why a worker pod is not running, read from pod statuses and events shaped as the kubelet writes them."""

from __future__ import annotations

from typing import Any

from nsq_operator import pods
from nsq_operator.resource import ANNOTATION_NSQD_ADDRESS

A, B = "10.0.0.1:4150", "10.0.0.2:4150"


def pod(
    name: str = "w-1",
    address: str = A,
    *,
    waiting: dict[str, str] | None = None,
    terminated: dict[str, Any] | None = None,
    ready: bool = False,
    conditions: list[dict[str, str]] | None = None,
    deleting: bool = False,
    policy: str | None = "File",
) -> dict[str, Any]:
    container: dict[str, Any] = {"name": "worker", "ready": ready, "restartCount": 0}
    running = {"running": {"startedAt": "2025-01-01T12:00:00Z"}}
    container["state"] = {"waiting": waiting} if waiting else running
    if terminated:
        container["lastState"] = {"terminated": terminated}
    meta: dict[str, Any] = {"name": name, "annotations": {ANNOTATION_NSQD_ADDRESS: address}}
    if deleting:
        meta["deletionTimestamp"] = "2025-01-01T12:00:00Z"
    ready_condition = {"type": "Ready", "status": "True" if ready else "False"}
    spec: dict[str, Any] = {"name": "worker", "image": "w:1"}
    if policy is not None:
        spec["terminationMessagePolicy"] = policy
    return {
        "metadata": meta,
        "spec": {"containers": [spec]},
        "status": {"conditions": [ready_condition, *(conditions or [])], "containerStatuses": [container]},
    }


def event(reason: str, message: str, last: str) -> dict[str, Any]:
    return {"type": "Warning", "reason": reason, "message": message, "lastTimestamp": last}


def test_a_missing_secret_in_the_environment() -> None:
    waiting = {"reason": "CreateContainerConfigError", "message": 'secret "nsq-auth" not found'}
    assert pods.problem(pod(waiting=waiting)) == 'CreateContainerConfigError: secret "nsq-auth" not found'


def test_an_image_that_cannot_be_pulled() -> None:
    waiting = {"reason": "ErrImagePull", "message": 'failed to pull image "nope:1": not found'}
    assert pods.problem(pod(waiting=waiting)) == 'ErrImagePull: failed to pull image "nope:1": not found'


def test_a_crash_loop_says_the_exit_code_and_the_workers_own_words_not_the_backoff() -> None:
    waiting = {"reason": "CrashLoopBackOff", "message": "back-off 40s restarting failed container=worker"}
    last_words = "setup() failed: RuntimeError: the database refused the connection"
    said = pods.problem(pod(waiting=waiting, terminated={"exitCode": 1, "message": last_words + "\n"}))
    assert said == f"CrashLoopBackOff; last exit code 1: {last_words}"
    waiting["message"] = "back-off 5m0s restarting failed container=worker"
    assert pods.problem(pod(waiting=waiting, terminated={"exitCode": 1, "message": last_words})) == said


def test_a_termination_message_is_copied_only_when_the_worker_wrote_it_itself() -> None:
    """With FallbackToLogsOnError the kubelet puts the log's tail there, which may quote message bodies:
    a pod of an older template (or anything but File) gets its exit code copied, nothing more."""
    waiting = {"reason": "CrashLoopBackOff"}
    log_tail = 'handling {"card": "4111-1111-1111-1111"}\nTraceback ...\nValueError: bad'
    for policy in ("FallbackToLogsOnError", "SomethingNew"):
        crashed = pod(waiting=waiting, terminated={"exitCode": 1, "message": log_tail}, policy=policy)
        assert pods.problem(crashed) == "CrashLoopBackOff; last exit code 1"
    # Unset is the API server's default, File (a pod read back always has it set).
    unset = pod(waiting=waiting, terminated={"exitCode": 2, "message": "bad setting"}, policy=None)
    assert pods.problem(unset) == "CrashLoopBackOff; last exit code 2: bad setting"


def test_a_multi_line_termination_message_becomes_one_capped_line() -> None:
    looping = {"reason": "CrashLoopBackOff"}
    words = "drained: 3 finished,\n 0 requeued in 0.4s\n"
    said = pods.problem(pod(waiting=looping, terminated={"exitCode": 0, "message": words}))
    assert said == "CrashLoopBackOff; last exit code 0: drained: 3 finished, 0 requeued in 0.4s"
    long = pods.problem(pod(waiting=looping, terminated={"exitCode": 1, "message": "x" * 900}))
    assert long is not None
    assert len(long) == pods.MAX_PROBLEM
    assert long.endswith("…")


def test_an_unschedulable_pod() -> None:
    scheduled = {"type": "PodScheduled", "status": "False", "reason": "Unschedulable",
                 "message": "0/2 nodes are available: 2 Insufficient cpu."}  # fmt: skip
    said = pods.problem(pod(conditions=[scheduled]))
    assert said == "Unschedulable: 0/2 nodes are available: 2 Insufficient cpu."


def test_starting_running_and_leaving_pods_have_no_problem() -> None:
    assert pods.problem(pod(waiting={"reason": "ContainerCreating"})) is None
    assert pods.problem(pod(ready=True)) is None
    crashing = {"reason": "CrashLoopBackOff"}
    assert pods.problem(pod(waiting=crashing, deleting=True)) is None


def test_the_newest_warning_fills_in_when_the_status_is_silent() -> None:
    mount = event("FailedMount", 'MountVolume.SetUp failed for volume "nsq-tls" : secret "tls" not found',
                  "2025-01-01T12:00:09Z")  # fmt: skip
    older = event("FailedScheduling", "0/2 nodes are available", "2025-01-01T12:00:01Z")
    creating = pod(waiting={"reason": "ContainerCreating"})
    assert pods.problem(creating, [mount, older]) == f"FailedMount: {mount['message']}"
    assert pods.problem(creating, [older, mount]) == f"FailedMount: {mount['message']}"
    series = {**older, "series": {"lastObservedTime": "2025-01-01T12:00:30Z"}}
    assert pods.problem(creating, [mount, series]).startswith("FailedScheduling")  # type: ignore[union-attr]
    waiting = {"reason": "ErrImagePull", "message": "not found"}
    assert pods.problem(pod(waiting=waiting), [mount]) == "ErrImagePull: not found"  # the status wins


def test_a_harmless_warning_never_hides_the_reason_or_becomes_one() -> None:
    # Seen on the real node: a cluster without DNS warns on every pod, newest of all.
    dns = event("MissingClusterDNS", "kubelet does not have ClusterDNS IP configured", "2025-01-01T12:00:20Z")
    mount = event("FailedMount", 'secret "tls" not found', "2025-01-01T12:00:09Z")
    creating = pod(waiting={"reason": "ContainerCreating"})
    assert pods.problem(creating, [dns, mount]) == f"FailedMount: {mount['message']}"
    assert pods.problem(creating, [dns]) is None
    starting = event("Unhealthy", "Startup probe failed: connection refused", "2025-01-01T12:00:30Z")
    assert pods.problem(pod(), [starting]) is None  # importing: on its way up
    readiness = event(
        "Unhealthy", "Readiness probe failed: HTTP probe failed with statuscode: 503", "2025-01-01T12:00:31Z"
    )
    assert pods.problem(pod(), [starting, readiness]) == f"Unhealthy: {readiness['message']}"


def test_a_crash_loop_stays_one_between_restarts() -> None:
    last = {"terminated": {"exitCode": 2, "message": "nsq-worker: error: bad\n"}}
    running_again = {"name": "worker", "ready": False, "restartCount": 3, "state": {"running": {}},
                     "lastState": last}  # fmt: skip
    crashing = {
        **running_again,
        "state": {"waiting": {"reason": "CrashLoopBackOff", "message": "back-off 40s"}},
    }
    expected = "CrashLoopBackOff; last exit code 2: nsq-worker: error: bad"
    assert pods.problem({"status": {"containerStatuses": [crashing]}}) == expected
    assert pods.problem({"status": {"containerStatuses": [running_again]}}) == expected
    once = {**running_again, "restartCount": 1}  # one restart (an OOM kill, say) is not a loop
    assert pods.problem({"status": {"containerStatuses": [once]}}) is None


def test_long_messages_are_capped_to_one_line() -> None:
    waiting = {"reason": "CreateContainerError", "message": "x\n" * 1000}
    said = pods.problem(pod(waiting=waiting))
    assert said is not None
    assert len(said) == pods.MAX_PROBLEM
    assert "\n" not in said
    assert said.endswith("…")


def test_problems_by_nsqd_names_the_pod_and_is_stable() -> None:
    bad = {"reason": "ErrImagePull", "message": "not found"}
    backing_off = {"reason": "ImagePullBackOff"}
    listed = [pod("w-b", waiting=bad), pod("w-a", waiting=backing_off), pod("w-c", B, ready=True)]
    assert pods.problems_by_nsqd(listed) == {A: "pod w-a: ImagePullBackOff"}
    assert pods.problems_by_nsqd(list(reversed(listed))) == {A: "pod w-a: ImagePullBackOff"}
    unlabelled = pod("x", waiting=bad)
    del unlabelled["metadata"]["annotations"]
    assert pods.problems_by_nsqd([unlabelled]) == {}


def test_only_silent_not_ready_pods_need_their_events() -> None:
    listed = [
        pod("w-1", waiting={"reason": "ContainerCreating"}),
        pod("w-2", waiting={"reason": "ErrImagePull"}),
        pod("w-3", ready=True),
        pod("w-4", waiting={"reason": "ContainerCreating"}, deleting=True),
        pod("w-0"),  # running, not ready: a failing readiness probe shows only in events
    ]
    assert pods.needing_events(listed, limit=5) == ["w-0", "w-1"]
    assert pods.needing_events(listed, limit=1) == ["w-0"]
    warnings = {"w-1": [event("FailedMount", 'secret "tls" not found', "2025-01-01T12:00:09Z")]}
    assert pods.problems_by_nsqd(listed[:1], warnings) == {A: 'pod w-1: FailedMount: secret "tls" not found'}
