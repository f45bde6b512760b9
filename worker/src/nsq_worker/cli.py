"""The `nsq-worker` console script: `nsq-worker module:Class [TOPIC NSQD_ADDR CHANNEL] [--flags]`.

It loads the user's class by name and hands it to the runner, like gunicorn does for apps.
"""

from __future__ import annotations

import nsq_worker._patch  # noqa: F401  (gevent first: the user's module may import blocking libraries)

# isort: split

import importlib
import os
import sys
from collections.abc import Sequence
from typing import NoReturn

from nsq_worker.runner import fail_setting, serve
from nsq_worker.settings import WORKER_CLASS_ENV, SettingsError, parse
from nsq_worker.worker import NsqProcessWorker


def load_worker_class(spec: str) -> type[NsqProcessWorker]:
    """`package.module:ClassName` to the class, which must subclass NsqProcessWorker."""
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


def main(argv: Sequence[str] | None = None) -> NoReturn:
    """Parse the settings, load the class, serve until drained, exit with the worker's status."""
    prog = "nsq-worker"
    try:
        settings, spec = parse(sys.argv[1:] if argv is None else argv, os.environ, console=True, prog=prog)
        assert spec is not None
        cls = load_worker_class(spec)
    except SettingsError as error:
        fail_setting(prog, error)
    serve(cls, settings, block=True)
    raise AssertionError("serve(block=True) returns only by exiting")
