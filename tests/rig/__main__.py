"""`python -m tests.rig up|down|status`: the rig for people, running in the background between commands."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time

from tests.rig import docker, hostnet, node
from tests.rig.kube import KubeCluster
from tests.rig.nsq import NsqCluster
from tests.rig.procs import RigError
from tests.rig.tools import PROJECT_ROOT

STATE_DIR = PROJECT_ROOT / ".rig"
STATE_FILE = STATE_DIR / "state.json"


def up(nsqd_count: int, with_kube: bool, with_docker: bool, with_node: bool = False) -> None:
    if STATE_FILE.exists():
        raise RigError(f"the rig is already up ({STATE_FILE}); run `make rig-down` first")
    STATE_DIR.mkdir(exist_ok=True)
    pids: list[int] = []
    env: dict[str, str] = {}
    # With a real node, NSQ listens on the bridge gateway so pods reach it (the bridge comes first).
    host = hostnet.GATEWAY if with_node else "127.0.0.1"
    if with_node:
        hostnet.bridge_up()
    nsq = NsqCluster.start(STATE_DIR / "nsq", nsqd_count=nsqd_count, host=host)
    pids += [lookupd.process.pid for lookupd in nsq.lookupds]
    pids += [nsqd.process.pid for nsqd in nsq.nsqds if nsqd.process]
    env["NSQ_LOOKUPD_HTTP_ADDRESS"] = nsq.lookupd_http_urls[0]
    env["NSQD_TCP_ADDRESSES"] = ",".join(nsqd.tcp_address for nsqd in nsq.nsqds)
    env["NSQD_HTTP_ADDRESSES"] = ",".join(nsqd.http_url for nsqd in nsq.nsqds)
    if with_kube:
        kube = KubeCluster.start(STATE_DIR / "kube")
        pids += [process.pid for process in kube.processes]
        env["KUBECONFIG"] = str(kube.kubeconfig)
    if with_docker or with_node:
        started = docker.ensure_engine(STATE_DIR / "docker")
        if started is not None:
            pids.append(started.pid)
        env["PYTHON_BASE"] = docker.ensure_base_image(STATE_DIR / "docker")
    if with_node:
        if not with_kube:
            raise RigError("--real-node needs the control plane (drop --no-kube)")
        real = node.RealNode.start(kube.kubeconfig, kube.pki.ca_cert)
        pids += [process.pid for process in real.processes]
        env["NSQ_RIG_REAL_NODE"] = real.name
        # The lock goes with this process; `down` cleans up after the node instead.
        real._lock = None
    STATE_FILE.write_text(json.dumps({"pids": pids, "env": env}, indent=2))
    (STATE_DIR / "env").write_text("".join(f"export {k}={v}\n" for k, v in env.items()))
    print("The rig is up. Logs are under .rig/*/logs. Use it from a shell with:  source .rig/env")
    for key, value in env.items():
        print(f"  {key}={value}")


def down() -> None:
    if not STATE_FILE.exists():
        print("The rig is not up.")
        return
    state = json.loads(STATE_FILE.read_text())
    pids: list[int] = state["pids"]
    for pid in reversed(pids):
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGTERM)
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline and any(_alive(pid) for pid in pids):
        time.sleep(0.2)
    for pid in pids:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    STATE_FILE.unlink()
    node.cleanup_host()  # whatever a real node changed on the host (nothing, if none ran)
    hostnet.release_bridge(None)  # unless a test session beside it still needs the bridge
    print(f"The rig is down ({len(pids)} processes stopped). Its files stay in .rig/ for reading.")


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    return True


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m tests.rig", description=__doc__)
    commands = parser.add_subparsers(dest="command", required=True)
    start = commands.add_parser("up", help="start the NSQ cluster, the control plane and the Docker engine")
    start.add_argument("--nsqd", type=int, default=3, help="how many nsqd (default 3)")
    start.add_argument("--no-kube", action="store_true", help="skip the Kubernetes control plane")
    start.add_argument("--no-docker", action="store_true", help="skip the Docker engine")
    start.add_argument("--real-node", action="store_true",
                       help="add a real node: containerd, a kubelet and kube-proxy running pods")  # fmt: skip
    commands.add_parser("clean", help="undo what a crashed real node left on the host (idempotent)")
    commands.add_parser("down", help="stop everything `up` started")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up(
                args.nsqd,
                with_kube=not args.no_kube,
                with_docker=not args.no_docker,
                with_node=args.real_node,
            )
        elif args.command == "clean":
            node.cleanup_host()
            hostnet.bridge_down()
            print(
                "Cleaned: no real node's processes, mounts, cgroups, KUBE-* chains, bridge or sysctls left."
            )
        else:
            down()
    except RigError as error:
        print(f"rig: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
