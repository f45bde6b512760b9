"""Whether a live object still holds what the operator wrote into it. Pure.

The operator writes with server-side apply, so the live object is the desired one plus what others
added: the API server's defaults (`imagePullPolicy`, probe thresholds, ...), other controllers'
fields, a user's extra environment variable. None of those is drift. Drift is a field the operator
wrote that now says something else or is gone: `kubectl set image`, an edited `NSQD_TCP_ADDRESS`.

So the test is "does live cover desired": every mapping key of desired is in live with a covering
value; lists of named items (containers, env, ports, volumes, mounts) match by name and may have
extra items; other lists match item by item. Quantities compare by value, because the API server
rewrites them to a canonical form ("1000m" comes back as "1").
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from decimal import Decimal, InvalidOperation
from typing import Any

_QUANTITY = re.compile(r"^([+-]?[0-9.]+)([a-zA-Z]{0,2})$")
_SUFFIX = {
    "": Decimal(1),
    "m": Decimal("0.001"),
    "k": Decimal(10) ** 3,
    "M": Decimal(10) ** 6,
    "G": Decimal(10) ** 9,
    "T": Decimal(10) ** 12,
    "Ki": Decimal(2) ** 10,
    "Mi": Decimal(2) ** 20,
    "Gi": Decimal(2) ** 30,
    "Ti": Decimal(2) ** 40,
}


def covers(live: Any, desired: Any) -> bool:
    """Whether `live` holds everything `desired` says (and maybe more, where more is allowed)."""
    if isinstance(desired, Mapping):
        return isinstance(live, Mapping) and all(
            key in live and covers(live[key], value) for key, value in desired.items()
        )
    if isinstance(desired, list):
        return isinstance(live, list) and _covers_list(live, desired)
    if isinstance(desired, str) and isinstance(live, str) and desired != live:
        return _same_quantity(live, desired)
    if isinstance(desired, bool) or isinstance(live, bool):
        return live is desired
    return bool(live == desired)


def _covers_list(live: Sequence[Any], desired: Sequence[Any]) -> bool:
    if _named(desired) and _named(live):
        by_name = {item["name"]: item for item in live}
        return all(item["name"] in by_name and covers(by_name[item["name"]], item) for item in desired)
    return len(live) == len(desired) and all(covers(a, b) for a, b in zip(live, desired, strict=True))


def _named(items: Sequence[Any]) -> bool:
    return bool(items) and all(isinstance(i, Mapping) and isinstance(i.get("name"), str) for i in items)


def quantity(text: str) -> Decimal | None:
    """A Kubernetes quantity ("500m", "1", "128Mi", "1e3") as a number; None when it is not one."""
    try:
        if "e" in text.lower() and not text.endswith(("Ei", "E")):
            return Decimal(text)
        match = _QUANTITY.match(text)
        if match is None or match.group(2) not in _SUFFIX:
            return None
        return Decimal(match.group(1)) * _SUFFIX[match.group(2)]
    except InvalidOperation:
        return None


def _same_quantity(a: str, b: str) -> bool:
    left, right = quantity(a), quantity(b)
    return left is not None and right is not None and left == right
