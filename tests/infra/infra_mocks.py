"""Pulumi mocks that record every resource the program declares and answer like the real providers would.

Remote components (awsx VPC, pulumi-eks) register as one opaque resource under mocks, so their outputs are
supplied here; for plain resources the inputs are echoed back with the computed attributes the program reads.

With `preview=True` the mocks answer as the engine does for a create during `pulumi preview`: the inputs come
back (the provider's Check), every computed attribute and the ID stay unknown, and remote components return
nothing known at all. A program that builds a name, a policy or a URL from such a value without `apply` crashes
or renders garbage here, exactly as it would in a first real preview.
"""

from __future__ import annotations

import json
import threading
from dataclasses import dataclass, field
from typing import Any

import pulumi

ACCOUNT = "123456789012"
REGION = "us-east-1"
REPOSITORY_URL = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/mlapi-test"
NODE_SG = "sg-eks-cluster"
LB_HOST = "a1b2c3-1234567890.elb.us-east-1.amazonaws.com"
REDIS_HOST = "master.mlapi-cache.abc123.use1.cache.amazonaws.com"
# Contains every special ElastiCache allows, to prove the URL encodes them.
AUTH_TOKEN = "Ab1!&#$^<>-Cd2Ef3Gh4Ij5Kl6Mn7Op8Qr9St0Uv1Wx2Yz3"
DIGEST = "sha256:" + "ab" * 32


@dataclass
class Recorded:
    """One resource as the program declared it."""

    typ: str
    name: str
    inputs: dict[str, Any]
    provider: str
    custom: bool
    resource_id: str | None
    # Filled in by the monitor: the URN, the parent's URN, and every URN the engine must create first
    # (`depends_on` and the resources whose outputs flow into the inputs).
    urn: str = ""
    parent: str = ""
    dependencies: tuple[str, ...] = ()


@dataclass
class RecordingMocks(pulumi.runtime.Mocks):
    """Records resources and invokes; see module docstring for the outputs it supplies."""

    preview: bool = False
    resources: list[Recorded] = field(default_factory=list)
    calls: list[tuple[str, dict[str, Any]]] = field(default_factory=list)

    def new_resource(self, args: pulumi.runtime.MockResourceArgs) -> tuple[str | None, dict[str, Any]]:
        inputs = dict(args.inputs)
        self.resources.append(
            Recorded(args.typ, args.name, inputs, args.provider or "", bool(args.custom), args.resource_id)
        )
        if self.preview:
            # Reads of existing objects and component resources aside, nothing computed is known yet.
            if args.typ.split(":")[0] in ("awsx", "eks"):
                return "", {}
            return (args.resource_id or ""), inputs
        outputs = self._outputs(args.typ, args.name, inputs)
        # Remote components' outputs are typed differently from their inputs: echoing inputs breaks them.
        state = outputs if args.typ.split(":")[0] in ("awsx", "eks") else {**inputs, **outputs}
        if args.typ.startswith("aws:") and "arn" not in state:
            state["arn"] = f"arn:aws:{args.typ.split(':')[1].split('/')[0]}:{REGION}:{ACCOUNT}:{args.name}"
        return (args.resource_id or f"{args.name}-id"), state

    def call(self, args: pulumi.runtime.MockCallArgs) -> dict[str, Any]:
        self.calls.append((args.token, dict(args.args)))
        if args.token == "aws:ecr/getAuthorizationToken:getAuthorizationToken":
            return {"userName": "AWS", "password": "ecr-password", "authorizationToken": "dG9rZW4=",
                    "proxyEndpoint": f"https://{REPOSITORY_URL.split('/')[0]}", "expiresAt": "", "id": ACCOUNT}
        if args.token == "aws:index/getCallerIdentity:getCallerIdentity":
            return {"accountId": ACCOUNT, "arn": f"arn:aws:iam::{ACCOUNT}:role/deploy", "id": ACCOUNT,
                    "userId": "AROAEXAMPLE"}
        return {}

    @staticmethod
    def _outputs(typ: str, name: str, inputs: dict[str, Any]) -> dict[str, Any]:
        if typ == "awsx:ec2:Vpc":
            return {"vpcId": "vpc-123", "publicSubnetIds": ["subnet-pub-a", "subnet-pub-b"],
                    "privateSubnetIds": ["subnet-priv-a", "subnet-priv-b"]}
        if typ == "eks:index:Cluster":
            kubeconfig = json.dumps({"apiVersion": "v1", "kind": "Config", "clusters": [], "users": []})
            return {"kubeconfigJson": kubeconfig, "kubeconfig": json.loads(kubeconfig),
                    "nodeSecurityGroupId": "", "clusterSecurityGroupId": NODE_SG,
                    "autoModeNodeRoleName": "mlapi-dev-eks-auto-mode-node-role",
                    "oidcProviderArn": f"arn:aws:iam::{ACCOUNT}:oidc-provider/oidc.eks.{REGION}.amazonaws.com/id/X",
                    "oidcProviderUrl": "", "oidcIssuer": "", "clusterIngressRuleId": ""}
        if typ == "aws:ecr/repository:Repository":
            return {"repositoryUrl": REPOSITORY_URL, "registryId": ACCOUNT}
        if typ == "docker-build:index:Image":
            tag = inputs.get("tags", [""])[0]
            return {"ref": f"{tag}@{DIGEST}", "digest": DIGEST}
        if typ == "random:index/randomPassword:RandomPassword":
            return {"result": AUTH_TOKEN}
        if typ == "aws:elasticache/replicationGroup:ReplicationGroup":
            return {"primaryEndpointAddress": REDIS_HOST, "port": 6379}
        if typ == "kubernetes:core/v1:Service":
            return {"status": {"loadBalancer": {"ingress": [{"hostname": LB_HOST}]}}}
        if typ == "aws:lb/loadBalancer:LoadBalancer":
            return {"dnsName": "mlapi-test-123.us-east-1.elb.amazonaws.com",
                    "arnSuffix": f"app/{inputs.get('name', name)}/abc"}
        if typ == "aws:lb/targetGroup:TargetGroup":
            return {"arnSuffix": f"targetgroup/{inputs.get('name', name)}/def"}
        if typ in ("aws:ecs/cluster:Cluster", "aws:ecs/service:Service", "aws:ec2/securityGroup:SecurityGroup"):
            return {"name": inputs.get("name", name)}
        return {}


# The marker Pulumi puts on secret values when it serializes them (pulumi.runtime.rpc._special_secret_sig).
SECRET_SIG = "1b47061264138c4ac30d75fd1eb44270"
SIG_KEY = "4dabf18193072939515e22adb298388d"


def is_secret(value: Any) -> bool:
    """Whether a recorded input value was a Pulumi secret."""
    return isinstance(value, dict) and value.get(SIG_KEY) == SECRET_SIG


def plain(value: Any) -> Any:
    """A recorded value as the provider would send it: secrets unwrapped, whole floats back to ints."""
    if is_secret(value):
        return plain(value["value"])
    if isinstance(value, dict):
        return {k: plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


class NoReferencesMonitor(pulumi.runtime.mocks.MockMonitor):
    """The stock mock monitor, minus resource references.

    With references on, inputs that hold a resource (pulumi-eks `ManagedNodeGroup(cluster=...)`) are rehydrated
    inside the monitor's worker thread, whose futures belong to another event loop: the run then hangs or fails
    with "attached to a different loop" now and then. Without them the SDK sends the URN or ID instead.
    """

    def __init__(self, mocks: RecordingMocks) -> None:
        super().__init__(mocks)
        self._recording = mocks
        # Registrations arrive from the SDK's worker threads; one at a time, so each URN lands on its record.
        self._lock = threading.Lock()

    def make_urn(self, parent: str, type_: str, name: str) -> str:
        """The URN as the engine builds it: the parent's whole type chain, the root stack left out (pulumi/pulumi
        sdk/go/common/resource/urn.go, NewURN). The stock mock keeps only the parent's own type."""
        parent_type = parent.split("::")[2] if parent else ""
        if parent_type and parent_type != "pulumi:pulumi:Stack":
            type_ = f"{parent_type}${type_}"
        return "urn:pulumi:" + "::".join([pulumi.get_stack(), pulumi.get_project(), type_, name])

    def RegisterResource(self, request: Any) -> Any:
        with self._lock:
            before = len(self._recording.resources)
            response = super().RegisterResource(request)
            if len(self._recording.resources) > before:
                recorded = self._recording.resources[-1]
                recorded.urn = response.urn
                recorded.parent = request.parent
                recorded.dependencies = tuple(sorted(
                    {*request.dependencies, *(u for deps in request.propertyDependencies.values() for u in deps.urns)}
                ))
            return response

    def ReadResource(self, request: Any) -> Any:
        with self._lock:
            before = len(self._recording.resources)
            response = super().ReadResource(request)
            if len(self._recording.resources) > before:
                recorded = self._recording.resources[-1]
                recorded.urn = response.urn
                recorded.parent = request.parent
                recorded.dependencies = tuple(sorted(request.dependencies))
            return response

    def SupportsFeature(self, request: Any) -> Any:
        supported = request.id not in ("outputValues", "resourceReferences")
        return type("SupportsFeatureResponse", (object,), {"hasSupport": supported})

    def GetDeploymentInfo(self, request: Any) -> Any:
        from pulumi.runtime.proto import resource_pb2

        info = super().GetDeploymentInfo(request)
        features = [f for f in info.supportedFeatures if f != resource_pb2.RESOURCE_MONITOR_FEATURE_RESOURCE_REFERENCES]
        return resource_pb2.DeploymentInfo(supportedFeatures=features)
