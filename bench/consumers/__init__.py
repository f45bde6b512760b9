"""Consumers the benchmarks start as subprocesses; the driver never imports these modules.

Each one monkey-patches or runs an event loop of its own (gevent, tornado), which must not leak
into the driver or into one another.
"""
