"""Benchmarks (`make bench`, i.e. `python -m bench`): measured side by side, written to BENCHMARKS.md.

1. throughput on one core against a stock gnsq Consumer, pynsq and NSQ's Go bench_reader;
2. latency-bound handlers (dramatiq's latency benchmark) against pynsq and dramatiq;
3. one process per nsqd against one process for every nsqd.

The driver (this package minus `bench.consumers`) never imports gevent or the worker: every
consumer runs as a pinned subprocess.
"""
