"""6. Repairs: how long a worker Deployment someone edits or deletes stays that way, previous design vs v2.

The same harness as section 5 (bench/operator.py): a fresh control plane per side, kwok's fake
nodes, a fake lookupd listing three nsqd, one NsqConsumer polling every 5 s. Then, a few times
each, what people do by hand: `kubectl set image` on a worker Deployment (timed until the image is
the operator's again) and `kubectl delete` of one (timed until one of that name, with a new uid,
exists again). Reads are raw GETs every 50 ms, so the time is the operator's, not kubectl's.
"""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench.common import Config, rotate
from bench.operator import LABELS, SIDES, Phase, previous_side, v2_side
from bench.operator_rig import nsqd_host

TOPIC = "repair"
POLL = 5
TRIALS = 3
GIVE_UP = 20.0  # seconds: longer than a poll, so a repair at the next poll is seen too
IMPOSTOR = "elsewhere/impostor:1"

Log = Callable[[str], None]


def _deployments(phase: Phase) -> list[dict[str, Any]]:
    url = f"{phase.kube.server}/apis/apps/v1/namespaces/{phase.namespace}/deployments"
    response = phase.session.get(url, params={"labelSelector": "nsqoperator.dev/consumer=c000"}, timeout=10)
    response.raise_for_status()
    items: list[dict[str, Any]] = response.json().get("items") or []
    return items


def _image(deployment: dict[str, Any]) -> str:
    return str(deployment["spec"]["template"]["spec"]["containers"][0]["image"])


def _until(check: Callable[[], bool], started: float) -> float | None:
    """Seconds from `started` until `check` holds, or None after GIVE_UP."""
    while time.monotonic() - started < GIVE_UP:
        if check():
            return time.monotonic() - started
        time.sleep(0.05)
    return None


def side_run(side_key: str, config: Config, root: Path, log: Log) -> dict[str, Any]:
    sides = {"previous": previous_side(config.operator_previous, log), "v2": v2_side(config.operator_v2)}
    with Phase(root, "bench-repair") as phase:
        phase.fake.set(TOPIC, [nsqd_host(i) for i in range(1, 4)])
        phase.consumers(1, TOPIC, POLL, grace=300)
        running = phase.start_operator(sides[side_key])
        running.wait_live(timeout=120, any_status=True)
        deadline = time.monotonic() + 120
        while len(_deployments(phase)) < 3 and time.monotonic() < deadline:
            time.sleep(0.2)
        first = sorted(_deployments(phase), key=lambda d: d["metadata"]["name"])[0]
        name, image = first["metadata"]["name"], _image(first)
        edits: list[float | None] = []
        deletes: list[float | None] = []
        for _ in range(TRIALS):
            phase.kube.kubectl(
                "set", "image", f"deployment/{name}", f"worker={IMPOSTOR}", "-n", phase.namespace
            )
            started = time.monotonic()

            def put_back() -> bool:
                return any(d["metadata"]["name"] == name and _image(d) == image for d in _deployments(phase))

            edits.append(_until(put_back, started))
            if edits[-1] is None:  # not repaired: put it back by hand for the next trial
                phase.kube.kubectl(
                    "set", "image", f"deployment/{name}", f"worker={image}", "-n", phase.namespace
                )
            time.sleep(1)
            uid = next(d["metadata"]["uid"] for d in _deployments(phase) if d["metadata"]["name"] == name)
            phase.kube.kubectl("delete", "deployment", name, "-n", phase.namespace, "--wait=false")
            started = time.monotonic()

            def made_again(uid: str = uid) -> bool:
                return any(
                    d["metadata"]["name"] == name and d["metadata"]["uid"] != uid for d in _deployments(phase)
                )

            deletes.append(_until(made_again, started))
            time.sleep(1)
        log(f"  {LABELS[side_key]}: image put back {edits}, deleted one made again {deletes}")
        return {"edit": edits, "delete": deletes}


def measure(config: Config, log: Log) -> dict[str, Any]:
    result: dict[str, Any] = {"poll_interval": POLL, "trials": TRIALS, "give_up": GIVE_UP, "sides": {}}
    for key in rotate(SIDES, 0):
        log(f"repairs, {LABELS[key]}")
        result["sides"][key] = side_run(key, config, config.work / "repair" / key, log)
    return result


def _summary(values: list[float | None]) -> str:
    done = [v for v in values if v is not None]
    if not done:
        return f"not repaired in {GIVE_UP:g} s ({len(values)} of {len(values)})"
    text = f"median {statistics.median(done):.2f} s, max {max(done):.2f} s"
    missed = len(values) - len(done)
    return text + (f"; {missed} of {len(values)} not repaired in {GIVE_UP:g} s" if missed else "")


def report(result: dict[str, Any], add: Callable[[str], None]) -> None:
    add("## 6. Repairs: an edited or deleted worker Deployment, previous design vs v2\n")
    sides = result["sides"]
    add(
        f"One NsqConsumer, three nsqd, a {result['poll_interval']} s poll; each measure {result['trials']} "
        f"times, given up after {result['give_up']:g} s.\n"
    )
    add("| Someone... | previous design | v2 |")
    add("|---|---|---|")
    before, after = sides["previous"], sides["v2"]
    add(f"| sets another image on a worker | {_summary(before['edit'])} | {_summary(after['edit'])} |")
    add(f"| deletes a worker Deployment | {_summary(before['delete'])} | {_summary(after['delete'])} |")
    add(
        "\nThe previous design compared only its own spec-hash annotation, so an edited image stayed, and "
        "it noticed a deleted Deployment at its next poll. v2 watches its Deployments and judges each "
        "new generation against what it wrote.\n"
    )
