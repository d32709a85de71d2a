"""One model service on ECS Fargate: task definition, service, target group, listener rule and autoscaling.

The task is one restricted container (non-root, read-only root filesystem, health-checked) that gets the Redis
URL as an ECS secret. Stopping a task drains its target for a whole request timeout before SIGTERM, then waits
the service's graceful shutdown before SIGKILL (`timeouts.py`). Scaling tracks CPU and requests per target.

A service with a candidate model deploys the candidate's image with ECS's own guard: the rolling deployment is
watched by CloudWatch alarms on the gates of the EKS canary (`infra/eks/canary_gates.py`: the 5xx share and the
p99 latency, from the ALB's target group metrics), and ECS rolls back to the last completed deployment when one
fires (`alarms` with `rollback`; ECS keeps watching for a bake time it derives from the alarms' evaluation
periods, ECS developer guide "How the CloudWatch deployment alarms detect Amazon ECS deployment failures"). The
deployment circuit breaker still rolls back tasks that never become healthy. ECS's native CANARY strategy is not
used: a service moves from rolling to canary only between deployments (ECS developer guide, "Update the Amazon
ECS deployment strategy"), so it could not arrive with the candidate; docs/operations.md, Canary, says more.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.config import ModelService
from infra.eks.canary_gates import ERROR_RATIO, LATENCY_P99
from infra.fargate.log_metrics import metrics_log_env
from infra.shared.api_keys import ecs_secret
from infra.shared.container_env import CONTAINER_PORT, health_path, model_env
from infra.timeouts import Timeouts

RUN_AS = "10001"
# A rollout alarm fires after this many one-minute periods over its gate: long enough not to roll back on one
# slow minute, short enough that the bad version serves minutes, not the 10 of the SLO alarms.
ROLLOUT_PERIODS = 3
# Where an operator reads what a rollout alarm means (the section's anchor).
CANARY_RUNBOOK = "docs/operations.md#canary-roll-out-watch-promote-roll-back"
# Valid Fargate CPU units and, for each, the memory range and step in MiB (ECS "Task size" table).
_FARGATE_SIZES: dict[int, tuple[int, int, int]] = {
    256: (512, 2048, 512),
    512: (1024, 4096, 1024),
    1024: (2048, 8192, 1024),
    2048: (4096, 16384, 1024),
    4096: (8192, 30720, 1024),
    8192: (16384, 61440, 4096),
    16384: (32768, 122880, 8192),
}


def fargate_size(cpu_millicores: int, memory_mib: int) -> tuple[int, int]:
    """The smallest valid Fargate (cpu units, memory MiB) that gives at least the requested CPU and memory."""
    wanted_cpu = cpu_millicores * 1024 // 1000 + (1 if cpu_millicores * 1024 % 1000 else 0)
    for cpu, (low, high, step) in _FARGATE_SIZES.items():
        if cpu < wanted_cpu or memory_mib > high:
            continue
        memory = max(low, memory_mib)
        memory = low + -(-(memory - low) // step) * step
        return cpu, memory
    raise ValueError(f"no Fargate size fits {cpu_millicores}m CPU and {memory_mib} MiB")


def health_check_command(service: ModelService) -> list[str]:
    """Container health check run inside the image with its own Python: a non-2xx status raises and exits 1."""
    url = f"http://127.0.0.1:{CONTAINER_PORT}{health_path(service)}"
    return ["CMD", "python", "-c", f"import urllib.request; urllib.request.urlopen('{url}', timeout=3)"]


@dataclass(frozen=True)
class EcsServiceArgs:
    """The model service, its image and log group, and what it plugs into (cluster, listener, network)."""

    service: ModelService
    image: pulumi.Input[str]
    log_group_name: pulumi.Input[str]
    rule_priority: int
    cluster_arn: pulumi.Input[str]
    cluster_name: pulumi.Input[str]
    task_security_group_id: pulumi.Input[str]
    execution_role_arn: pulumi.Input[str]
    task_role_arn: pulumi.Input[str]
    redis_secret_arn: pulumi.Input[str]
    listener_arn: pulumi.Input[str]
    load_balancer_arn_suffix: pulumi.Input[str]
    vpc_id: pulumi.Input[str]
    private_subnet_ids: pulumi.Input[list[str]]
    name_prefix: str
    region: str
    health_check_grace_seconds: int
    timeouts: Timeouts
    tags: dict[str, str]
    # The API keys secret, handed to the container as MLAPI_API_KEYS (infra/shared/api_keys.py); None: no keys.
    api_keys_secret_arn: pulumi.Input[str] | None = None


def container_definitions(
    service: ModelService, timeouts: Timeouts, image: str, log_group: str, secret_arn: str, region: str,
    keys_secret_arn: str | None = None,
) -> list[dict[str, Any]]:
    """The one-container task: restricted, health-checked, Redis URL (and API keys) from Secrets Manager."""
    return [
        {
            "name": "model",
            "image": image,
            "essential": True,
            "user": RUN_AS,
            "readonlyRootFilesystem": True,
            "portMappings": [{"containerPort": CONTAINER_PORT, "protocol": "tcp", "name": "http"}],
            # Nothing scrapes /metrics here: the service logs its counters' increases for the metric filters.
            "environment": [{"name": k, "value": v}
                            for k, v in {**model_env(service, timeouts), **metrics_log_env()}.items()],
            "secrets": [{"name": "MLAPI_REDIS_URL", "valueFrom": secret_arn}]
            + ([ecs_secret(keys_secret_arn)] if keys_secret_arn else []),
            "mountPoints": [{"sourceVolume": "tmp", "containerPath": "/tmp", "readOnly": False}],
            "healthCheck": {
                "command": health_check_command(service),
                "interval": 15,
                "timeout": 5,
                "retries": 3,
                # The longest start period ECS allows; the model loads within it.
                "startPeriod": 300,
            },
            "stopTimeout": timeouts.ecs_stop_timeout_seconds,
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {
                    "awslogs-group": log_group, "awslogs-region": region, "awslogs-stream-prefix": service.name,
                },
            },
        }
    ]


class EcsService(pulumi.ComponentResource):
    """A Fargate service behind its own target group and path rule, scaled between min and max replicas."""

    service_name: pulumi.Output[str]
    target_group_arn_suffix: pulumi.Output[str]

    def __init__(self, name: str, args: EcsServiceArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlapi:ecs:EcsService", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        svc = args.service
        target_group = aws.lb.TargetGroup(
            f"{name}-tg",
            name=f"{args.name_prefix}-{svc.name}"[:32],
            port=CONTAINER_PORT,
            protocol="HTTP",
            target_type="ip",
            vpc_id=args.vpc_id,
            deregistration_delay=args.timeouts.deregistration_delay_seconds,
            health_check=aws.lb.TargetGroupHealthCheckArgs(
                path=health_path(svc), port="traffic-port", protocol="HTTP", matcher="200",
                interval=15, timeout=5, healthy_threshold=2, unhealthy_threshold=3,
            ),
            tags=args.tags,
            opts=child,
        )
        rule = aws.lb.ListenerRule(
            f"{name}-rule",
            listener_arn=args.listener_arn,
            priority=args.rule_priority,
            conditions=[aws.lb.ListenerRuleConditionArgs(
                path_pattern=aws.lb.ListenerRuleConditionPathPatternArgs(
                    values=[svc.path_prefix, f"{svc.path_prefix}/*"]
                )
            )],
            actions=[aws.lb.ListenerRuleActionArgs(type="forward", target_group_arn=target_group.arn)],
            tags=args.tags,
            opts=child,
        )
        rollout_alarms = self._rollout_alarms(name, args, target_group) if svc.candidate is not None else []
        service = aws.ecs.Service(
            f"{name}-service",
            name=svc.name,
            cluster=args.cluster_arn,
            task_definition=self._task(name, args).arn,
            desired_count=svc.min_replicas,
            launch_type="FARGATE",
            network_configuration=aws.ecs.ServiceNetworkConfigurationArgs(
                subnets=args.private_subnet_ids, security_groups=[args.task_security_group_id], assign_public_ip=False
            ),
            load_balancers=[aws.ecs.ServiceLoadBalancerArgs(
                target_group_arn=target_group.arn, container_name="model", container_port=CONTAINER_PORT
            )],
            health_check_grace_period_seconds=args.health_check_grace_seconds,
            deployment_circuit_breaker=aws.ecs.ServiceDeploymentCircuitBreakerArgs(enable=True, rollback=True),
            alarms=aws.ecs.ServiceAlarmsArgs(alarm_names=[a.name for a in rollout_alarms], enable=True, rollback=True)
            if rollout_alarms else None,
            deployment_minimum_healthy_percent=100,
            deployment_maximum_percent=200,
            propagate_tags="SERVICE",
            enable_ecs_managed_tags=True,
            tags=args.tags,
            # Application Auto Scaling owns the count after creation.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[rule], ignore_changes=["desiredCount"]),
        )
        self._scaling(name, args, service, target_group)
        self.service_name = service.name
        self.target_group_arn_suffix = target_group.arn_suffix
        self.register_outputs({"service_name": self.service_name,
                               "target_group_arn_suffix": self.target_group_arn_suffix})

    def _rollout_alarms(self, name: str, args: EcsServiceArgs,
                        target_group: aws.lb.TargetGroup) -> list[aws.cloudwatch.MetricAlarm]:
        """The EKS canary's 5xx and p99 gates as CloudWatch alarms on this service's target group."""
        svc = args.service
        child = pulumi.ResourceOptions(parent=self)
        dims = {"LoadBalancer": args.load_balancer_arn_suffix, "TargetGroup": target_group.arn_suffix}
        # No notification: the action is ECS's rollback, which the service's events and deployments show.
        common: dict[str, Any] = {
            "comparison_operator": "GreaterThanThreshold", "evaluation_periods": ROLLOUT_PERIODS,
            "datapoints_to_alarm": ROLLOUT_PERIODS, "treat_missing_data": "notBreaching", "tags": args.tags,
            "opts": child,
        }

        def alb(query_id: str, metric: str) -> aws.cloudwatch.MetricAlarmMetricQueryArgs:
            return aws.cloudwatch.MetricAlarmMetricQueryArgs(
                id=query_id, return_data=False,
                metric=aws.cloudwatch.MetricAlarmMetricQueryMetricArgs(
                    namespace="AWS/ApplicationELB", metric_name=metric, dimensions=dims, period=60, stat="Sum"))

        errors = aws.cloudwatch.MetricAlarm(
            f"{name}-rollout-5xx",
            name=f"{args.name_prefix}-{svc.name}-rollout-5xx",
            alarm_description=f"{svc.name} rollout gate: more than {ERROR_RATIO.max_value:.0%} of answers 5xx for "
            f"{ROLLOUT_PERIODS} minutes; ECS rolls the deployment back ({CANARY_RUNBOOK})",
            threshold=ERROR_RATIO.max_value,
            metric_queries=[
                alb("errors", "HTTPCode_Target_5XX_Count"),
                alb("requests", "RequestCount"),
                aws.cloudwatch.MetricAlarmMetricQueryArgs(
                    id="ratio", expression="IF(requests > 0, errors / requests, 0)", label="5xx share",
                    return_data=True),
            ],
            **common,
        )
        latency = aws.cloudwatch.MetricAlarm(
            f"{name}-rollout-p99",
            name=f"{args.name_prefix}-{svc.name}-rollout-p99",
            alarm_description=f"{svc.name} rollout gate: p99 target response time over {LATENCY_P99.max_value:g} s "
            f"for {ROLLOUT_PERIODS} minutes; ECS rolls the deployment back ({CANARY_RUNBOOK})",
            namespace="AWS/ApplicationELB",
            metric_name="TargetResponseTime",
            dimensions=dims,
            extended_statistic="p99",
            threshold=LATENCY_P99.max_value,
            period=60,
            **common,
        )
        return [errors, latency]

    def _task(self, name: str, args: EcsServiceArgs) -> aws.ecs.TaskDefinition:
        svc = args.service
        cpu, memory = fargate_size(svc.cpu_millicores, svc.memory_mib)
        return aws.ecs.TaskDefinition(
            f"{name}-task",
            family=f"{args.name_prefix}-{svc.name}",
            cpu=str(cpu),
            memory=str(memory),
            network_mode="awsvpc",
            requires_compatibilities=["FARGATE"],
            runtime_platform=aws.ecs.TaskDefinitionRuntimePlatformArgs(
                operating_system_family="LINUX", cpu_architecture="X86_64"
            ),
            execution_role_arn=args.execution_role_arn,
            task_role_arn=args.task_role_arn,
            volumes=[aws.ecs.TaskDefinitionVolumeArgs(name="tmp")],
            container_definitions=pulumi.Output.all(
                args.image, args.log_group_name, args.redis_secret_arn, args.api_keys_secret_arn
            ).apply(
                lambda v: json.dumps(container_definitions(svc, args.timeouts, v[0], v[1], v[2], args.region, v[3]))
            ),
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )

    def _scaling(
        self, name: str, args: EcsServiceArgs, service: aws.ecs.Service, target_group: aws.lb.TargetGroup
    ) -> None:
        """Target tracking on average CPU and on ALB requests per target, between min and max replicas."""
        svc = args.service
        child = pulumi.ResourceOptions(parent=self)
        target = aws.appautoscaling.Target(
            f"{name}-scaling",
            service_namespace="ecs",
            scalable_dimension="ecs:service:DesiredCount",
            resource_id=pulumi.Output.concat("service/", args.cluster_name, "/", service.name),
            min_capacity=svc.min_replicas,
            max_capacity=svc.max_replicas,
            tags=args.tags,
            opts=child,
        )
        spec = aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationPredefinedMetricSpecificationArgs
        metrics = {
            "cpu": (svc.cpu_target_percent, spec(predefined_metric_type="ECSServiceAverageCPUUtilization")),
            "requests": (
                svc.requests_per_target,
                spec(
                    predefined_metric_type="ALBRequestCountPerTarget",
                    # "app/<lb>/<id>/targetgroup/<tg>/<id>" (Application Auto Scaling PredefinedMetricSpecification).
                    resource_label=pulumi.Output.concat(args.load_balancer_arn_suffix, "/", target_group.arn_suffix),
                ),
            ),
        }
        for role, (target_value, metric) in metrics.items():
            aws.appautoscaling.Policy(
                f"{name}-{role}",
                policy_type="TargetTrackingScaling",
                service_namespace=target.service_namespace,
                scalable_dimension=target.scalable_dimension,
                resource_id=target.resource_id,
                target_tracking_scaling_policy_configuration=(
                    aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationArgs(
                        target_value=target_value,
                        predefined_metric_specification=metric,
                        scale_in_cooldown=120,
                        scale_out_cooldown=60,
                    )
                ),
                opts=child,
            )
