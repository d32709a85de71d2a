"""The `platform: eks` wiring: cluster, model workloads, and the Istio mesh that routes to them."""

from __future__ import annotations

from typing import Any

import pulumi

from infra.cache import CacheAccess, CacheAccessArgs
from infra.cluster import Cluster, ClusterArgs
from infra.config import StackConfig
from infra.foundation import Foundation
from infra.mesh import Mesh, MeshArgs, Route
from infra.observability import Observability, ObservabilityArgs, eks_log_group_names
from infra.workloads import SERVICE_PORT, Workloads, WorkloadsArgs, WorkloadService


def deploy_eks(cfg: StackConfig, base: Foundation) -> dict[str, Any]:
    """Declare the EKS platform on `base`; returns the stack outputs it adds."""
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
            depends_on=cluster.ready,
        ),
    )
    return {
        "service_urls": {
            svc.name: pulumi.Output.concat("http://", mesh.load_balancer_host, svc.path_prefix, "/")
            for svc in cfg.services
        },
        "clusterName": cluster.cluster_name,
        "kubeconfig": cluster.kubeconfig,
    }
