"""ElastiCache Redis: the shared prediction cache, private, encrypted and password-protected from day one.

TLS in transit cannot be switched on later without replacing the group, so it is on from the start. The AUTH token
comes from pulumi-random and reaches ElastiCache through the write-only `auth_token_wo` argument, which keeps it
out of the replication group's state only. The token itself is still in the stack state: as the
`RandomPassword`'s `result`, and inside the `rediss://` URL handed to the workloads (a Kubernetes Secret, or the
Secrets Manager secret on Fargate). Both are Pulumi secrets, so the state holds them encrypted with the stack's
secrets provider, never in plain text; anyone who can decrypt the stack can read the token.
"""

from __future__ import annotations

from dataclasses import dataclass
from urllib.parse import quote

import pulumi
import pulumi_aws as aws
import pulumi_random as random

from infra.config import CacheSettings

REDIS_PORT = 6379
# ElastiCache AUTH tokens accept only these specials (ElastiCache "Authenticating with AUTH" guide).
AUTH_TOKEN_SPECIALS = "!&#$^<>-"


def redis_url(token: str, host: str, port: int = REDIS_PORT) -> str:
    """`rediss://:TOKEN@host:port/0`, with the token percent-encoded: `#`, `&` and `<` would break URL parsing.

    redis-py unquotes the password of a URL (`redis.connection.parse_url`), so the server sees the raw token.
    """
    return f"rediss://:{quote(token, safe='')}@{host}:{port}/0"


@dataclass(frozen=True)
class CacheArgs:
    """Where the replication group lives and how big it is."""

    settings: CacheSettings
    vpc_id: pulumi.Input[str]
    subnet_ids: pulumi.Input[list[str]]
    name_prefix: str
    tags: dict[str, str]


class Cache(pulumi.ComponentResource):
    """A Redis replication group in the private subnets behind its own security group (no ingress by default)."""

    endpoint: pulumi.Output[str]
    port: pulumi.Output[int]
    url: pulumi.Output[str]
    security_group_id: pulumi.Output[str]

    def __init__(self, name: str, args: CacheArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlapi:cache:Cache", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        token = random.RandomPassword(
            f"{name}-auth-token",
            length=48,
            special=True,
            override_special=AUTH_TOKEN_SPECIALS,
            min_lower=4,
            min_upper=4,
            min_numeric=4,
            opts=child,
        )
        subnets = aws.elasticache.SubnetGroup(
            f"{name}-subnets",
            name=f"{args.name_prefix}-cache",
            description="Private subnets for the mlapi prediction cache",
            subnet_ids=args.subnet_ids,
            tags=args.tags,
            opts=child,
        )
        security_group = aws.ec2.SecurityGroup(
            f"{name}-sg",
            vpc_id=args.vpc_id,
            description="mlapi Redis: ingress only from the workloads that use it",
            tags={**args.tags, "Name": f"{args.name_prefix}-cache"},
            opts=child,
        )
        settings = args.settings
        group = aws.elasticache.ReplicationGroup(
            f"{name}-redis",
            replication_group_id=f"{args.name_prefix}-cache",
            description="mlapi prediction cache",
            engine="redis",
            engine_version=settings.engine_version,
            node_type=settings.node_type,
            num_cache_clusters=settings.nodes,
            port=REDIS_PORT,
            automatic_failover_enabled=settings.automatic_failover,
            multi_az_enabled=settings.multi_az,
            at_rest_encryption_enabled=True,
            transit_encryption_enabled=True,
            transit_encryption_mode="required",
            auth_token_wo=token.result,
            auth_token_wo_version=1,
            subnet_group_name=subnets.name,
            security_group_ids=[security_group.id],
            snapshot_retention_limit=settings.snapshot_retention_days,
            auto_minor_version_upgrade=True,
            apply_immediately=True,
            tags=args.tags,
            opts=child,
        )
        self.endpoint = group.primary_endpoint_address
        self.port = group.port.apply(lambda p: p or REDIS_PORT)
        self.security_group_id = security_group.id
        self.url = pulumi.Output.secret(
            pulumi.Output.all(token.result, group.primary_endpoint_address).apply(lambda v: redis_url(v[0], v[1]))
        )
        self.register_outputs(
            {"endpoint": self.endpoint, "port": self.port, "url": self.url, "security_group_id": self.security_group_id}
        )


@dataclass(frozen=True)
class CacheAccessArgs:
    """Which security group may open connections to the cache."""

    cache_security_group_id: pulumi.Input[str]
    client_security_group_id: pulumi.Input[str]
    description: str
    tags: dict[str, str]


class CacheAccess(pulumi.ComponentResource):
    """One ingress rule: `client` -> Redis on 6379 and nothing else.

    A separate component because the clients (EKS nodes, Fargate tasks) are created by the platform, after the
    cache, and the cache must not know which platform uses it.
    """

    def __init__(self, name: str, args: CacheAccessArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlapi:cache:CacheAccess", name, None, opts)
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-ingress",
            security_group_id=args.cache_security_group_id,
            referenced_security_group_id=args.client_security_group_id,
            ip_protocol="tcp",
            from_port=REDIS_PORT,
            to_port=REDIS_PORT,
            description=args.description,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.register_outputs({})
