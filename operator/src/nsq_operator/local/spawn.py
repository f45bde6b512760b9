"""Start one worker process: pinned to one core, in its own session, and tied to its parent's life."""

from __future__ import annotations

import ctypes
import os
import signal
import subprocess
from collections.abc import Mapping, Sequence
from typing import IO

PR_SET_PDEATHSIG = 1  # from <linux/prctl.h>


def _die_with_parent(parent_pid: int) -> None:
    """Ask the kernel to send SIGTERM when the parent dies, even by SIGKILL, so no orphan keeps consuming.

    SIGTERM rather than SIGKILL: the worker then drains and requeues what it holds instead of leaving
    it to time out on nsqd. If the parent is already gone the child exits before exec.
    """
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM, 0, 0, 0) != 0:
        os._exit(70)
    if os.getppid() != parent_pid:
        os._exit(70)


def spawn(
    argv: Sequence[str], env: Mapping[str, str], core: int | None, output: IO[bytes] | int | None
) -> subprocess.Popen[bytes]:
    """Start `argv` pinned to `core` (None: not pinned).

    The affinity is set in the child between fork and exec, so it is the worker that is pinned, not
    the controller (gnsq_mp pinned the wrong process). A session of its own keeps a terminal's Ctrl-C
    for the controller, which then drains the workers itself.
    """
    parent_pid = os.getpid()

    def in_child() -> None:
        _die_with_parent(parent_pid)
        if core is not None:
            os.sched_setaffinity(0, {core})

    return subprocess.Popen(
        list(argv),
        env=dict(env),
        preexec_fn=in_child,  # safe here: the controller is single-threaded; two syscalls before exec
        start_new_session=True,
        stdin=subprocess.DEVNULL,
        stdout=output,
        stderr=subprocess.STDOUT,
    )


def available_cores() -> list[int]:
    """The cores this process may run on, in order."""
    return sorted(os.sched_getaffinity(0))
