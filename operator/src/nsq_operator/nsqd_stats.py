"""Ask one nsqd for a topic's numbers (/stats), make sure a channel exists (/channel/create), and
learn how many messages it hands out per connection at most (/config/max_rdy_count).

Like lookupd's answers, failures are values (`Unreadable`), never exceptions: the autoscaler holds
an nsqd's replicas when its numbers are missing, and says why. Every request has one total
deadline, so a black-holed nsqd costs one deadline, never more. One read serves every consumer of
the topic: the answer holds all of its channels, and `channel_stats` picks one.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import aiohttp

from nsq_operator.autoscale import ChannelStats, NsqdStats, Unreadable
from nsq_operator.lookupd import USER_AGENT, describe_error, get_bounded

MAX_STATS_BYTES = 4 * 1024 * 1024  # a topic's stats without clients are small; a runaway answer is not


@dataclass(frozen=True)
class TopicStats:
    """One topic on one nsqd: its own depth and, by name, what each channel holds."""

    exists: bool
    depth: int = 0
    channels: Mapping[str, ChannelStats] | None = None


def parse_stats(topic: str, status: int, body: bytes | str) -> TopicStats | Unreadable:
    """Read nsqd's `/stats?format=json&topic=T` answer (1.x bare, or 0.x wrapped in `data`)."""
    if status != 200:
        return Unreadable(f"/stats answered HTTP {status}")
    try:
        data = json.loads(body)
    except (ValueError, UnicodeDecodeError, RecursionError):
        return Unreadable("/stats did not answer JSON")
    if isinstance(data, dict) and isinstance(data.get("data"), dict) and "status_code" in data:
        data = data["data"]
    if not isinstance(data, dict):
        return Unreadable("/stats answered something other than an object")
    topics = data.get("topics") or []
    if not isinstance(topics, list):
        return Unreadable("/stats has no topics list")
    for entry in topics:
        if isinstance(entry, dict) and entry.get("topic_name") == topic:
            return _topic(entry)
    return TopicStats(exists=False)


def channel_stats(topic: TopicStats | Unreadable, channel: str) -> NsqdStats:
    """One channel's numbers. A missing channel has no backlog of its own yet, except what a topic
    with no channel at all keeps for the first one (nsqd holds messages until a channel exists)."""
    if isinstance(topic, Unreadable):
        return topic
    found = (topic.channels or {}).get(channel)
    if found is not None:
        return found
    waiting = topic.depth if topic.exists and not topic.channels else 0
    return ChannelStats(depth=waiting, in_flight=0, channel_exists=False)


async def read(
    session: aiohttp.ClientSession, http_address: str, topic: str, deadline: float
) -> TopicStats | Unreadable:
    """GET http://<nsqd>/stats for one topic, without clients or memory figures, within `deadline` s."""
    params = {"format": "json", "topic": topic, "include_clients": "false", "include_mem": "false"}
    try:
        async with asyncio.timeout(deadline):
            status, body = await get_bounded(session, f"http://{http_address}/stats", params, MAX_STATS_BYTES)
        if body is None:
            return Unreadable(f"/stats at {http_address} answered more than {MAX_STATS_BYTES} bytes")
        return parse_stats(topic, status, body)
    except TimeoutError:
        return Unreadable(f"/stats at {http_address}: no complete answer within {deadline:g} s")
    except (aiohttp.ClientError, OSError, ValueError) as error:
        return Unreadable(f"/stats at {http_address}: {describe_error(error)}")


async def create_channel(
    session: aiohttp.ClientSession, http_address: str, topic: str, channel: str, deadline: float
) -> str | None:
    """POST /channel/create (idempotent): None when the channel exists now, else why not."""
    try:
        async with asyncio.timeout(deadline):
            async with session.post(
                f"http://{http_address}/channel/create",
                params={"topic": topic, "channel": channel},
                headers={"User-Agent": USER_AGENT},
                allow_redirects=False,
            ) as response:
                if response.status == 200:
                    return None
                return f"/channel/create at {http_address} answered HTTP {response.status}"
    except TimeoutError:
        return f"/channel/create at {http_address}: no answer within {deadline:g} s"
    except (aiohttp.ClientError, OSError, ValueError) as error:
        return f"/channel/create at {http_address}: {describe_error(error)}"


async def max_rdy_count(session: aiohttp.ClientSession, http_address: str, deadline: float) -> int | None:
    """The nsqd's --max-rdy-count (GET /config/max_rdy_count), None when it cannot be read."""
    try:
        async with asyncio.timeout(deadline):
            async with session.get(
                f"http://{http_address}/config/max_rdy_count", headers={"User-Agent": USER_AGENT}
            ) as response:
                if response.status != 200:
                    return None
                value = json.loads(await response.text())
    except (TimeoutError, aiohttp.ClientError, OSError, ValueError):
        return None
    return value if isinstance(value, int) and not isinstance(value, bool) and value > 0 else None


def _topic(entry: Mapping[str, Any]) -> TopicStats | Unreadable:
    channels: dict[str, ChannelStats] = {}
    listed = entry.get("channels") or []
    if not isinstance(listed, list):
        return Unreadable("/stats has a malformed channel entry")
    for raw in listed:
        if not isinstance(raw, dict) or not isinstance(raw.get("channel_name"), str):
            return Unreadable("/stats has a malformed channel entry")
        numbers = [raw.get(k, 0) for k in ("depth", "in_flight_count", "deferred_count")]
        if not all(isinstance(n, int) and not isinstance(n, bool) and n >= 0 for n in numbers):
            return Unreadable(f"/stats has non-numeric counts for channel {raw['channel_name']!r}")
        channels[raw["channel_name"]] = ChannelStats(
            depth=numbers[0], in_flight=numbers[1], deferred=numbers[2], paused=raw.get("paused") is True
        )
    depth = entry.get("depth", 0)
    if not isinstance(depth, int) or isinstance(depth, bool) or depth < 0:
        return Unreadable("/stats has a non-numeric topic depth")
    return TopicStats(exists=True, depth=depth, channels=channels)
