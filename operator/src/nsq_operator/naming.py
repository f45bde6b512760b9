"""Deterministic names for the children of an NsqConsumer, so a retry never makes a duplicate."""

from __future__ import annotations

import hashlib

MAX_NAME_LENGTH = 63  # a DNS label, and the most a label value (the consumer's name is one) may hold
HASH_LENGTH = 10  # 40 bits: collisions between nsqds of one consumer are not a practical concern


def nsqd_hash(consumer: str, address: str) -> str:
    """A short, stable digest of one (consumer, nsqd) pair.

    The consumer's name is part of the digest so that two long consumer names that truncate to the
    same prefix still give different children for the same nsqd.
    """
    return hashlib.sha256(f"{consumer}\n{address}".encode()).hexdigest()[:HASH_LENGTH]


def worker_name(consumer: str, address: str) -> str:
    """`<consumer>-<hash>`, at most 63 characters; the consumer part is cut when it must be."""
    suffix = nsqd_hash(consumer, address)
    prefix = consumer[: MAX_NAME_LENGTH - HASH_LENGTH - 1].rstrip("-.")
    return f"{prefix}-{suffix}" if prefix else suffix


def consumer_name_problem(name: str) -> str | None:
    """Why a consumer name cannot be used as a label value, or None when it can."""
    if len(name) > MAX_NAME_LENGTH:
        return f"the name must be at most {MAX_NAME_LENGTH} characters (it is a label value), not {len(name)}"
    return None
