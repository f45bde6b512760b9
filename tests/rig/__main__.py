"""`python -m tests.rig up|down|status`: the rig for people, running in the background between commands."""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import signal
import sys
import time

from tests.rig import docker
from tests.rig.kube import KubeCluster
from tests.rig.nsq import NsqCluster
from tests.rig.procs import RigError
from tests.rig.tools import PROJECT_ROOT

STATE_DIR = PROJECT_ROOT / ".rig"
STATE_FILE = STATE_DIR / "state.json"


def up(nsqd_count: int, with_kube: bool, with_docker: bool) -> None:
    if STATE_FILE.exists():
        raise RigError(f"the rig is already up ({STATE_FILE}); run `make rig-down` first")
    STATE_DIR.mkdir(exist_ok=True)
    pids: list[int] = []
    env: dict[str, str] = {}
    nsq = NsqCluster.start(STATE_DIR / "nsq", nsqd_count=nsqd_count)
    pids += [lookupd.process.pid for lookupd in nsq.lookupds]
    pids += [nsqd.process.pid for nsqd in nsq.nsqds if nsqd.process]
    env["NSQ_LOOKUPD_HTTP_ADDRESS"] = nsq.lookupd_http_urls[0]
    env["NSQD_TCP_ADDRESSES"] = ",".join(nsqd.tcp_address for nsqd in nsq.nsqds)
    env["NSQD_HTTP_ADDRESSES"] = ",".join(nsqd.http_url for nsqd in nsq.nsqds)
    if with_kube:
        kube = KubeCluster.start(STATE_DIR / "kube")
        pids += [process.pid for process in kube.processes]
        env["KUBECONFIG"] = str(kube.kubeconfig)
    if with_docker:
        started = docker.ensure_engine(STATE_DIR / "docker")
        if started is not None:
            pids.append(started.pid)
        env["PYTHON_BASE"] = docker.ensure_base_image(STATE_DIR / "docker")
    STATE_FILE.write_text(json.dumps({"pids": pids, "env": env}, indent=2))
    (STATE_DIR / "env").write_text("".join(f"export {k}={v}\n" for k, v in env.items()))
    print("The rig is up. Logs are under .rig/*/logs. Use it from a shell with:  source .rig/env")
    for key, value in env.items():
        print(f"  {key}={value}")


def down() -> None:
    if not STATE_FILE.exists():
        print("The rig is not up.")
        return
    pids: list[int] = json.loads(STATE_FILE.read_text())["pids"]
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
    commands.add_parser("down", help="stop everything `up` started")
    args = parser.parse_args(argv)
    try:
        if args.command == "up":
            up(args.nsqd, with_kube=not args.no_kube, with_docker=not args.no_docker)
        else:
            down()
    except RigError as error:
        print(f"rig: {error}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
