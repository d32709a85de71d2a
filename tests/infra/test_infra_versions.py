"""The pinned versions are supported, and the support matrix they rely on rejects what it should."""

from __future__ import annotations

import re
from datetime import date, timedelta
from typing import Any

import pytest
from infra_program import REPO, ProgramRun

from infra import versions
from infra.config import DEFAULTS, ConfigError, build_config

# Pins must stay supported for a while after they were reviewed, so a stack is not born about to expire.
HEADROOM = timedelta(days=90)


def test_pinned_kubernetes_is_in_eks_standard_support_with_headroom() -> None:
    assert versions.EKS_STANDARD_SUPPORT_ENDS[versions.KUBERNETES_VERSION] > versions.REVIEWED + HEADROOM


def test_pinned_istio_supports_pinned_kubernetes_and_is_maintained() -> None:
    release = versions.ISTIO_RELEASES[versions.istio_minor(versions.ISTIO_VERSION)]
    assert release.supports(versions.KUBERNETES_VERSION)
    assert release.end_of_life is None or release.end_of_life > versions.REVIEWED + HEADROOM
    assert versions.support_problem(versions.KUBERNETES_VERSION, versions.ISTIO_VERSION, versions.REVIEWED) is None


def test_every_pinned_chart_has_its_default_values_vendored_at_that_version() -> None:
    # The vendored files are read from each chart's repository at the pin's tag (tests/infra/charts/README.md):
    # a pin with no file there is a version nobody read, or one that does not exist.
    charts = REPO / "tests" / "infra" / "charts"
    pins = {"istio-base": versions.ISTIO_VERSION, "istiod": versions.ISTIO_VERSION,
            "istio-gateway": versions.ISTIO_VERSION, "metrics-server": versions.METRICS_SERVER_CHART,
            "kube-prometheus-stack": versions.KUBE_PROMETHEUS_STACK_CHART,
            "external-secrets": versions.EXTERNAL_SECRETS_CHART, "flagger": versions.FLAGGER_CHART}
    for chart, version in pins.items():
        assert (charts / chart / version / "values.yaml").is_file(), (chart, version)
        assert f"`{chart}/{version}/values.yaml`" in (charts / "README.md").read_text()


def test_versions_name_the_commit_each_pin_was_read_at() -> None:
    source = (REPO / "infra" / "versions.py").read_text()
    for pin in (versions.ISTIO_VERSION, versions.METRICS_SERVER_CHART, versions.KUBE_PROMETHEUS_STACK_CHART,
                versions.EXTERNAL_SECRETS_CHART, versions.FLAGGER_CHART):
        line = next(line for line in source.splitlines() if re.search(rf"tag \S*{re.escape(pin)},", line))
        assert re.search(r"commit [0-9a-f]{8}", line), line


@pytest.mark.parametrize(
    ("kubernetes", "istio", "on", "reason"),
    [
        ("1.33", "1.26.3", date(2026, 11, 25), "EKS standard support for Kubernetes 1.33 ended on 2026-07-29"),
        ("1.34", "1.30.3", date(2026, 12, 3), "EKS standard support for Kubernetes 1.34 ended"),
        ("1.35", "1.26.3", None, "Istio 1.26 supports Kubernetes 1.29-1.33, not 1.35"),
        ("1.35", "1.25.5", None, "Istio 1.25.5 is not in the support matrix"),
        ("1.35", "1.29.6", date(2026, 9, 1), "Istio 1.29 reached end of life on 2026-08-31"),
        ("1.35", "1.31.1", None, "Istio 1.31.1 is not in the support matrix"),
        ("1.36", "1.29.6", None, "Istio 1.29 supports Kubernetes 1.31-1.35, not 1.36"),
        ("1.37", "1.30.3", None, "Kubernetes 1.37 is not in the EKS support matrix"),
    ],
)
def test_support_problem_names_the_reason(kubernetes: str, istio: str, on: date | None, reason: str) -> None:
    assert reason in (versions.support_problem(kubernetes, istio, on) or "")


def test_defaults_and_dev_stack_use_the_pins(dev: ProgramRun) -> None:
    assert DEFAULTS["kubernetesVersion"] == versions.KUBERNETES_VERSION
    assert DEFAULTS["istioVersion"] == versions.ISTIO_VERSION
    assert DEFAULTS["metricsServerVersion"] == versions.METRICS_SERVER_CHART
    assert dev.one("eks:index:Cluster").inputs["version"] == versions.KUBERNETES_VERSION
    releases = {r.inputs["name"]: r.inputs["version"] for r in dev.of_type("kubernetes:helm.sh/v3:Release")}
    assert {releases[n] for n in ("istio-base", "istiod", "istio-ingressgateway")} == {versions.ISTIO_VERSION}
    assert releases["metrics-server"] == versions.METRICS_SERVER_CHART
    assert releases["external-secrets"] == versions.EXTERNAL_SECRETS_CHART == DEFAULTS["externalSecretsVersion"]
    assert releases["kube-prometheus-stack"] == versions.KUBE_PROMETHEUS_STACK_CHART
    assert releases["flagger"] == versions.FLAGGER_CHART


@pytest.mark.parametrize(
    ("change", "key"),
    [({"istioVersion": "1.29.6", "kubernetesVersion": "1.36"}, "mlapi:istioVersion"),
     ({"kubernetesVersion": "1.99"}, "mlapi:kubernetesVersion")],
)
def test_config_rejects_an_unsupported_pair(dev_raw: dict[str, Any], change: dict[str, Any], key: str) -> None:
    with pytest.raises(ConfigError) as err:
        build_config({**dev_raw, **change}, project="mlapi", stack="dev", region="us-east-1")
    assert err.value.key == key
