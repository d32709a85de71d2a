"""docs/deploy.md matches the program: its config keys exist, every key is documented, its outputs are exported,
and the versions it names are the pinned ones."""

from __future__ import annotations

import re

import pytest
from infra_program import REPO, ProgramRun

from infra import versions
from infra.config import DEFAULTS, SECRET_CONFIG_KEYS, SERVICE_DEFAULTS

DOC = (REPO / "docs" / "deploy.md").read_text()


def test_every_config_key_the_doc_names_exists_and_every_key_is_documented() -> None:
    named = set(re.findall(r"mlapi:([A-Za-z]+)", DOC))
    assert named <= {*DEFAULTS, "services", *SECRET_CONFIG_KEYS}
    table = {m for m in re.findall(r"^\| `mlapi:([A-Za-z]+)`", DOC, flags=re.M)}
    assert {*DEFAULTS, "services", *SECRET_CONFIG_KEYS} <= table
    for field in (*SERVICE_DEFAULTS, "modelId", "modelRevision", "candidate"):
        assert f"`{field}`" in DOC, field


@pytest.mark.parametrize("stack", ["dev", "fargate"])
def test_outputs_the_doc_reads_are_exported(stack: str, request: pytest.FixtureRequest) -> None:
    run: ProgramRun = request.getfixturevalue(stack)
    read = set(re.findall(r"pulumi stack output (\w+)", DOC))
    assert "service_urls" in read
    exported = set(run.outputs)
    platform_only = ({"kubeconfig", "clusterName", "grafanaAdminPassword"} if stack == "fargate"
                     else {"ecsClusterName", "dashboardName"})
    assert read - platform_only <= exported


def test_doc_names_the_pinned_versions() -> None:
    for pin in (versions.KUBERNETES_VERSION, versions.ISTIO_VERSION, versions.METRICS_SERVER_CHART,
                versions.KUBE_PROMETHEUS_STACK_CHART, versions.EXTERNAL_SECRETS_CHART, versions.FLAGGER_CHART):
        assert pin in DOC, pin
    assert versions.EKS_STANDARD_SUPPORT_ENDS[versions.KUBERNETES_VERSION].isoformat() in DOC


def test_doc_creates_keys_with_the_command_the_install_provides() -> None:
    # `pulumi install` puts the package into .venv (infra/requirements.txt); nothing puts `mlapi` on PATH.
    assert "..[infra]" in (REPO / "infra" / "requirements.txt").read_text()
    commands = re.findall(r"^\S*mlapi keys create", DOC, flags=re.M)
    assert commands and all(c.startswith(".venv/bin/") for c in commands)
    assert "MLAPI_CI_API_KEY" in DOC
