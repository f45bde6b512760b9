"""The only module that talks to the Kubernetes API (besides kopf's own watching).

Bodies are plain dicts in and out (raw JSON, no client models), so `manifests` and `status` stay
pure dict builders. Writes are idempotent: create treats AlreadyExists as done, delete treats
NotFound as done, and every change to an existing Deployment is a server-side apply of the whole
desired object by the operator's field manager, which converges however often it is repeated.
What exists is read from the watch (`live`), never listed per poll.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar
from urllib.parse import quote

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from nsq_operator import metrics
from nsq_operator.resource import GROUP, LABEL_NSQD, MANAGER, PLURAL, VERSION, worker_selector

log = logging.getLogger(__name__)
T = TypeVar("T")

MERGE_PATCH = "application/merge-patch+json"
APPLY_PATCH = "application/apply-patch+yaml"  # JSON is YAML: the body is sent as JSON
REQUEST_TIMEOUT = (5, 30)  # (connect, read) seconds for every call
RETRIED_STATUSES = frozenset({409, 429, 500, 503, 504})  # worth one more try at once
RETRIES = 2
RETRY_PAUSE = 0.2  # seconds, doubled after each try


class KubeError(RuntimeError):
    """An API call failed in a way a retry next poll may fix; the message says which call and why."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@contextmanager
def _call(verb: str, what: str) -> Iterator[None]:
    """Count the call; turn every way it can fail (refused, unreachable) into a KubeError saying `what`."""
    metrics.API_REQUESTS.labels(verb).inc()
    try:
        yield
    except ApiException as error:
        metrics.API_ERRORS.labels(verb, str(error.status)).inc()
        raise KubeError(f"{what}: {_reason(error)}", error.status) from error
    except (urllib3.exceptions.HTTPError, OSError) as error:
        metrics.API_ERRORS.labels(verb, "none").inc()
        raise KubeError(f"{what}: {type(error).__name__}: {error}") from error


def _retrying(call: Callable[[], T]) -> T:
    """`call`, tried again a couple of times when the API server says "not now" (conflict, overload)."""
    pause = RETRY_PAUSE
    for _ in range(RETRIES):
        try:
            return call()
        except ApiException as error:
            if error.status not in RETRIED_STATUSES:
                raise
            log.debug("retrying after %s %s", error.status, error.reason)
        time.sleep(pause)
        pause *= 2
    return call()


def load_client(pool_size: int = 4) -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG or ~/.kube/config).

    `pool_size`: connections kept to the API server, one per thread that may call at once.
    """
    loader: Any = config  # the loaders are untyped
    try:
        loader.load_incluster_config()
        source = "in-cluster ServiceAccount token"
    except config.ConfigException:
        loader.load_kube_config()
        source = "kubeconfig"
    configuration = client.Configuration.get_default_copy()
    configuration.connection_pool_maxsize = pool_size
    api_client = client.ApiClient(configuration)
    # Said once at start, so a pod's log shows which credentials it acts with.
    log.info("talking to the API server at %s with the %s", api_client.configuration.host, source)
    return api_client


def _reason(error: ApiException) -> str:
    try:
        message = json.loads(error.body or "{}").get("message")
    except ValueError:
        message = None
    return f"{error.status} {error.reason}: {message or error.body or ''}".strip()


class Kube:
    """Deployments of one consumer, their pods (read only), and the consumer's status."""

    def __init__(self, api_client: client.ApiClient) -> None:
        # Typed as Any on purpose: we send dicts and read raw JSON, which the generated signatures
        # (model classes only) do not describe, though the client supports both.
        self.apps: Any = client.AppsV1Api(api_client)
        self.custom: Any = client.CustomObjectsApi(api_client)
        # Pods and events are read with raw GETs, not through CoreV1Api: that generated module alone
        # adds about 50 MiB to the operator's memory, for two list calls.
        self.api_client: Any = api_client

    def list_worker_pods(self, namespace: str, consumer: str, nsqds: Sequence[str]) -> list[dict[str, Any]]:
        """The pods of `consumer`'s workers for the nsqd hashes `nsqds`: read to say why they are not ready.

        Only those, by label selector, so a consumer with one worker starting among hundreds running
        reads one pod, not hundreds.
        """
        selector = f"{worker_selector(consumer)},{LABEL_NSQD} in ({','.join(sorted(nsqds))})"
        with _call("list", f"listing the pods of {consumer}"):
            return self._core_list(namespace, "pods", labelSelector=selector)

    def list_pod_warnings(self, namespace: str, pod: str) -> list[dict[str, Any]]:
        """The Warning events about one pod (the kubelet's FailedMount, Unhealthy, ...)."""
        with _call("list", f"listing the events of pod {pod}"):
            selector = f"involvedObject.kind=Pod,involvedObject.name={pod},type=Warning"
            return self._core_list(namespace, "events", fieldSelector=selector)

    def _core_list(self, namespace: str, plural: str, **query: str) -> list[dict[str, Any]]:
        """GET /api/v1/namespaces/<namespace>/<plural>, as raw JSON items; ApiException when refused."""
        items: list[dict[str, Any]] = (
            self._core_request("GET", namespace, plural, query=query).get("items") or []
        )
        return items

    def _core_request(
        self,
        verb: str,
        namespace: str,
        plural: str,
        body: dict[str, Any] | None = None,
        query: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        """One raw call under /api/v1/namespaces/<namespace>/<plural>; ApiException when refused."""
        headers = {"Accept": "application/json"}
        if body is not None:
            headers["Content-Type"] = "application/json"
        method, url, headers, serialized, _ = self.api_client.param_serialize(
            verb,
            f"/api/v1/namespaces/{quote(namespace, safe='')}/{plural}",
            query_params=sorted((query or {}).items()),
            header_params=headers,
            body=body,
            auth_settings=["BearerToken"],
        )
        response = self.api_client.call_api(
            method, url, header_params=headers, body=serialized, _request_timeout=REQUEST_TIMEOUT
        )
        response.read()
        if not 200 <= response.status <= 299:
            raise ApiException(http_resp=response)
        found: dict[str, Any] = json.loads(response.data or b"{}")
        return found

    def create(self, body: Mapping[str, Any]) -> dict[str, Any] | None:
        """Create a Deployment, and return it as created; None (not an error) when that name exists."""
        meta = body["metadata"]
        try:
            with _call("create", f"creating Deployment {meta['name']}"):
                response = self.apps.create_namespaced_deployment(
                    meta["namespace"],
                    dict(body),
                    field_manager=MANAGER,
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                )
                created: dict[str, Any] = json.loads(response.data)
        except KubeError as error:
            if error.status == 409:
                log.info("Deployment %s/%s already exists", meta["namespace"], meta["name"])
                return None
            raise
        return created

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """One Deployment by name, or None when there is none."""
        try:
            with _call("get", f"reading Deployment {name}"):
                response = self.apps.read_namespaced_deployment(
                    name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                )
                found: dict[str, Any] = json.loads(response.data)
        except KubeError as error:
            if error.status == 404:
                return None
            raise
        return found

    def apply(self, body: Mapping[str, Any]) -> dict[str, Any]:
        """Server-side apply a Deployment as the operator's field manager; the object as it now is.

        Forced: a field the operator owns that someone else changed (`kubectl set image`) is taken
        back, which is the point. Fields the body leaves out (an HPA's replicas, a user's extra
        label) stay with whoever set them. No resourceVersion is sent, so a racing writer cannot
        make it fail with a conflict; the rare 409 or 429 is retried in `_retrying`.
        """
        meta = body["metadata"]
        return self._patch_deployment(
            "apply", f"applying Deployment {meta['name']}", meta["namespace"], meta["name"], dict(body),
            content_type=APPLY_PATCH, force=True,
        )  # fmt: skip

    def scale(self, namespace: str, name: str, replicas: int) -> dict[str, Any]:
        """Set only a Deployment's replica count (a merge patch): one whose new pod template waits
        for the rollout budget keeps its old template, which an apply of the whole would replace.
        The next apply of the whole (forced) takes the count back into the operator's apply."""
        return self._patch_deployment(
            "patch", f"scaling Deployment {name}", namespace, name, {"spec": {"replicas": replicas}},
            content_type=MERGE_PATCH,
        )  # fmt: skip

    def _patch_deployment(
        self, verb: str, doing: str, namespace: str, name: str, body: dict[str, Any], content_type: str,
        force: bool | None = None,
    ) -> dict[str, Any]:  # fmt: skip
        extra = {"force": force} if force is not None else {}
        with _call(verb, doing):
            response = _retrying(
                lambda: self.apps.patch_namespaced_deployment(
                    name,
                    namespace,
                    body,
                    field_manager=MANAGER,
                    _content_type=content_type,
                    _preload_content=False,
                    _request_timeout=REQUEST_TIMEOUT,
                    **extra,
                )
            )
            patched: dict[str, Any] = json.loads(response.data)
        return patched

    def post_event(self, namespace: str, event: Mapping[str, Any]) -> None:
        """Create one core/v1 Event (kubectl describe reads these)."""
        with _call("create", "posting an event"):
            self._core_request("POST", namespace, "events", body=dict(event))

    def delete(self, namespace: str, name: str, uid: str | None = None) -> None:
        """Delete a Deployment (and, in the background, its pods); already gone counts as done.

        With `uid`, only that very object: a Deployment recreated under the same name meanwhile survives.
        """
        options = client.V1DeleteOptions(
            propagation_policy="Background", preconditions=client.V1Preconditions(uid=uid) if uid else None
        )
        try:
            with _call("delete", f"deleting Deployment {name}"):
                self.apps.delete_namespaced_deployment(
                    name, namespace, body=options, _request_timeout=REQUEST_TIMEOUT
                )
        except KubeError as error:
            if error.status != 404:
                raise

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge `status` into the NsqConsumer's status subresource (lists are replaced whole)."""
        try:
            with _call("patch", f"writing the status of {name}"):
                self.custom.patch_namespaced_custom_object_status(
                    GROUP,
                    VERSION,
                    namespace,
                    PLURAL,
                    name,
                    {"status": dict(status)},
                    field_manager=MANAGER,
                    _content_type=MERGE_PATCH,
                    _request_timeout=REQUEST_TIMEOUT,
                )
        except KubeError as error:
            if error.status != 404:  # 404: the consumer was deleted while we polled
                raise
