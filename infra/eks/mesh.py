"""Istio ingress for the EKS platform: one public gateway, one VirtualService that routes each path prefix (to the
service, or, under Flagger, by delegation to the service's own VirtualService, which splits primary and canary).

Each model service is served under its own prefix by the service itself (`MLAPI_PATH_PREFIX`), so routes match
the prefix and forward unchanged: no rewrite, and `/project/docs` links stay valid behind the gateway. The
Istio charts are `helm.v3.Release`s (a v4 `Chart` cannot preview before the cluster exists,
pulumi-kubernetes #3027), installed in order base (CRDs) -> istiod (its validating webhook admits every Istio
object, its injector webhook the gateway pods) -> gateway, and the Gateway and VirtualService wait on istiod.

The public entry is a Service of type LoadBalancer the program owns (the gateway chart's own Service is off): EKS
Auto Mode's load balancer controller gives it an internet-facing NLB with IP targets. As a Pulumi resource its
deletion waits until the Service is gone, which is after Auto Mode removed the NLB and dropped the Service's
finalizer, so `pulumi destroy` never deletes the cluster or the VPC under a load balancer still standing (a Helm
release uninstall returns at once and would leave it behind).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.capacity import RELEASE_REQUESTS

ISTIO_REPO = "https://istio-release.storage.googleapis.com/charts"
ISTIO_NAMESPACE = "istio-system"
GATEWAY_NAMESPACE = "istio-ingress"
# The gateway chart labels its pods `istio: <release name without "istio-">` (Istio "Installing Gateways").
GATEWAY_RELEASE = "istio-ingressgateway"
GATEWAY_SELECTOR = {"istio": "ingressgateway"}
GATEWAY_NAME = "mlapi"


@dataclass(frozen=True)
class Route:
    """A path prefix and the in-cluster Service that serves it; or, with `delegate`, the name of the VirtualService
    in the app namespace that routes it (Flagger's, which shifts traffic between primary and canary)."""

    path_prefix: str
    service_host: pulumi.Input[str]
    service_port: int
    delegate: str | None = None


@dataclass(frozen=True)
class MeshArgs:
    """Istio version, the Kubernetes provider, the namespace of the routes and the routes themselves."""

    istio_version: str
    provider: k8s.Provider
    app_namespace: pulumi.Input[str]
    routes: list[Route]
    route_timeout_seconds: int
    certificate_arn: str
    depends_on: list[pulumi.Resource]
    # What the root VirtualService waits for besides istiod: the delegates' owners (Flagger's Canaries).
    routes_depend_on: list[pulumi.Resource] | None = None


_LB = "service.beta.kubernetes.io/aws-load-balancer-"
# EKS Auto Mode's load balancer controller claims Services of this class (EKS user guide, "Use Service Annotations
# to configure Network Load Balancers"); without it the legacy in-tree provider would make a Classic ELB.
LOAD_BALANCER_CLASS = "eks.amazonaws.com/nlb"
GATEWAY_LB_SERVICE = "istio-ingressgateway-nlb"


def gateway_service(certificate_arn: str) -> dict[str, Any]:
    """The gateway's LoadBalancer Service spec and annotations: an internet-facing NLB of Auto Mode with IP targets
    (the gateway pods directly, no NodePorts), publishing only what is served, 80, and 443 with TLS ended at the
    NLB when a certificate is configured. The NLB health-checks each gateway pod's readiness endpoint directly
    (IP targets need no Service port for it)."""
    ports = [{"name": "http2", "port": 80, "protocol": "TCP", "targetPort": 80}]
    annotations = {
        _LB + "nlb-target-type": "ip",
        _LB + "scheme": "internet-facing",
        _LB + "healthcheck-protocol": "http",
        _LB + "healthcheck-port": "15021",
        _LB + "healthcheck-path": "/healthz/ready",
    }
    if certificate_arn:
        ports.append({"name": "https", "port": 443, "protocol": "TCP", "targetPort": 80})
        annotations[_LB + "ssl-cert"] = certificate_arn
        annotations[_LB + "ssl-ports"] = "443"
        annotations[_LB + "ssl-negotiation-policy"] = "ELBSecurityPolicy-TLS13-1-2-2021-06"
    spec = {
        "type": "LoadBalancer",
        "loadBalancerClass": LOAD_BALANCER_CLASS,
        "selector": GATEWAY_SELECTOR,
        "ports": ports,
        # IP targets reach the pods without a NodePort; allocating them would only open ports on every node.
        "allocateLoadBalancerNodePorts": False,
    }
    return {"spec": spec, "annotations": annotations}


def http_routes(routes: list[Route], timeout_seconds: int,
                namespace: pulumi.Input[str] | None = None) -> list[dict[str, object]]:
    """VirtualService `http` entries: `/x` exactly and `/x/...`, so `/x` never captures `/xy`; the timeout lets
    the service's own 503 (request timeout) reach the client before the proxy gives up. A delegated route hands
    the matched requests to the delegate VirtualService in `namespace` (Istio "VirtualService", Delegate: the
    delegate holds the destinations and the timeout)."""
    out: list[dict[str, object]] = []
    for route in routes:
        entry: dict[str, object] = {
            "name": route.path_prefix.strip("/").replace("/", "-"),
            "match": [{"uri": {"exact": route.path_prefix}}, {"uri": {"prefix": route.path_prefix + "/"}}],
        }
        if route.delegate is not None:
            entry["delegate"] = {"name": route.delegate, "namespace": namespace}
        else:
            entry["route"] = [{"destination": {"host": route.service_host,
                                               "port": {"number": route.service_port}}}]
            entry["timeout"] = f"{timeout_seconds}s"
        out.append(entry)
    return out


class Mesh(pulumi.ComponentResource):
    """Istio control plane, ingress gateway behind an AWS NLB, and the prefix routes; `scheme` is http or https."""

    load_balancer_host: pulumi.Output[str]
    scheme: str

    def __init__(self, name: str, args: MeshArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlapi:mesh:Mesh", name, None, opts)
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=args.depends_on)
        repo = k8s.helm.v3.RepositoryOptsArgs(repo=ISTIO_REPO)
        (istiod_pod,) = RELEASE_REQUESTS["istiod"]
        (gateway_pod,) = RELEASE_REQUESTS[GATEWAY_RELEASE]

        system_ns = k8s.core.v1.Namespace(
            f"{name}-system-ns", metadata={"name": ISTIO_NAMESPACE}, opts=k8s_opts
        )
        gateway_ns = k8s.core.v1.Namespace(
            f"{name}-gateway-ns", metadata={"name": GATEWAY_NAMESPACE}, opts=k8s_opts
        )
        base = k8s.helm.v3.Release(
            f"{name}-base",
            name="istio-base",
            chart="base",
            version=args.istio_version,
            repository_opts=repo,
            namespace=system_ns.metadata["name"],
            values={"defaultRevision": "default"},
            atomic=True,
            opts=k8s_opts,
        )
        istiod = k8s.helm.v3.Release(
            f"{name}-istiod",
            name="istiod",
            chart="istiod",
            version=args.istio_version,
            repository_opts=repo,
            namespace=system_ns.metadata["name"],
            # The istiod chart reads its values flat; under `pilot:` (the old istio-operator layout) they are
            # silently ignored (tests/infra/charts/istiod).
            # Delegation lets Flagger's VirtualServices route the prefixes the root VirtualService hands them
            # (off by default in istiod's feature flags of old releases; set, not assumed).
            values={"autoscaleMin": istiod_pod.min_replicas, "autoscaleMax": istiod_pod.max_replicas,
                    "resources": istiod_pod.resources(),
                    "env": {"PILOT_ENABLE_VIRTUAL_SERVICE_DELEGATE": "true"}},
            atomic=True,
            timeout=600,
            opts=pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[base])),
        )
        gateway = k8s.helm.v3.Release(
            f"{name}-gateway",
            name=GATEWAY_RELEASE,
            chart="gateway",
            version=args.istio_version,
            repository_opts=repo,
            namespace=gateway_ns.metadata["name"],
            values={
                # The chart's Service is off ("None"); the program owns the LoadBalancer Service below.
                "service": {"type": "None"},
                "resources": gateway_pod.resources(),
                "autoscaling": {"minReplicas": gateway_pod.min_replicas, "maxReplicas": gateway_pod.max_replicas},
            },
            atomic=True,
            timeout=900,
            opts=pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[istiod])),
        )
        crd_ready = pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[base, istiod, gateway]))
        k8s.apiextensions.CustomResource(
            f"{name}-gateway-config",
            api_version="networking.istio.io/v1",
            kind="Gateway",
            metadata={"name": GATEWAY_NAME, "namespace": GATEWAY_NAMESPACE},
            spec={
                "selector": GATEWAY_SELECTOR,
                "servers": [{"port": {"number": 80, "name": "http", "protocol": "HTTP"}, "hosts": ["*"]}],
            },
            opts=crd_ready,
        )
        k8s.apiextensions.CustomResource(
            f"{name}-routes",
            api_version="networking.istio.io/v1",
            kind="VirtualService",
            metadata={"name": "mlapi", "namespace": args.app_namespace},
            spec={
                "hosts": ["*"],
                "gateways": [f"{GATEWAY_NAMESPACE}/{GATEWAY_NAME}"],
                "http": http_routes(args.routes, args.route_timeout_seconds, args.app_namespace),
            },
            opts=pulumi.ResourceOptions.merge(
                crd_ready, pulumi.ResourceOptions(depends_on=list(args.routes_depend_on or []))),
        )
        lb = gateway_service(args.certificate_arn)
        service = k8s.core.v1.Service(
            f"{name}-gateway-nlb",
            metadata={"name": GATEWAY_LB_SERVICE, "namespace": gateway_ns.metadata["name"],
                      "annotations": lb["annotations"]},
            spec=lb["spec"],
            # Created once the gateway pods run, so the NLB's first health checks find targets.
            opts=pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[gateway])),
        )
        self.load_balancer_host = service.status.apply(_lb_host)
        self.scheme = "https" if args.certificate_arn else "http"
        self.register_outputs({"load_balancer_host": self.load_balancer_host})


def _lb_host(status: object) -> str:
    ingress = getattr(getattr(status, "load_balancer", None), "ingress", None) or []
    first = ingress[0] if ingress else None
    return (getattr(first, "hostname", None) or getattr(first, "ip", None) or "") if first else ""
