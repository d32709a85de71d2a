"""The `platform: fargate` wiring: ECS cluster, load balancer, and one ECS service per model service, with the
API keys secret they read, the CloudWatch dashboard and alarms, and the ALB's edge rules."""

from __future__ import annotations

from typing import Any

import pulumi

from infra import cost
from infra.config import StackConfig
from infra.fargate.cloudwatch import CloudWatchArgs, CloudWatchMonitoring, ServiceMetrics
from infra.fargate.ecs_cluster import EcsCluster, EcsClusterArgs
from infra.fargate.ecs_service import EcsService, EcsServiceArgs
from infra.fargate.load_balancer import LoadBalancer, LoadBalancerArgs
from infra.fargate.log_metrics import LogMetricFilters, LogMetricsArgs, namespace
from infra.shared.api_keys import ApiKeysSecret, ApiKeysSecretArgs
from infra.shared.container_env import CONTAINER_PORT
from infra.shared.edge import AlbEdge, AlbEdgeArgs
from infra.shared.foundation import Foundation
from infra.shared.observability import Observability, ObservabilityArgs, ecs_log_group_names


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
    # The execution role reads the keys when a task starts; the value is put by the operator (docs/deploy.md).
    keys = ApiKeysSecret(
        "api-keys",
        ApiKeysSecretArgs(secret_name=f"{cfg.prefix}/api-keys", reader_roles=[ecs.execution_role_id], tags=tags),
    )
    services: list[ServiceMetrics] = []
    for index, svc in enumerate(cfg.services):
        service = EcsService(
            f"ecs-{svc.name}",
            EcsServiceArgs(
                service=svc,
                # A candidate replaces the live image; ECS rolls it back on the rollout alarms (ecs_service.py).
                image=base.candidate_image_ref(svc.name) or base.image_ref(svc.name),
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
                api_keys_secret_arn=keys.arn,
            ),
            opts=pulumi.ResourceOptions(depends_on=[logs]),
        )
        services.append(ServiceMetrics(name=svc.name, target_group=service.target_group_arn_suffix,
                                       ecs_service=service.service_name, max_tasks=svc.max_replicas,
                                       task_hour_usd=cost.fargate_task_usd(cfg, svc),
                                       log_namespace=namespace(cfg.prefix, svc.name)))
    LogMetricFilters(
        "log-metrics",
        LogMetricsArgs(prefix=cfg.prefix,
                       log_groups={svc.name: logs.log_group_names[svc.name] for svc in cfg.services}),
    )
    CloudWatchMonitoring(
        "cloudwatch",
        CloudWatchArgs(dashboard_name=cfg.prefix, region=cfg.region, load_balancer=alb.arn_suffix,
                       cluster_name=ecs.cluster_name, services=services, alarm_email=cfg.operations.alarm_email,
                       tags=tags, cost_keys=cfg.operations.cost_keys),
    )
    AlbEdge(
        "edge",
        AlbEdgeArgs(name_prefix=cfg.prefix, load_balancer_arn=alb.arn, listener_arn=alb.listener_arn,
                    path_prefixes=[svc.path_prefix for svc in cfg.services],
                    rate_limit_per_minute=cfg.operations.edge_rate_limit_per_minute, tags=tags),
    )
    return {
        "service_urls": {
            svc.name: pulumi.Output.concat(alb.scheme, "://", alb.dns_name, svc.path_prefix, "/")
            for svc in cfg.services
        },
        "ecsClusterName": ecs.cluster_name,
        "apiKeysSecret": keys.name,
        "dashboardName": cfg.prefix,
    }
