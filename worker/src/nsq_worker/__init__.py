"""NSQ worker: one gevent + gnsq consumer process per nsqd.

`from nsq_worker import NsqProcessWorker` loads the worker, which monkey-patches the interpreter
for gevent (as gnsq_mp did on import). The pure modules (settings, protocol, metrics, backoff) can
be imported without that.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

if TYPE_CHECKING:
    from nsq_worker.message import Message
    from nsq_worker.settings import Settings
    from nsq_worker.worker import NsqProcessWorker

__all__ = ["Message", "NsqProcessWorker", "Settings", "__version__"]


def __getattr__(name: str) -> Any:
    if name == "NsqProcessWorker":
        from nsq_worker.worker import NsqProcessWorker

        return NsqProcessWorker
    if name == "Message":
        import nsq_worker._patch  # noqa: F401  (a worker's module: gevent before gnsq and its imports)
        from nsq_worker.message import Message

        return Message
    if name == "Settings":
        from nsq_worker.settings import Settings

        return Settings
    raise AttributeError(f"module 'nsq_worker' has no attribute {name!r}")
