"""2. Latency-bound handlers: dramatiq's latency benchmark, on NSQ.

10,000 tasks whose handler sleeps 10 s (1 %), 5 s (29 %), 3 s (20 %) or 1 s (50 %), drawn once
with a fixed seed, so every competitor gets the very same sleeps in the very same order. One
consumer process with 2,500 handlers at once, pinned to one core; the broker (nsqd, or Redis for
dramatiq) on the other. The clock starts when the consumer process is started (before it boots)
and stops when the last task is done: for NSQ, when nsqd has no message left and none in flight
(every FIN arrived; nsqd /stats); for dramatiq, when the actor's count of finished tasks in Redis
reaches N, as dramatiq's own benchmark counts (the time its last acknowledgement reached Redis is
kept too).
"""

from __future__ import annotations

import heapq
import json
import random
import time
from collections.abc import Callable, Sequence
from typing import Any

import redis

from bench import harness
from bench.common import Config, Cores, rotate, summary
from bench.harness import BenchError, Command, Consumer
from tests.rig.nsq import Nsqd
from tests.rig.procs import Process, free_port, port_open, tail

CHANNEL = "bench"
SLEEPS = ((0.01, 10.0), (0.30, 5.0), (0.50, 3.0), (1.00, 1.0))  # cumulative probability -> seconds
MEAN = 0.01 * 10 + 0.29 * 5 + 0.20 * 3 + 0.50 * 1  # 2.65 s
COMPETITORS = ("worker", "pynsq", "dramatiq")
EXTRA = "worker-mif-all"
LABELS = {
    "worker": "nsq-worker (this project), max in flight 2,500",
    "pynsq": "pynsq 0.9.1 Reader, async messages + tornado timers, max in flight 2,500",
    "dramatiq": "dramatiq 2.2.1 on Redis, dramatiq-gevent, 1 process x 2,500 greenlets",
    EXTRA: "nsq-worker, max in flight = every message (nsqd --max-rdy-count raised)",
}
# Published figures, for context only: other machines, other brokers.
PUBLISHED = {
    "dramatiq-gevent (dramatiq's README, Redis)": 23.47,
    "magne's coroutine consumer (magne's README)": 11.96,
}
DRAMATIQ_QUEUE = "bench-latency"
DONE_KEY = "bench:done"  # the actor's count of finished tasks (bench/consumers/dramatiq_tasks.py)


def draw(count: int, seed: int, scale: float = 1.0) -> list[float]:
    rng = random.Random(seed)
    sleeps = []
    for _ in range(count):
        p = rng.random()
        sleeps.append(next(seconds for limit, seconds in SLEEPS if p < limit) * scale)
    return sleeps


def fifo_bound(sleeps: Sequence[float], slots: int) -> float:
    """When the last task ends if each one starts the moment a slot frees up, in order, at no cost.

    That is what any consumer that takes messages in order with `slots` at once can do at best.
    """
    ends = [0.0] * min(slots, len(sleeps))
    heapq.heapify(ends)
    last = 0.0
    for seconds in sleeps:
        end = heapq.heappop(ends) + seconds
        heapq.heappush(ends, end)
        last = max(last, end)
    return last


class Redis:
    """A redis-server of our own on a free loopback port, nothing saved to disk."""

    def __init__(self, config: Config) -> None:
        self.port = free_port()
        self.url = f"redis://127.0.0.1:{self.port}/0"
        argv = [
            "redis-server",
            "--port", str(self.port),
            "--bind", "127.0.0.1",
            "--save", "",
            "--appendonly", "no",
            "--dir", str(config.work),
        ]  # fmt: skip
        self.process = Process("redis", argv, config.work / "logs" / "redis.log").start()
        self.process.wait_until(port_open(self.port), timeout=30)
        self.client = redis.Redis(port=self.port)

    def stop(self) -> None:
        self.client.close()
        self.process.stop()


class Bench:
    def __init__(
        self,
        config: Config,
        cores: Cores,
        nsqd: Nsqd,
        wide_nsqd: Nsqd,
        redis_server: Redis,
        sleeps: list[float],
        log: Callable[[str], None],
    ) -> None:
        self.config = config
        self.cores = cores
        self.nsqd = nsqd
        self.wide_nsqd = wide_nsqd
        self.redis = redis_server
        self.sleeps = sleeps
        self.bodies = [json.dumps({"sleep": s}).encode() for s in sleeps]
        self.log = log
        self.seq = 0
        self.timeout = 120 + 10 * max(sleeps) + 5 * sum(sleeps) / config.concurrency

    def run(self, competitor: str) -> dict[str, Any]:
        if competitor == "dramatiq":
            return self.run_dramatiq()
        self.seq += 1
        topic = f"lat{self.seq}-{competitor}"
        nsqd = self.wide_nsqd if competitor == EXTRA else self.nsqd
        harness.fill(nsqd, topic, CHANNEL, self.bodies)
        try:
            run = harness.drain(
                competitor,
                [self.command(competitor, nsqd, topic)],
                [(nsqd, topic, CHANNEL, len(self.bodies))],
                self.config.work / "logs",
                timeout=self.timeout,
            )
        finally:
            harness.delete_topic(nsqd, topic)
        return {
            "competitor": competitor,
            "count": run.count,
            "seconds": round(run.done_at - run.started_at, 3),
            "startup": round(run.startup, 3),
            "exact": run.exact,
        }

    def command(self, competitor: str, nsqd: Nsqd, topic: str) -> Command:
        where = ["--topic", topic, "--channel", CHANNEL, "--nsqd-tcp-address", nsqd.tcp_address]
        core = [self.cores.consumer]
        if competitor in ("worker", EXTRA):
            mif = self.config.concurrency if competitor == "worker" else len(self.bodies)
            argv = [str(harness.VENV_BIN / "nsq-worker"), "nsq_worker.examples:SleepWorker", *where]
            argv += ["--max-in-flight", str(mif), "--concurrency", str(mif)]
            env = {"NSQ_HEALTH_PORT": "0", "NSQ_LOG_LEVEL": "WARNING", "NSQ_LOG_FORMAT": "text"}
            return Command(argv, env, core)
        if competitor == "pynsq":
            argv = [harness.PYTHON, "-m", "bench.consumers.pynsq_reader", *where, "--handler", "sleep"]
            return Command([*argv, "--max-in-flight", str(self.config.concurrency)], {}, core)
        raise ValueError(competitor)

    def run_dramatiq(self) -> dict[str, Any]:
        client = self.redis.client
        client.flushall()
        env = {"BENCH_REDIS_URL": self.redis.url}
        sleeps_path = self.config.work / "sleeps.json"
        sleeps_path.write_text(json.dumps(self.sleeps))
        log_path = self.config.work / "logs" / "dramatiq.log"
        enqueue = Consumer(
            "dramatiq-enqueue",
            Command(
                [harness.PYTHON, "-m", "bench.consumers.dramatiq_tasks", "enqueue", str(sleeps_path)], env
            ),
            log_path,
        )
        if enqueue.popen.wait(300) != 0:
            raise BenchError(f"dramatiq enqueue failed:\n{tail(log_path, 30)}")
        queue, messages = f"dramatiq:{DRAMATIQ_QUEUE}", f"dramatiq:{DRAMATIQ_QUEUE}.msgs"
        dead = f"dramatiq:{DRAMATIQ_QUEUE}.XQ.msgs"
        count = int(client.hlen(messages))
        if count != len(self.sleeps):
            raise BenchError(f"dramatiq: {count} messages in Redis, expected {len(self.sleeps)}")
        argv = [
            str(harness.VENV_BIN / "dramatiq-gevent"),
            "bench.consumers.dramatiq_tasks",
            "--processes", "1",
            "--threads", str(self.config.concurrency),
            "--queues", DRAMATIQ_QUEUE,
        ]  # fmt: skip
        worker = Consumer("dramatiq", Command(argv, env, [self.cores.consumer]), log_path)
        first_at = done_at = acked_at = 0.0
        try:
            deadline = worker.started_at + self.timeout
            while not acked_at:
                now = time.monotonic()
                if not first_at and int(client.llen(queue)) < count:
                    first_at = now
                if not done_at and int(client.get(DONE_KEY) or 0) >= count:
                    done_at = now
                if int(client.hlen(messages)) == 0:
                    acked_at = now
                    break
                worker.check_alive()
                if now > deadline or (done_at and now > done_at + 30):
                    raise BenchError(
                        f"dramatiq: not every message done and acknowledged in {self.timeout:.0f}s"
                    )
                time.sleep(harness.POLL)
        finally:
            worker.stop()
        done = int(client.get(DONE_KEY) or 0)
        return {
            "competitor": "dramatiq",
            "count": count,
            "seconds": round((done_at or acked_at) - worker.started_at, 3),
            "acked": round(acked_at - worker.started_at, 3),
            "startup": round((first_at or done_at) - worker.started_at, 3),
            "exact": done == count and int(client.hlen(dead)) == 0,
        }


def measure(
    config: Config, cores: Cores, nsqd: Nsqd, wide_nsqd: Nsqd, log: Callable[[str], None]
) -> dict[str, Any]:
    sleeps = draw(config.latency_messages, config.latency_seed, config.latency_scale)
    n, conc, scale = len(sleeps), config.concurrency, config.latency_scale
    floor = max(n * MEAN * scale / conc, 10.0 * scale)
    drawn_floor = max(sum(sleeps) / conc, max(sleeps))
    results: dict[str, Any] = {
        "messages": n,
        "concurrency": conc,
        "seed": config.latency_seed,
        "scale": scale,
        "mean_sleep": sum(sleeps) / n,
        "floor": floor,
        "drawn_floor": drawn_floor,
        "fifo_bound": fifo_bound(sleeps, conc),
        "extra_floor": max(sleeps),  # every message in flight at once: the longest sleep
        "published": PUBLISHED,
        "competitors": {},
    }
    competitors = [*COMPETITORS, EXTRA]
    redis_server = Redis(config)
    try:
        bench = Bench(config, cores, nsqd, wide_nsqd, redis_server, sleeps, log)
        for name in competitors:
            results["competitors"][name] = {"runs": []}
        for round_ in range(config.repeats):
            for competitor in rotate(competitors, round_):
                run = bench.run(competitor)
                results["competitors"][competitor]["runs"].append(run)
                log(
                    f"  latency round {round_ + 1} {competitor}: {run['seconds']:.2f}s "
                    f"(floor {floor:.2f}s){'' if run['exact'] else '  (NOT EXACT)'}"
                )
    finally:
        redis_server.stop()
    for data in results["competitors"].values():
        data["seconds"] = summary([r["seconds"] for r in data["runs"]])
        data["exact"] = all(r["exact"] for r in data["runs"])
    return results
