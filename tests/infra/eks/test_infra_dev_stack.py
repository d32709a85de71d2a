"""The `dev` stack (EKS + Istio) as the program declares it from the real Pulumi.dev.yaml."""

from __future__ import annotations

import json
import re

import yaml
from infra_mocks import AUTH_TOKEN, DIGEST, LB_HOST, NODE_SG, REDIS_HOST, REPOSITORY_URL, is_secret, plain
from infra_program import REPO, ProgramRun, run_program

# AWS resource types that have no `tags` argument.
UNTAGGABLE = {
    "aws:iam/rolePolicyAttachment:RolePolicyAttachment",
    "aws:iam/rolePolicy:RolePolicy",
    "aws:ecr/lifecyclePolicy:LifecyclePolicy",
    "aws:appautoscaling/policy:Policy",
    "aws:secretsmanager/secretVersion:SecretVersion",
    "aws:eks/accessPolicyAssociation:AccessPolicyAssociation",
    "aws:cloudwatch/dashboard:Dashboard",
    "aws:sns/topicSubscription:TopicSubscription",
    "aws:wafv2/webAclAssociation:WebAclAssociation",
    "aws:cloudwatch/logMetricFilter:LogMetricFilter",  # the provider's LogMetricFilter takes no tags
}
EXPECTED_TAGS = {"stack": "dev", "service": "mlapi", "managed-by": "pulumi"}


def test_declare_every_aws_resource_tagged(dev: ProgramRun) -> None:
    for res in dev.resources:
        if res.typ.split(":")[0] in ("aws", "awsx", "eks") and res.custom is not None and res.typ not in UNTAGGABLE:
            assert plain(res.inputs.get("tags", {})).items() >= EXPECTED_TAGS.items(), res.name


def test_declare_components_with_mlapi_tokens_and_role_names(dev: ProgramRun) -> None:
    tokens = {r.typ for r in dev.resources if r.typ.startswith("mlapi:")}
    assert tokens == {
        "mlapi:network:Network", "mlapi:registry:Registry", "mlapi:image:ModelImage", "mlapi:cache:Cache",
        "mlapi:cache:CacheAccess", "mlapi:observability:Observability", "mlapi:cluster:Cluster",
        "mlapi:access:AccessEntries", "mlapi:nodepool:NodePool",
        "mlapi:workloads:Workloads", "mlapi:mesh:Mesh", "mlapi:api_keys:ApiKeysSecret", "mlapi:api_keys:ApiKeysSync",
        "mlapi:monitoring:Monitoring", "mlapi:edge:GatewayEdge", "mlapi:canary:Flagger",
    }
    components = {r.name for r in dev.resources if r.typ.startswith("mlapi:")}
    for res in dev.resources:
        if not res.typ.startswith("mlapi:") and not res.resource_id:
            assert any(res.name.startswith(f"{c}-") for c in components), res.name


def test_declare_vpc_with_public_and_private_subnets_over_two_azs(dev: ProgramRun) -> None:
    vpc = dev.one("awsx:ec2:Vpc").inputs
    assert vpc["numberOfAvailabilityZones"] == 2
    assert vpc["natGateways"] == {"strategy": "Single"}
    assert {s["type"] for s in vpc["subnetSpecs"]} == {"Public", "Private"}


def test_declare_ecr_repository_immutable_scanned_and_force_deleted(dev: ProgramRun) -> None:
    repo = dev.one("aws:ecr/repository:Repository").inputs
    assert repo["name"] == "mlapi-dev"
    assert repo["imageScanningConfiguration"] == {"scanOnPush": True}
    assert repo["imageTagMutability"] == "IMMUTABLE_WITH_EXCLUSION"
    assert repo["imageTagMutabilityExclusionFilters"] == [{"filter": "*-buildcache", "filterType": "WILDCARD"}]
    assert repo["forceDelete"] is True
    policy = json.loads(dev.one("aws:ecr/lifecyclePolicy:LifecyclePolicy").inputs["policy"])
    assert policy["rules"][-1]["selection"]["countNumber"] == 10


def test_declare_one_amd64_image_per_service_pushed_to_ecr(dev: ProgramRun) -> None:
    images = {r.name: r.inputs for r in dev.of_type("docker-build:index:Image")}
    assert set(images) == {"image-sentiment-image", "image-semantic-image"}
    sentiment = images["image-sentiment-image"]
    assert sentiment["buildArgs"] == {"MODEL_ID": "distilbert/distilbert-base-uncased-finetuned-sst-2-english",
                                      "MODEL_REVISION": "714eb0fa89d2f80546fda750413ed43d93601a13",
                                      "MODEL_FINGERPRINT": "714eb0fa89d2f80546fda750413ed43d93601a13"}
    # A public hub model with no token configured: no secrets, and only the repository is sent.
    assert "secrets" not in sentiment
    assert not sentiment["context"].get("named")
    assert sentiment["platforms"] == ["linux/amd64"]
    assert sentiment["push"] is True
    assert sentiment["buildOnPreview"] is False
    assert all(t.startswith(REPOSITORY_URL + ":sentiment-") for t in sentiment["tags"])
    assert is_secret(sentiment["registries"])
    assert plain(sentiment["registries"])[0]["address"] == REPOSITORY_URL
    assert sentiment["cacheTo"][0]["registry"]["ref"] == f"{REPOSITORY_URL}:sentiment-buildcache"
    assert sentiment["cacheTo"][0]["registry"]["imageManifest"] is True
    assert sentiment["cacheFrom"][0]["registry"]["ref"] == f"{REPOSITORY_URL}:sentiment-buildcache"


def test_declare_eks_cluster_private_api_auth_oidc_pinned(dev: ProgramRun) -> None:
    eks = dev.one("eks:index:Cluster").inputs
    assert eks["name"] == "mlapi-dev"
    assert eks["version"] == "1.35"
    assert eks["authenticationMode"] == "API"
    assert eks["createOidcProvider"] is True
    assert eks["skipDefaultNodeGroup"] is True
    assert eks["privateSubnetIds"] == ["subnet-priv-a", "subnet-priv-b"]
    assert eks["nodeAssociatePublicIpAddress"] is False
    assert eks["endpointPrivateAccess"] is True
    assert eks["endpointPublicAccess"] is True
    assert eks["publicAccessCidrs"] == ["203.0.113.7/32", "198.51.100.0/24"]
    assert "encryptionConfigKeyArn" in eks
    assert set(eks["enabledClusterLogTypes"]) >= {"api", "audit", "authenticator"}
    # Auto Mode: compute, load balancing and block storage run by AWS; only the built-in `system` pool is kept,
    # the workloads run on the program's NodePool.
    assert plain(eks["autoMode"]) == {"enabled": True, "createNodeRole": True,
                                      "computeConfig": {"nodePools": ["system"]}}
    assert not dev.of_type("eks:index:ManagedNodeGroup")


def test_declare_auto_mode_node_pool_with_cost_aware_defaults_and_limits(dev: ProgramRun) -> None:
    pool = plain(dev.one("kubernetes:karpenter.sh/v1:NodePool").inputs)
    requirements = {r["key"]: r["values"] for r in pool["spec"]["template"]["spec"]["requirements"]}
    assert requirements["eks.amazonaws.com/instance-family"] == ["c7i", "c6i", "m7i", "m6i"]
    assert requirements["eks.amazonaws.com/instance-cpu"] == ["4", "8"]
    assert requirements["karpenter.sh/capacity-type"] == ["on-demand"]
    assert requirements["kubernetes.io/arch"] == ["amd64"]
    assert pool["spec"]["limits"] == {"cpu": "32", "memory": "128Gi"}
    assert pool["spec"]["template"]["spec"]["nodeClassRef"] == {
        "group": "eks.amazonaws.com", "kind": "NodeClass", "name": "mlapi"}
    node_class = plain(dev.one("kubernetes:eks.amazonaws.com/v1:NodeClass").inputs)["spec"]
    assert node_class["role"] == "mlapi-dev-eks-auto-mode-node-role"
    assert node_class["subnetSelectorTerms"] == [{"id": "subnet-priv-a"}, {"id": "subnet-priv-b"}]
    assert node_class["securityGroupSelectorTerms"] == [{"id": NODE_SG}]
    assert node_class["networkPolicy"] == "DefaultAllow"
    switch = plain(dev.one("kubernetes:core/v1:ConfigMap", "cluster-pool-network-policy").inputs)
    assert switch["data"] == {"enable-network-policy-controller": "true"}


def test_node_pool_buys_spot_when_asked() -> None:
    run = run_program("dev", {"mlapi:nodeCapacityType": "spot-and-on-demand"})
    pool = plain(run.one("kubernetes:karpenter.sh/v1:NodePool").inputs)
    requirements = {r["key"]: r["values"] for r in pool["spec"]["template"]["spec"]["requirements"]}
    assert requirements["karpenter.sh/capacity-type"] == ["spot", "on-demand"]


def test_declare_no_default_kubernetes_provider(dev: ProgramRun) -> None:
    stack_file = yaml.safe_load((REPO / "Pulumi.dev.yaml").read_text())["config"]
    assert stack_file["pulumi:disable-default-providers"] == ["kubernetes"]
    provider = dev.one("pulumi:providers:kubernetes")
    assert "kubeconfig" in provider.inputs
    k8s = [r for r in dev.resources if r.typ.startswith("kubernetes:")]
    assert len(k8s) >= 20
    for res in k8s:
        assert res.provider.startswith("urn:pulumi:dev::mlapi::mlapi:cluster:Cluster$pulumi:providers:kubernetes::"
                                       "cluster-k8s::"), res.name


def test_declare_metrics_server_and_istio_releases_pinned(dev: ProgramRun) -> None:
    releases = {r.inputs["name"]: r.inputs for r in dev.of_type("kubernetes:helm.sh/v3:Release")}
    assert set(releases) == {"metrics-server", "istio-base", "istiod", "istio-ingressgateway", "external-secrets",
                             "kube-prometheus-stack", "flagger"}
    assert releases["metrics-server"]["version"] == "3.13.1"
    for name in ("istio-base", "istiod", "istio-ingressgateway"):
        assert releases[name]["version"] == "1.30.3"


def test_declare_gateway_and_prefix_routes_without_rewrite(dev: ProgramRun) -> None:
    gateway = dev.one("kubernetes:networking.istio.io/v1:Gateway").inputs
    assert gateway["spec"]["selector"] == {"istio": "ingressgateway"}
    vs = dev.one("kubernetes:networking.istio.io/v1:VirtualService").inputs
    assert vs["spec"]["gateways"] == ["istio-ingress/mlapi"]
    routes = {r["name"]: r for r in vs["spec"]["http"]}
    assert routes["project"]["match"] == [{"uri": {"exact": "/project"}}, {"uri": {"prefix": "/project/"}}]
    # Each prefix is handed to the service's Flagger VirtualService, which routes primary and canary.
    assert routes["project"]["delegate"] == {"name": "sentiment", "namespace": "mlapi"}
    assert routes["lab"]["delegate"] == {"name": "semantic", "namespace": "mlapi"}
    assert all("rewrite" not in r and "route" not in r for r in routes.values())


def test_declare_redis_encrypted_with_write_only_auth_and_failover(dev: ProgramRun) -> None:
    redis = dev.one("aws:elasticache/replicationGroup:ReplicationGroup").inputs
    assert redis["atRestEncryptionEnabled"] is True
    assert redis["transitEncryptionEnabled"] is True
    assert redis["transitEncryptionMode"] == "required"
    assert "authToken" not in redis
    assert is_secret(redis["authTokenWo"]) and plain(redis["authTokenWo"]) == AUTH_TOKEN
    assert redis["automaticFailoverEnabled"] is True and redis["multiAzEnabled"] is True
    assert plain(redis["numCacheClusters"]) == 2
    password = dev.one("random:index/randomPassword:RandomPassword", "cache-auth-token").inputs
    assert password["overrideSpecial"] == "!&#$^<>-"


def test_declare_redis_ingress_only_from_nodes_on_6379(dev: ProgramRun) -> None:
    rules = dev.of_type("aws:vpc/securityGroupIngressRule:SecurityGroupIngressRule")
    assert len(rules) == 1
    rule = plain(rules[0].inputs)
    assert (rule["referencedSecurityGroupId"], rule["fromPort"], rule["toPort"]) == (NODE_SG, 6379, 6379)
    assert "cidrIpv4" not in rule


def test_deliver_redis_url_through_secret_only(dev: ProgramRun) -> None:
    secret = dev.one("kubernetes:core/v1:Secret", "workloads-redis").inputs
    assert is_secret(secret["stringData"])
    assert plain(secret["stringData"])["redis-url"].startswith("rediss://:")
    for dep in dev.of_type("kubernetes:apps/v1:Deployment"):
        env = {e["name"]: e for e in dep.inputs["spec"]["template"]["spec"]["containers"][0]["env"]}
        assert "value" not in env["MLAPI_REDIS_URL"]
        assert env["MLAPI_REDIS_URL"]["valueFrom"]["secretKeyRef"] == {"name": "mlapi-redis", "key": "redis-url"}
        assert AUTH_TOKEN not in json.dumps(dep.inputs)


def test_declare_deployment_probes_resources_and_restricted_context(dev: ProgramRun) -> None:
    deployments = {r.inputs["metadata"]["name"]: plain(r.inputs) for r in dev.of_type("kubernetes:apps/v1:Deployment")}
    prefixes = {"sentiment": "/project", "semantic": "/lab"}
    for name, dep in deployments.items():
        pod = dep["spec"]["template"]["spec"]
        container = pod["containers"][0]
        assert re.fullmatch(rf"{re.escape(REPOSITORY_URL)}:{name}-[\w.-]+@{DIGEST}", container["image"])
        for probe in ("startupProbe", "readinessProbe", "livenessProbe"):
            assert container[probe]["httpGet"]["path"] == f"{prefixes[name]}/health"
        env = {e["name"]: e.get("value") for e in container["env"]}
        assert env["MLAPI_PATH_PREFIX"] == prefixes[name]
        assert env["MLAPI_HOST"] == "0.0.0.0" and env["MLAPI_PORT"] == "8000"
        assert container["resources"]["requests"] == container["resources"]["limits"]
        ctx = container["securityContext"]
        assert ctx["allowPrivilegeEscalation"] is False and ctx["readOnlyRootFilesystem"] is True
        assert ctx["capabilities"] == {"drop": ["ALL"]}
        assert pod["securityContext"]["runAsNonRoot"] is True and pod["securityContext"]["runAsUser"] >= 10000
        assert pod["securityContext"]["seccompProfile"] == {"type": "RuntimeDefault"}
        assert {"name": "tmp", "mountPath": "/tmp"} in container["volumeMounts"]
        assert {c["topologyKey"] for c in pod["topologySpreadConstraints"]} >= {"topology.kubernetes.io/zone"}
        assert pod["terminationGracePeriodSeconds"] >= 30
        assert "replicas" not in dep["spec"]
    sentiment = deployments["sentiment"]["spec"]["template"]["spec"]["containers"][0]
    assert sentiment["resources"]["limits"] == {"cpu": "1000m", "memory": "1536Mi"}
    env = {e["name"]: e.get("value") for e in sentiment["env"]}
    # The service sizes its threads from the cgroup quota unless the stack says otherwise.
    assert "MLAPI_INTRA_OP_THREADS" not in env and "MLAPI_INFERENCE_WORKERS" not in env
    assert env["MLAPI_REQUEST_TIMEOUT_SECONDS"] == "30"


def test_declare_service_hpa_pdb_per_model(dev: ProgramRun) -> None:
    services = [plain(r.inputs) for r in dev.of_type("kubernetes:core/v1:Service") if not r.resource_id]
    # The model services' own Services are Flagger's; the program's are those the primary mirrors to.
    assert {s["metadata"]["name"]: s["spec"]["type"] for s in services} == {
        "sentiment-primary-shadow": "ClusterIP", "semantic-primary-shadow": "ClusterIP",
        "istio-ingressgateway-nlb": "LoadBalancer"}
    hpas = {r.inputs["metadata"]["name"]: plain(r.inputs["spec"])
            for r in dev.of_type("kubernetes:autoscaling/v2:HorizontalPodAutoscaler")}
    assert (hpas["sentiment"]["minReplicas"], hpas["sentiment"]["maxReplicas"]) == (2, 6)
    assert hpas["sentiment"]["metrics"][0]["resource"]["target"]["averageUtilization"] == 70
    # One for the canary's pods, one for the primary's.
    pdbs = {r.inputs["metadata"]["name"]: plain(r.inputs["spec"])
            for r in dev.of_type("kubernetes:policy/v1:PodDisruptionBudget")}
    assert set(pdbs) == {"sentiment", "sentiment-primary", "semantic", "semantic-primary"}
    assert pdbs["sentiment-primary"]["selector"]["matchLabels"]["app.kubernetes.io/name"] == "sentiment-primary"


def test_model_pods_get_no_service_link_variables(dev: ProgramRun) -> None:
    # Kubernetes injects `<SERVICE>_PORT`-style variables for every Service in the namespace; a Service whose
    # name starts with `mlapi` would hand the pod `MLAPI_*` variables the service refuses as unknown settings.
    deployments = [plain(r.inputs) for r in dev.of_type("kubernetes:apps/v1:Deployment")]
    assert len(deployments) == 2
    for deployment in deployments:
        assert deployment["spec"]["template"]["spec"]["enableServiceLinks"] is False


def test_declare_namespace_enforcing_restricted_pod_security(dev: ProgramRun) -> None:
    namespaces = {r.inputs["metadata"]["name"]: r.inputs["metadata"] for r in
                  dev.of_type("kubernetes:core/v1:Namespace")}
    assert namespaces["mlapi"]["labels"]["pod-security.kubernetes.io/enforce"] == "restricted"


def test_export_urls_registry_cluster_kubeconfig_redis(dev: ProgramRun) -> None:
    assert dev.outputs["service_urls"] == {"sentiment": f"http://{LB_HOST}/project/", "semantic": f"http://{LB_HOST}/lab/"}
    assert dev.outputs["repositoryUrl"] == REPOSITORY_URL
    assert dev.outputs["clusterName"] == "mlapi-dev"
    assert dev.outputs["redisEndpoint"] == REDIS_HOST
    assert dev.outputs["kubeconfig"]


def test_declare_log_groups_with_retention_before_cluster(dev: ProgramRun) -> None:
    groups = {r.inputs["name"]: plain(r.inputs) for r in dev.of_type("aws:cloudwatch/logGroup:LogGroup")}
    assert "/aws/eks/mlapi-dev/cluster" in groups
    assert all(g["retentionInDays"] == 14 for g in groups.values())
    insights = dev.one("aws:eks/addon:Addon", "cluster-container-insights")
    assert insights.inputs["addonName"] == "amazon-cloudwatch-observability"


def test_declare_nothing_of_fargate_on_eks(dev: ProgramRun) -> None:
    assert not [r for r in dev.resources if r.typ.split("/")[0] in ("aws:ecs", "aws:lb")]
