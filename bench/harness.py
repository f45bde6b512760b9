"""The machinery every benchmark shares: pinning, publishing, starting a consumer, timing it.

The driver (this process) never imports gevent, gnsq, pynsq or the worker: every consumer is a
subprocess started from a command line, pinned with `taskset`, in a session of its own so that it
and whatever it forks stop together.

How a run is timed: the driver polls nsqd's /stats for the channel (every POLL seconds, on a
kept-alive connection, clients left out of the answer). The clock starts at the first poll that
sees a message leave the channel (depth below what was published, or anything in flight) and stops
at the first poll that sees the channel empty with nothing in flight. So the time is "first
delivery to last FIN" within one poll interval at each end, and excludes the interpreter's start.
"""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import time
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

from tests.rig.nsq import NsqCluster, Nsqd
from tests.rig.procs import tail
from tests.rig.tools import PROJECT_ROOT

VENV_BIN = PROJECT_ROOT / ".venv" / "bin"
PYTHON = str(VENV_BIN / "python")
POLL = 0.02
CLK_TCK = os.sysconf("SC_CLK_TCK")
# nsqd keeps every benchmark message in memory (no disk queue), so nsqd's disk is not measured.
NSQD_ARGS = ["--mem-queue-size=2000000", "--log-level=warn", "--max-body-size=8388608"]
MPUB_BATCH_BYTES = 2 * 1024 * 1024


class BenchError(RuntimeError):
    """A benchmark could not run as designed; the message says which part failed."""


# -- CPUs ---------------------------------------------------------------------------------------


def cpus() -> list[int]:
    return sorted(os.sched_getaffinity(0))


def pin(pid: int, cores: Iterable[int]) -> None:
    """Move every thread of a running process (a Go program has several) onto `cores`."""
    wanted = set(cores)
    for task in Path(f"/proc/{pid}/task").iterdir():
        with contextlib.suppress(ProcessLookupError, FileNotFoundError):
            os.sched_setaffinity(int(task.name), wanted)


def taskset(cores: Iterable[int] | None) -> list[str]:
    if cores is None:
        return []
    return ["taskset", "-c", ",".join(str(c) for c in sorted(cores))]


def cpu_seconds(pid: int) -> float:
    """User + system CPU time of a process so far (its reaped children included)."""
    try:
        text = Path(f"/proc/{pid}/stat").read_text()
    except (FileNotFoundError, ProcessLookupError):
        return float("nan")
    fields = text[text.rindex(")") + 2 :].split()
    utime, stime, cutime, cstime = (int(x) for x in fields[11:15])
    return (utime + stime + cutime + cstime) / CLK_TCK


# -- nsqd ---------------------------------------------------------------------------------------


@dataclass
class ChannelStats:
    depth: int = 0
    in_flight: int = 0
    deferred: int = 0
    message_count: int = 0
    requeue_count: int = 0
    timeout_count: int = 0
    clients: int = 0

    @property
    def outstanding(self) -> int:
        return self.depth + self.in_flight + self.deferred


class StatsClient:
    """GET /stats for one topic/channel on a kept-alive HTTP connection (cheap enough for 50/s)."""

    def __init__(self, nsqd: Nsqd) -> None:
        self.port = nsqd.http_port
        self._conn: http.client.HTTPConnection | None = None

    def channel(self, topic: str, channel: str) -> ChannelStats:
        path = f"/stats?format=json&topic={topic}&channel={channel}&include_mem=false"
        for attempt in range(3):
            try:
                if self._conn is None:
                    self._conn = http.client.HTTPConnection("127.0.0.1", self.port, timeout=10)
                self._conn.request("GET", path)
                response = self._conn.getresponse()
                body = response.read()
                break
            except (OSError, http.client.HTTPException):
                self.close()
                if attempt == 2:
                    raise
        data = json.loads(body)
        for t in data.get("topics") or []:
            if t["topic_name"] != topic:
                continue
            for c in t["channels"]:
                if c["channel_name"] == channel:
                    return ChannelStats(
                        depth=c["depth"],
                        in_flight=c["in_flight_count"],
                        deferred=c["deferred_count"],
                        message_count=c["message_count"],
                        requeue_count=c["requeue_count"],
                        timeout_count=c["timeout_count"],
                        clients=len(c.get("clients") or []),
                    )
        return ChannelStats()

    def close(self) -> None:
        if self._conn is not None:
            self._conn.close()
            self._conn = None


def http_post(nsqd: Nsqd, path: str) -> None:
    conn = http.client.HTTPConnection("127.0.0.1", nsqd.http_port, timeout=30)
    try:
        conn.request("POST", path)
        response = conn.getresponse()
        response.read()
        if response.status != 200:
            raise BenchError(f"nsqd {path}: HTTP {response.status}")
    finally:
        conn.close()


def delete_topic(nsqd: Nsqd, topic: str) -> None:
    with contextlib.suppress(BenchError, OSError):
        http_post(nsqd, f"/topic/delete?topic={topic}")


def _read_frame(sock: socket.socket) -> tuple[int, bytes]:
    head = _read_exactly(sock, 8)
    size, frame_type = struct.unpack(">ii", head)
    return frame_type, _read_exactly(sock, size - 4)


def _read_exactly(sock: socket.socket, n: int) -> bytes:
    chunks = []
    while n:
        chunk = sock.recv(n)
        if not chunk:
            raise BenchError("nsqd closed the connection while publishing")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


def _mpub_frame(topic: str, bodies: Sequence[bytes]) -> bytes:
    payload = struct.pack(">i", len(bodies)) + b"".join(struct.pack(">i", len(b)) + b for b in bodies)
    return f"MPUB {topic}\n".encode() + struct.pack(">i", len(payload)) + payload


def _batches(bodies: Sequence[bytes]) -> Iterable[Sequence[bytes]]:
    start, size = 0, 0
    for i, body in enumerate(bodies):
        size += len(body) + 4
        if size >= MPUB_BATCH_BYTES:
            yield bodies[start : i + 1]
            start, size = i + 1, 0
    if start < len(bodies):
        yield bodies[start:]


def publish(nsqd: Nsqd, topic: str, bodies: Sequence[bytes] | tuple[bytes, int]) -> int:
    """MPUB over TCP in ~2 MB batches. `bodies` is a list, or (one body, how many times)."""
    frames: Iterable[bytes]
    count: int
    if isinstance(bodies, tuple):
        body, count = bodies
        per_batch = max(1, MPUB_BATCH_BYTES // (len(body) + 4))
        full, rest = divmod(count, per_batch)
        whole = _mpub_frame(topic, [body] * per_batch)
        frames = [whole] * full + ([_mpub_frame(topic, [body] * rest)] if rest else [])
    else:
        count = len(bodies)
        frames = (_mpub_frame(topic, batch) for batch in _batches(bodies))
    with socket.create_connection(("127.0.0.1", nsqd.tcp_port), timeout=60) as sock:
        sock.sendall(b"  V2")
        for frame in frames:
            sock.sendall(frame)
            while True:
                frame_type, data = _read_frame(sock)
                if frame_type == 0 and data == b"_heartbeat_":
                    sock.sendall(b"NOP\n")
                    continue
                if frame_type != 0 or data != b"OK":
                    raise BenchError(f"MPUB failed: {data[:200]!r}")
                break
    return count


def fill(nsqd: Nsqd, topic: str, channel: str, bodies: Sequence[bytes] | tuple[bytes, int]) -> int:
    """A fresh topic with one channel holding exactly the published messages, ready to consume."""
    nsqd.create_topic(topic, channel)
    count = publish(nsqd, topic, bodies)
    stats = StatsClient(nsqd)
    deadline = time.monotonic() + 120
    try:
        while stats.channel(topic, channel).depth < count:
            if time.monotonic() > deadline:
                raise BenchError(f"{topic}/{channel} never reached a depth of {count}")
            time.sleep(0.05)
    finally:
        stats.close()
    return count


# -- consumers ----------------------------------------------------------------------------------


@dataclass
class Command:
    """How to start one consumer: argv, extra environment, which cores."""

    argv: list[str]
    env: Mapping[str, str] = field(default_factory=dict)
    cores: Sequence[int] | None = None
    # Messages the consumer may hold un-FINed at the end. Only NSQ's bench_reader needs it: it
    # flushes its FINs when its write buffer fills, so the last few wait until it is stopped.
    unflushed: int = 0
    # Stop with SIGTERM and wait (the profiled worker writes its samples on the way out); otherwise
    # the consumer is killed at once when its run is over: nothing of it is measured after that.
    graceful: bool = False


class Consumer:
    """A consumer subprocess in its own session; stopping it stops everything it forked."""

    def __init__(self, name: str, command: Command, log_path: Path) -> None:
        self.name = name
        self.log_path = log_path
        self.graceful = command.graceful
        log_path.parent.mkdir(parents=True, exist_ok=True)
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **command.env}
        with log_path.open("ab") as log:
            log.write(f"\n$ {' '.join(taskset(command.cores) + command.argv)}\n".encode())
            log.flush()
            self.started_at = time.monotonic()
            self.popen = subprocess.Popen(
                taskset(command.cores) + command.argv,
                stdout=log,
                stderr=subprocess.STDOUT,
                env=env,
                cwd=PROJECT_ROOT,
                start_new_session=True,
            )

    @property
    def pid(self) -> int:
        return self.popen.pid

    def alive(self) -> bool:
        return self.popen.poll() is None

    def check_alive(self) -> None:
        if not self.alive():
            raise BenchError(
                f"{self.name} exited with status {self.popen.returncode}:\n{tail(self.log_path, 30)}"
            )

    def cpu(self) -> float:
        return cpu_seconds(self.popen.pid)

    def stop(self, timeout: float = 10.0) -> None:
        """Graceful: SIGTERM to the session, then SIGKILL to it after `timeout`. Else SIGKILL at once."""
        if self.popen.poll() is not None or not self.graceful:
            self._kill_group(signal.SIGKILL)
            self.popen.wait()
            return
        self._kill_group(signal.SIGTERM)
        try:
            self.popen.wait(timeout)
        except subprocess.TimeoutExpired:
            self._kill_group(signal.SIGKILL)
            self.popen.wait()
        self._kill_group(signal.SIGKILL)  # anything it forked and left behind

    def _kill_group(self, signum: int) -> None:
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(self.popen.pid, signum)


@dataclass
class Run:
    """One consumer draining one (or more) channels, timed by polling nsqd."""

    competitor: str
    count: int
    first_at: float
    done_at: float
    started_at: float
    consumer_cpu: float
    nsqd_cpu: float
    finals: list[ChannelStats]
    unflushed: int = 0
    # Stop with SIGTERM and wait (the profiled worker writes its samples on the way out); otherwise
    # the consumer is killed at once when its run is over: nothing of it is measured after that.
    graceful: bool = False

    @property
    def seconds(self) -> float:
        return max(self.done_at - self.first_at, POLL)  # a tiny run can start and end in one poll

    @property
    def startup(self) -> float:
        return self.first_at - self.started_at

    @property
    def rate(self) -> float:
        return self.count / self.seconds

    @property
    def exact(self) -> bool:
        """Every message delivered once and finished: nothing requeued, timed out, left or in flight
        (bench_reader: or in its FIN buffer)."""
        return sum(f.message_count for f in self.finals) == self.count and all(
            f.depth == 0
            and f.deferred == 0
            and f.in_flight <= self.unflushed
            and f.requeue_count == 0
            and f.timeout_count == 0
            for f in self.finals
        )

    def as_dict(self) -> dict[str, object]:
        return {
            "competitor": self.competitor,
            "count": self.count,
            "seconds": round(self.seconds, 4),
            "rate": round(self.rate, 1),
            "startup": round(self.startup, 3),
            "consumer_cpu": round(self.consumer_cpu, 3),
            "nsqd_cpu": round(self.nsqd_cpu, 3),
            "exact": self.exact,
            "finals": [f.__dict__ for f in self.finals],
        }


def drain(
    name: str,
    commands: Sequence[Command],
    channels: Sequence[tuple[Nsqd, str, str, int]],
    log_dir: Path,
    timeout: float,
    stop_after: float | None = None,
) -> Run:
    """Start the consumer process(es), time them from first delivery until every channel is empty.

    `channels` is (nsqd, topic, channel, published) for each channel the consumers drain.
    With `stop_after`, the run is a probe: it stops that many seconds after the first delivery and
    `count` is what was consumed by then (for sizing the real runs).
    """
    stats = [StatsClient(nsqd) for nsqd, *_ in channels]
    nsqd_pids = {nsqd.process.pid for nsqd, *_ in channels if nsqd.process is not None}
    total = sum(published for *_, published in channels)
    unflushed = sum(c.unflushed for c in commands)
    consumers: list[Consumer] = []
    try:
        for i, command in enumerate(commands):
            consumers.append(Consumer(f"{name}[{i}]", command, log_dir / f"{name}.log"))
        started_at = min(c.started_at for c in consumers)
        deadline = started_at + timeout
        first_at = 0.0
        consumer_cpu0 = nsqd_cpu0 = 0.0
        while True:
            now = time.monotonic()
            seen = [s.channel(topic, ch) for s, (_, topic, ch, _) in zip(stats, channels, strict=True)]
            outstanding = sum(f.outstanding for f in seen)
            finished = all(f.depth == 0 and f.deferred == 0 for f in seen) and (
                sum(f.in_flight for f in seen) <= unflushed
            )
            if not first_at and (outstanding < total or any(f.in_flight for f in seen)):
                first_at = now
                consumer_cpu0 = sum(c.cpu() for c in consumers)
                nsqd_cpu0 = sum(cpu_seconds(pid) for pid in nsqd_pids)
            if first_at and (finished or (stop_after is not None and now - first_at >= stop_after)):
                done_at = now
                consumer_cpu = sum(c.cpu() for c in consumers) - consumer_cpu0
                nsqd_cpu = sum(cpu_seconds(pid) for pid in nsqd_pids) - nsqd_cpu0
                count = total if finished else total - outstanding
                break
            for consumer in consumers:
                consumer.check_alive()
            if now > deadline:
                raise BenchError(
                    f"{name}: {outstanding} of {total} messages left after {timeout:.0f}s\n"
                    f"{tail(log_dir / f'{name}.log', 30)}"
                )
            time.sleep(POLL)
    finally:
        for consumer in consumers:
            consumer.stop()
    finals = [s.channel(topic, ch) for s, (_, topic, ch, _) in zip(stats, channels, strict=True)]
    for s in stats:
        s.close()
    return Run(name, count, first_at, done_at, started_at, consumer_cpu, nsqd_cpu, finals, unflushed)


# -- the cluster --------------------------------------------------------------------------------


def start_cluster(root: Path, nsqd_args: Sequence[Sequence[str]], cores: Sequence[int] | None) -> NsqCluster:
    """One nsqd per entry of `nsqd_args` (its extra flags), every message kept in memory; no lookupd:
    the benchmarks name their nsqd. With `cores`, every nsqd thread is pinned there."""
    if root.exists():
        shutil.rmtree(root)
    cluster = NsqCluster(root)
    try:
        for extra in nsqd_args:
            nsqd = cluster.add_nsqd(extra_args=[*NSQD_ARGS, *extra])
            if cores is not None:
                pin(nsqd_pid(nsqd), cores)
    except BaseException:
        cluster.stop()
        raise
    return cluster


def nsqd_pid(nsqd: Nsqd) -> int:
    assert nsqd.process is not None
    return nsqd.process.pid
