"""Entry point of the Pulumi program: read the typed config, create the components, export the outputs.

`platform: eks` puts the services on EKS behind Istio; `platform: fargate` on ECS Fargate behind an ALB. Network,
registry, images and cache are the same components on both.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pulumi

# Pulumi runs this file by path (`main: infra/`); make `infra.*` importable without an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra import config as stack_config  # noqa: E402
from infra.cache import Cache, CacheAccess, CacheAccessArgs, CacheArgs  # noqa: E402
from infra.image import ModelImage, ModelImageArgs, context_hash  # noqa: E402
from infra.network import Network, NetworkArgs  # noqa: E402
from infra.observability import (  # noqa: E402
    Observability,
    ObservabilityArgs,
    ecs_log_group_names,
    eks_log_group_names,
)
from infra.registry import Registry, RegistryArgs  # noqa: E402

cfg = stack_config.load()
tags = cfg.tags()

network = Network("network", NetworkArgs(settings=cfg.network, tags=tags))
registry = Registry("registry", RegistryArgs(repository_name=cfg.prefix, keep_images=cfg.image.keep_images, tags=tags))
source_hash = context_hash(Path(cfg.image.context), cfg.image.dockerfile)
images = {
    svc.name: ModelImage(
        f"image-{svc.name}",
        ModelImageArgs(
            service=svc,
            repository_url=registry.repository_url,
            registry_id=registry.registry_id,
            context=cfg.image.context,
            dockerfile=cfg.image.dockerfile,
            source_hash=source_hash,
            build_on_preview=cfg.image.build_on_preview,
        ),
    )
    for svc in cfg.services
}
cache = Cache(
    "cache",
    CacheArgs(
        settings=cfg.cache,
        vpc_id=network.vpc_id,
        subnet_ids=network.private_subnet_ids,
        name_prefix=cfg.prefix,
        tags=tags,
    ),
)

if cfg.platform == "eks":
    from infra.cluster import Cluster, ClusterArgs
    from infra.mesh import Mesh, MeshArgs, Route
    from infra.workloads import SERVICE_PORT, Workloads, WorkloadsArgs, WorkloadService

    logs = Observability(
        "observability",
        ObservabilityArgs(
            log_groups=eks_log_group_names(cfg.prefix), retention_days=cfg.log_retention_days, tags=tags
        ),
    )
    cluster = Cluster(
        "cluster",
        ClusterArgs(
            cluster_name=cfg.prefix,
            settings=cfg.cluster,
            vpc_id=network.vpc_id,
            public_subnet_ids=network.public_subnet_ids,
            private_subnet_ids=network.private_subnet_ids,
            log_groups=[logs],
            tags=tags,
        ),
    )
    CacheAccess(
        "cache-access-nodes",
        CacheAccessArgs(
            cache_security_group_id=cache.security_group_id,
            client_security_group_id=cluster.node_security_group_id,
            description="EKS nodes to Redis",
            tags=tags,
        ),
    )
    workloads = Workloads(
        "workloads",
        WorkloadsArgs(
            namespace="mlapi",
            services=[WorkloadService(service=svc, image=images[svc.name].ref) for svc in cfg.services],
            redis_url=cache.url,
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
            depends_on=cluster.ready,
        ),
    )
    urls = {
        svc.name: pulumi.Output.concat("http://", mesh.load_balancer_host, svc.path_prefix, "/")
        for svc in cfg.services
    }
    pulumi.export("clusterName", cluster.cluster_name)
    pulumi.export("kubeconfig", cluster.kubeconfig)
else:
    from infra.fargate import FargateArgs, FargatePlatform, FargateService

    logs = Observability(
        "observability",
        ObservabilityArgs(
            log_groups=ecs_log_group_names(cfg.prefix, [svc.name for svc in cfg.services]),
            retention_days=cfg.log_retention_days,
            tags=tags,
        ),
    )
    platform = FargatePlatform(
        "fargate",
        FargateArgs(
            cluster_name=cfg.prefix,
            region=cfg.region,
            settings=cfg.fargate,
            services=[
                FargateService(service=svc, image=images[svc.name].ref, log_group_name=logs.log_group_names[svc.name])
                for svc in cfg.services
            ],
            vpc_id=network.vpc_id,
            public_subnet_ids=network.public_subnet_ids,
            private_subnet_ids=network.private_subnet_ids,
            cache_security_group_id=cache.security_group_id,
            redis_url=cache.url,
            tags=tags,
        ),
        opts=pulumi.ResourceOptions(depends_on=[logs]),
    )
    urls = platform.urls
    pulumi.export("ecsClusterName", platform.cluster_name)

pulumi.export("service_urls", urls)
pulumi.export("repositoryUrl", registry.repository_url)
pulumi.export("redisEndpoint", cache.endpoint)
pulumi.export("vpcId", network.vpc_id)
