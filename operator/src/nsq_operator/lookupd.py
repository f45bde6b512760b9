"""Ask every nsqlookupd which nsqd produce a topic, and union the answers.

Failures are values, never exceptions: one dead lookupd must not stop a poll, and the planner must
be able to tell "no nsqd has the topic" (safe to act on) from "we could not find out" (never delete).
Two ways to ask, one way to read the answer (`parse_lookup`): the operator's scheduler asks with
`ask` (async, one total deadline per lookup, shared by every consumer of a topic); local mode asks
with `lookup` (threads, every lookupd at once, so a poll waits for the slowest, not for the sum).
"""

from __future__ import annotations

import asyncio
import json
import logging
import re
from collections.abc import Iterable, Mapping
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

import aiohttp
import requests

USER_AGENT = "nsq-operator/0.1.0"
# nsqlookupd answers the bare {"producers": [...]} body only when asked for this version.
ACCEPT = "application/vnd.nsq; version=1.0"
DEFAULT_TIMEOUT = (2.0, 5.0)  # (connect, read) seconds: a poll must not hang on one lookupd
# Requests in flight at once over every poll. The pool's tasks never wait on the pool, so a full
# pool only queues (a poll then waits a little longer), it cannot deadlock.
FANOUT_THREADS = 32
MAX_ANSWER_BYTES = 8 * 1024 * 1024  # thousands of producers fit; a runaway answer does not

# The userinfo of a URL anywhere in a text: after `://`, up to the last `@` before the host ends
# (whitespace, `/`, `?` or `#`), so a password holding an `@` goes whole. Anchored on `://` (not on
# a scheme's letters), so a long line is scanned in linear time.
_USERINFO = re.compile(r"(?<=://)[^\s/?#]*@")


def redact(text: str) -> str:
    """`text` with the credentials of every URL in it replaced: `http://user:pass@host` -> `http://***@host`.

    For what the operator shows (conditions, events, logs, metric labels), never for what it asks: a
    lookupd URL with `user:pass@` is still requested as written. Works on a bare URL and on a sentence
    (an error message) alike, and on its own output (idempotent).
    """
    return _USERINFO.sub("***@", text) if "@" in text else text


class RedactingFilter(logging.Filter):
    """A log handler's filter that redacts URL credentials in every record's message and traceback."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            message = record.getMessage()
        except Exception:  # arguments that do not fit the format: the handler reports it as usual
            return True
        if "@" in message:
            record.msg, record.args = redact(message), None
        if record.exc_info and not record.exc_text:
            record.exc_text = logging.Formatter().formatException(record.exc_info)
        if record.exc_text and "@" in record.exc_text:
            redacted = redact(record.exc_text)
            if redacted != record.exc_text:
                # Formatters print exc_text; one that formats exc_info itself must not see the original.
                record.exc_text, record.exc_info = redacted, None
        return True


def redact_logs(logger: logging.Logger | None = None) -> None:
    """Put a RedactingFilter on every handler of `logger` (the root logger by default)."""
    for handler in (logger or logging.getLogger()).handlers:
        if not any(isinstance(f, RedactingFilter) for f in handler.filters):
            handler.addFilter(RedactingFilter())


@dataclass(frozen=True)
class Producers:
    """One lookupd answered: these `host:tcp_port` addresses produce the topic (possibly none)."""

    lookupd: str
    addresses: frozenset[str]
    # host:http_port by address, where lookupd told it (the autoscaler reads each nsqd's /stats).
    # Left out of equality: only the set of producers is news.
    http_addresses: Mapping[str, str] = field(default_factory=dict, compare=False)


MAX_REASON_LENGTH = 300  # reasons go into conditions and events: keep them readable


@dataclass(frozen=True)
class LookupFailure:
    """One lookupd could not be asked, or answered something we cannot trust."""

    lookupd: str  # as the spec has it (credentials too): show it through `redact`
    reason: str  # never holds credentials: redacted here, before it is cut to length

    def __post_init__(self) -> None:
        reason = redact(self.reason)
        if len(reason) > MAX_REASON_LENGTH:
            reason = reason[: MAX_REASON_LENGTH - 3] + "..."
        object.__setattr__(self, "reason", reason)


LookupdAnswer = Producers | LookupFailure


@dataclass(frozen=True)
class Lookup:
    """What every lookupd said about one topic."""

    answers: tuple[LookupdAnswer, ...]

    @property
    def failures(self) -> tuple[LookupFailure, ...]:
        return tuple(a for a in self.answers if isinstance(a, LookupFailure))

    @property
    def reachable(self) -> bool:
        """At least one lookupd answered; otherwise the producer set is unknown."""
        return any(isinstance(a, Producers) for a in self.answers)

    def http_address(self, address: str) -> str | None:
        """The HTTP address of nsqd `address`, as the first lookupd that listed it said."""
        for answer in self.answers:
            if isinstance(answer, Producers) and address in answer.http_addresses:
                return answer.http_addresses[address]
        return None

    @property
    def producers(self) -> frozenset[str] | None:
        """The union over the lookupds that answered, or None when none did."""
        if not self.reachable:
            return None
        return frozenset().union(*(a.addresses for a in self.answers if isinstance(a, Producers)))


def nsqd_address(host: str, port: int) -> str:
    """`host:port`, bracketing IPv6 literals so the port stays unambiguous."""
    return f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"


def parse_lookup(lookupd: str, status: int, body: bytes | str) -> LookupdAnswer:
    """Interpret one /lookup response. 404 TOPIC_NOT_FOUND means no producers, not an error."""
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):  # RecursionError: absurdly nested JSON
        snippet = body[:80] if isinstance(body, str) else body[:80].decode("utf-8", "replace")
        return LookupFailure(lookupd, f"HTTP {status}: not JSON: {snippet!r}")
    if not isinstance(data, dict):
        return LookupFailure(lookupd, f"HTTP {status}: expected a JSON object, got {type(data).__name__}")
    # nsqlookupd < 1.0 (or without the Accept header) wraps the answer: {"status_code", "status_txt", "data"}.
    if "status_code" in data and isinstance(data.get("status_code"), int):
        status, message, data = data["status_code"], data.get("status_txt", ""), data.get("data") or {}
    else:
        message = data.get("message", "")
    if status == 404 and message == "TOPIC_NOT_FOUND":
        return Producers(lookupd, frozenset())
    if status != 200:
        return LookupFailure(lookupd, f"HTTP {status}: {message or 'unexpected status'}")
    producers = data.get("producers") if isinstance(data, dict) else None
    if not isinstance(producers, list):
        return LookupFailure(lookupd, "HTTP 200 without a producers list")
    addresses: dict[str, str | None] = {}
    for producer in producers:
        host = producer.get("broadcast_address") if isinstance(producer, dict) else None
        port = producer.get("tcp_port") if isinstance(producer, dict) else None
        if (
            not isinstance(host, str)
            or not host
            or isinstance(port, bool)
            or not isinstance(port, int)
            or not 0 < port < 65536
        ):
            return LookupFailure(lookupd, f"malformed producer entry: {producer!r}")
        http_port = producer.get("http_port")
        valid_http = isinstance(http_port, int) and not isinstance(http_port, bool) and 0 < http_port < 65536
        addresses[nsqd_address(host, port)] = nsqd_address(host, http_port) if valid_http else None
    http = {tcp: http for tcp, http in addresses.items() if http is not None}
    return Producers(lookupd, frozenset(addresses), http)


def query(
    lookupd: str,
    topic: str,
    session: requests.Session | None = None,
    timeout: float | tuple[float, float] = DEFAULT_TIMEOUT,
) -> LookupdAnswer:
    """GET <lookupd>/lookup?topic=<topic>; every failure comes back as a LookupFailure."""
    getter = session or requests
    try:
        response = getter.get(
            f"{lookupd}/lookup",
            params={"topic": topic},
            timeout=timeout,
            headers={"Accept": ACCEPT, "User-Agent": USER_AGENT},
        )
        return parse_lookup(lookupd, response.status_code, response.content)
    except requests.RequestException as error:
        return LookupFailure(lookupd, describe_error(error))


def describe_error(error: Exception) -> str:
    """A stable, short sentence: no object addresses, so the same failure reads the same every poll,
    and no credentials of any URL the error quotes (aiohttp's and requests' errors may quote one)."""
    text = redact(re.sub(r" object at 0x[0-9a-fA-F]+", "", f"{type(error).__name__}: {error}"))
    return text if len(text) <= 300 else text[:297] + "..."


async def get_bounded(
    session: aiohttp.ClientSession,
    url: str,
    params: Mapping[str, str],
    limit: int,
    headers: Mapping[str, str] | None = None,
) -> tuple[int, bytes | None]:
    """GET `url`: its status and body, or None for a body past `limit` bytes (read no further).

    No timeout of its own: callers wrap it in one total deadline. Redirects are not followed.
    """
    async with session.get(
        url, params=params, headers={"User-Agent": USER_AGENT, **(headers or {})}, allow_redirects=False
    ) as response:
        body = bytearray()
        async for chunk in response.content.iter_chunked(64 * 1024):
            body += chunk
            if len(body) > limit:
                return response.status, None
        return response.status, bytes(body)


async def ask(session: aiohttp.ClientSession, lookupd: str, topic: str, deadline: float) -> LookupdAnswer:
    """GET <lookupd>/lookup?topic=<topic>, done within `deadline` seconds in all, or a LookupFailure.

    The deadline covers everything (connecting, the headers, every byte of the body), so a lookupd
    that trickles a byte every few seconds costs one deadline, never more. Async, so a slow lookupd
    holds no thread: the operator's lookups never queue behind each other.
    """
    try:
        async with asyncio.timeout(deadline):
            status, body = await get_bounded(
                session, f"{lookupd}/lookup", {"topic": topic}, MAX_ANSWER_BYTES, {"Accept": ACCEPT}
            )
        if body is None:
            return LookupFailure(lookupd, f"answer larger than {MAX_ANSWER_BYTES} bytes")
        return parse_lookup(lookupd, status, body)
    except TimeoutError:
        return LookupFailure(lookupd, f"no complete answer within {deadline:g} s")
    except (aiohttp.ClientError, OSError, ValueError) as error:
        return LookupFailure(lookupd, describe_error(error))


# One pool for the whole process (the local mode and the operator share it). It starts its threads
# only when first asked, so importing this module costs nothing.
_FANOUT = ThreadPoolExecutor(max_workers=FANOUT_THREADS, thread_name_prefix="nsq-lookupd")


def lookup(lookupds: Iterable[str], topic: str) -> Lookup:
    """Ask every lookupd about `topic` at once; answers in their order."""
    urls = list(lookupds)

    def one(url: str) -> LookupdAnswer:
        return query(url, topic)

    if len(urls) <= 1:
        return Lookup(tuple(map(one, urls)))
    return Lookup(tuple(_FANOUT.map(one, urls)))
