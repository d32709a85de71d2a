"""The `fargate` stack (ECS Fargate + ALB) as the program declares it from the real Pulumi.fargate.yaml."""

from __future__ import annotations

import json

from infra_mocks import REDIS_HOST, REPOSITORY_URL, is_secret, plain
from infra_program import ProgramRun, run_program

CERT = "arn:aws:acm:us-east-1:123456789012:certificate/abc"


def _by_name(run: ProgramRun, typ: str) -> dict[str, dict]:
    return {r.name: plain(r.inputs) for r in run.of_type(typ)}


def test_declare_no_eks_istio_or_kubernetes_on_fargate(fargate: ProgramRun) -> None:
    assert not [r.typ for r in fargate.resources if r.typ.split(":")[0] in ("eks", "kubernetes")
                or r.typ.startswith("pulumi:providers:kubernetes") or r.typ.startswith("mlapi:mesh")]


def test_reuse_shared_components_unchanged(fargate: ProgramRun, dev: ProgramRun) -> None:
    shared = ("mlapi:network:Network", "mlapi:registry:Registry", "mlapi:image:ModelImage", "mlapi:cache:Cache")
    assert sorted(r.name for r in fargate.resources if r.typ in shared) == sorted(
        r.name for r in dev.resources if r.typ in shared)
    assert plain(fargate.one("aws:elasticache/replicationGroup:ReplicationGroup").inputs)["transitEncryptionEnabled"]


def test_declare_ecs_cluster_with_container_insights(fargate: ProgramRun) -> None:
    cluster = plain(fargate.one("aws:ecs/cluster:Cluster").inputs)
    assert cluster["name"] == "mlapi-fargate"
    assert {"name": "containerInsights", "value": "enabled"} in cluster["settings"]


def test_declare_task_definitions_sized_digest_pinned_and_health_checked(fargate: ProgramRun) -> None:
    tasks = {t["family"]: t for t in _by_name(fargate, "aws:ecs/taskDefinition:TaskDefinition").values()}
    assert set(tasks) == {"mlapi-fargate-sentiment", "mlapi-fargate-semantic"}
    sentiment = tasks["mlapi-fargate-sentiment"]
    assert (sentiment["cpu"], sentiment["memory"]) == ("1024", "2048")
    assert sentiment["requiresCompatibilities"] == ["FARGATE"] and sentiment["networkMode"] == "awsvpc"
    container = json.loads(sentiment["containerDefinitions"])[0]
    assert container["image"].startswith(REPOSITORY_URL + ":sentiment-") and "@sha256:" in container["image"]
    assert "/project/health" in " ".join(container["healthCheck"]["command"])
    assert container["readonlyRootFilesystem"] is True and container["user"] == "10001"
    assert container["logConfiguration"]["options"]["awslogs-group"] == "/ecs/mlapi-fargate/sentiment"
    env = {e["name"]: e["value"] for e in container["environment"]}
    assert env["MLAPI_PATH_PREFIX"] == "/project"
    assert "MLAPI_REDIS_URL" not in env
    assert [s["name"] for s in container["secrets"]] == ["MLAPI_REDIS_URL", "MLAPI_API_KEYS"]
    assert "rediss://" not in sentiment["containerDefinitions"]


def test_deliver_redis_url_as_write_only_secret(fargate: ProgramRun) -> None:
    version = fargate.one("aws:secretsmanager/secretVersion:SecretVersion", "ecs-redis-url-value").inputs
    assert is_secret(version["secretStringWo"])
    assert plain(version["secretStringWo"]).startswith("rediss://:")
    assert "secretString" not in version
    policy = json.loads(fargate.one("aws:iam/rolePolicy:RolePolicy", "ecs-execution-secret").inputs["policy"])
    assert policy["Statement"] == [{"Effect": "Allow", "Action": "secretsmanager:GetSecretValue",
                                    "Resource": policy["Statement"][0]["Resource"]}]
    assert policy["Statement"][0]["Resource"] != "*"


def test_declare_services_private_with_circuit_breaker_and_grace(fargate: ProgramRun) -> None:
    services = {s["name"]: s for s in _by_name(fargate, "aws:ecs/service:Service").values()}
    assert set(services) == {"sentiment", "semantic"}
    for svc in services.values():
        assert svc["networkConfiguration"]["assignPublicIp"] is False
        assert svc["networkConfiguration"]["subnets"] == ["subnet-priv-a", "subnet-priv-b"]
        assert svc["deploymentCircuitBreaker"] == {"enable": True, "rollback": True}
        assert svc["healthCheckGracePeriodSeconds"] == 300
        assert svc["loadBalancers"][0]["containerPort"] == 8000


def test_route_each_prefix_to_its_target_group(fargate: ProgramRun) -> None:
    alb = plain(fargate.one("aws:lb/loadBalancer:LoadBalancer").inputs)
    assert alb["subnets"] == ["subnet-pub-a", "subnet-pub-b"] and alb["internal"] is False
    groups = _by_name(fargate, "aws:lb/targetGroup:TargetGroup")
    for name, prefix in (("sentiment", "/project"), ("semantic", "/lab")):
        tg = groups[f"ecs-{name}-tg"]
        assert (tg["port"], tg["targetType"]) == (8000, "ip")
        assert tg["healthCheck"]["path"] == f"{prefix}/health"
        assert tg["deregistrationDelay"] == 35  # a whole request timeout (30 s) plus margin
    rules = _by_name(fargate, "aws:lb/listenerRule:ListenerRule")
    patterns = {n: r["conditions"][0]["pathPattern"]["values"] for n, r in rules.items()}
    assert {n: p for n, p in patterns.items() if n.startswith("ecs-")} == {
        "ecs-sentiment-rule": ["/project", "/project/*"],
        "ecs-semantic-rule": ["/lab", "/lab/*"],
    }
    listeners = _by_name(fargate, "aws:lb/listener:Listener")
    assert [(listener["port"], listener["protocol"]) for listener in listeners.values()] == [(80, "HTTP")]


def test_serve_https_and_redirect_when_certificate_configured() -> None:
    run = run_program("fargate", {"mlapi:certificateArn": CERT})
    listeners = {r["port"]: r for r in _by_name(run, "aws:lb/listener:Listener").values()}
    assert listeners[443]["certificateArn"] == CERT and listeners[443]["protocol"] == "HTTPS"
    assert listeners[80]["defaultActions"][0]["type"] == "redirect"
    assert listeners[80]["defaultActions"][0]["redirect"]["protocol"] == "HTTPS"
    ingress = {r["fromPort"] for r in _by_name(run, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
               .values() if r.get("cidrIpv4") == "0.0.0.0/0"}
    assert ingress == {80, 443}
    assert run.outputs["service_urls"]["sentiment"].startswith("https://")


def test_chain_security_groups_internet_alb_tasks_redis(fargate: ProgramRun) -> None:
    ingress = list(_by_name(fargate, "aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule").values())
    egress = list(_by_name(fargate, "aws:vpc/securityGroupEgressRule:SecurityGroupEgressRule").values())
    sgs = {r.name: f"{r.name}-id" for r in fargate.of_type("aws:ec2/securityGroup:SecurityGroup")}
    alb, tasks, cache = sgs["alb-sg"], sgs["ecs-task-sg"], sgs["cache-sg"]
    public = [r for r in ingress if r.get("cidrIpv4") == "0.0.0.0/0"]
    assert [(r["securityGroupId"], r["fromPort"]) for r in public] == [(alb, 80)]
    assert {(r["securityGroupId"], r["referencedSecurityGroupId"], r["fromPort"], r["toPort"])
            for r in ingress if "referencedSecurityGroupId" in r} == {(tasks, alb, 8000, 8000),
                                                                     (cache, tasks, 6379, 6379)}
    assert (alb, tasks, 8000) in {(r["securityGroupId"], r.get("referencedSecurityGroupId"), r["fromPort"])
                                  for r in egress}


def test_scale_on_cpu_and_requests_per_target(fargate: ProgramRun) -> None:
    targets = _by_name(fargate, "aws:appautoscaling/target:Target")
    assert (targets["ecs-sentiment-scaling"]["minCapacity"], targets["ecs-sentiment-scaling"]["maxCapacity"]) \
        == (2, 6)
    policies = _by_name(fargate, "aws:appautoscaling/policy:Policy")
    metrics = {n: p["targetTrackingScalingPolicyConfiguration"] for n, p in policies.items()}
    cpu = metrics["ecs-sentiment-cpu"]
    assert cpu["predefinedMetricSpecification"]["predefinedMetricType"] == "ECSServiceAverageCPUUtilization"
    assert cpu["targetValue"] == 70
    requests = metrics["ecs-sentiment-requests"]
    assert requests["predefinedMetricSpecification"]["predefinedMetricType"] == "ALBRequestCountPerTarget"
    assert requests["predefinedMetricSpecification"]["resourceLabel"] == (
        "app/mlapi-fargate/abc/targetgroup/mlapi-fargate-sentiment/def")
    assert requests["targetValue"] == 200


def test_export_fargate_urls_registry_cluster_redis(fargate: ProgramRun) -> None:
    dns = "mlapi-test-123.us-east-1.elb.amazonaws.com"
    assert fargate.outputs["service_urls"] == {"sentiment": f"http://{dns}/project/", "semantic": f"http://{dns}/lab/"}
    assert fargate.outputs["ecsClusterName"] == "mlapi-fargate"
    assert fargate.outputs["repositoryUrl"] == REPOSITORY_URL
    assert fargate.outputs["redisEndpoint"] == REDIS_HOST


def test_declare_log_groups_with_retention_on_fargate(fargate: ProgramRun) -> None:
    groups = {g["name"]: g["retentionInDays"] for g in _by_name(fargate, "aws:cloudwatch/logGroup:LogGroup").values()}
    assert groups == {"/ecs/mlapi-fargate/sentiment": 14, "/ecs/mlapi-fargate/semantic": 14,
                      "/aws/ecs/containerinsights/mlapi-fargate/performance": 14}


def test_declare_every_aws_resource_tagged_on_fargate(fargate: ProgramRun) -> None:
    from test_infra_dev_stack import UNTAGGABLE

    expected = {"stack": "fargate", "service": "mlapi", "managed-by": "pulumi"}
    for res in fargate.resources:
        if res.typ.split(":")[0] in ("aws", "awsx") and res.typ not in UNTAGGABLE:
            assert plain(res.inputs.get("tags", {})).items() >= expected.items(), res.name
