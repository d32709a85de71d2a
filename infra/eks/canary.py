"""Progressive delivery on the EKS platform: Flagger, the gates it checks, and one `Canary` per model service.

Flagger (Istio provider) owns how a new version of a model service reaches traffic. For each service it clones
the Deployment the program declares (the *target*) into `<name>-primary`, which serves the traffic, scales the
target to zero, and creates the Services `<name>` (apex), `<name>-primary` and `<name>-canary` and a delegate
VirtualService `<name>` that the gateway's root VirtualService hands the service's path prefix to (Flagger
"Istio Canary Deployments", delegation). When the target's pod spec changes, Flagger scales it up as the canary and
runs the analysis: one step with the gateway mirroring traffic to it (its answers are discarded), then traffic in
`STEP_WEIGHT` steps up to `MAX_WEIGHT`, each step only after every gate in `canary_gates.py` passed; `THRESHOLD`
failed checks roll it back (traffic to the primary, the target scaled to zero); success copies the target's spec
into the primary.

Why a Canary exists for every service, not only while a candidate rolls out: Flagger's first reconcile of a new
Canary copies the target into the primary *without analysis* (pkg/controller/scheduler.go at v1.44.0: Initialize,
then setPhaseInitialized), so a Canary born together with a candidate would put the candidate live at once; and
deleting a Canary deletes the primary it owns. So the Canary is there from the service's first deploy. Its gates
are there only while the service has a candidate: a change without one (a new server image, a setting) still goes
through the mirror and the traffic steps, which need no traffic to pass, but is not held to gates a quiet stack
could never meet. `skipAnalysis` stays off: with it on, Flagger's initialization would point the Services at the
primary without waiting for it to be ready (DeploymentController.Initialize), an outage while the model loads.

Shadow: the primary's pods mirror a sample of their texts to the canary's pods (`MLAPI_SHADOW_URL`) and count
agreement, which the flip gate reads. The primary is a copy of the target's spec as of the last promotion, so the
setting is in every pod's spec, and the URL is built from the pod's own selector label (downward API): in a
primary pod `<name>-primary` gives `http://<name>-primary-shadow...`, a Service of the canary's pods; in a canary
pod `<name>` gives `http://<name>-shadow...`, which does not exist, so a canary never mirrors to itself (its
attempts fail at DNS and count as `error` under candidate `unknown`, never as agreement). The price: between
rollouts the target has no pods, so the primary's mirror is refused at once and its sampled texts count as
`error` under `unknown` too (with the service's warning at most once a minute), a few failed connections a second
that need no change in config to become a shadow when a candidate arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.capacity import RELEASE_REQUESTS
from infra.config import ModelService
from infra.eks import monitoring
from infra.eks.canary_gates import GATES

FLAGGER_REPO = "https://flagger.app"
FLAGGER_NAMESPACE = "flagger-system"
FLAGGER_RELEASE = "flagger"
# kube-prometheus-stack names its Prometheus Service `<fullname>-prometheus`, port 9090.
PROMETHEUS_URL = f"http://{monitoring.RELEASE}-prometheus.{monitoring.NAMESPACE}:9090"
# Flagger picks the first of these labels it finds in the target's selector; the primary's pods get
# `<value>-primary` for it, every other label copied.
SELECTOR_LABEL = "app.kubernetes.io/name"

# The analysis: checks every INTERVAL, each gate over METRIC_WINDOW; one mirrored step, then STEP_WEIGHT% more
# traffic per passing interval up to MAX_WEIGHT%, then promotion; THRESHOLD failed checks roll back.
INTERVAL = "1m"
METRIC_WINDOW = "2m"
THRESHOLD = 3
STEP_WEIGHT = 10
MAX_WEIGHT = 50
# A model pod can take minutes to load (the startup probe allows 5); past this, a canary that never became ready
# is rolled back.
PROGRESS_DEADLINE_SECONDS = 900
# Share of each primary pod's texts mirrored to the canary (MLAPI_SHADOW_FRACTION), and of the gateway's requests
# mirrored to it in the first step.
SHADOW_FRACTION = 0.2
MIRROR_PERCENT = 20
# Not `MLAPI_`: the service refuses unknown `MLAPI_*` variables.
SHADOW_ROLE_ENV = "SHADOW_POD_ROLE"
# With API keys on, the canary refuses the primary's mirrored texts without a key of its own: the operator makes
# one (`mlapi keys create shadow`) and puts it here (docs/operations.md, Canary); the stack never holds keys.
SHADOW_KEY_SECRET = "mlapi-shadow-api-key"
SHADOW_KEY_FIELD = "key"


def shadow_service_name(service: ModelService) -> str:
    """The Service the primary's pods mirror to: it selects the canary's pods (`<name>-primary-shadow`)."""
    return f"{service.name}-primary-shadow"


def shadow_env(service: ModelService, namespace: str, keys: bool = False) -> list[dict[str, Any]]:
    """The pod env that makes a primary pod mirror to the canary and a canary pod mirror nowhere (module doc);
    with `keys`, the key it mirrors with, from a Secret the operator makes (optional: a pod starts without it, and
    its mirrored texts are refused, which the flip gate reads as no evidence)."""
    env: list[dict[str, Any]] = [
        {"name": SHADOW_ROLE_ENV, "valueFrom": {"fieldRef": {"fieldPath": f"metadata.labels['{SELECTOR_LABEL}']"}}},
        {"name": "MLAPI_SHADOW_URL",
         "value": f"http://$({SHADOW_ROLE_ENV})-shadow.{namespace}.svc.cluster.local{service.path_prefix}"},
        {"name": "MLAPI_SHADOW_FRACTION", "value": str(SHADOW_FRACTION)},
    ]
    if keys:
        env.append({"name": "MLAPI_SHADOW_API_KEY", "valueFrom": {"secretKeyRef": {
            "name": SHADOW_KEY_SECRET, "key": SHADOW_KEY_FIELD, "optional": True}}})
    return env


def flagger_values() -> dict[str, Any]:
    """Flagger chart values: Istio, the stack's Prometheus, the selector label, sized requests."""
    (pod,) = RELEASE_REQUESTS[FLAGGER_RELEASE]
    return {
        "meshProvider": "istio",
        "metricsServer": PROMETHEUS_URL,
        "selectorLabels": SELECTOR_LABEL,
        # Off: with it, Flagger gives the primary its own copies of the Secrets the target reads (`<name>-primary`)
        # and refreshes them only at a promotion, and it starts a canary run whenever one changes; the API keys
        # Secret, which External Secrets refreshes every minute for key rotation without restarts, would then
        # reach the live pods only after a rollout, and each rotation would roll every service.
        "configTracking": {"enabled": False},
        "resources": {**pod.resources(), "limits": {"memory": "256Mi"}},
    }


def metric_template_spec(query: str) -> dict[str, Any]:
    """A Prometheus MetricTemplate over the stack's Prometheus."""
    return {"provider": {"type": "prometheus", "address": PROMETHEUS_URL}, "query": query}


def canary_spec(service: ModelService, service_port: int, route_timeout_seconds: int,
                templates_namespace: str) -> dict[str, Any]:
    """The Canary of one model service (module doc); the gates apply only while it has a candidate."""
    gated = service.candidate is not None
    return {
        "provider": "istio",
        "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": service.name},
        "autoscalerRef": {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "name": service.name},
        "progressDeadlineSeconds": PROGRESS_DEADLINE_SECONDS,
        # No revert on deletion: it puts a finalizer on the Canary that Flagger removes only after scaling the
        # target back up, and `pulumi destroy` (or a service removed from config) deletes the target first, so
        # the Canary would never go (controller.go, finalize). Without it the Canary's objects go with it.
        "revertOnDeletion": False,
        # Off: Flagger then waits for the primary to be ready before it moves traffic to it (module doc).
        "skipAnalysis": False,
        "service": {
            "port": service_port,
            "targetPort": "http",
            "portName": "http",
            "appProtocol": "http",
            # A VirtualService without hosts or gateways, which the gateway's root VirtualService delegates to.
            "delegation": True,
            "timeout": f"{route_timeout_seconds}s",
        },
        "analysis": {
            "interval": INTERVAL,
            "threshold": THRESHOLD,
            "stepWeight": STEP_WEIGHT,
            "maxWeight": MAX_WEIGHT,
            # First step: the gateway mirrors a share of the requests to the canary, so latency and 5xx are
            # measured on real traffic before any client gets a canary answer (Flagger runs the analysis on the
            # mirror step). A share, not all: a mirrored request carries the client's key, and the canary counts
            # it against the client's rate limit in the Redis both share.
            "mirror": True,
            "mirrorWeight": MIRROR_PERCENT,
            "metrics": [
                {"name": gate.name, "templateRef": {"name": gate.name, "namespace": templates_namespace},
                 "thresholdRange": {"max": gate.max_value}, "interval": METRIC_WINDOW}
                for gate in (GATES if gated else ())
            ],
        },
    }


@dataclass(frozen=True)
class FlaggerArgs:
    """Chart version, the cluster's provider and what must exist first."""

    chart_version: str
    provider: k8s.Provider
    depends_on: list[pulumi.Resource]


class Flagger(pulumi.ComponentResource):
    """Flagger in its namespace with the gates as MetricTemplates; `ready` is what a Canary waits for (the CRDs
    and the templates), `templates_namespace` where the templates live."""

    ready: list[pulumi.Resource]
    templates_namespace: str

    def __init__(self, name: str, args: FlaggerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlapi:canary:Flagger", name, None, opts)
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=args.depends_on)
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            # The chart's pod runs as a non-root user with a read-only root filesystem (values securityContext) but
            # sets no seccomp profile or dropped capabilities, so it meets `baseline`, not `restricted`.
            metadata={"name": FLAGGER_NAMESPACE,
                      "labels": {"pod-security.kubernetes.io/enforce": "baseline",
                                 "pod-security.kubernetes.io/warn": "restricted"}},
            opts=k8s_opts,
        )
        release = k8s.helm.v3.Release(
            f"{name}-release",
            name=FLAGGER_RELEASE,
            chart="flagger",
            version=args.chart_version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=FLAGGER_REPO),
            namespace=namespace.metadata["name"],
            values=flagger_values(),
            atomic=True,
            timeout=600,
            opts=k8s_opts,
        )
        # MetricTemplate and Canary are CRDs the chart installs (its crds/ directory, on install).
        crd_ready = pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[release]))
        templates = [
            k8s.apiextensions.CustomResource(
                f"{name}-{gate.name}",
                api_version="flagger.app/v1beta1",
                kind="MetricTemplate",
                metadata={"name": gate.name, "namespace": FLAGGER_NAMESPACE},
                spec=metric_template_spec(gate.query),
                opts=crd_ready,
            )
            for gate in GATES
        ]
        self.ready = [release, *templates]
        self.templates_namespace = FLAGGER_NAMESPACE
        self.register_outputs({})
