"""What every Fargate model service shares: the ECS cluster, the tasks' security group, the execution and task
roles, and the Redis URL as a Secrets Manager secret.

Security groups chain internet -> ALB -> tasks (container port, see `load_balancer.py`) -> Redis (6379). The
Redis URL reaches the containers as an ECS secret, never as a plain environment value.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.shared.cache import REDIS_PORT, CacheAccess, CacheAccessArgs


@dataclass(frozen=True)
class EcsClusterArgs:
    """Cluster name, VPC, the cache the tasks may reach and its secret URL."""

    cluster_name: str
    vpc_id: pulumi.Input[str]
    cache_security_group_id: pulumi.Input[str]
    redis_url: pulumi.Input[str]
    tags: dict[str, str]


def assume_role_policy(service: str) -> str:
    """A trust policy letting one AWS service principal assume a role."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [{"Effect": "Allow", "Principal": {"Service": service}, "Action": "sts:AssumeRole"}],
        }
    )


class EcsCluster(pulumi.ComponentResource):
    """ECS cluster with Container Insights, task security group, roles and the Redis URL secret."""

    cluster_arn: pulumi.Output[str]
    cluster_name: pulumi.Output[str]
    task_security_group_id: pulumi.Output[str]
    execution_role_arn: pulumi.Output[str]
    execution_role_id: pulumi.Output[str]
    task_role_arn: pulumi.Output[str]
    redis_secret_arn: pulumi.Output[str]

    def __init__(self, name: str, args: EcsClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlapi:ecs:EcsCluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        tags = args.tags
        cluster = aws.ecs.Cluster(
            f"{name}-cluster",
            name=args.cluster_name,
            settings=[aws.ecs.ClusterSettingArgs(name="containerInsights", value="enabled")],
            tags=tags,
            opts=child,
        )
        task_sg = aws.ec2.SecurityGroup(
            f"{name}-task-sg", vpc_id=args.vpc_id, description="mlapi tasks: the container port from the ALB only",
            tags={**tags, "Name": f"{args.cluster_name}-tasks"}, opts=child,
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
        secret = self._redis_secret(name, args)
        self.cluster_arn = cluster.arn
        self.cluster_name = cluster.name
        self.task_security_group_id = task_sg.id
        self.redis_secret_arn = secret.arn
        execution_role = self._execution_role(name, secret, tags)
        self.execution_role_arn = execution_role.arn
        # The role's name (an IAM role's id), for policies other components attach (the API keys secret).
        self.execution_role_id = execution_role.id
        # The service calls no AWS API: its task role has no policy at all.
        self.task_role_arn = aws.iam.Role(
            f"{name}-task-role", assume_role_policy=assume_role_policy("ecs-tasks.amazonaws.com"), tags=tags,
            opts=child,
        ).arn
        self.register_outputs(
            {"cluster_arn": self.cluster_arn, "cluster_name": self.cluster_name,
             "task_security_group_id": self.task_security_group_id, "redis_secret_arn": self.redis_secret_arn}
        )

    def _redis_secret(self, name: str, args: EcsClusterArgs) -> aws.secretsmanager.Secret:
        child = pulumi.ResourceOptions(parent=self)
        secret = aws.secretsmanager.Secret(
            f"{name}-redis-url",
            name=f"{args.cluster_name}/redis-url",
            description="rediss:// URL with the AUTH token, read by the model tasks",
            # Immediate deletion so `pulumi destroy` then `pulumi up` can reuse the name.
            recovery_window_in_days=0,
            tags=args.tags,
            opts=child,
        )
        aws.secretsmanager.SecretVersion(
            f"{name}-redis-url-value",
            secret_id=secret.id,
            secret_string_wo=pulumi.Output.secret(args.redis_url),
            secret_string_wo_version=1,
            opts=child,
        )
        return secret

    def _execution_role(self, name: str, secret: aws.secretsmanager.Secret, tags: dict[str, str]) -> aws.iam.Role:
        """The role ECS itself uses to pull the image, write logs and read the Redis secret (that one only)."""
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(
            f"{name}-execution-role", assume_role_policy=assume_role_policy("ecs-tasks.amazonaws.com"), tags=tags,
            opts=child,
        )
        aws.iam.RolePolicyAttachment(
            f"{name}-execution-managed",
            role=role.name,
            policy_arn="arn:aws:iam::aws:policy/service-role/AmazonECSTaskExecutionRolePolicy",
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-execution-secret",
            role=role.id,
            policy=secret.arn.apply(
                lambda arn: json.dumps(
                    {
                        "Version": "2012-10-17",
                        "Statement": [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": arn}],
                    }
                )
            ),
            opts=child,
        )
        return role
