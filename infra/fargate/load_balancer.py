"""The Fargate platform's public Application Load Balancer and its listeners.

The ALB cannot rewrite paths, so each service is served under its own prefix (`MLAPI_PATH_PREFIX`) and gets a
listener rule (see `ecs_service.py`); anything else answers a JSON 404 here. Only the ports actually served are
open: 80, and 443 when a certificate is configured (then 80 only redirects). The ALB's security group reaches
its targets on the container port and nothing else.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

# The TLS 1.3 policy recommended for new ALBs (ELB "Security policies for your Application Load Balancer").
SSL_POLICY = "ELBSecurityPolicy-TLS13-1-2-2021-06"


@dataclass(frozen=True)
class LoadBalancerArgs:
    """Placement, certificate, who the targets are, and how long a connection may idle."""

    name: str
    vpc_id: pulumi.Input[str]
    public_subnet_ids: pulumi.Input[list[str]]
    certificate_arn: str
    target_security_group_id: pulumi.Input[str]
    target_port: int
    idle_timeout_seconds: int
    tags: dict[str, str]


class LoadBalancer(pulumi.ComponentResource):
    """An internet-facing ALB; `listener_arn` is where the per-service rules attach."""

    arn: pulumi.Output[str]
    arn_suffix: pulumi.Output[str]
    dns_name: pulumi.Output[str]
    listener_arn: pulumi.Output[str]
    scheme: str

    def __init__(self, name: str, args: LoadBalancerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlapi:loadbalancer:LoadBalancer", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        https = bool(args.certificate_arn)
        tags = args.tags
        sg = aws.ec2.SecurityGroup(
            f"{name}-sg", vpc_id=args.vpc_id, description="mlapi ALB: HTTP(S) from the internet",
            tags={**tags, "Name": f"{args.name}-alb"}, opts=child,
        )
        for port in (80, 443) if https else (80,):
            aws.vpc.SecurityGroupIngressRule(
                f"{name}-in-{port}", security_group_id=sg.id, cidr_ipv4="0.0.0.0/0", ip_protocol="tcp",
                from_port=port, to_port=port, description=f"internet to ALB on {port}", tags=tags, opts=child,
            )
        aws.vpc.SecurityGroupEgressRule(
            f"{name}-out-targets", security_group_id=sg.id, referenced_security_group_id=args.target_security_group_id,
            ip_protocol="tcp", from_port=args.target_port, to_port=args.target_port,
            description="ALB to tasks on the container port", tags=tags, opts=child,
        )
        aws.vpc.SecurityGroupIngressRule(
            f"{name}-targets-in", security_group_id=args.target_security_group_id,
            referenced_security_group_id=sg.id, ip_protocol="tcp", from_port=args.target_port,
            to_port=args.target_port, description="ALB to tasks on the container port", tags=tags, opts=child,
        )
        alb = aws.lb.LoadBalancer(
            f"{name}-alb",
            name=args.name[:32],
            load_balancer_type="application",
            internal=False,
            subnets=args.public_subnet_ids,
            security_groups=[sg.id],
            drop_invalid_header_fields=True,
            idle_timeout=args.idle_timeout_seconds,
            tags=tags,
            opts=child,
        )
        self.listener_arn = self._listeners(name, alb, args).arn
        self.arn = alb.arn
        self.arn_suffix = alb.arn_suffix
        self.dns_name = alb.dns_name
        self.scheme = "https" if https else "http"
        self.register_outputs(
            {"arn_suffix": self.arn_suffix, "dns_name": self.dns_name, "listener_arn": self.listener_arn}
        )

    def _listeners(self, name: str, alb: aws.lb.LoadBalancer, args: LoadBalancerArgs) -> aws.lb.Listener:
        """HTTP only, or HTTPS plus an HTTP listener that redirects; returns the one that carries the rules."""
        child = pulumi.ResourceOptions(parent=self)
        not_found = aws.lb.ListenerDefaultActionArgs(
            type="fixed-response",
            fixed_response=aws.lb.ListenerDefaultActionFixedResponseArgs(
                content_type="application/json",
                message_body='{"detail":"Not Found","error":"Not Found","error_type":"not_found"}',
                status_code="404",
            ),
        )
        if not args.certificate_arn:
            return aws.lb.Listener(
                f"{name}-http", load_balancer_arn=alb.arn, port=80, protocol="HTTP", default_actions=[not_found],
                tags=args.tags, opts=child,
            )
        aws.lb.Listener(
            f"{name}-http", load_balancer_arn=alb.arn, port=80, protocol="HTTP",
            default_actions=[aws.lb.ListenerDefaultActionArgs(
                type="redirect",
                redirect=aws.lb.ListenerDefaultActionRedirectArgs(port="443", protocol="HTTPS", status_code="HTTP_301"),
            )],
            tags=args.tags, opts=child,
        )
        return aws.lb.Listener(
            f"{name}-https", load_balancer_arn=alb.arn, port=443, protocol="HTTPS",
            certificate_arn=args.certificate_arn, ssl_policy=SSL_POLICY, default_actions=[not_found],
            tags=args.tags, opts=child,
        )
