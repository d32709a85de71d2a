"""The model services on ECS Fargate behind one Application Load Balancer (config `platform: fargate`).

The ALB cannot rewrite paths, so each service is served under its own prefix (`MLAPI_PATH_PREFIX`) and a
listener rule per prefix forwards to that service's target group. Security groups chain internet -> ALB (80/443)
-> tasks (container port) -> Redis (6379); the Redis URL reaches the container as an ECS secret from Secrets
Manager, never as a plain environment value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws

from infra.cache import REDIS_PORT, CacheAccess, CacheAccessArgs
from infra.config import FargateSettings, ModelService

CONTAINER_PORT = 8000
RUN_AS = "10001"
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


def health_check_command(path_prefix: str) -> list[str]:
    """Container health check run inside the image with its own Python: a non-2xx status raises and exits 1."""
    url = f"http://127.0.0.1:{CONTAINER_PORT}{path_prefix}/health"
    return ["CMD", "python", "-c", f"import urllib.request; urllib.request.urlopen('{url}', timeout=3)"]


@dataclass(frozen=True)
class FargateService:
    """A model service, its image by digest, and the log group its container writes to."""

    service: ModelService
    image: pulumi.Input[str]
    log_group_name: pulumi.Input[str]


@dataclass(frozen=True)
class FargateArgs:
    """Placement, services, the cache they share, and ALB options."""

    cluster_name: str
    region: str
    settings: FargateSettings
    services: list[FargateService]
    vpc_id: pulumi.Input[str]
    public_subnet_ids: pulumi.Input[list[str]]
    private_subnet_ids: pulumi.Input[list[str]]
    cache_security_group_id: pulumi.Input[str]
    redis_url: pulumi.Input[str]
    tags: dict[str, str]


def container_definitions(
    item: FargateService, image: str, log_group: str, secret_arn: str, region: str
) -> list[dict[str, Any]]:
    """The one-container task: restricted, health-checked, Redis URL from Secrets Manager."""
    svc = item.service
    return [
        {
            "name": "model",
            "image": image,
            "essential": True,
            "user": RUN_AS,
            "readonlyRootFilesystem": True,
            "portMappings": [{"containerPort": CONTAINER_PORT, "protocol": "tcp", "name": "http"}],
            "environment": [
                {"name": "MLAPI_HOST", "value": "0.0.0.0"},
                {"name": "MLAPI_PORT", "value": str(CONTAINER_PORT)},
                {"name": "MLAPI_PATH_PREFIX", "value": svc.path_prefix},
                {"name": "MLAPI_CACHE_PREFIX", "value": svc.cache_prefix},
                {"name": "MLAPI_INTRA_OP_THREADS", "value": str(svc.threads)},
            ],
            "secrets": [{"name": "MLAPI_REDIS_URL", "valueFrom": secret_arn}],
            "mountPoints": [{"sourceVolume": "tmp", "containerPath": "/tmp", "readOnly": False}],
            "healthCheck": {
                "command": health_check_command(svc.path_prefix),
                "interval": 15,
                "timeout": 5,
                "retries": 3,
                # The longest start period ECS allows; the model loads within it.
                "startPeriod": 300,
            },
            "stopTimeout": 45,
            "logConfiguration": {
                "logDriver": "awslogs",
                "options": {
                    "awslogs-group": log_group,
                    "awslogs-region": region,
                    "awslogs-stream-prefix": svc.name,
                },
            },
        }
    ]


def _assume(service: str) -> str:
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
        }
    )


class FargatePlatform(pulumi.ComponentResource):
    """ECS cluster, ALB, and per service a task definition, service, target group, rule and autoscaling."""

    cluster_name: pulumi.Output[str]
    urls: dict[str, pulumi.Output[str]]
    load_balancer_dns: pulumi.Output[str]

    def __init__(self, name: str, args: FargateArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlapi:fargate:FargatePlatform", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        https = bool(args.settings.certificate_arn)
        tags = args.tags

        cluster = aws.ecs.Cluster(
            f"{name}-cluster",
            name=args.cluster_name,
            settings=[aws.ecs.ClusterSettingArgs(name="containerInsights", value="enabled")],
            tags=tags,
            opts=child,
        )

        alb_sg = aws.ec2.SecurityGroup(
            f"{name}-alb-sg", vpc_id=args.vpc_id, description="mlapi ALB: HTTP(S) from the internet",
            tags={**tags, "Name": f"{args.cluster_name}-alb"}, opts=child,
        )
        task_sg = aws.ec2.SecurityGroup(
            f"{name}-task-sg", vpc_id=args.vpc_id, description="mlapi tasks: the container port from the ALB only",
            tags={**tags, "Name": f"{args.cluster_name}-tasks"}, opts=child,
        )
        for port in (80, 443) if https else (80,):
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-alb-in-{port}", security_group_id=alb_sg.id, cidr_ipv4="0.0.0.0/0", ip_protocol="tcp",
                from_port=port, to_port=port, description=f"internet to ALB on {port}", tags=tags, opts=child,
            )
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-alb-out-tasks", security_group_id=alb_sg.id, referenced_security_group_id=task_sg.id,
            ip_protocol="tcp", from_port=CONTAINER_PORT, to_port=CONTAINER_PORT,
            description="ALB to tasks on the container port", tags=tags, opts=child,
        )
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-task-in-alb", security_group_id=task_sg.id, referenced_security_group_id=alb_sg.id,
            ip_protocol="tcp", from_port=CONTAINER_PORT, to_port=CONTAINER_PORT,
            description="ALB to tasks on the container port", tags=tags, opts=child,
        )
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-task-out-redis", security_group_id=task_sg.id,
            referenced_security_group_id=args.cache_security_group_id, ip_protocol="tcp", from_port=REDIS_PORT,
            to_port=REDIS_PORT, description="tasks to Redis", tags=tags, opts=child,
        )
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-task-out-https", security_group_id=task_sg.id, cidr_ipv4="0.0.0.0/0", ip_protocol="tcp",
            from_port=443, to_port=443, description="tasks to ECR, Secrets Manager and CloudWatch Logs via NAT",
            tags=tags, opts=child,
        )
        CacheAccess(
            f"{name}-cache-access",
            CacheAccessArgs(
                cache_security_group_id=args.cache_security_group_id,
                client_security_group_id=task_sg.id,
                description="Fargate tasks to Redis",
                tags=tags,
            ),
            opts=child,
        )

        redis_secret = aws.secretsmanager.Secret(
            f"{name}-redis-url",
            name=f"{args.cluster_name}/redis-url",
            description="rediss:// URL with the AUTH token, read by the model tasks",
            # Immediate deletion so `pulumi destroy` then `pulumi up` can reuse the name.
            recovery_window_in_days=0,
            tags=tags,
            opts=child,
        )
        aws.secretsmanager.SecretVersion(
            f"{name}-redis-url-value",
            secret_id=redis_secret.id,
            secret_string_wo=pulumi.Output.secret(args.redis_url),
            secret_string_wo_version=1,
            opts=child,
        )
        execution_role = aws.iam.Role(
            f"{name}-execution-role", assume_role_policy=_assume("ecs-tasks.amazonaws.com"), tags=tags, opts=child
        )
        aws.iam.RolePolicyAttachment(
            f"{name}-execution-managed",
            role=execution_role.name,
            policy_arn="arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy",
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-execution-secret",
            role=execution_role.id,
            policy=redis_secret.arn.apply(
                lambda arn: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": arn}],
                    }
                )
            ),
            opts=child,
        )
        # The service calls no AWS API: its task role has no policy at all.
        task_role = aws.iam.Role(
            f"{name}-task-role", assume_role_policy=_assume("ecs-tasks.amazonaws.com"), tags=tags, opts=child
        )

        alb = aws.lb.LoadBalancer(
            f"{name}-alb",
            name=f"{args.cluster_name}"[:32],
            load_balancer_type="application",
            internal=False,
            subnets=args.public_subnet_ids,
            security_groups=[alb_sg.id],
            drop_invalid_header_fields=True,
            idle_timeout=60,
            tags=tags,
            opts=child,
        )
        not_found = aws.lb.ListenerDefaultActionArgs(
            type="fixed-response",
            fixed_response=aws.lb.ListenerDefaultActionFixedResponseArgs(
                content_type="application/json", message_body='{"error":"not found"}', status_code="404"
            ),
        )
        if https:
            aws.lb.Listener(
                f"{name}-http", load_balancer_arn=alb.arn, port=80, protocol="HTTP",
                default_actions=[aws.lb.ListenerDefaultActionArgs(
                    type="redirect",
                    redirect=aws.lb.ListenerDefaultActionRedirectArgs(port="443", protocol="HTTPS",
                                                                      status_code="HTTP_301"),
                )],
                tags=tags, opts=child,
            )
            listener = aws.lb.Listener(
                f"{name}-https", load_balancer_arn=alb.arn, port=443, protocol="HTTPS",
                certificate_arn=args.settings.certificate_arn, ssl_policy="ELBSecurityPolicy-TLS13-1-2-2021-06",
                default_actions=[not_found], tags=tags, opts=child,
            )
        else:
            listener = aws.lb.Listener(
                f"{name}-http", load_balancer_arn=alb.arn, port=80, protocol="HTTP", default_actions=[not_found],
                tags=tags, opts=child,
            )
        scheme = "https" if https else "http"

        self.urls = {}
        for index, item in enumerate(args.services):
            self._service(name, index, item, args, cluster, listener, alb, task_sg, execution_role, task_role,
                          redis_secret)
            self.urls[item.service.name] = pulumi.Output.concat(
                scheme, "://", alb.dns_name, item.service.path_prefix, "/"
            )
        self.cluster_name = cluster.name
        self.load_balancer_dns = alb.dns_name
        self.register_outputs(
            {"cluster_name": self.cluster_name, "urls": self.urls, "load_balancer_dns": self.load_balancer_dns}
        )

    def _service(
        self,
        name: str,
        index: int,
        item: FargateService,
        args: FargateArgs,
        cluster: aws.ecs.Cluster,
        listener: aws.lb.Listener,
        alb: aws.lb.LoadBalancer,
        task_sg: aws.ec2.SecurityGroup,
        execution_role: aws.iam.Role,
        task_role: aws.iam.Role,
        redis_secret: aws.secretsmanager.Secret,
    ) -> None:
        svc = item.service
        child = pulumi.ResourceOptions(parent=self)
        base = f"{name}-{svc.name}"
        cpu, memory = fargate_size(svc.cpu_millicores, svc.memory_mib)
        target_group = aws.lb.TargetGroup(
            f"{base}-tg",
            name=f"{args.cluster_name}-{svc.name}"[:32],
            port=CONTAINER_PORT,
            protocol="HTTP",
            target_type="ip",
            vpc_id=args.vpc_id,
            # Tasks drain fast: in-flight predictions finish well within this, and deploys do not wait 300 s.
            deregistration_delay=15,
            health_check=aws.lb.TargetGroupHealthCheckArgs(
                path=f"{svc.path_prefix}/health", port="traffic-port", protocol="HTTP", matcher="200",
                interval=15, timeout=5, healthy_threshold=2, unhealthy_threshold=3,
            ),
            tags=args.tags,
            opts=child,
        )
        rule = aws.lb.ListenerRule(
            f"{base}-rule",
            listener_arn=listener.arn,
            priority=100 + index,
            conditions=[aws.lb.ListenerRuleConditionArgs(
                path_pattern=aws.lb.ListenerRuleConditionPathPatternArgs(
                    values=[svc.path_prefix, f"{svc.path_prefix}/*"]
                )
            )],
            actions=[aws.lb.ListenerRuleActionArgs(type="forward", target_group_arn=target_group.arn)],
            tags=args.tags,
            opts=child,
        )
        task = aws.ecs.TaskDefinition(
            f"{base}-task",
            family=f"{args.cluster_name}-{svc.name}",
            cpu=str(cpu),
            memory=str(memory),
            network_mode="awsvpc",
            requires_compatibilities=["FARGATE"],
            runtime_platform=aws.ecs.TaskDefinitionRuntimePlatformArgs(
                operating_system_family="LINUX", cpu_architecture="X86_64"
            ),
            execution_role_arn=execution_role.arn,
            task_role_arn=task_role.arn,
            volumes=[aws.ecs.TaskDefinitionVolumeArgs(name="tmp")],
            container_definitions=pulumi.Output.all(item.image, item.log_group_name, redis_secret.arn).apply(
                lambda v: json.dumps(container_definitions(item, v[0], v[1], v[2], args.region))
            ),
            tags=args.tags,
            opts=child,
        )
        service = aws.ecs.Service(
            f"{base}-service",
            name=svc.name,
            cluster=cluster.arn,
            task_definition=task.arn,
            desired_count=svc.min_replicas,
            launch_type="FARGATE",
            network_configuration=aws.ecs.ServiceNetworkConfigurationArgs(
                subnets=args.private_subnet_ids, security_groups=[task_sg.id], assign_public_ip=False
            ),
            load_balancers=[aws.ecs.ServiceLoadBalancerArgs(
                target_group_arn=target_group.arn, container_name="model", container_port=CONTAINER_PORT
            )],
            health_check_grace_period_seconds=args.settings.health_check_grace_seconds,
            deployment_circuit_breaker=aws.ecs.ServiceDeploymentCircuitBreakerArgs(enable=True, rollback=True),
            deployment_minimum_healthy_percent=100,
            deployment_maximum_percent=200,
            propagate_tags="SERVICE",
            enable_ecs_managed_tags=True,
            tags=args.tags,
            # Application Auto Scaling owns the count after creation.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[rule], ignore_changes=["desiredCount"]),
        )
        target = aws.appautoscaling.Target(
            f"{base}-scaling",
            service_namespace="ecs",
            scalable_dimension="ecs:service:DesiredCount",
            resource_id=pulumi.Output.concat("service/", cluster.name, "/", service.name),
            min_capacity=svc.min_replicas,
            max_capacity=svc.max_replicas,
            tags=args.tags,
            opts=child,
        )
        scaling = aws.appautoscaling.PolicyTargetTrackingScalingPolicyConfigurationPredefinedMetricSpecificationArgs
        metrics = {
            "cpu": (svc.cpu_target_percent, scaling(predefined_metric_type="ECSServiceAverageCPUUtilization")),
            "requests": (
                svc.requests_per_target,
                scaling(
                    predefined_metric_type="ALBRequestCountPerTarget",
                    # "app/<lb>/<id>/targetgroup/<tg>/<id>" (Application Auto Scaling PredefinedMetricSpecification).
                    resource_label=pulumi.Output.concat(alb.arn_suffix, "/", target_group.arn_suffix),
                ),
            ),
        }
        for role, (target_value, metric) in metrics.items():
            aws.appautoscaling.Policy(
                f"{base}-{role}",
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
