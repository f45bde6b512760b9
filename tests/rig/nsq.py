"""A real NSQ cluster: nsqlookupd(s) and nsqd(s) from the pinned NSQ build.

On loopback by default; for pods on the real node, on the rig's bridge gateway (`host`), which the
nsqd also broadcast, so lookupd hands pods an address they can reach.
"""

from __future__ import annotations

import time
from collections.abc import Iterable
from dataclasses import dataclass, field
from pathlib import Path

import requests

from tests.rig.procs import Process, RigError, free_port, http_ok
from tests.rig.tools import binary


@dataclass
class Lookupd:
    """One nsqlookupd."""

    name: str
    tcp_port: int
    http_port: int
    process: Process
    host: str = "127.0.0.1"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    @property
    def tcp_address(self) -> str:
        return f"{self.host}:{self.tcp_port}"

    def producers(self, topic: str) -> list[str]:
        """`host:tcp_port` of every nsqd lookupd lists for the topic."""
        response = requests.get(f"{self.http_url}/lookup", params={"topic": topic}, timeout=5)
        if response.status_code == 404:
            return []
        response.raise_for_status()
        return sorted(
            f"{p['broadcast_address']}:{p['tcp_port']}" for p in response.json().get("producers", [])
        )


@dataclass
class Nsqd:
    """One nsqd with its own data directory."""

    name: str
    tcp_port: int
    http_port: int
    data_path: Path
    lookupd_tcp_addresses: list[str]
    log_path: Path
    extra_args: list[str] = field(default_factory=list)
    process: Process | None = None
    host: str = "127.0.0.1"
    # nsqd listens for HTTPS on 0.0.0.0:4152 whenever TLS is configured unless told otherwise:
    # always give it a port of its own on `host`.
    https_port: int = field(default_factory=free_port)

    @property
    def tcp_address(self) -> str:
        return f"{self.host}:{self.tcp_port}"

    @property
    def http_url(self) -> str:
        return f"http://{self.host}:{self.http_port}"

    def start(self) -> Nsqd:
        """Start (or restart, keeping the data directory and ports) this nsqd."""
        self.data_path.mkdir(parents=True, exist_ok=True)
        argv = [
            binary("nsqd"),
            f"--tcp-address={self.host}:{self.tcp_port}",
            f"--http-address={self.host}:{self.http_port}",
            f"--https-address={self.host}:{self.https_port}",
            f"--broadcast-address={self.host}",
            f"--data-path={self.data_path}",
            *(f"--lookupd-tcp-address={a}" for a in self.lookupd_tcp_addresses),
            *self.extra_args,
        ]
        self.process = Process(self.name, argv, self.log_path).start()
        self.process.wait_until(http_ok(f"{self.http_url}/ping"), timeout=30)
        return self

    def stop(self) -> None:
        if self.process is not None:
            self.process.stop()

    def kill(self) -> None:
        if self.process is not None:
            self.process.kill()

    def create_topic(self, topic: str, channel: str | None = None) -> None:
        requests.post(f"{self.http_url}/topic/create", params={"topic": topic}, timeout=5).raise_for_status()
        if channel:
            requests.post(
                f"{self.http_url}/channel/create", params={"topic": topic, "channel": channel}, timeout=5
            ).raise_for_status()

    def publish(self, topic: str, bodies: Iterable[bytes], batch: int = 500) -> int:
        """Publish every body with /mpub (binary form) and return how many were sent."""
        count = 0
        chunk: list[bytes] = []
        for body in bodies:
            chunk.append(body)
            if len(chunk) >= batch:
                count += self._mpub(topic, chunk)
                chunk = []
        if chunk:
            count += self._mpub(topic, chunk)
        return count

    def _mpub(self, topic: str, bodies: list[bytes]) -> int:
        payload = len(bodies).to_bytes(4, "big") + b"".join(len(b).to_bytes(4, "big") + b for b in bodies)
        response = requests.post(
            f"{self.http_url}/mpub", params={"topic": topic, "binary": "true"}, data=payload, timeout=30
        )
        response.raise_for_status()
        return len(bodies)

    def stats(self, topic: str | None = None) -> dict[str, object]:
        params = {"format": "json", **({"topic": topic} if topic else {})}
        response = requests.get(f"{self.http_url}/stats", params=params, timeout=5)
        response.raise_for_status()
        data: dict[str, object] = response.json()
        return data

    def channel_stats(self, topic: str, channel: str) -> dict[str, int]:
        """depth, in_flight_count, requeue_count, timeout_count, message_count... for one channel."""
        for t in self.stats(topic).get("topics") or []:  # type: ignore[attr-defined]
            if t["topic_name"] != topic:
                continue
            for c in t["channels"]:
                if c["channel_name"] == channel:
                    return {k: v for k, v in c.items() if isinstance(v, int)}
        return {}


@dataclass
class NsqCluster:
    """nsqlookupd(s) and nsqd(s) registered with every one of them."""

    root: Path
    lookupds: list[Lookupd] = field(default_factory=list)
    nsqds: list[Nsqd] = field(default_factory=list)
    host: str = "127.0.0.1"

    @classmethod
    def start(
        cls, root: Path, nsqd_count: int = 2, lookupd_count: int = 1, host: str = "127.0.0.1"
    ) -> NsqCluster:
        cluster = cls(root, host=host)
        try:
            for _ in range(lookupd_count):
                cluster.add_lookupd()
            for _ in range(nsqd_count):
                cluster.add_nsqd()
        except BaseException:
            cluster.stop()
            raise
        return cluster

    @property
    def lookupd_http_urls(self) -> list[str]:
        return [lookupd.http_url for lookupd in self.lookupds]

    def add_lookupd(self) -> Lookupd:
        name = f"nsqlookupd-{len(self.lookupds)}"
        tcp_port, http_port = free_port(), free_port()
        argv = [
            binary("nsqlookupd"),
            f"--tcp-address={self.host}:{tcp_port}",
            f"--http-address={self.host}:{http_port}",
            f"--broadcast-address={self.host}",
        ]
        process = Process(name, argv, self.root / "logs" / f"{name}.log").start()
        process.wait_until(http_ok(f"http://{self.host}:{http_port}/ping"), timeout=30)
        lookupd = Lookupd(name, tcp_port, http_port, process, host=self.host)
        self.lookupds.append(lookupd)
        return lookupd

    def add_nsqd(self, extra_args: list[str] | None = None) -> Nsqd:
        name = f"nsqd-{len(self.nsqds)}"
        nsqd = Nsqd(
            name=name,
            tcp_port=free_port(),
            http_port=free_port(),
            data_path=self.root / "data" / name,
            lookupd_tcp_addresses=[lookupd.tcp_address for lookupd in self.lookupds],
            log_path=self.root / "logs" / f"{name}.log",
            extra_args=extra_args or [],
            host=self.host,
        )
        self.nsqds.append(nsqd.start())
        return nsqd

    def wait_for_producers(self, topic: str, expected: list[str], timeout: float = 15.0) -> None:
        """Wait until every lookupd lists exactly `expected` as producers of `topic`."""
        deadline = time.monotonic() + timeout
        want = sorted(expected)
        seen: dict[str, list[str]] = {}
        while time.monotonic() < deadline:
            seen = {
                lookupd.name: lookupd.producers(topic) for lookupd in self.lookupds if lookupd.process.alive()
            }
            if all(found == want for found in seen.values()):
                return
            time.sleep(0.1)
        raise RigError(f"lookupd never listed {want} for {topic!r}; last seen {seen}")

    @property
    def log_dir(self) -> Path:
        return self.root / "logs"

    def stop(self) -> None:
        for nsqd in self.nsqds:
            nsqd.stop()
        for lookupd in self.lookupds:
            lookupd.process.stop()
