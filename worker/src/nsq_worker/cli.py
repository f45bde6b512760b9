"""The two ways to start a worker: `python my_worker.py ...` (MyWorker.run) and `nsq-worker module:Class ...`.

Both read the same settings, set up logging, start the worker with signal handlers, and wait.
Exit status: 0 after a clean drain, 2 for a bad setting, 1 for anything else.
"""

from __future__ import annotations

import importlib
import logging
import os
import sys
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, NoReturn

from nsq_worker import logs
from nsq_worker.settings import WORKER_CLASS_ENV, Settings, SettingsError, parse

if TYPE_CHECKING:
    from nsq_worker.worker import NsqProcessWorker

EXIT_BAD_SETTING = 2


def _fail_setting(prog: str, error: SettingsError) -> NoReturn:
    print(f"{prog}: error: {error}", file=sys.stderr)
    sys.exit(EXIT_BAD_SETTING)


def load_worker_class(spec: str) -> type[NsqProcessWorker]:
    """`package.module:ClassName` to the class, which must subclass NsqProcessWorker."""
    from nsq_worker.worker import NsqProcessWorker  # patch gevent before the user's module loads

    module_name, sep, attribute = spec.partition(":")
    if not sep or not module_name or not attribute:
        raise SettingsError(f"worker class / {WORKER_CLASS_ENV}: {spec!r} is not module:Class")
    if os.getcwd() not in sys.path:
        sys.path.insert(0, os.getcwd())  # like gunicorn: modules next to where it was started
    try:
        module = importlib.import_module(module_name)
    except ImportError as error:
        raise SettingsError(
            f"worker class / {WORKER_CLASS_ENV}: cannot import {module_name!r}: {error}"
        ) from None
    target: object = module
    for part in attribute.split("."):
        try:
            target = getattr(target, part)
        except AttributeError:
            raise SettingsError(
                f"worker class / {WORKER_CLASS_ENV}: {module_name} has no {attribute!r}"
            ) from None
    if not (isinstance(target, type) and issubclass(target, NsqProcessWorker)):
        raise SettingsError(f"worker class / {WORKER_CLASS_ENV}: {spec} is not an NsqProcessWorker subclass")
    return target


def serve(cls: type[NsqProcessWorker], settings: Settings, block: bool = True) -> NsqProcessWorker:
    """Set up logging, start `cls(settings)` with signal handlers, and (block) exit when it stops."""
    from nsq_worker.worker import exit_with

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


def run_class(
    cls: type[NsqProcessWorker],
    argv: Sequence[str] | None,
    environ: Mapping[str, str] | None,
    block: bool = True,
) -> NsqProcessWorker:
    """MyWorker.run(): the script form, `worker.py [TOPIC NSQD_ADDR CHANNEL] [--flags]`."""
    prog = os.path.basename(sys.argv[0]) if sys.argv and sys.argv[0] else "worker"
    try:
        settings, _ = parse(
            sys.argv[1:] if argv is None else argv, os.environ if environ is None else environ, prog=prog
        )
    except SettingsError as error:
        _fail_setting(prog, error)
    return serve(cls, settings, block=block)


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """The `nsq-worker` console script: `nsq-worker [module:Class] [TOPIC NSQD_ADDR CHANNEL] [--flags]`."""
    prog = "nsq-worker"
    try:
        settings, spec = parse(sys.argv[1:] if argv is None else argv, os.environ, console=True, prog=prog)
        assert spec is not None
        cls = load_worker_class(spec)
    except SettingsError as error:
        _fail_setting(prog, error)
    serve(cls, settings, block=True)
    raise AssertionError("serve(block=True) returns only by exiting")
