"""Who can reach and use the cluster: access entries for people, the deploy role and the read-only preview role;
a public endpoint limited to configured CIDRs, never the whole internet."""

from __future__ import annotations

from typing import Any

import pytest
import yaml
from infra_mocks import plain
from infra_program import ACCOUNT_ID, REPO, ProgramRun, run_program, stack_config

from infra.config import ConfigError, build_config
from infra.eks.access import ADMIN_POLICY, VIEW_POLICY

DEPLOY = f"arn:aws:iam::{ACCOUNT_ID}:role/mlapi-deploy"
PREVIEW = f"arn:aws:iam::{ACCOUNT_ID}:role/mlapi-preview"
ADMIN = f"arn:aws:iam::{ACCOUNT_ID}:role/platform-admin"


def _grants(run: ProgramRun) -> dict[str, str]:
    entries = {plain(r.inputs)["principalArn"] for r in run.of_type("aws:eks/accessEntry:AccessEntry")}
    policies = {plain(r.inputs)["principalArn"]: plain(r.inputs)
                for r in run.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")}
    assert set(policies) == entries
    assert all(p["accessScope"] == {"type": "cluster"} for p in policies.values())
    return {arn: p["policyArn"] for arn, p in policies.items()}


def test_deploy_and_admins_get_cluster_admin_and_preview_gets_view(dev: ProgramRun) -> None:
    assert _grants(dev) == {DEPLOY: ADMIN_POLICY, ADMIN: ADMIN_POLICY, PREVIEW: VIEW_POLICY}
    assert all(plain(r.inputs)["clusterName"] == "mlapi-dev" for r in dev.of_type("aws:eks/accessEntry:AccessEntry"))


def test_kubernetes_provider_waits_for_the_access_entries(dev: ProgramRun) -> None:
    # Otherwise the first Kubernetes call of a CI role can race its own access entry and get Unauthorized.
    provider = dev.one("pulumi:providers:kubernetes")
    assert provider.name == "cluster-k8s"
    associations = dev.of_type("aws:eks/accessPolicyAssociation:AccessPolicyAssociation")
    assert associations and all(a.name.startswith("cluster-access-") for a in associations)


def test_committed_stack_file_does_not_open_the_api_to_the_internet() -> None:
    for stack in ("dev", "fargate"):
        raw = yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())["config"]
        assert "0.0.0.0/0" not in str(raw.get("mlapi:apiPublicAccessCidrs", []))


def test_committed_dev_stack_needs_the_operator_to_say_who_may_reach_it() -> None:
    assert stack_config("dev")["mlapi:apiPublicAccessCidrs"] == "[]"  # the default, nothing committed
    with pytest.raises(Exception, match=r"mlapi:apiPublicAccessCidrs: is required"):
        run_program("dev", {"mlapi:apiPublicAccessCidrs": "[]"})


def _build(raw: dict[str, Any]) -> Any:
    return build_config(raw, project="mlapi", stack="dev", region="us-east-1")


@pytest.mark.parametrize(
    ("change", "key"),
    [
        ({"apiPublicAccessCidrs": ["0.0.0.0/0"]}, "mlapi:apiPublicAccessCidrs[0]"),
        ({"apiPublicAccessCidrs": ["10.0.0.0/8", "::/0"]}, "mlapi:apiPublicAccessCidrs[1]"),
        ({"apiPublicAccess": False}, "mlapi:apiPublicAccessCidrs"),
        ({"deployRoleArn": "mlapi-deploy"}, "mlapi:deployRoleArn"),
        ({"previewRoleArn": DEPLOY}, "mlapi:previewRoleArn"),
        ({"clusterAdminArns": [ADMIN, "arn:aws:iam::1:role/x"]}, "mlapi:clusterAdminArns[1]"),
    ],
)
def test_access_config_rejects_bad_values_naming_key(dev_raw: dict[str, Any], change: dict[str, Any],
                                                     key: str) -> None:
    with pytest.raises(ConfigError) as err:
        _build({**dev_raw, **change})
    assert err.value.key == key


def test_private_endpoint_needs_no_cidrs() -> None:
    run = run_program("dev", {"mlapi:apiPublicAccess": "false", "mlapi:apiPublicAccessCidrs": "[]"})
    eks = plain(run.one("eks:index:Cluster").inputs)
    assert eks["endpointPublicAccess"] is False and eks["endpointPrivateAccess"] is True
    assert "publicAccessCidrs" not in eks
