"""The `platform: fargate` wiring: ECS cluster, load balancer, and one ECS service per model service."""

from __future__ import annotations

from typing import Any

import pulumi

from infra.config import StackConfig
from infra.container_env import CONTAINER_PORT
from infra.ecs_cluster import EcsCluster, EcsClusterArgs
from infra.ecs_service import EcsService, EcsServiceArgs
from infra.foundation import Foundation
from infra.load_balancer import LoadBalancer, LoadBalancerArgs
from infra.observability import Observability, ObservabilityArgs, ecs_log_group_names


def deploy_fargate(cfg: StackConfig, base: Foundation) -> dict[str, Any]:
    """Declare the Fargate platform on `base`; returns the stack outputs it adds."""
    tags = cfg.tags()
    logs = Observability(
        "observability",
        ObservabilityArgs(
            log_groups=ecs_log_group_names(cfg.prefix, [svc.name for svc in cfg.services]),
            retention_days=cfg.log_retention_days,
            tags=tags,
        ),
    )
    ecs = EcsCluster(
        "ecs",
        EcsClusterArgs(
            cluster_name=cfg.prefix,
            vpc_id=base.network.vpc_id,
            cache_security_group_id=base.cache.security_group_id,
            redis_url=base.cache.url,
            tags=tags,
        ),
    )
    alb = LoadBalancer(
        "alb",
        LoadBalancerArgs(
            name=cfg.prefix,
            vpc_id=base.network.vpc_id,
            public_subnet_ids=base.network.public_subnet_ids,
            certificate_arn=cfg.fargate.certificate_arn,
            target_security_group_id=ecs.task_security_group_id,
            target_port=CONTAINER_PORT,
            idle_timeout_seconds=cfg.timeouts.idle_timeout_seconds,
            tags=tags,
        ),
    )
    for index, svc in enumerate(cfg.services):
        EcsService(
            f"ecs-{svc.name}",
            EcsServiceArgs(
                service=svc,
                image=base.image_ref(svc.name),
                log_group_name=logs.log_group_names[svc.name],
                rule_priority=100 + index,
                cluster_arn=ecs.cluster_arn,
                cluster_name=ecs.cluster_name,
                task_security_group_id=ecs.task_security_group_id,
                execution_role_arn=ecs.execution_role_arn,
                task_role_arn=ecs.task_role_arn,
                redis_secret_arn=ecs.redis_secret_arn,
                listener_arn=alb.listener_arn,
                load_balancer_arn_suffix=alb.arn_suffix,
                vpc_id=base.network.vpc_id,
                private_subnet_ids=base.network.private_subnet_ids,
                name_prefix=cfg.prefix,
                region=cfg.region,
                health_check_grace_seconds=cfg.fargate.health_check_grace_seconds,
                timeouts=cfg.timeouts,
                tags=tags,
            ),
            opts=pulumi.ResourceOptions(depends_on=[logs]),
        )
    return {
        "service_urls": {
            svc.name: pulumi.Output.concat(alb.scheme, "://", alb.dns_name, svc.path_prefix, "/")
            for svc in cfg.services
        },
        "ecsClusterName": ecs.cluster_name,
    }
