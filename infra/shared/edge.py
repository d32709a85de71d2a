"""What the public edge refuses before a request reaches a model pod: `/metrics`, and (optionally) floods.

`/metrics` (and `<prefix>/metrics`, where each service serves it) is for Prometheus inside the cluster or VPC
only. EKS: an Istio AuthorizationPolicy on the ingress gateway denies those paths (403) while Prometheus scrapes
the pods directly, never through the gateway; Istio normalizes the path before matching and forwards the
normalized path (default `BASE`: percent-encoded letters and digits decoded, dot segments resolved; istio.io
"Authorization Policy Normalization"). Fargate: an ALB listener rule, ahead of the service rules, answers a
fixed 404. ALB path patterns see the path as sent, so a percent-encoded spelling (`/project/%6Detrics`) passes
them; the service itself answers metrics only under the literal path (404 otherwise), and when the WAF is on it
also refuses any path that decodes to one containing `/metrics`.

The optional rate limits (`mlapi:edgeRateLimit`, off by default) are a coarse ceiling in front of the per-key
limits of the service: on EKS Envoy's local rate limit on each gateway replica (one token bucket per Envoy,
shared by every client: Envoy "Local rate limit" filter); on Fargate an AWS WAF rate-based rule per client IP,
evaluated over a one-minute window (WAF "Rate-based rule statement").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

METRICS_PATH = "/metrics"
NOT_FOUND_BODY = '{"detail":"Not Found","error":"Not Found","error_type":"not_found"}'
# ALB: at most 5 condition values per rule ("Listener rules for your Application Load Balancer", quotas), and
# service rules start at priority 100, so the metrics rules take 1..99.
_ALB_MAX_VALUES = 5
_FIRST_PRIORITY = 1


def metrics_paths(path_prefixes: list[str]) -> list[str]:
    """Every path under which a service answers metrics, exact and with anything after it."""
    paths: list[str] = []
    for base in ["", *path_prefixes]:
        paths += [f"{base}{METRICS_PATH}", f"{base}{METRICS_PATH}/*"]
    return paths


def alb_path_groups(path_prefixes: list[str]) -> list[list[str]]:
    """The metrics paths cut into groups an ALB rule condition accepts."""
    paths = metrics_paths(path_prefixes)
    return [paths[i:i + _ALB_MAX_VALUES] for i in range(0, len(paths), _ALB_MAX_VALUES)]


def local_rate_limit_patch(requests_per_minute: int) -> dict[str, Any]:
    """EnvoyFilter config patch inserting Envoy's local rate limit into the gateway's HTTP filter chain.

    The bucket holds a minute's worth and refills a sixtieth of it every second, so a short burst passes and a
    sustained flood is cut to the configured rate; over it, Envoy answers 429 with the draft RateLimit headers.
    """
    per_second = max(1, -(-requests_per_minute // 60))
    return {
        "applyTo": "HTTP_FILTER",
        "match": {
            "context": "GATEWAY",
            "listener": {
                "filterChain": {
                    "filter": {
                        "name": "envoy.filters.network.http_connection_manager",
                        "subFilter": {"name": "envoy.filters.http.router"},
                    }
                }
            },
        },
        "patch": {
            "operation": "INSERT_BEFORE",
            "value": {
                "name": "envoy.filters.http.local_ratelimit",
                "typed_config": {
                    "@type": "type.googleapis.com/envoy.extensions.filters.http.local_ratelimit.v3.LocalRateLimit",
                    "stat_prefix": "http_local_rate_limiter",
                    "token_bucket": {
                        "max_tokens": requests_per_minute,
                        "tokens_per_fill": per_second,
                        "fill_interval": "1s",
                    },
                    "filter_enabled": {
                        "runtime_key": "local_rate_limit_enabled",
                        "default_value": {"numerator": 100, "denominator": "HUNDRED"},
                    },
                    "filter_enforced": {
                        "runtime_key": "local_rate_limit_enforced",
                        "default_value": {"numerator": 100, "denominator": "HUNDRED"},
                    },
                    "enable_x_ratelimit_headers": "DRAFT_VERSION_03",
                    "response_headers_to_add": [
                        {"append_action": "OVERWRITE_IF_EXISTS_OR_ADD",
                         "header": {"key": "x-local-rate-limit", "value": "true"}}
                    ],
                },
            },
        },
    }


@dataclass(frozen=True)
class GatewayEdgeArgs:
    """The gateway (namespace and pod labels), the services' prefixes, and the optional rate limit."""

    gateway_namespace: str
    gateway_selector: dict[str, str]
    path_prefixes: list[str]
    rate_limit_per_minute: int | None
    provider: k8s.Provider
    depends_on: list[pulumi.Resource]


class GatewayEdge(pulumi.ComponentResource):
    """Istio policy at the gateway: deny the metrics paths; optionally a local rate limit."""

    def __init__(self, name: str, args: GatewayEdgeArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlapi:edge:GatewayEdge", name, None, opts)
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=args.depends_on)
        k8s.apiextensions.CustomResource(
            f"{name}-deny-metrics",
            api_version="security.istio.io/v1",
            kind="AuthorizationPolicy",
            metadata={"name": "deny-metrics", "namespace": args.gateway_namespace},
            spec={
                "selector": {"matchLabels": args.gateway_selector},
                "action": "DENY",
                "rules": [{"to": [{"operation": {"paths": metrics_paths(args.path_prefixes)}}]}],
            },
            opts=k8s_opts,
        )
        if args.rate_limit_per_minute:
            k8s.apiextensions.CustomResource(
                f"{name}-rate-limit",
                api_version="networking.istio.io/v1alpha3",
                kind="EnvoyFilter",
                metadata={"name": "local-rate-limit", "namespace": args.gateway_namespace},
                spec={
                    "workloadSelector": {"labels": args.gateway_selector},
                    "configPatches": [local_rate_limit_patch(args.rate_limit_per_minute)],
                },
                opts=k8s_opts,
            )
        self.register_outputs({})


@dataclass(frozen=True)
class AlbEdgeArgs:
    """The ALB and its listener, the services' prefixes, and the optional WAF rate limit."""

    name_prefix: str
    load_balancer_arn: pulumi.Input[str]
    listener_arn: pulumi.Input[str]
    path_prefixes: list[str]
    rate_limit_per_minute: int | None
    tags: dict[str, str]


class AlbEdge(pulumi.ComponentResource):
    """ALB rules answering 404 on the metrics paths; optionally a WAF web ACL with a per-IP rate-based rule."""

    web_acl_arn: pulumi.Output[str] | None

    def __init__(self, name: str, args: AlbEdgeArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlapi:edge:AlbEdge", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        for index, paths in enumerate(alb_path_groups(args.path_prefixes)):
            aws.lb.ListenerRule(
                f"{name}-metrics-{index}",
                listener_arn=args.listener_arn,
                priority=_FIRST_PRIORITY + index,
                conditions=[aws.lb.ListenerRuleConditionArgs(
                    path_pattern=aws.lb.ListenerRuleConditionPathPatternArgs(values=paths)
                )],
                actions=[aws.lb.ListenerRuleActionArgs(
                    type="fixed-response",
                    fixed_response=aws.lb.ListenerRuleActionFixedResponseArgs(
                        content_type="application/json", message_body=NOT_FOUND_BODY, status_code="404"
                    ),
                )],
                tags=args.tags,
                opts=child,
            )
        self.web_acl_arn = None
        if args.rate_limit_per_minute:
            acl = self._web_acl(name, args, args.rate_limit_per_minute)
            aws.wafv2.WebAclAssociation(
                f"{name}-waf-association", resource_arn=args.load_balancer_arn, web_acl_arn=acl.arn, opts=child
            )
            self.web_acl_arn = acl.arn
        self.register_outputs({"web_acl_arn": self.web_acl_arn})

    def _web_acl(self, name: str, args: AlbEdgeArgs, limit: int) -> aws.wafv2.WebAcl:
        return aws.wafv2.WebAcl(
            f"{name}-waf",
            name=f"{args.name_prefix}-edge",
            description="Per-client-IP request ceiling in front of the mlapi services",
            scope="REGIONAL",
            default_action=aws.wafv2.WebAclDefaultActionArgs(allow=aws.wafv2.WebAclDefaultActionAllowArgs()),
            custom_response_bodies=[
                aws.wafv2.WebAclCustomResponseBodyArgs(
                    key="too-many-requests",
                    content='{"detail":"Too Many Requests","error":"Too Many Requests","error_type":"rate_limited"}',
                    content_type="APPLICATION_JSON",
                ),
                aws.wafv2.WebAclCustomResponseBodyArgs(
                    key="not-found", content=NOT_FOUND_BODY, content_type="APPLICATION_JSON"
                ),
            ],
            rules=[_decoded_metrics_rule(args.name_prefix), aws.wafv2.WebAclRuleArgs(
                name="per-ip-rate",
                priority=1,
                action=aws.wafv2.WebAclRuleActionArgs(block=aws.wafv2.WebAclRuleActionBlockArgs(
                    custom_response=aws.wafv2.WebAclRuleActionBlockCustomResponseArgs(
                        response_code=429,
                        custom_response_body_key="too-many-requests",
                        response_headers=[aws.wafv2.WebAclRuleActionBlockCustomResponseResponseHeaderArgs(
                            name="Retry-After", value="60"
                        )],
                    )
                )),
                statement=aws.wafv2.WebAclRuleStatementArgs(
                    rate_based_statement=aws.wafv2.WebAclRuleStatementRateBasedStatementArgs(
                        limit=limit, aggregate_key_type="IP", evaluation_window_sec=60
                    )
                ),
                visibility_config=aws.wafv2.WebAclRuleVisibilityConfigArgs(
                    cloudwatch_metrics_enabled=True, metric_name=f"{args.name_prefix}-per-ip-rate",
                    sampled_requests_enabled=True,
                ),
            )],
            visibility_config=aws.wafv2.WebAclVisibilityConfigArgs(
                cloudwatch_metrics_enabled=True, metric_name=f"{args.name_prefix}-edge", sampled_requests_enabled=True
            ),
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )


def _decoded_metrics_rule(name_prefix: str) -> aws.wafv2.WebAclRuleArgs:
    """WAF rule: 404 for any path that, URL-decoded and lower-cased, contains `/metrics`.

    The ALB's path patterns match the path as sent, and cannot even name `%`, so `/project/%6Detrics` passes the
    listener rule while the service decodes it to its metrics route; WAF decodes before matching.
    """
    return aws.wafv2.WebAclRuleArgs(
        name="metrics-decoded",
        priority=0,
        action=aws.wafv2.WebAclRuleActionArgs(block=aws.wafv2.WebAclRuleActionBlockArgs(
            custom_response=aws.wafv2.WebAclRuleActionBlockCustomResponseArgs(
                response_code=404, custom_response_body_key="not-found"
            )
        )),
        statement=aws.wafv2.WebAclRuleStatementArgs(
            byte_match_statement=aws.wafv2.WebAclRuleStatementByteMatchStatementArgs(
                positional_constraint="CONTAINS",
                search_string=METRICS_PATH,
                field_to_match=aws.wafv2.WebAclRuleStatementByteMatchStatementFieldToMatchArgs(
                    uri_path=aws.wafv2.WebAclRuleStatementByteMatchStatementFieldToMatchUriPathArgs()
                ),
                text_transformations=[
                    aws.wafv2.WebAclRuleStatementByteMatchStatementTextTransformationArgs(priority=i, type=kind)
                    for i, kind in enumerate(("URL_DECODE", "LOWERCASE"))
                ],
            )
        ),
        visibility_config=aws.wafv2.WebAclRuleVisibilityConfigArgs(
            cloudwatch_metrics_enabled=True, metric_name=f"{name_prefix}-metrics-decoded",
            sampled_requests_enabled=True,
        ),
    )
