"""The only module that talks to the Kubernetes API (besides kopf's own watching).

Bodies are plain dicts in and out (raw JSON, no client models), so `manifests` and `status` stay
pure dict builders. Writes are idempotent: create treats AlreadyExists as done, delete treats
NotFound as done, and replace carries the resourceVersion it read, so a racing writer (a second
operator started by mistake) makes one of the two fail with Conflict and retry next poll, instead
of both clobbering each other.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any
from urllib.parse import quote

import urllib3
from kubernetes import client, config
from kubernetes.client.exceptions import ApiException

from nsq_operator.resource import GROUP, LABEL_NSQD, MANAGER, PLURAL, VERSION, worker_selector

log = logging.getLogger(__name__)

MERGE_PATCH = "application/merge-patch+json"
REQUEST_TIMEOUT = (5, 30)  # (connect, read) seconds for every call


class KubeError(RuntimeError):
    """An API call failed in a way a retry next poll may fix; the message says which call and why."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


@contextmanager
def _call(what: str) -> Iterator[None]:
    """Turn every way an API call can fail (refused, unreachable) into a KubeError saying `what`."""
    try:
        yield
    except ApiException as error:
        raise KubeError(f"{what}: {_reason(error)}", error.status) from error
    except (urllib3.exceptions.HTTPError, OSError) as error:
        raise KubeError(f"{what}: {type(error).__name__}: {error}") from error


def load_client() -> client.ApiClient:
    """In-cluster credentials when running in a pod, else the kubeconfig (KUBECONFIG or ~/.kube/config)."""
    loader: Any = config  # the loaders are untyped
    try:
        loader.load_incluster_config()
        source = "in-cluster ServiceAccount token"
    except config.ConfigException:
        loader.load_kube_config()
        source = "kubeconfig"
    api_client = client.ApiClient()
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

    def list_workers(self, namespace: str, consumer: str) -> list[dict[str, Any]]:
        """Every Deployment labelled as a worker of `consumer` (ownership is checked by the caller)."""
        with _call(f"listing the Deployments of {consumer}"):
            response = self.apps.list_namespaced_deployment(
                namespace,
                label_selector=worker_selector(consumer),
                _preload_content=False,
                _request_timeout=REQUEST_TIMEOUT,
            )
            items: list[dict[str, Any]] = json.loads(response.data).get("items") or []
        return items

    def list_worker_pods(self, namespace: str, consumer: str, nsqds: Sequence[str]) -> list[dict[str, Any]]:
        """The pods of `consumer`'s workers for the nsqd hashes `nsqds`: read to say why they are not ready.

        Only those, by label selector, so a consumer with one worker starting among hundreds running
        reads one pod, not hundreds.
        """
        selector = f"{worker_selector(consumer)},{LABEL_NSQD} in ({','.join(sorted(nsqds))})"
        with _call(f"listing the pods of {consumer}"):
            return self._core_list(namespace, "pods", labelSelector=selector)

    def list_pod_warnings(self, namespace: str, pod: str) -> list[dict[str, Any]]:
        """The Warning events about one pod (the kubelet's FailedMount, Unhealthy, ...)."""
        with _call(f"listing the events of pod {pod}"):
            selector = f"involvedObject.kind=Pod,involvedObject.name={pod},type=Warning"
            return self._core_list(namespace, "events", fieldSelector=selector)

    def _core_list(self, namespace: str, plural: str, **query: str) -> list[dict[str, Any]]:
        """GET /api/v1/namespaces/<namespace>/<plural>, as raw JSON items; ApiException when refused."""
        method, url, headers, _, _ = self.api_client.param_serialize(
            "GET",
            f"/api/v1/namespaces/{quote(namespace, safe='')}/{plural}",
            query_params=sorted(query.items()),
            header_params={"Accept": "application/json"},
            auth_settings=["BearerToken"],
        )
        response = self.api_client.call_api(
            method, url, header_params=headers, _request_timeout=REQUEST_TIMEOUT
        )
        response.read()
        if not 200 <= response.status <= 299:
            raise ApiException(http_resp=response)
        items: list[dict[str, Any]] = json.loads(response.data).get("items") or []
        return items

    def create(self, body: Mapping[str, Any]) -> bool:
        """Create a Deployment; False (not an error) when one of that name already exists."""
        meta = body["metadata"]
        try:
            with _call(f"creating Deployment {meta['name']}"):
                self.apps.create_namespaced_deployment(
                    meta["namespace"], dict(body), field_manager=MANAGER, _request_timeout=REQUEST_TIMEOUT
                )
        except KubeError as error:
            if error.status == 409:
                log.info(
                    "Deployment %s/%s already exists; treating the create as done",
                    meta["namespace"],
                    meta["name"],
                )
                return False
            raise
        return True

    def get(self, namespace: str, name: str) -> dict[str, Any] | None:
        """One Deployment by name, or None when there is none."""
        try:
            with _call(f"reading Deployment {name}"):
                response = self.apps.read_namespaced_deployment(
                    name, namespace, _preload_content=False, _request_timeout=REQUEST_TIMEOUT
                )
                found: dict[str, Any] = json.loads(response.data)
        except KubeError as error:
            if error.status == 404:
                return None
            raise
        return found

    def replace(self, existing: Mapping[str, Any], body: Mapping[str, Any]) -> None:
        """Rewrite a Deployment to `body`, keeping labels and annotations others put on it."""
        old_meta, new_meta = existing["metadata"], body["metadata"]
        merged = {
            **body,
            "metadata": {
                **new_meta,
                "resourceVersion": old_meta["resourceVersion"],
                "labels": {**(old_meta.get("labels") or {}), **new_meta.get("labels", {})},
                "annotations": {**(old_meta.get("annotations") or {}), **new_meta.get("annotations", {})},
            },
        }
        with _call(f"updating Deployment {new_meta['name']}"):
            self.apps.replace_namespaced_deployment(
                new_meta["name"],
                new_meta["namespace"],
                merged,
                field_manager=MANAGER,
                _request_timeout=REQUEST_TIMEOUT,
            )

    def scale(self, namespace: str, name: str, replicas: int) -> None:
        with _call(f"scaling Deployment {name}"):
            self.apps.patch_namespaced_deployment(
                name,
                namespace,
                {"spec": {"replicas": replicas}},
                field_manager=MANAGER,
                _content_type=MERGE_PATCH,
                _request_timeout=REQUEST_TIMEOUT,
            )

    def delete(self, namespace: str, name: str, uid: str | None = None) -> None:
        """Delete a Deployment (and, in the background, its pods); already gone counts as done.

        With `uid`, only that very object: a Deployment recreated under the same name meanwhile survives.
        """
        options = client.V1DeleteOptions(
            propagation_policy="Background", preconditions=client.V1Preconditions(uid=uid) if uid else None
        )
        try:
            with _call(f"deleting Deployment {name}"):
                self.apps.delete_namespaced_deployment(
                    name, namespace, body=options, _request_timeout=REQUEST_TIMEOUT
                )
        except KubeError as error:
            if error.status != 404:
                raise

    def patch_status(self, namespace: str, name: str, status: Mapping[str, Any]) -> None:
        """Merge `status` into the NsqConsumer's status subresource (lists are replaced whole)."""
        try:
            with _call(f"writing the status of {name}"):
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
