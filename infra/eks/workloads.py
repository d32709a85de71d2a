"""The model services on Kubernetes: per service a Deployment, ClusterIP Service, HPA, PodDisruptionBudget and
NetworkPolicy, in one namespace that enforces the `restricted` Pod Security Standard.

Under Flagger (`WorkloadsArgs.canary`, infra/eks/canary.py) the Deployment is the Canary's target: Flagger runs
the live version as `<name>-primary` and creates the Services, so the program declares the Canary instead of the
Service, and the disruption budget and network policy cover the primary's pods too. A service with a candidate
model runs the candidate's image in the target, which is what Flagger then analyses.

Pods carry no Istio sidecar: the ingress gateway routes to them directly, which keeps them within `restricted`
(sidecar injection needs NET_ADMIN unless the Istio CNI plugin is installed). The Redis URL, which holds the AUTH
token, reaches the container from a Secret; it never appears in the Deployment.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.config import ModelService
from infra.eks import canary
from infra.eks.mesh import GATEWAY_NAMESPACE
from infra.shared import api_keys
from infra.shared.container_env import CONTAINER_PORT, health_path, model_env
from infra.timeouts import Timeouts

SERVICE_PORT = 80
RUN_AS = 10001  # the image's numeric USER; checkov CKV_K8S_40 wants >= 10000
REDIS_SECRET_KEY = "redis-url"


@dataclass(frozen=True)
class WorkloadService:
    """A model service and the image (by digest) that serves it; with a candidate, the candidate's image too."""

    service: ModelService
    image: pulumi.Input[str]
    candidate_image: pulumi.Input[str] | None = None


@dataclass(frozen=True)
class CanaryRefs:
    """What the Canaries need: Flagger's CRDs and gate templates first, where the templates live, and the
    gateway route timeout Flagger's VirtualService keeps."""

    ready: list[pulumi.Resource]
    templates_namespace: str
    route_timeout_seconds: int


@dataclass(frozen=True)
class WorkloadsArgs:
    """Namespace, services, the secret Redis URL and the provider every object goes through."""

    namespace: str
    services: list[WorkloadService]
    redis_url: pulumi.Input[str]
    timeouts: Timeouts
    provider: k8s.Provider
    depends_on: list[pulumi.Resource]
    # Given the app namespace, declares the sync of the API keys Secret (infra/shared/api_keys.py) and returns
    # what proves the Secret exists; the pods mount it and point MLAPI_API_KEYS_FILE at it, and the Deployments
    # wait for it. None: no keys.
    api_keys_sync: Callable[[pulumi.Output[str]], list[pulumi.Resource]] | None = None
    # Flagger governs the rollouts (infra/eks/canary.py). None: plain rolling updates, a Service per service.
    canary: CanaryRefs | None = None


def labels(service: ModelService) -> dict[str, str]:
    """Selector labels of one model service's pods."""
    return {"app.kubernetes.io/name": service.name, "app.kubernetes.io/part-of": "mlapi"}


def container_env(service: ModelService, timeouts: Timeouts, secret_name: pulumi.Input[str]) -> list[dict[str, Any]]:
    """The `MLAPI_*` settings of one service; the Redis URL by reference to the Secret only."""
    return [
        *({"name": k, "value": v} for k, v in model_env(service, timeouts).items()),
        {"name": "MLAPI_REDIS_URL", "valueFrom": {"secretKeyRef": {"name": secret_name, "key": REDIS_SECRET_KEY}}},
    ]


def pod_spec(
    service: ModelService, timeouts: Timeouts, image: pulumi.Input[str], secret_name: pulumi.Input[str],
    keys: bool = False, extra_env: list[dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """Restricted, probed, zone-spread pod for one model service; with `keys`, the API keys file mounted."""
    health = {"httpGet": {"path": health_path(service), "port": "http"}}
    resources = {"cpu": f"{service.cpu_millicores}m", "memory": f"{service.memory_mib}Mi"}
    return {
        "automountServiceAccountToken": False,
        # No `<SERVICE>_PORT`-style variables from the namespace's Services: a Service named `mlapi...` would
        # inject `MLAPI_*` variables, which the service refuses as unknown settings.
        "enableServiceLinks": False,
        # Counted from the start of preStop: the sleep, then the server's graceful shutdown, then SIGKILL.
        "terminationGracePeriodSeconds": timeouts.termination_grace_seconds,
        "securityContext": {
            "runAsNonRoot": True,
            "runAsUser": RUN_AS,
            "runAsGroup": RUN_AS,
            "fsGroup": RUN_AS,
            "seccompProfile": {"type": "RuntimeDefault"},
        },
        "topologySpreadConstraints": [
            {
                "maxSkew": 1,
                "topologyKey": key,
                "whenUnsatisfiable": "ScheduleAnyway",
                "labelSelector": {"matchLabels": labels(service)},
            }
            for key in ("topology.kubernetes.io/zone", "kubernetes.io/hostname")
        ],
        "containers": [
            {
                "name": "model",
                "image": image,
                "imagePullPolicy": "IfNotPresent",
                "ports": [{"name": "http", "containerPort": CONTAINER_PORT, "protocol": "TCP"}],
                "env": container_env(service, timeouts, secret_name) + ([api_keys.container_env()] if keys else [])
                + (extra_env or []),
                # Requests equal limits: the model's memory is resident, and threads are sized to the CPU limit.
                "resources": {"requests": resources, "limits": resources},
                # Loading the model can take minutes on a cold node; startup allows 5 min before liveness counts.
                "startupProbe": {**health, "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 60},
                # /health answers 503 while draining: one failed check takes the pod out of the endpoints.
                "readinessProbe": {**health, "periodSeconds": 5, "timeoutSeconds": 3, "failureThreshold": 1},
                "livenessProbe": {**health, "periodSeconds": 20, "timeoutSeconds": 5, "failureThreshold": 3},
                # Let endpoint removal reach the gateway before SIGTERM starts the graceful shutdown.
                "lifecycle": {"preStop": {"sleep": {"seconds": timeouts.pre_stop_seconds}}},
                "securityContext": {
                    "allowPrivilegeEscalation": False,
                    "readOnlyRootFilesystem": True,
                    "runAsNonRoot": True,
                    "runAsUser": RUN_AS,
                    "capabilities": {"drop": ["ALL"]},
                    "seccompProfile": {"type": "RuntimeDefault"},
                },
                "volumeMounts": [{"name": "tmp", "mountPath": "/tmp"}] + ([api_keys.container_mount()] if keys else []),
            }
        ],
        "volumes": [{"name": "tmp", "emptyDir": {"sizeLimit": "512Mi"}}] + ([api_keys.pod_volume()] if keys else []),
    }


class Workloads(pulumi.ComponentResource):
    """All model services in one namespace; `service_hosts` maps each service to its cluster DNS name."""

    namespace: pulumi.Output[str]
    service_hosts: dict[str, pulumi.Output[str]]
    # Flagger's Canaries (empty without Flagger): the gateway's routes to their VirtualServices come after them.
    canaries: list[pulumi.Resource]

    def __init__(self, name: str, args: WorkloadsArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlapi:workloads:Workloads", name, None, opts)
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=args.depends_on)
        self._timeouts = args.timeouts
        self._api_keys = args.api_keys_sync is not None
        self._canary = args.canary
        self._namespace_name = args.namespace
        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata={
                "name": args.namespace,
                "labels": {
                    "pod-security.kubernetes.io/enforce": "restricted",
                    "pod-security.kubernetes.io/enforce-version": "latest",
                },
            },
            opts=k8s_opts,
        )
        ns_name = namespace.metadata["name"]
        secret = k8s.core.v1.Secret(
            f"{name}-redis",
            metadata={"name": "mlapi-redis", "namespace": ns_name},
            type="Opaque",
            string_data={REDIS_SECRET_KEY: pulumi.Output.secret(args.redis_url)},
            opts=k8s_opts,
        )
        self.namespace = ns_name
        keys_ready = args.api_keys_sync(ns_name) if args.api_keys_sync else []
        # The Deployments (not the namespace, which the sync needs) wait for the keys Secret: a pod started
        # before it exists would wait in ContainerCreating, and a rollout would count it as stuck.
        deployment_opts = pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=keys_ready))
        self.service_hosts = {}
        self.canaries = []
        for item in args.services:
            self.service_hosts[item.service.name] = self._service(name, item, ns_name, secret, k8s_opts,
                                                                  deployment_opts)
        self.register_outputs({"namespace": self.namespace, "service_hosts": self.service_hosts})

    def _service(
        self,
        name: str,
        item: WorkloadService,
        namespace: pulumi.Output[str],
        secret: k8s.core.v1.Secret,
        k8s_opts: pulumi.ResourceOptions,
        deployment_opts: pulumi.ResourceOptions,
    ) -> pulumi.Output[str]:
        svc = item.service
        meta = {"name": svc.name, "namespace": namespace, "labels": labels(svc)}
        selector = {"matchLabels": labels(svc)}
        under_flagger = self._canary is not None
        if self._canary is not None:
            # Declared before the Deployment it targets, so a change of its gates (a candidate added or promoted)
            # reaches Flagger before the new pod spec does.
            flagger_canary = k8s.apiextensions.CustomResource(
                f"{name}-{svc.name}-canary",
                api_version="flagger.app/v1beta1",
                kind="Canary",
                metadata=meta,
                spec=canary.canary_spec(svc, SERVICE_PORT, self._canary.route_timeout_seconds,
                                        self._canary.templates_namespace),
                opts=pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=self._canary.ready)),
            )
            deployment_opts = pulumi.ResourceOptions.merge(
                deployment_opts, pulumi.ResourceOptions(depends_on=[flagger_canary]))
        image = item.candidate_image if under_flagger and item.candidate_image is not None else item.image
        extra_env = canary.shadow_env(svc, self._namespace_name, self._api_keys) if under_flagger else []
        deployment = k8s.apps.v1.Deployment(
            f"{name}-{svc.name}-deployment",
            metadata=meta,
            spec={
                # No `replicas`: the HPA owns the count, and a fixed value would fight it on every `pulumi up`.
                "selector": selector,
                "strategy": {"type": "RollingUpdate", "rollingUpdate": {"maxUnavailable": 0, "maxSurge": 1}},
                "template": {
                    "metadata": {"labels": labels(svc)},
                    "spec": pod_spec(svc, self._timeouts, image, secret.metadata["name"], self._api_keys,
                                     extra_env),
                },
            },
            opts=deployment_opts,
        )
        if under_flagger:
            self._flagger_extras(name, svc, namespace, k8s_opts)
            self.canaries.append(flagger_canary)
            # The apex Service `<name>` is Flagger's (same name as the program's would be).
            host_name: pulumi.Input[str] = svc.name
        else:
            service = k8s.core.v1.Service(
                f"{name}-{svc.name}-service",
                metadata=meta,
                spec=service_spec(svc),
                opts=k8s_opts,
            )
            host_name = service.metadata["name"]
        k8s.autoscaling.v2.HorizontalPodAutoscaler(
            f"{name}-{svc.name}-hpa",
            metadata=meta,
            spec={
                "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": deployment.metadata["name"]},
                "minReplicas": svc.min_replicas,
                "maxReplicas": svc.max_replicas,
                "metrics": [
                    {
                        "type": "Resource",
                        "resource": {
                            "name": "cpu",
                            "target": {"type": "Utilization", "averageUtilization": svc.cpu_target_percent},
                        },
                    }
                ],
            },
            opts=k8s_opts,
        )
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-{svc.name}-pdb",
            metadata=meta,
            spec={"maxUnavailable": 1, "selector": selector},
            opts=k8s_opts,
        )
        k8s.networking.v1.NetworkPolicy(
            f"{name}-{svc.name}-ingress",
            metadata=meta,
            spec={
                # Under Flagger the live version runs in the primary's pods: the gateway reaches both.
                "podSelector": both_roles(svc) if under_flagger else selector,
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {
                                    "matchLabels": {"kubernetes.io/metadata.name": GATEWAY_NAMESPACE}
                                }
                            }
                        ],
                        "ports": [{"protocol": "TCP", "port": CONTAINER_PORT}],
                    }
                ],
            },
            opts=k8s_opts,
        )
        return pulumi.Output.concat(host_name, ".", namespace, ".svc.cluster.local")

    def _flagger_extras(self, name: str, svc: ModelService, namespace: pulumi.Output[str],
                        k8s_opts: pulumi.ResourceOptions) -> None:
        """What a service under Flagger needs beside its Canary: a disruption budget for the primary's pods, the
        Service the primary mirrors to (the canary's pods), and a policy that admits that mirror."""
        primary_labels = {**labels(svc), canary.SELECTOR_LABEL: f"{svc.name}-primary"}
        k8s.policy.v1.PodDisruptionBudget(
            f"{name}-{svc.name}-primary-pdb",
            metadata={"name": f"{svc.name}-primary", "namespace": namespace, "labels": primary_labels},
            spec={"maxUnavailable": 1, "selector": {"matchLabels": primary_labels}},
            opts=k8s_opts,
        )
        k8s.core.v1.Service(
            f"{name}-{svc.name}-shadow",
            metadata={"name": canary.shadow_service_name(svc), "namespace": namespace, "labels": labels(svc)},
            spec=service_spec(svc),
            opts=k8s_opts,
        )
        k8s.networking.v1.NetworkPolicy(
            f"{name}-{svc.name}-shadow",
            metadata={"name": f"{svc.name}-shadow", "namespace": namespace, "labels": labels(svc)},
            spec={
                "podSelector": {"matchLabels": labels(svc)},
                "policyTypes": ["Ingress"],
                "ingress": [{"from": [{"podSelector": {"matchLabels": primary_labels}}],
                             "ports": [{"protocol": "TCP", "port": CONTAINER_PORT}]}],
            },
            opts=k8s_opts,
        )


def service_spec(service: ModelService) -> dict[str, Any]:
    """A ClusterIP Service on the model port for the service's pods (before Flagger; under it, the canary's)."""
    return {
        "type": "ClusterIP",
        "selector": labels(service),
        "ports": [{"name": "http", "port": SERVICE_PORT, "targetPort": "http", "appProtocol": "http"}],
    }


def both_roles(service: ModelService) -> dict[str, Any]:
    """A selector of a service's pods under Flagger, canary (`<name>`) and primary (`<name>-primary`)."""
    return {
        "matchLabels": {"app.kubernetes.io/part-of": "mlapi"},
        "matchExpressions": [{"key": canary.SELECTOR_LABEL, "operator": "In",
                              "values": [service.name, f"{service.name}-primary"]}],
    }
