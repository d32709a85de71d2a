"""The `platform: eks` wiring: cluster, model workloads, and the Istio mesh that routes to them; then what
operates them: the API keys secret and its sync, monitoring, and the gateway's edge policy."""

from __future__ import annotations

from typing import Any

import pulumi

from infra.capacity import capacity_problems
from infra.config import PROJECT_ROOT, ConfigError, StackConfig
from infra.eks.autoscaler import ClusterAutoscaler, ClusterAutoscalerArgs
from infra.eks.cluster import Cluster, ClusterArgs
from infra.eks.lb_controller import LoadBalancerController, LoadBalancerControllerArgs
from infra.eks.mesh import GATEWAY_NAMESPACE, GATEWAY_SELECTOR, Mesh, MeshArgs, Route
from infra.eks.monitoring import Monitoring, MonitoringArgs, ScrapeTarget
from infra.eks.workloads import SERVICE_PORT, Workloads, WorkloadsArgs, WorkloadService, labels
from infra.shared.api_keys import ApiKeysSecret, ApiKeysSecretArgs, ApiKeysSync, ApiKeysSyncArgs
from infra.shared.cache import CacheAccess, CacheAccessArgs
from infra.shared.container_env import CONTAINER_PORT
from infra.shared.edge import GatewayEdge, GatewayEdgeArgs
from infra.shared.foundation import Foundation
from infra.shared.observability import Observability, ObservabilityArgs, eks_log_group_names

# Every Helm release this platform installs; infra/capacity.py holds the requests of each.
HELM_RELEASES = ["metrics-server", "istio-base", "istiod", "istio-ingressgateway", "cluster-autoscaler",
                 "aws-load-balancer-controller", "kube-prometheus-stack", "external-secrets"]


def check_capacity(cfg: StackConfig) -> None:
    """Fail before declaring anything when the node group cannot hold the cluster at min or at max."""
    for problem in capacity_problems(cfg.cluster, cfg.services, HELM_RELEASES):
        key = "nodeMaxSize" if problem.startswith("at max") else (
            "nodeMinSize" if problem.startswith("at min") else "nodeInstanceType")
        raise ConfigError(key, problem)


def deploy_eks(cfg: StackConfig, base: Foundation) -> dict[str, Any]:
    """Declare the EKS platform on `base`; returns the stack outputs it adds (`check_capacity` first)."""
    tags = cfg.tags()
    logs = Observability(
        "observability",
        ObservabilityArgs(log_groups=eks_log_group_names(cfg.prefix), retention_days=cfg.log_retention_days, tags=tags),
    )
    cluster = Cluster(
        "cluster",
        ClusterArgs(
            cluster_name=cfg.prefix,
            settings=cfg.cluster,
            vpc_id=base.network.vpc_id,
            public_subnet_ids=base.network.public_subnet_ids,
            private_subnet_ids=base.network.private_subnet_ids,
            log_groups=[logs],
            tags=tags,
        ),
    )
    CacheAccess(
        "cache-access-nodes",
        CacheAccessArgs(
            cache_security_group_id=base.cache.security_group_id,
            client_security_group_id=cluster.node_security_group_id,
            description="EKS nodes to Redis",
            tags=tags,
        ),
    )
    controllers = [cluster.pod_identity_agent, *cluster.ready]
    ClusterAutoscaler(
        "autoscaler",
        ClusterAutoscalerArgs(
            cluster_name=cfg.prefix, cluster_name_output=cluster.cluster_name,
            kubernetes_version=cfg.cluster.kubernetes_version, region=cfg.region, provider=cluster.provider,
            depends_on=controllers, tags=tags,
        ),
    )
    lb_controller = LoadBalancerController(
        "lb-controller",
        LoadBalancerControllerArgs(
            cluster_name=cfg.prefix, cluster_name_output=cluster.cluster_name, vpc_id=base.network.vpc_id,
            region=cfg.region, provider=cluster.provider, depends_on=controllers, tags=tags,
        ),
    )
    workloads = Workloads(
        "workloads",
        WorkloadsArgs(
            namespace="mlapi",
            services=[WorkloadService(service=svc, image=base.image_ref(svc.name)) for svc in cfg.services],
            redis_url=base.cache.url,
            timeouts=cfg.timeouts,
            provider=cluster.provider,
            depends_on=cluster.ready,
            api_keys=True,
        ),
    )
    mesh = Mesh(
        "mesh",
        MeshArgs(
            istio_version=cfg.cluster.istio_version,
            provider=cluster.provider,
            app_namespace=workloads.namespace,
            routes=[
                Route(path_prefix=svc.path_prefix, service_host=workloads.service_hosts[svc.name],
                      service_port=SERVICE_PORT)
                for svc in cfg.services
            ],
            route_timeout_seconds=cfg.timeouts.route_timeout_seconds,
            certificate_arn=cfg.certificate_arn,
            depends_on=cluster.ready,
            load_balancer_controller=[lb_controller.release],
        ),
    )
    return {
        "service_urls": {
            svc.name: pulumi.Output.concat(mesh.scheme, "://", mesh.load_balancer_host, svc.path_prefix, "/")
            for svc in cfg.services
        },
        "clusterName": cluster.cluster_name,
        "kubeconfig": cluster.kubeconfig,
        **_operate_eks(cfg, cluster, workloads, mesh),
    }


def _operate_eks(cfg: StackConfig, cluster: Cluster, workloads: Workloads, mesh: Mesh) -> dict[str, Any]:
    """API keys into the pods, Prometheus/Grafana with the mlapi rules and dashboard, `/metrics` kept off the
    gateway (and its optional rate limit); returns the outputs operators need."""
    keys = ApiKeysSecret(
        "api-keys", ApiKeysSecretArgs(secret_name=f"{cfg.prefix}/api-keys", reader_roles=[], tags=cfg.tags())
    )
    ApiKeysSync(
        "api-keys-sync",
        ApiKeysSyncArgs(
            eso_chart_version=cfg.operations.external_secrets_version,
            secret_arn=keys.arn,
            secret_name=keys.name,
            region=cfg.region,
            oidc_provider_arn=cluster.oidc_provider_arn,
            # The namespace output: waits for the Namespace only, not for the Deployments (which wait for keys).
            app_namespace=workloads.namespace,
            provider=cluster.provider,
            depends_on=cluster.ready,
            tags=cfg.tags(),
        ),
    )
    targets = [
        ScrapeTarget(name=svc.name, namespace=workloads.namespace, selector=labels(svc), port="http",
                     path=f"{svc.path_prefix}/metrics")
        for svc in cfg.services
    ]
    # The gateway chart names Envoy's Prometheus port `http-envoy-prom` (15090).
    targets.append(ScrapeTarget(name="istio-gateway", namespace=GATEWAY_NAMESPACE, selector=GATEWAY_SELECTOR,
                                port="http-envoy-prom", path="/stats/prometheus"))
    monitoring = Monitoring(
        "monitoring",
        MonitoringArgs(
            chart_version=cfg.operations.prometheus_stack_version,
            alerts_file=PROJECT_ROOT / "monitoring" / "prometheus" / "alerts.yaml",
            dashboard_file=PROJECT_ROOT / "monitoring" / "grafana" / "mlapi.json",
            targets=targets,
            app_namespace=workloads.namespace,
            app_pod_selector={"app.kubernetes.io/part-of": "mlapi"},
            app_port=CONTAINER_PORT,
            provider=cluster.provider,
            depends_on=cluster.ready,
        ),
    )
    GatewayEdge(
        "edge",
        GatewayEdgeArgs(
            gateway_namespace=GATEWAY_NAMESPACE,
            gateway_selector=GATEWAY_SELECTOR,
            path_prefixes=[svc.path_prefix for svc in cfg.services],
            rate_limit_per_minute=cfg.operations.edge_rate_limit_per_minute,
            provider=cluster.provider,
            depends_on=[mesh],
        ),
    )
    return {"apiKeysSecret": keys.name, "grafanaAdminPassword": monitoring.grafana_admin_password}
