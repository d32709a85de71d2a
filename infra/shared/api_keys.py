"""The API keys file: one Secrets Manager secret per stack, delivered to the model containers on both platforms.

The stack declares the secret but never a key: it seeds it once with a keys file that holds none (one comment
line), so the first `pulumi up` comes up whole and every call is refused (401) until the operator puts the real
keys file with the AWS CLI (`aws secretsmanager put-secret-value`, docs/deploy.md); keys are in neither config
nor state. Beyond that seed the content is opaque here; the service reads it from `MLAPI_API_KEYS_FILE` (EKS) or
`MLAPI_API_KEYS` (Fargate).

EKS: External Secrets Operator copies the secret into a Kubernetes Secret every minute (`refreshInterval: 1m`),
and the pods mount that Secret as a whole directory, without `subPath`, so the kubelet swaps the file in place
on its next sync (about a minute) and the service reloads it: a rotation needs no restart (Kubernetes
"Secrets: mounted Secrets are updated automatically"; a `subPath` mount never is). ESO reads AWS with IRSA
through a namespaced SecretStore: the role is assumable only by one ServiceAccount of the app namespace, and
grants read on this one secret. (EKS Pod Identity binds a role to the pod that calls AWS, here ESO's
controller, which serves every namespace; IRSA with the SecretStore's `serviceAccountRef` keeps the grant in the
app namespace, through the OIDC provider the cluster already has.)

Fargate: an ECS `secrets` entry; the execution role may read this one secret. ECS resolves it when a task starts,
so a rotation reaches new tasks (`aws ecs update-service --force-new-deployment`).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_aws as aws
import pulumi_kubernetes as k8s

ESO_REPO = "https://charts.external-secrets.io"
ESO_NAMESPACE = "external-secrets"
K8S_SECRET = "mlapi-api-keys"
SECRET_KEY = "keys"
MOUNT_DIR = "/etc/mlapi/api-keys"
KEYS_FILE = f"{MOUNT_DIR}/{SECRET_KEY}"
VOLUME = "api-keys"
READER_SERVICE_ACCOUNT = "mlapi-api-keys-reader"
REFRESH_INTERVAL = "1m"
ENV_FILE = "MLAPI_API_KEYS_FILE"
ENV_CONTENT = "MLAPI_API_KEYS"
# A keys file with no key (the service's format ignores `#` comments): auth on, every call refused.
INITIAL_CONTENT = "# No API keys yet: every call is refused. Put the keys file: docs/deploy.md, API keys.\n"
# The operator's three pods (controller, webhook, cert-controller): requests count against the node group.
ESO_RESOURCES: dict[str, dict[str, dict[str, str]]] = {
    "controller": {"requests": {"cpu": "20m", "memory": "128Mi"}, "limits": {"cpu": "200m", "memory": "256Mi"}},
    "webhook": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"cpu": "100m", "memory": "128Mi"}},
    "certController": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"cpu": "100m", "memory": "128Mi"}},
}


def pod_volume() -> dict[str, Any]:
    """The keys volume of a model pod: the whole synced Secret, read-only to the container's group."""
    # Not optional: should the Secret be missing, the pod waits in ContainerCreating instead of starting without
    # keys (the service refuses to start on a missing keys file anyway).
    return {"name": VOLUME, "secret": {"secretName": K8S_SECRET, "defaultMode": 0o440}}


def container_mount() -> dict[str, Any]:
    """The keys mount: a directory, never a `subPath` (a subPath mount does not see rotations)."""
    return {"name": VOLUME, "mountPath": MOUNT_DIR, "readOnly": True}


def container_env() -> dict[str, Any]:
    """`MLAPI_API_KEYS_FILE` pointing at the mounted file."""
    # The name spelt out, so tests/test_settings_contract.py checks it against the server's settings.
    return {"name": "MLAPI_API_KEYS_FILE", "value": KEYS_FILE}


def ecs_secret(secret_arn: str) -> dict[str, str]:
    """The ECS container `secrets` entry that hands the keys file's content to the service as `MLAPI_API_KEYS`."""
    return {"name": "MLAPI_API_KEYS", "valueFrom": secret_arn}


def read_policy(secret_arn: str) -> str:
    """IAM policy: read this one secret, nothing else."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": ["secretsmanager:GetSecretValue", "secretsmanager:DescribeSecret"],
                    "Resource": secret_arn,
                }
            ],
        }
    )


def irsa_trust_policy(oidc_provider_arn: str, namespace: str, service_account: str) -> str:
    """Trust policy letting exactly `namespace/service_account` assume the role through the cluster's OIDC provider."""
    issuer = oidc_provider_arn.split(":oidc-provider/", 1)[1]
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Principal": {"Federated": oidc_provider_arn},
                    "Action": "sts:AssumeRoleWithWebIdentity",
                    "Condition": {
                        "StringEquals": {
                            f"{issuer}:sub": f"system:serviceaccount:{namespace}:{service_account}",
                            f"{issuer}:aud": "sts.amazonaws.com",
                        }
                    },
                }
            ],
        }
    )


@dataclass(frozen=True)
class ApiKeysSecretArgs:
    """Secret name, and the IAM roles (by name) that may read it (the Fargate task execution role)."""

    secret_name: str
    reader_roles: list[pulumi.Input[str]]
    tags: dict[str, str]


class ApiKeysSecret(pulumi.ComponentResource):
    """The Secrets Manager secret that holds the keys file: seeded with no key, filled by the operator."""

    arn: pulumi.Output[str]
    name: pulumi.Output[str]

    def __init__(self, name: str, args: ApiKeysSecretArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlapi:api_keys:ApiKeysSecret", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        secret = aws.secretsmanager.Secret(
            f"{name}-secret",
            name=args.secret_name,
            description="mlapi API keys file (hashed keys, names, rates); put with "
            "`aws secretsmanager put-secret-value`, see docs/deploy.md",
            # Immediate deletion so `pulumi destroy` then `pulumi up` can reuse the name, like the Redis secret.
            recovery_window_in_days=0,
            tags=args.tags,
            opts=child,
        )
        # Written once at creation. The operator's `put-secret-value` adds newer versions and moves AWSCURRENT to
        # them; this version keeps its id, so later `pulumi up`s leave the keys alone.
        seed = aws.secretsmanager.SecretVersion(
            f"{name}-initial",
            secret_id=secret.id,
            secret_string=INITIAL_CONTENT,
            opts=pulumi.ResourceOptions(parent=self, ignore_changes=["secretString", "versionStages"]),
        )
        for index, role in enumerate(args.reader_roles):
            aws.iam.RolePolicy(
                f"{name}-reader-{index}", role=role, policy=secret.arn.apply(read_policy), opts=child
            )
        # Readers (ECS tasks, the ExternalSecret) wait for the seed, so they never meet a secret without a value.
        self.arn = pulumi.Output.all(secret.arn, seed.id).apply(lambda v: v[0])
        self.name = pulumi.Output.all(secret.name, seed.id).apply(lambda v: v[0])
        self.register_outputs({"arn": self.arn, "name": self.name})


@dataclass(frozen=True)
class ApiKeysSyncArgs:
    """The secret to copy, where from (region, the cluster's OIDC provider) and where to (the app namespace)."""

    eso_chart_version: str
    secret_arn: pulumi.Input[str]
    secret_name: pulumi.Input[str]
    region: str
    oidc_provider_arn: pulumi.Input[str]
    app_namespace: pulumi.Input[str]
    provider: k8s.Provider
    depends_on: list[pulumi.Resource]
    tags: dict[str, str]


class ApiKeysSync(pulumi.ComponentResource):
    """External Secrets Operator and the SecretStore/ExternalSecret that keep the `mlapi-api-keys` Secret current."""

    secret_name: str
    ready: list[pulumi.Resource]

    def __init__(self, name: str, args: ApiKeysSyncArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlapi:api_keys:ApiKeysSync", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=args.depends_on)

        role = aws.iam.Role(
            f"{name}-reader-role",
            description="Read the mlapi API keys secret, for External Secrets Operator in the app namespace",
            assume_role_policy=pulumi.Output.all(args.oidc_provider_arn, args.app_namespace).apply(
                lambda v: irsa_trust_policy(v[0], v[1], READER_SERVICE_ACCOUNT)
            ),
            tags=args.tags,
            opts=child,
        )
        aws.iam.RolePolicy(
            f"{name}-reader-policy",
            role=role.id,
            policy=pulumi.Output.from_input(args.secret_arn).apply(read_policy),
            opts=child,
        )
        namespace = k8s.core.v1.Namespace(
            f"{name}-eso-namespace",
            metadata={"name": ESO_NAMESPACE, "labels": {"pod-security.kubernetes.io/enforce": "restricted"}},
            opts=k8s_opts,
        )
        operator = k8s.helm.v3.Release(
            f"{name}-eso",
            name="external-secrets",
            chart="external-secrets",
            version=args.eso_chart_version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=ESO_REPO),
            namespace=namespace.metadata["name"],
            values={
                "installCRDs": True,
                "resources": ESO_RESOURCES["controller"],
                "webhook": {"resources": ESO_RESOURCES["webhook"]},
                "certController": {"resources": ESO_RESOURCES["certController"]},
            },
            atomic=True,
            timeout=600,
            opts=k8s_opts,
        )
        reader = k8s.core.v1.ServiceAccount(
            f"{name}-reader",
            metadata={
                "name": READER_SERVICE_ACCOUNT,
                "namespace": args.app_namespace,
                "annotations": {"eks.amazonaws.com/role-arn": role.arn},
            },
            # Only ESO requests tokens for it (TokenRequest); no pod runs as it.
            automount_service_account_token=False,
            opts=k8s_opts,
        )
        crd_ready = pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[operator, reader]))
        store = k8s.apiextensions.CustomResource(
            f"{name}-store",
            api_version="external-secrets.io/v1",
            kind="SecretStore",
            metadata={"name": "aws-secrets-manager", "namespace": args.app_namespace},
            spec={
                "provider": {
                    "aws": {
                        "service": "SecretsManager",
                        "region": args.region,
                        "auth": {"jwt": {"serviceAccountRef": {"name": READER_SERVICE_ACCOUNT}}},
                    }
                }
            },
            opts=crd_ready,
        )
        synced = k8s.apiextensions.CustomResource(
            f"{name}-external-secret",
            api_version="external-secrets.io/v1",
            kind="ExternalSecret",
            metadata={
                "name": K8S_SECRET,
                "namespace": args.app_namespace,
                # Pulumi waits until ESO reports the Secret synced, so what depends on `ready` finds it there.
                "annotations": {"pulumi.com/waitFor": "condition=Ready"},
            },
            spec={
                "refreshInterval": REFRESH_INTERVAL,
                "secretStoreRef": {"kind": "SecretStore", "name": "aws-secrets-manager"},
                "target": {"name": K8S_SECRET, "creationPolicy": "Owner"},
                "data": [{"secretKey": SECRET_KEY, "remoteRef": {"key": args.secret_name}}],
            },
            opts=pulumi.ResourceOptions.merge(crd_ready, pulumi.ResourceOptions(depends_on=[store])),
        )
        self.secret_name = K8S_SECRET
        self.ready = [synced]
        self.register_outputs({"secret_name": self.secret_name})
