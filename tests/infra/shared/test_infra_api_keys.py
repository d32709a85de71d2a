"""The API keys file: a Secrets Manager secret the stack declares but never fills, synced on EKS by External
Secrets Operator with IRSA, mounted without subPath; on Fargate an ECS secret the execution role alone may read."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from component_harness import by_name, declare, manifest, provider
from infra_mocks import ACCOUNT, REGION, Recorded, plain

from infra.shared.api_keys import (
    ENV_CONTENT,
    ENV_FILE,
    INITIAL_CONTENT,
    K8S_SECRET,
    KEYS_FILE,
    MOUNT_DIR,
    ApiKeysSecret,
    ApiKeysSecretArgs,
    ApiKeysSync,
    ApiKeysSyncArgs,
    container_env,
    container_mount,
    ecs_secret,
    pod_volume,
)

OIDC = f"arn:aws:iam::{ACCOUNT}:oidc-provider/oidc.eks.{REGION}.amazonaws.com/id/ABC123"
TAGS = {"stack": "dev", "service": "mlapi", "managed-by": "pulumi"}


@pytest.fixture(scope="module")
def eks() -> dict[str, Recorded]:
    def build() -> dict[str, Any]:
        secret = ApiKeysSecret("api-keys", ApiKeysSecretArgs(secret_name="mlapi-dev/api-keys", reader_roles=[],
                                                             tags=TAGS))
        ApiKeysSync(
            "api-keys-sync",
            ApiKeysSyncArgs(eso_chart_version="2.14.0", secret_arn=secret.arn, secret_name=secret.name,
                            region=REGION, oidc_provider_arn=OIDC, app_namespace="mlapi", provider=provider(),
                            depends_on=[], tags=TAGS),
        )
        return {"arn": secret.arn}

    return by_name(declare(build)[0])


@pytest.fixture(scope="module")
def fargate() -> dict[str, Recorded]:
    def build() -> dict[str, Any]:
        ApiKeysSecret("api-keys", ApiKeysSecretArgs(secret_name="mlapi-fargate/api-keys",
                                                    reader_roles=["execution-role-id"], tags=TAGS))
        return {}

    return by_name(declare(build)[0])


def test_secret_seeded_with_a_keys_file_that_holds_no_key(eks: dict[str, Recorded]) -> None:
    secret = plain(eks["api-keys-secret"].inputs)
    assert secret["name"] == "mlapi-dev/api-keys"
    assert secret["tags"] == TAGS
    [seed] = [r for r in eks.values() if r.typ == "aws:secretsmanager/secretVersion:SecretVersion"]
    assert seed.inputs["secretId"] == "api-keys-secret-id"
    content = plain(seed.inputs["secretString"])
    assert content == INITIAL_CONTENT
    # Only comments: the service turns auth on with an empty key table (every call refused).
    assert all(line.startswith("#") for line in content.splitlines() if line.strip())


def test_fargate_execution_role_reads_only_this_secret(fargate: dict[str, Recorded]) -> None:
    policy = plain(fargate["api-keys-reader-0"].inputs)
    assert policy["role"] == "execution-role-id"
    statement = json.loads(policy["policy"])["Statement"]
    assert statement == [{"Effect": "Allow", "Action": ["secretsmanager:GetSecretValue",
                                                        "secretsmanager:DescribeSecret"],
                          "Resource": f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:api-keys-secret"}]


def test_ecs_secret_entry_hands_content_as_mlapi_api_keys() -> None:
    assert ecs_secret("arn:aws:secretsmanager:x") == {"name": ENV_CONTENT, "valueFrom": "arn:aws:secretsmanager:x"}
    assert ENV_CONTENT == "MLAPI_API_KEYS"


def test_irsa_role_assumable_only_by_reader_service_account(eks: dict[str, Recorded]) -> None:
    trust = json.loads(plain(eks["api-keys-sync-reader-role"].inputs)["assumeRolePolicy"])["Statement"][0]
    issuer = "oidc.eks.us-east-1.amazonaws.com/id/ABC123"
    assert trust["Principal"] == {"Federated": OIDC}
    assert trust["Action"] == "sts:AssumeRoleWithWebIdentity"
    assert trust["Condition"]["StringEquals"] == {
        f"{issuer}:sub": "system:serviceaccount:mlapi:mlapi-api-keys-reader",
        f"{issuer}:aud": "sts.amazonaws.com",
    }
    policy = json.loads(plain(eks["api-keys-sync-reader-policy"].inputs)["policy"])["Statement"]
    assert [s["Resource"] for s in policy] == [f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:api-keys-secret"]
    account = manifest(eks["api-keys-sync-reader"])
    assert account["metadata"]["annotations"] == {
        "eks.amazonaws.com/role-arn": f"arn:aws:iam:{REGION}:{ACCOUNT}:api-keys-sync-reader-role"
    }
    assert account["automountServiceAccountToken"] is False


def test_external_secret_refreshes_every_minute_into_the_mounted_secret(eks: dict[str, Recorded]) -> None:
    store = manifest(eks["api-keys-sync-store"])
    assert store["spec"]["provider"]["aws"] == {
        "service": "SecretsManager", "region": REGION,
        "auth": {"jwt": {"serviceAccountRef": {"name": "mlapi-api-keys-reader"}}},
    }
    external = manifest(eks["api-keys-sync-external-secret"])
    assert external["apiVersion"] == "external-secrets.io/v1"
    spec = external["spec"]
    assert spec["refreshInterval"] == "1m"
    assert spec["secretStoreRef"] == {"kind": "SecretStore", "name": store["metadata"]["name"]}
    assert spec["target"]["name"] == K8S_SECRET == pod_volume()["secret"]["secretName"]
    assert spec["data"] == [{"secretKey": "keys", "remoteRef": {"key": "mlapi-dev/api-keys"}}]


def test_operator_chart_pinned_with_crds_and_requests(eks: dict[str, Recorded]) -> None:
    release = plain(eks["api-keys-sync-eso"].inputs)
    assert (release["chart"], release["version"]) == ("external-secrets", "2.14.0")
    assert release["repositoryOpts"]["repo"] == "https://charts.external-secrets.io"
    values = release["values"]
    assert values["installCRDs"] is True
    for resources in (values["resources"], values["webhook"]["resources"], values["certController"]["resources"]):
        assert set(resources["requests"]) == set(resources["limits"]) == {"cpu", "memory"}


def test_mount_is_a_directory_without_subpath_so_rotations_arrive() -> None:
    mount = container_mount()
    assert "subPath" not in mount and "subPathExpr" not in mount
    assert mount["mountPath"] == MOUNT_DIR and mount["readOnly"] is True
    assert KEYS_FILE.startswith(MOUNT_DIR + "/")
    assert container_env() == {"name": ENV_FILE, "value": KEYS_FILE}
    assert pod_volume()["name"] == mount["name"]


def test_seed_keeps_the_service_closed_on_both_platforms(tmp_path: Path) -> None:
    from mlapi.settings import Settings

    keys_file = tmp_path / "keys"
    keys_file.write_text(INITIAL_CONTENT)
    for settings in (Settings(api_keys_file=keys_file), Settings(api_keys=INITIAL_CONTENT)):  # EKS, Fargate
        assert settings.auth_enabled  # keys required, and the table is empty: every model call refused
    from mlapi.auth.keys import parse_keys

    assert parse_keys(INITIAL_CONTENT) == []
