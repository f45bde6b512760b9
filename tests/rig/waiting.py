"""The one way the tests wait: poll a real condition until it holds, or fail saying what was awaited."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import requests

T = TypeVar("T")


def wait_for(
    check: Callable[[], T | None],
    timeout: float = 15.0,
    what: str = "a condition",
    interval: float = 0.05,
    describe: Callable[[], object] | None = None,
) -> T:
    """Poll `check` until it returns something truthy, and return that.

    A check that fails to reach its server (a process still starting) counts as not yet. When time
    runs out, the error names `what` and the last value, or what `describe` says about the state.
    """
    deadline = time.monotonic() + timeout
    last: object = None
    while time.monotonic() < deadline:
        try:
            value = check()
        except (requests.RequestException, OSError) as error:
            last = error
        else:
            if value:
                return value
            last = value
        time.sleep(interval)
    if describe is not None:
        last = describe()
    raise AssertionError(f"timed out after {timeout:g}s waiting for {what}; last {last!r}")
