"""The public edge: `/metrics` refused at the Istio gateway and the ALB; the optional rate limits off by default
and, when on, an Envoy local rate limit on the gateway and a WAF rate-based rule on the ALB."""

from __future__ import annotations

import fnmatch
from typing import Any

import pytest
from component_harness import by_name, declare, manifest, provider
from infra_mocks import Recorded, plain

from infra.shared.edge import AlbEdge, AlbEdgeArgs, GatewayEdge, GatewayEdgeArgs, alb_path_groups, metrics_paths

PREFIXES = ["/project", "/lab", "/team/a"]
GATEWAY = {"istio": "ingressgateway"}
TAGS = {"stack": "fargate", "service": "mlapi", "managed-by": "pulumi"}
LB_ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:loadbalancer/app/mlapi/abc"
LISTENER_ARN = "arn:aws:elasticloadbalancing:us-east-1:123456789012:listener/app/mlapi/abc/def"


def gateway(limit: int | None) -> dict[str, Recorded]:
    def build() -> dict[str, Any]:
        GatewayEdge("edge", GatewayEdgeArgs(gateway_namespace="istio-ingress", gateway_selector=GATEWAY,
                                            path_prefixes=PREFIXES, rate_limit_per_minute=limit,
                                            provider=provider(), depends_on=[]))
        return {}

    return by_name(declare(build)[0])


def alb(limit: int | None) -> dict[str, Recorded]:
    def build() -> dict[str, Any]:
        AlbEdge("edge", AlbEdgeArgs(name_prefix="mlapi-fargate", load_balancer_arn=LB_ARN, listener_arn=LISTENER_ARN,
                                    path_prefixes=PREFIXES, rate_limit_per_minute=limit, tags=TAGS))
        return {}

    return by_name(declare(build)[0])


@pytest.mark.parametrize("path", ["/metrics", "/project/metrics", "/lab/metrics", "/team/a/metrics",
                                  "/project/metrics/", "/lab/metrics/extra"])
def test_metrics_paths_cover_every_prefix(path: str) -> None:
    assert any(fnmatch.fnmatchcase(path, pattern) for pattern in metrics_paths(PREFIXES))


@pytest.mark.parametrize("path", ["/project/predict", "/project/health", "/lab/query", "/project/docs"])
def test_metrics_paths_leave_the_api_alone(path: str) -> None:
    assert not any(fnmatch.fnmatchcase(path, pattern) for pattern in metrics_paths(PREFIXES))


def test_gateway_denies_metrics_paths_and_adds_no_limit_by_default() -> None:
    res = gateway(None)
    policy = manifest(res["edge-deny-metrics"])
    assert (policy["apiVersion"], policy["kind"]) == ("security.istio.io/v1", "AuthorizationPolicy")
    assert policy["metadata"]["namespace"] == "istio-ingress"
    assert policy["spec"]["selector"] == {"matchLabels": GATEWAY}
    assert policy["spec"]["action"] == "DENY"
    assert policy["spec"]["rules"] == [{"to": [{"operation": {"paths": metrics_paths(PREFIXES)}}]}]
    assert not [r for r in res.values() if r.inputs.get("kind") == "EnvoyFilter"]


def test_gateway_rate_limit_inserts_envoy_local_rate_limit() -> None:
    envoy_filter = manifest(gateway(600)["edge-rate-limit"])
    assert envoy_filter["spec"]["workloadSelector"] == {"labels": GATEWAY}
    [patch] = envoy_filter["spec"]["configPatches"]
    assert patch["match"]["context"] == "GATEWAY"
    assert patch["patch"]["operation"] == "INSERT_BEFORE"
    config = patch["patch"]["value"]["typed_config"]
    assert config["@type"].endswith("local_ratelimit.v3.LocalRateLimit")
    assert config["token_bucket"] == {"max_tokens": 600, "tokens_per_fill": 10, "fill_interval": "1s"}


def test_alb_answers_404_on_metrics_ahead_of_service_rules() -> None:
    res = alb(None)
    rules = [plain(r.inputs) for r in res.values() if r.typ == "aws:lb/listenerRule:ListenerRule"]
    covered: list[str] = []
    for rule in rules:
        assert rule["listenerArn"] == LISTENER_ARN
        assert 1 <= rule["priority"] < 100  # service rules start at 100
        values = rule["conditions"][0]["pathPattern"]["values"]
        assert len(values) <= 5  # ALB limit of condition values per rule
        covered += values
        action = rule["actions"][0]
        assert action["type"] == "fixed-response"
        assert action["fixedResponse"]["statusCode"] == "404"
        assert rule["tags"] == TAGS
    assert sorted(covered) == sorted(metrics_paths(PREFIXES))
    assert len({r["priority"] for r in rules}) == len(rules)
    assert not [r for r in res.values() if r.typ.startswith("aws:wafv2/")]


def test_alb_path_groups_never_exceed_the_limit() -> None:
    many = [f"/svc{i}" for i in range(7)]
    groups = alb_path_groups(many)
    assert all(len(g) <= 5 for g in groups)
    assert [p for g in groups for p in g] == metrics_paths(many)


def test_waf_rate_rule_per_ip_associated_with_the_alb() -> None:
    res = alb(2000)
    acl = plain(res["edge-waf"].inputs)
    assert acl["scope"] == "REGIONAL"
    assert acl["defaultAction"] == {"allow": {}}
    rules = {r["name"]: r for r in acl["rules"]}
    rule = rules["per-ip-rate"]
    rate = rule["statement"]["rateBasedStatement"]
    assert (rate["limit"], rate["aggregateKeyType"], rate["evaluationWindowSec"]) == (2000, "IP", 60)
    assert rule["action"]["block"]["customResponse"]["responseCode"] == 429
    association = plain(res["edge-waf-association"].inputs)
    assert association["resourceArn"] == LB_ARN
    assert association["webAclArn"].endswith(":edge-waf")


def test_waf_refuses_percent_encoded_metrics_paths() -> None:
    acl = plain(alb(2000)["edge-waf"].inputs)
    rules = sorted(acl["rules"], key=lambda r: r["priority"])
    assert [r["name"] for r in rules] == ["metrics-decoded", "per-ip-rate"]
    match = rules[0]["statement"]["byteMatchStatement"]
    assert (match["searchString"], match["positionalConstraint"]) == ("/metrics", "CONTAINS")
    assert "uriPath" in match["fieldToMatch"]
    assert [t["type"] for t in sorted(match["textTransformations"], key=lambda t: t["priority"])] == [
        "URL_DECODE", "LOWERCASE"]
    assert rules[0]["action"]["block"]["customResponse"]["responseCode"] == 404
