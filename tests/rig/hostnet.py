"""The rig's pod network on the host: one bridge on a small private subnet, confined to this machine.

The bridge is made, with its gateway address, before the API server starts, so the API server, nsqd
and nsqlookupd can listen on the gateway (pods reach them there) before any pod exists. Pod traffic
may reach the host's own addresses (INPUT) and nothing else: two DROP rules at the top of FORWARD,
in the filter table and (because dockerd re-inserts its own jumps above other rules whenever it
starts) also in the mangle table, which nothing else touches. Pods get no default route either.

Everything here is idempotent and has an undo, also for what the kubelet and kube-proxy add to the
host's iptables (their KUBE-* chains and the jumps to them) and the nfacct objects kube-proxy makes.
"""

from __future__ import annotations

import contextlib
import os
import shlex
import shutil
import subprocess
import uuid
from pathlib import Path

from tests.rig.procs import RigError

BRIDGE = "nsqop0"
SUBNET = "10.250.0.0/24"
GATEWAY = "10.250.0.1"
PREFIX_LEN = 24
# The API server's service range; pods get a route to it through the gateway, where kube-proxy's
# rules turn 10.96.0.1:443 into the API server's own address.
SERVICE_RANGE = "10.96.0.0/16"
FIRST_SERVICE_IP = "10.96.0.1"
# Made by kube-proxy (iptables mode) on first start; they outlive it.
NFACCT_OBJECTS = ("ct_state_invalid_dropped_pkts", "localhost_nps_accepted_pkts")
_DROP_RULES = (("-s", SUBNET), ("-d", SUBNET))
# Who still needs the bridge: one file per control plane, holding the pid that must be alive for
# the claim to count (its API server's, which listens on the gateway). The last one out takes the
# bridge down, so two sessions on one machine never pull the address from under each other, and
# the claims of a crashed run (dead pids) hold nothing.
CLAIMS = Path("/run/nsq-operator-rig/bridge-claims")


def _run(*argv: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    result = subprocess.run(list(argv), capture_output=True, text=True, check=False, timeout=60)
    if check and result.returncode != 0:
        raise RigError(f"{' '.join(argv)} failed ({result.returncode}): {result.stderr.strip()}")
    return result


def _require(*commands: str) -> None:
    missing = [c for c in commands if shutil.which(c) is None]
    if missing:
        raise RigError(f"missing {', '.join(missing)}: make deps installs iproute2 and iptables")


def bridge_up() -> bool:
    """The bridge with the gateway address, up; a second call changes nothing.

    Returns whether this call made the bridge: only its maker removes it (a demo run beside a test
    session must not pull the address from under the session's API server).
    """
    _require("ip", "iptables")
    made = _run("ip", "link", "show", BRIDGE, check=False).returncode != 0
    if made:
        _run("ip", "link", "add", BRIDGE, "type", "bridge")
    addresses = _run("ip", "-o", "-4", "addr", "show", "dev", BRIDGE).stdout
    if f" {GATEWAY}/{PREFIX_LEN} " not in addresses:
        _run("ip", "addr", "add", f"{GATEWAY}/{PREFIX_LEN}", "dev", BRIDGE)
    _run("ip", "link", "set", BRIDGE, "up")
    confine()
    return made


def confine() -> None:
    """Put the two DROP rules at the top of FORWARD (filter and mangle), whatever was added since."""
    for table in ("filter", "mangle"):
        for flag, subnet in _DROP_RULES:
            rule = ["FORWARD", flag, subnet, "-j", "DROP"]
            while _run("iptables", "-t", table, "-D", *rule, check=False).returncode == 0:
                pass
            _run("iptables", "-t", table, "-I", rule[0], "1", *rule[1:])


def confined() -> bool:
    """True when the first two FORWARD rules of the filter table are the rig's DROPs."""
    listing = _run("iptables", "-t", "filter", "-S", "FORWARD").stdout.splitlines()
    rules = [line for line in listing if line.startswith("-A FORWARD")][:2]
    wanted = {f"-A FORWARD {flag} {subnet} -j DROP" for flag, subnet in _DROP_RULES}
    return set(rules) == wanted


def claim_bridge(claims: Path = CLAIMS) -> Path:
    """Bring the bridge up and record that this process needs it; `hold_claim` names a longer-lived
    process (the API server) once there is one."""
    bridge_up()
    claims.mkdir(parents=True, exist_ok=True)
    claim = claims / uuid.uuid4().hex
    claim.write_text(str(os.getpid()))
    return claim


def hold_claim(claim: Path, pid: int) -> None:
    claim.write_text(str(pid))


def live_claims(claims: Path = CLAIMS) -> list[Path]:
    """The claims whose process still runs (a claim of a crashed run is removed on the way)."""
    found = []
    for claim in sorted(claims.glob("*")) if claims.is_dir() else []:
        with contextlib.suppress(OSError, ValueError):
            pid = int(claim.read_text())
            if _running(pid):
                found.append(claim)
                continue
            claim.unlink()
    return found


def release_bridge(claim: Path | None, claims: Path = CLAIMS) -> bool:
    """Drop one claim; the bridge goes when no live claim is left. Returns whether it went."""
    if claim is not None:
        claim.unlink(missing_ok=True)
    if live_claims(claims):
        return False
    bridge_down()
    return True


def _running(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    stat = Path(f"/proc/{pid}/stat")
    with contextlib.suppress(OSError):
        return stat.read_text().rsplit(")", 1)[1].split()[0] != "Z"  # a zombie holds nothing
    return True


def bridge_down() -> None:
    """Remove the bridge and the DROP rules (after every pod is gone)."""
    with contextlib.suppress(FileNotFoundError):
        _run("ip", "link", "del", BRIDGE, check=False)
        for table in ("filter", "mangle"):
            for flag, subnet in _DROP_RULES:
                rule = ["FORWARD", flag, subnet, "-j", "DROP"]
                while _run("iptables", "-t", table, "-D", *rule, check=False).returncode == 0:
                    pass


def remove_kube_chains() -> list[str]:
    """Delete every KUBE-* chain the kubelet and kube-proxy made (IPv4 and IPv6); returns what went.

    Jumps into them from the built-in chains go first, then the chains are flushed, then deleted.
    """
    removed: list[str] = []
    for tool in ("iptables", "ip6tables"):
        if shutil.which(tool) is None:
            continue
        for table in ("filter", "nat", "mangle"):
            listing = _run(tool, "-t", table, "-S", check=False)
            if listing.returncode != 0:
                continue
            chains = [line.split()[1] for line in listing.stdout.splitlines() if line.startswith("-N KUBE-")]
            for line in listing.stdout.splitlines():
                parts = shlex.split(line)  # comments are quoted and hold spaces
                if parts[:1] == ["-A"] and not parts[1].startswith("KUBE-") and _jumps_to_kube(parts):
                    _run(tool, "-t", table, "-D", *parts[1:], check=False)
            for chain in chains:
                _run(tool, "-t", table, "-F", chain, check=False)
            for chain in chains:
                if _run(tool, "-t", table, "-X", chain, check=False).returncode == 0:
                    removed.append(f"{tool}/{table}/{chain}")
    return removed


def _jumps_to_kube(parts: list[str]) -> bool:
    for flag in ("-j", "-g"):
        if flag in parts:
            index = parts.index(flag)
            if index + 1 < len(parts) and parts[index + 1].startswith("KUBE-"):
                return True
    return False


def remove_nfacct_objects() -> None:
    """kube-proxy's nfacct counters; `nfacct` from Debian's package of that name."""
    if shutil.which("nfacct") is None:
        return
    for name in NFACCT_OBJECTS:
        _run("nfacct", "del", name, check=False)
