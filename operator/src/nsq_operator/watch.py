"""Live state: a list-and-watch of the worker Deployments, filtered by the API server.

Why not kopf for these: kopf filters labels on its side, so it would receive every Deployment of
the cluster, and it runs its whole per-object machinery for each event (a new Deployment's rollout
alone is four or five of them). Ten thousand workers made that the operator's main cost. Here the
API server sends only the operator's Deployments (a label selector), each event is parsed once into
the compact view of `live`, and the scheduler hears of it on its loop.

One watch per namespace when the operator watches named namespaces (the chart's Roles allow no
more), one for the cluster otherwise; globs are matched here on a cluster-wide watch. A watch that
ends is resumed from its last resourceVersion; one the server no longer has (410 Gone) is listed
anew, and what vanished meanwhile is reported as deleted.
"""

from __future__ import annotations

import asyncio
import fnmatch
import json
import logging
import threading
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from kubernetes import client
from kubernetes.watch.watch import iter_resp_lines

from nsq_operator import live
from nsq_operator.live import ConsumerKey, WorkerView
from nsq_operator.resource import LABEL_MANAGED_BY, MANAGER

log = logging.getLogger(__name__)

SELECTOR = f"{LABEL_MANAGED_BY}={MANAGER}"
WATCH_SECONDS = 240  # the server ends each watch after this; it is resumed at once
READ_TIMEOUT = WATCH_SECONDS + 30  # no byte for this long (bookmarks come every minute): reconnect
BACKOFF = (1.0, 2.0, 5.0, 10.0, 30.0)  # seconds before retrying a failed list or watch
PAGE = 250  # Deployments per page of the first list

# (its view, the Deployment as the watch gave it or None when it vanished between lists, deleted)
OnEvent = Callable[[WorkerView, Mapping[str, Any] | None, bool], None]


class Gone(Exception):  # noqa: N818 (named after the API's 410 Gone)
    """The watch's resourceVersion is too old: list anew."""


class WorkerWatch:
    """The operator's worker Deployments, kept current by watches in threads, read on the loop."""

    def __init__(self, api_client: client.ApiClient, namespaces: Sequence[str], on_event: OnEvent) -> None:
        self.apps: Any = client.AppsV1Api(api_client)
        self.on_event = on_event
        self.synced = asyncio.Event()
        self.patterns = [n for n in namespaces if _is_glob(n)]
        plain = [n for n in namespaces if not _is_glob(n)]
        self.scopes: list[str | None] = [None] if not namespaces or self.patterns else list(plain)
        self.plain = set(plain)
        self._views: dict[tuple[str, str], WorkerView] = {}
        self._by_consumer: dict[ConsumerKey, dict[str, WorkerView]] = {}
        self._loop: asyncio.AbstractEventLoop | None = None
        self._unsynced = len(self.scopes)
        self._stop = threading.Event()

    # -- read on the loop --------------------------------------------------------------------------

    def of(self, key: ConsumerKey) -> list[WorkerView]:
        return list(self._by_consumer.get(key, {}).values())

    def __len__(self) -> int:
        return len(self._views)

    # -- run ---------------------------------------------------------------------------------------

    def start(self) -> None:
        self._loop = asyncio.get_running_loop()
        for scope in self.scopes:
            name = f"watch deployments in {scope or 'every namespace'}"
            threading.Thread(target=self._run, args=(scope,), name=name, daemon=True).start()

    def stop(self) -> None:
        self._stop.set()

    def _run(self, scope: str | None) -> None:
        failures = 0
        version: str | None = None
        while not self._stop.is_set():
            try:
                if version is None:
                    version = self._list(scope)
                    failures = 0
                version = self._watch(scope, version)
            except Gone:
                version = None
            except Exception as error:  # the API server away, a proxy cutting us off: try again
                pause = BACKOFF[min(failures, len(BACKOFF) - 1)]
                log.warning("watching Deployments in %s: %s; again in %g s", scope or "all", error, pause)
                failures += 1
                self._stop.wait(pause)
                version = None

    def _list(self, scope: str | None) -> str:
        """List the scope a page at a time (a few MiB of JSON each, not one answer of hundreds)."""
        listed: set[tuple[str, str]] = set()
        token: str | None = None
        while True:
            kwargs: dict[str, Any] = {
                "label_selector": SELECTOR,
                "limit": PAGE,
                "_preload_content": False,
                "_request_timeout": (5, 60),
            }
            if token:
                kwargs["_continue"] = token
            if scope is None:
                response = self.apps.list_deployment_for_all_namespaces(**kwargs)
            else:
                response = self.apps.list_namespaced_deployment(scope, **kwargs)
            page = json.loads(response.data)
            del response
            items = [_compact(i) for i in page.get("items") or [] if self._wanted(i)]
            listed.update((i["metadata"].get("namespace", ""), i["metadata"].get("name", "")) for i in items)
            for item in items:
                self._post(self._apply, item, False)
            token = page["metadata"].get("continue")
            version: str = page["metadata"]["resourceVersion"]
            del page, items
            if not token:
                break
        self._post(self._listed, scope, listed)
        return version

    def _watch(self, scope: str | None, version: str) -> str:
        """Follow the events from `version` until the server ends the watch; the last version seen."""
        kwargs: dict[str, Any] = {
            "label_selector": SELECTOR,
            "watch": True,
            "allow_watch_bookmarks": True,
            "resource_version": version,
            "timeout_seconds": WATCH_SECONDS,
            "_preload_content": False,
            "_request_timeout": (5, READ_TIMEOUT),
        }
        if scope is None:
            response = self.apps.list_deployment_for_all_namespaces(**kwargs)
        else:
            response = self.apps.list_namespaced_deployment(scope, **kwargs)
        try:
            for event in _lines(response):
                kind, body = event.get("type"), event.get("object") or {}
                if kind == "ERROR":
                    if body.get("code") == 410:
                        raise Gone
                    raise RuntimeError(f"watch error: {body.get('message')}")
                version = (body.get("metadata") or {}).get("resourceVersion") or version
                if kind in ("ADDED", "MODIFIED", "DELETED") and self._wanted(body):
                    self._post(self._apply, _compact(body), kind == "DELETED")
                if self._stop.is_set():
                    break
        finally:
            response.release_conn()
        return version

    def _wanted(self, body: Mapping[str, Any]) -> bool:
        namespace = (body.get("metadata") or {}).get("namespace", "")
        if not self.patterns:
            return True
        return namespace in self.plain or any(fnmatch.fnmatchcase(namespace, p) for p in self.patterns)

    def _post(self, fn: Callable[..., None], *args: Any) -> None:
        assert self._loop is not None
        self._loop.call_soon_threadsafe(fn, *args)

    # -- on the loop -------------------------------------------------------------------------------

    def _listed(self, scope: str | None, listed: set[tuple[str, str]]) -> None:
        """A fresh list of one scope is complete: what it did not hold is gone."""
        for where in [w for w in self._views if (scope is None or w[0] == scope) and w not in listed]:
            gone = self._views[where]
            self._forget(gone)
            self.on_event(gone, None, True)
        if self._unsynced > 0 and scope in self.scopes:
            self._unsynced -= 1
            if self._unsynced == 0:
                log.info("live state holds %d worker Deployments", len(self._views))
                self.synced.set()

    def _apply(self, body: Mapping[str, Any], deleted: bool) -> None:
        view = live.view(body)
        previous = self._views.get((view.namespace, view.name))
        if previous is not None:
            self._forget(previous)
        if not deleted:
            self._views[(view.namespace, view.name)] = view
            self._by_consumer.setdefault(view.key, {})[view.name] = view
        self.on_event(view, body, deleted)

    def _forget(self, view: WorkerView) -> None:
        self._views.pop((view.namespace, view.name), None)
        named = self._by_consumer.get(view.key)
        if named is not None:
            named.pop(view.name, None)
            if not named:
                del self._by_consumer[view.key]


def _lines(response: Any) -> Iterator[dict[str, Any]]:
    """The watch's newline-separated JSON events, each as soon as it arrives."""
    lines: Iterator[str] = iter_resp_lines(response)  # type: ignore[no-untyped-call]
    for line in lines:
        if line:
            yield json.loads(line)


def _compact(body: dict[str, Any]) -> dict[str, Any]:
    """A listed Deployment without its managedFields (a third of it), which nothing here reads.

    Items of a list carry no apiVersion and kind; drift is judged against a body that has them."""
    meta = {k: v for k, v in (body.get("metadata") or {}).items() if k != "managedFields"}
    return {**body, "apiVersion": "apps/v1", "kind": "Deployment", "metadata": meta}


def _is_glob(namespace: str) -> bool:
    return any(c in namespace for c in "*?[")
