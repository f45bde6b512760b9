"""dramatiq on Redis: the latency benchmark's actor, and the enqueuer.

Workers:  BENCH_REDIS_URL=redis://... dramatiq-gevent bench.consumers.dramatiq_tasks \
              --processes 1 --threads 2500 --queues bench-latency
Enqueue:  BENCH_REDIS_URL=redis://... python -m bench.consumers.dramatiq_tasks enqueue SLEEPS.json

The actor counts the tasks it has finished in Redis (`bench:done`), as dramatiq's own latency
benchmark does (it used memcached): dramatiq acknowledges in batches, so the last acks reach Redis
up to a second or so after the last task ends.
"""

from __future__ import annotations

import json
import os
import sys
import time

import dramatiq
import redis
from dramatiq.brokers.redis import RedisBroker

QUEUE = "bench-latency"
DONE_KEY = "bench:done"

REDIS_URL = os.environ.get("BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
# Each of the 2,500 greenlets acknowledges its own message. redis-py's default pool refuses a 101st
# connection and dramatiq then retries the acknowledgement 5 s later, so dramatiq gets what a user
# would give it with gevent: a blocking pool, where a greenlet waits for a free connection.
POOL = redis.BlockingConnectionPool.from_url(REDIS_URL, max_connections=100, timeout=None)
broker = RedisBroker(connection_pool=POOL)  # type: ignore[no-untyped-call]
dramatiq.set_broker(broker)
# The count has a small pool of its own, so it never holds the broker's connections.
counter = redis.Redis(connection_pool=redis.BlockingConnectionPool.from_url(REDIS_URL, max_connections=20))


@dramatiq.actor(queue_name=QUEUE, max_retries=0)
def sleep_task(seconds: float) -> None:
    time.sleep(seconds)  # a gevent sleep under dramatiq-gevent, which monkey-patches
    # Counted as done here, as dramatiq's own latency benchmark counts (it used memcached).
    counter.incr(DONE_KEY)


def enqueue(path: str) -> int:
    with open(path) as f:
        sleeps = json.load(f)
    for seconds in sleeps:
        sleep_task.send(seconds)
    return len(sleeps)


if __name__ == "__main__":
    if len(sys.argv) != 3 or sys.argv[1] != "enqueue":
        sys.exit(__doc__)
    print(enqueue(sys.argv[2]))
