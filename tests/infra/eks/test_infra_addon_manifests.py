"""The Kubernetes objects of the monitoring, API-keys and edge components, rendered as the provider would apply
them, pass kubernetes-validate (built-in kinds), their CRDs' schemas (custom kinds), promtool and checkov.

kubernetes-validate knows no CRD, so PodMonitor, PrometheusRule, SecretStore, ExternalSecret, EnvoyFilter and
AuthorizationPolicy are checked against the `openAPIV3Schema` of the CRD the pinned chart installs, kept in
tests/infra/eks/crds/ (see README.md there for where each comes from). CEL `x-kubernetes-validations` are not
evaluated, and an EnvoyFilter's patch `value` is free-form in its CRD (Envoy checks it when istiod pushes it).
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path
from typing import Any

import jsonschema
import kubernetes_validate
import pytest
import yaml
from component_harness import declare, manifest, provider
from infra_program import stack_config
from test_infra_api_keys import OIDC
from test_infra_monitoring import ALERTS, DASHBOARD, TARGETS

from infra.eks.monitoring import Monitoring, MonitoringArgs
from infra.shared.api_keys import ApiKeysSecret, ApiKeysSecretArgs, ApiKeysSync, ApiKeysSyncArgs
from infra.shared.edge import GatewayEdge, GatewayEdgeArgs

CRD_DIR = Path(__file__).resolve().parent / "crds"
CUSTOM_KINDS = {"PodMonitor", "PrometheusRule", "SecretStore", "ExternalSecret", "EnvoyFilter", "AuthorizationPolicy"}
CHECKOV_SKIPS: dict[str, str] = {}


def crd_schema(obj: dict[str, Any]) -> dict[str, Any]:
    group, version = obj["apiVersion"].split("/")
    return json.loads((CRD_DIR / f"{group}_{version}_{obj['kind']}.json").read_text())


def validate_spec(obj: dict[str, Any]) -> None:
    """Validate `spec` against the CRD. The schema itself is not meta-checked: some CRD patterns are Go regexes
    (`^(?i)...`) that Python's `re` only rejects if a value for that field is present."""
    jsonschema.Draft7Validator(crd_schema(obj)["properties"]["spec"]).validate(obj["spec"])


@pytest.fixture(scope="module")
def objects(tmp_path_factory: pytest.TempPathFactory) -> dict[str, dict[str, Any]]:
    directory = tmp_path_factory.mktemp("addons")
    (directory / "alerts.yaml").write_text(yaml.safe_dump(ALERTS))
    (directory / "mlapi.json").write_text(json.dumps(DASHBOARD))

    def build() -> dict[str, Any]:
        k8s = provider()
        Monitoring("monitoring", MonitoringArgs(
            chart_version="88.5.3", alerts_file=directory / "alerts.yaml", dashboard_file=directory / "mlapi.json",
            targets=TARGETS, app_namespace="mlapi", app_pod_selector={"app.kubernetes.io/part-of": "mlapi"},
            app_port=8000, provider=k8s, depends_on=[]))
        secret = ApiKeysSecret("api-keys", ApiKeysSecretArgs(secret_name="mlapi-dev/api-keys", reader_roles=[],
                                                             tags={}))
        ApiKeysSync("api-keys-sync", ApiKeysSyncArgs(
            eso_chart_version="2.14.0", secret_arn=secret.arn, secret_name=secret.name, region="us-east-1",
            oidc_provider_arn=OIDC, app_namespace="mlapi", provider=k8s, depends_on=[], tags={}))
        GatewayEdge("edge", GatewayEdgeArgs(gateway_namespace="istio-ingress",
                                            gateway_selector={"istio": "ingressgateway"},
                                            path_prefixes=["/project", "/lab"], rate_limit_per_minute=600,
                                            provider=k8s, depends_on=[]))
        return {}

    resources, _ = declare(build)
    return {
        r.name: manifest(r)
        for r in resources
        if r.typ.startswith("kubernetes:") and not r.typ.startswith(("kubernetes:helm.sh", "pulumi:providers"))
    }


@pytest.fixture(scope="module")
def manifest_dir(objects: dict[str, dict[str, Any]], tmp_path_factory: pytest.TempPathFactory) -> Path:
    directory = tmp_path_factory.mktemp("addon-manifests")
    for name, obj in objects.items():
        if obj["kind"] == "Secret":  # keep even mock secrets off disk
            obj = {**obj, "stringData": {k: "redacted" for k in obj.get("stringData", {})}}
        (directory / f"{name}.yaml").write_text(yaml.safe_dump(obj, sort_keys=False))
    return directory


def test_render_every_kind(objects: dict[str, dict[str, Any]]) -> None:
    assert sorted({o["kind"] for o in objects.values()}) == sorted(
        CUSTOM_KINDS | {"ConfigMap", "Namespace", "NetworkPolicy", "Secret", "ServiceAccount"}
    )


def test_builtin_kinds_validate_against_pinned_kubernetes(objects: dict[str, dict[str, Any]]) -> None:
    version = stack_config("dev")["mlapi:kubernetesVersion"]
    checked = 0
    for obj in objects.values():
        if obj["kind"] not in CUSTOM_KINDS:
            kubernetes_validate.validate(obj, f"{version}.0", strict=True)
            checked += 1
    assert checked >= 6


def test_custom_kinds_validate_against_their_crd_schema(objects: dict[str, dict[str, Any]]) -> None:
    checked = set()
    for obj in objects.values():
        if obj["kind"] in CUSTOM_KINDS:
            validate_spec(obj)
            checked.add(obj["kind"])
    assert checked == CUSTOM_KINDS


@pytest.mark.parametrize(
    ("kind", "breakage"),
    [
        ("PodMonitor", lambda s: s["podMetricsEndpoints"][0].update(port=8000)),  # port is a name
        ("ExternalSecret", lambda s: s["data"][0].pop("remoteRef")),
        ("AuthorizationPolicy", lambda s: s.update(action="BLOCK")),
        ("PrometheusRule", lambda s: s["groups"][0].update(rules="not a list")),
    ],
)
def test_crd_schema_rejects_a_broken_object(objects: dict[str, dict[str, Any]], kind: str, breakage: Any) -> None:
    obj = json.loads(json.dumps(next(o for o in objects.values() if o["kind"] == kind)))
    breakage(obj["spec"])
    with pytest.raises(jsonschema.ValidationError):
        validate_spec(obj)


def test_promtool_accepts_rendered_rule_groups(objects: dict[str, dict[str, Any]], tmp_path: Path) -> None:
    promtool = shutil.which("promtool")
    if promtool is None:
        pytest.skip("promtool not installed (Debian package prometheus)")
    rule = next(o for o in objects.values() if o["kind"] == "PrometheusRule")
    path = tmp_path / "rules.yaml"
    path.write_text(yaml.safe_dump(rule["spec"]))
    result = subprocess.run([promtool, "check", "rules", str(path)], capture_output=True, text=True, check=False)
    assert result.returncode == 0, result.stdout + result.stderr


def test_checkov_passes(manifest_dir: Path, objects: dict[str, dict[str, Any]], tool) -> None:  # type: ignore[no-untyped-def]
    command = [tool("checkov"), "-d", str(manifest_dir), "--framework", "kubernetes", "--output", "json",
               "--compact", "--skip-download"]
    if CHECKOV_SKIPS:
        command += ["--skip-check", ",".join(CHECKOV_SKIPS)]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300, check=False)
    assert result.stdout, result.stderr
    report = json.loads(result.stdout)
    report = report[0] if isinstance(report, list) else report
    failed = [(c["check_id"], c["resource"]) for c in report["results"].get("failed_checks", [])]
    assert failed == []
    assert report["summary"]["parsing_errors"] == 0
    assert report["summary"]["resource_count"] == len(objects)
    passed = {c["check_id"] for c in report["results"]["passed_checks"]}
    assert {"CKV_K8S_21", "CKV_K8S_41"} <= passed  # not the default namespace; no default service account token
