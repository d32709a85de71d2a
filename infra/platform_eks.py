"""The `platform: eks` wiring: cluster, model workloads, and the Istio mesh that routes to them."""

from __future__ import annotations

from typing import Any

import pulumi

from infra.autoscaler import ClusterAutoscaler, ClusterAutoscalerArgs
from infra.cache import CacheAccess, CacheAccessArgs
from infra.capacity import capacity_problems
from infra.cluster import Cluster, ClusterArgs
from infra.config import ConfigError, StackConfig
from infra.foundation import Foundation
from infra.lb_controller import LoadBalancerController, LoadBalancerControllerArgs
from infra.mesh import Mesh, MeshArgs, Route
from infra.observability import Observability, ObservabilityArgs, eks_log_group_names
from infra.workloads import SERVICE_PORT, Workloads, WorkloadsArgs, WorkloadService

# Every Helm release this platform installs; infra/capacity.py holds the requests of each.
HELM_RELEASES = ["metrics-server", "istio-base", "istiod", "istio-ingressgateway", "cluster-autoscaler",
                 "aws-load-balancer-controller"]


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
    }
