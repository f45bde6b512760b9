"""Running a worker class as a process: settings, logging, signals, and the exit status.

`MyWorker.run()` (the script form) and the `nsq-worker` console script (nsq_worker.cli) both come
here. This module knows workers only through their runtime and a small protocol, so the class and
the command line never import each other. Exit status: 0 after a clean drain, 2 for a bad setting,
1 for anything else.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from typing import NoReturn, Protocol, TypeVar

from nsq_worker import logs, runtime
from nsq_worker.health import termination_message_path, write_termination_message
from nsq_worker.settings import Settings, SettingsError, parse

EXIT_BAD_SETTING = 2


class Startable(Protocol):
    def install_signal_handlers(self) -> None: ...

    def start(self) -> None: ...

    def join(self, timeout: float | None = None) -> bool: ...


W = TypeVar("W", bound=Startable)


def fail_setting(prog: str, error: SettingsError) -> NoReturn:
    """Say which setting is bad, on stderr and as the termination message, and exit 2."""
    line = f"{prog}: error: {error}"
    print(line, file=sys.stderr)
    write_termination_message(termination_message_path(), line)
    sys.exit(EXIT_BAD_SETTING)


def serve(cls: Callable[[Settings], W], settings: Settings, block: bool = True) -> W:
    """Set up logging, start `cls(settings)` with signal handlers, and (block) exit when it stops."""
    logs.setup(
        settings.log_format,
        settings.log_level,
        static={"topic": settings.topic, "channel": settings.channel, "nsqd": settings.nsqd_tcp_address},
    )
    try:
        worker = cls(settings)
        worker.install_signal_handlers()
        worker.start()
    except Exception:
        logging.getLogger("nsq_worker").exception("the worker could not start")
        logging.shutdown()
        sys.exit(1)
    if block:
        worker.join()
        exit_with(worker)
    return worker


def exit_with(worker: object) -> NoReturn:
    """Flush the logs and leave with the worker's status."""
    logging.shutdown()
    sys.exit(runtime.of(worker).exit_code)


def run_class(
    cls: Callable[[Settings], W],
    argv: Sequence[str] | None,
    environ: Mapping[str, str] | None,
    block: bool = True,
) -> W:
    """MyWorker.run(): the script form, `worker.py [TOPIC NSQD_ADDR CHANNEL] [--flags]`."""
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "worker"
    try:
        settings, _ = parse(
            sys.argv[1:] if argv is None else argv, os.environ if environ is None else environ, prog=prog
        )
    except SettingsError as error:
        fail_setting(prog, error)
    return serve(cls, settings, block=block)
