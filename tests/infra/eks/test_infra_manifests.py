"""The Kubernetes objects of the `dev` stack, rendered to manifests, pass kubernetes-validate and checkov.

The program's objects are taken from the mocked run (what the Kubernetes provider would apply), so these checks
see exactly what `pulumi up` sends. The NodePool is checked against Karpenter's published v1 schema (crds/);
Istio's Gateway and VirtualService and Auto Mode's NodeClass (whose CRD EKS installs but does not publish) have
no schema here; their shape is asserted in test_infra_dev_stack.py.
"""

from __future__ import annotations

import json
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from infra_mocks import plain
from infra_program import ProgramRun
from test_infra_addon_manifests import CUSTOM_KINDS, validate_spec

# Flagger's kinds, checked against the CRDs of the pinned Flagger release (crds/).
FLAGGER_KINDS = {"Canary", "MetricTemplate"}
CRD_KINDS = {"Gateway", "VirtualService", "NodePool", "NodeClass", *CUSTOM_KINDS, *FLAGGER_KINDS}
# Every skipped check and why it does not apply; anything else failing fails the test.
CHECKOV_SKIPS = {
    "CKV_K8S_35": "the service reads MLAPI_REDIS_URL from its environment; the value comes from a Secret by "
    "secretKeyRef and never appears in the manifest",
}


@pytest.fixture(scope="session")
def manifests(dev: ProgramRun, tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    """Plain Kubernetes objects (not Helm releases, not reads of existing objects) keyed by resource name."""
    out: dict[str, dict[str, Any]] = {}
    for res in dev.resources:
        if not res.typ.startswith("kubernetes:") or res.typ.startswith("kubernetes:helm.sh") or res.resource_id:
            continue
        out[res.name] = {k: v for k, v in plain(res.inputs).items() if k not in ("compat",)}
    return out


@pytest.fixture(scope="session")
def manifest_dir(manifests: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("manifests")
    for name, obj in manifests.items():
        if obj["kind"] == "Secret":  # the rendered value is a mock token, but keep secrets off disk anyway
            obj = {**obj, "stringData": {k: "redacted" for k in obj.get("stringData", {})}}
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(obj, sort_keys=False))
    return directory


@pytest.fixture(scope="session")
def checkov_report(manifest_dir: Path, tool) -> dict[str, Any]:  # type: ignore[no-untyped-def]
    """One checkov run over all manifests (it is slow to start; never run it per test)."""
    result = subprocess.run(
        [tool("checkov"), "-d", str(manifest_dir), "--framework", "kubernetes", "--output", "json",
         "--compact", "--skip-download", "--skip-check", ",".join(CHECKOV_SKIPS)],
        capture_output=True, text=True, timeout=300, check=False,
    )
    assert result.stdout, result.stderr
    report = json.loads(result.stdout)
    return report[0] if isinstance(report, list) else report


def test_render_every_kind_the_stack_needs(manifests: dict[str, dict[str, Any]]) -> None:
    kinds = sorted({m["kind"] for m in manifests.values()})
    assert kinds == ["AuthorizationPolicy", "Canary", "ConfigMap", "Deployment", "ExternalSecret", "Gateway",
                     "HorizontalPodAutoscaler", "MetricTemplate", "Namespace", "NetworkPolicy", "NodeClass", "NodePool",
                     "PodDisruptionBudget", "PodMonitor", "PrometheusRule", "Secret", "SecretStore", "Service",
                     "ServiceAccount", "VirtualService"]


def test_validate_custom_kinds_against_their_crd_schema(manifests: dict[str, dict[str, Any]]) -> None:
    kinds = CUSTOM_KINDS | FLAGGER_KINDS
    checked = {obj["kind"] for obj in manifests.values() if obj["kind"] in kinds}
    for obj in manifests.values():
        if obj["kind"] in kinds:
            validate_spec(obj)
    # EnvoyFilter only with mlapi:edgeRateLimit; the rest are always there.
    assert checked == kinds - {"EnvoyFilter"}


def test_node_pool_validates_against_the_karpenter_v1_schema(manifests: dict[str, dict[str, Any]]) -> None:
    (pool,) = [obj for obj in manifests.values() if obj["kind"] == "NodePool"]
    validate_spec(pool)
    broken = json.loads(json.dumps(pool))
    broken["spec"]["disruption"]["consolidationPolicy"] = "Sometimes"
    with pytest.raises(jsonschema.ValidationError):
        validate_spec(broken)


def test_validate_manifests_against_pinned_kubernetes_version(dev: ProgramRun,
                                                              manifests: dict[str, dict[str, Any]]) -> None:
    version = dev.config["mlapi:kubernetesVersion"]  # "1.35": validate against the 1.35.0 schemas
    checked = 0
    for obj in manifests.values():
        if obj["kind"] in CRD_KINDS:
            continue
        kubernetes_validate.validate(obj, f"{version}.0", strict=True)
        checked += 1
    assert checked >= 14


def test_validate_rejects_a_broken_deployment(manifests: dict[str, dict[str, Any]]) -> None:
    broken = json.loads(json.dumps(manifests["workloads-sentiment-deployment"]))
    broken["spec"]["template"]["spec"]["containers"][0]["resources"]["limits"]["cpu"] = {"not": "a quantity"}
    with pytest.raises(kubernetes_validate.ValidationError):
        kubernetes_validate.validate(broken, "1.35.0", strict=True)


def test_checkov_passes_with_only_explained_skips(checkov_report: dict[str, Any]) -> None:
    summary = checkov_report["summary"]
    failed = [(c["check_id"], c["resource"]) for c in checkov_report["results"].get("failed_checks", [])]
    assert failed == []
    assert summary["passed"] >= 50
    assert summary["parsing_errors"] == 0


def test_checkov_covers_security_checks_on_deployments(checkov_report: dict[str, Any]) -> None:
    passed = {c["check_id"] for c in checkov_report["results"]["passed_checks"]}
    assert {"CKV_K8S_8", "CKV_K8S_9", "CKV_K8S_20", "CKV_K8S_22", "CKV_K8S_23", "CKV_K8S_28", "CKV_K8S_31",
            "CKV_K8S_37", "CKV_K8S_38", "CKV_K8S_40", "CKV_K8S_43"} <= passed
