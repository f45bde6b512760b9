"""Names of the custom resource and the labels and annotations the operator owns."""

from __future__ import annotations

GROUP = "nsqoperator.dev"
VERSION = "v1alpha1"
API_VERSION = f"{GROUP}/{VERSION}"
KIND = "NsqConsumer"
PLURAL = "nsqconsumers"

MANAGER = "nsq-operator"  # app.kubernetes.io/managed-by, and the field manager of our writes

LABEL_NAME = "app.kubernetes.io/name"
LABEL_INSTANCE = "app.kubernetes.io/instance"
LABEL_COMPONENT = "app.kubernetes.io/component"
LABEL_MANAGED_BY = "app.kubernetes.io/managed-by"
LABEL_CONSUMER = f"{GROUP}/consumer"
LABEL_NSQD = f"{GROUP}/nsqd"  # the short hash of the nsqd: with the consumer, the Deployment's selector

ANNOTATION_NSQD_ADDRESS = f"{GROUP}/nsqd-address"
ANNOTATION_SPEC_HASH = f"{GROUP}/spec-hash"
# The hash of the pod template alone: a change of it rolls pods, so it waits for the rollout budget.
ANNOTATION_TEMPLATE_HASH = f"{GROUP}/template-hash"
# On a paused worker whose replicas an autoscaler owns: it changes the fingerprint, so resuming
# rewrites the Deployment without a replica count, which hands the count back to the autoscaler.
ANNOTATION_PAUSED = f"{GROUP}/paused"

WORKER_APP = "nsq-worker"


def worker_selector(consumer: str) -> str:
    """The label selector that finds every worker Deployment of one consumer."""
    return f"{LABEL_MANAGED_BY}={MANAGER},{LABEL_CONSUMER}={consumer}"
