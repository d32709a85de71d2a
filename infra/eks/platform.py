"""The `platform: eks` wiring: the cluster on EKS Auto Mode, Flagger, the model workloads (each a Flagger Canary)
with their API keys secret and its sync, and the Istio mesh that routes to them; then what operates them:
monitoring and the gateway's edge policy."""

from __future__ import annotations

from typing import Any

import pulumi

from infra import cost, versions
from infra.capacity import capacity_problems
from infra.config import PROJECT_ROOT, ConfigError, StackConfig
from infra.eks.canary import Flagger, FlaggerArgs
from infra.eks.cluster import Cluster, ClusterArgs
from infra.eks.mesh import GATEWAY_NAMESPACE, GATEWAY_SELECTOR, Mesh, MeshArgs, Route
from infra.eks.monitoring import Monitoring, MonitoringArgs, ScrapeTarget
from infra.eks.workloads import (
    SERVICE_PORT,
    CanaryRefs,
    Workloads,
    WorkloadsArgs,
    WorkloadService,
    both_roles,
)
from infra.shared.api_keys import ApiKeysSecret, ApiKeysSecretArgs, ApiKeysSync, ApiKeysSyncArgs
from infra.shared.cache import CacheAccess, CacheAccessArgs
from infra.shared.container_env import CONTAINER_PORT
from infra.shared.edge import GatewayEdge, GatewayEdgeArgs
from infra.shared.foundation import Foundation
from infra.shared.observability import Observability, ObservabilityArgs, eks_log_group_names

# Every Helm release this platform installs; infra/capacity.py holds the requests of each.
HELM_RELEASES = ["metrics-server", "istio-base", "istiod", "istio-ingressgateway", "kube-prometheus-stack",
                 "external-secrets", "flagger"]


def check_capacity(cfg: StackConfig) -> None:
    """Fail before declaring anything when the NodePool cannot hold the cluster at its maximum replicas."""
    for key, problem in capacity_problems(cfg.cluster, cfg.services, HELM_RELEASES):
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
    keys = ApiKeysSecret(
        "api-keys", ApiKeysSecretArgs(secret_name=f"{cfg.prefix}/api-keys", reader_roles=[], tags=tags)
    )

    def sync_keys(namespace: pulumi.Output[str]) -> list[pulumi.Resource]:
        return ApiKeysSync(
            "api-keys-sync",
            ApiKeysSyncArgs(
                eso_chart_version=cfg.operations.external_secrets_version,
                secret_arn=keys.arn,
                secret_name=keys.name,
                region=cfg.region,
                oidc_provider_arn=cluster.oidc_provider_arn,
                app_namespace=namespace,
                provider=cluster.provider,
                depends_on=cluster.ready,
                tags=tags,
            ),
        ).ready

    # Flagger governs every model service's rollouts (infra/eks/canary.py); its CRDs come before any Canary.
    flagger = Flagger("flagger", FlaggerArgs(chart_version=versions.FLAGGER_CHART, provider=cluster.provider,
                                             depends_on=cluster.ready))
    workloads = Workloads(
        "workloads",
        WorkloadsArgs(
            namespace="mlapi",
            services=[WorkloadService(service=svc, image=base.image_ref(svc.name),
                                      candidate_image=base.candidate_image_ref(svc.name)) for svc in cfg.services],
            redis_url=base.cache.url,
            timeouts=cfg.timeouts,
            provider=cluster.provider,
            depends_on=cluster.ready,
            api_keys_sync=sync_keys,
            canary=CanaryRefs(ready=flagger.ready, templates_namespace=flagger.templates_namespace,
                              route_timeout_seconds=cfg.timeouts.route_timeout_seconds),
        ),
    )
    mesh = Mesh(
        "mesh",
        MeshArgs(
            istio_version=cfg.cluster.istio_version,
            provider=cluster.provider,
            app_namespace=workloads.namespace,
            routes=[
                # Flagger's delegate VirtualService is named after the service.
                Route(path_prefix=svc.path_prefix, service_host=workloads.service_hosts[svc.name],
                      service_port=SERVICE_PORT, delegate=svc.name)
                for svc in cfg.services
            ],
            route_timeout_seconds=cfg.timeouts.route_timeout_seconds,
            certificate_arn=cfg.certificate_arn,
            depends_on=cluster.ready,
            routes_depend_on=workloads.canaries,
        ),
    )
    return {
        "service_urls": {
            svc.name: pulumi.Output.concat(mesh.scheme, "://", mesh.load_balancer_host, svc.path_prefix, "/")
            for svc in cfg.services
        },
        "clusterName": cluster.cluster_name,
        "kubeconfig": cluster.kubeconfig,
        "apiKeysSecret": keys.name,
        **_operate_eks(cfg, cluster, workloads, mesh),
    }


def _operate_eks(cfg: StackConfig, cluster: Cluster, workloads: Workloads, mesh: Mesh) -> dict[str, Any]:
    """Prometheus/Grafana with the mlapi rules and dashboard, `/metrics` kept off the gateway (and its optional
    rate limit); returns the outputs operators need."""
    targets = [
        # The primary's pods and the canary's: the gates tell them apart by pod name.
        ScrapeTarget(name=svc.name, namespace=workloads.namespace, selector=both_roles(svc)["matchLabels"],
                     expressions=both_roles(svc)["matchExpressions"], port="http", path=f"{svc.path_prefix}/metrics")
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
            vcpu_hour_usd=cost.vcpu_hour_usd(cfg),
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
    return {"grafanaAdminPassword": monitoring.grafana_admin_password}
