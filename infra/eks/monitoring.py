"""Metrics on the EKS platform: kube-prometheus-stack (Prometheus, Alertmanager, Grafana, kube-state-metrics),
what it scrapes, the mlapi alert rules and the mlapi Grafana dashboard.

The rules and the dashboard are files kept in `monitoring/` (tested there against a real Prometheus); this
component only wraps them: the rule groups become a PrometheusRule, the dashboard JSON a ConfigMap carrying the
label the chart's Grafana sidecar imports (`grafana_dashboard: "1"`, kube-prometheus-stack values.yaml). Every
model pod is scraped by a PodMonitor on its own `<prefix>/metrics`; the Istio gateway's Envoy by a PodMonitor on
`http-envoy-prom` (15090, `/stats/prometheus`; Istio gateway chart deployment.yaml). The model pods admit
Prometheus through a NetworkPolicy of their own, added to the one that admits the gateway (policies are additive).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
import pulumi_random as random
import yaml

PROMETHEUS_REPO = "https://prometheus-community.github.io/helm-charts"
NAMESPACE = "monitoring"
RELEASE = "kube-prometheus-stack"
# The chart names Grafana's Service `<release>-grafana` and serves it on port 80 (grafana chart service.port).
GRAFANA_SERVICE = f"{RELEASE}-grafana"
GRAFANA_ADMIN_SECRET = "grafana-admin"
DASHBOARD_LABEL = {"grafana_dashboard": "1"}
SCRAPE_INTERVAL = "15s"
# The monitoring stack's CPU/memory requests, by workload: they count against the node group like any other pod.
RESOURCES: dict[str, dict[str, dict[str, str]]] = {
    "prometheus": {"requests": {"cpu": "200m", "memory": "768Mi"}, "limits": {"cpu": "1", "memory": "1536Mi"}},
    "config-reloader": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}},
    "alertmanager": {"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "128Mi"}},
    "operator": {"requests": {"cpu": "50m", "memory": "96Mi"}, "limits": {"cpu": "300m", "memory": "256Mi"}},
    "webhook-patch": {"requests": {"cpu": "10m", "memory": "32Mi"}, "limits": {"cpu": "100m", "memory": "64Mi"}},
    "grafana": {"requests": {"cpu": "50m", "memory": "192Mi"}, "limits": {"cpu": "500m", "memory": "384Mi"}},
    "grafana-sidecar": {"requests": {"cpu": "10m", "memory": "64Mi"}, "limits": {"cpu": "100m", "memory": "128Mi"}},
    "kube-state-metrics": {"requests": {"cpu": "20m", "memory": "64Mi"}, "limits": {"cpu": "200m", "memory": "192Mi"}},
}
# The containers of each pod the chart runs, one pod each (Grafana carries two sidecars: dashboards and
# datasources); the webhook-patch job is short-lived and not counted. infra/capacity.py sums these.
CONTAINERS_PER_POD = {
    "prometheus": ("prometheus", "config-reloader"),
    "alertmanager": ("alertmanager", "config-reloader"),
    "operator": ("operator",),
    "grafana": ("grafana", "grafana-sidecar", "grafana-sidecar"),
    "kube-state-metrics": ("kube-state-metrics",),
}


@dataclass(frozen=True)
class ScrapeTarget:
    """Pods to scrape: where they live, how to select them, and the named port and path of their metrics."""

    name: str
    namespace: pulumi.Input[str]
    selector: dict[str, str]
    port: str
    path: str
    # Label selector requirements besides `selector` (`matchExpressions`).
    expressions: tuple[dict[str, Any], ...] | list[dict[str, Any]] = ()


@dataclass(frozen=True)
class MonitoringArgs:
    """Chart version, the rule and dashboard files, what to scrape, and the app pods Prometheus must reach."""

    chart_version: str
    alerts_file: Path
    dashboard_file: Path
    targets: list[ScrapeTarget]
    app_namespace: pulumi.Input[str]
    app_pod_selector: dict[str, str]
    app_port: int
    provider: k8s.Provider
    depends_on: list[pulumi.Resource]
    # USD per vCPU-hour the cost rules price pods at (infra/cost.py); None keeps the rule file's value.
    vcpu_hour_usd: float | None = None


def chart_values(admin_secret: str) -> dict[str, Any]:
    """kube-prometheus-stack values: sized requests, EKS-visible targets only, and every monitor selected.

    EKS runs the control plane out of reach: scheduler, controller-manager and etcd cannot be scraped, and
    kube-proxy binds its metrics to 127.0.0.1, so their monitors and default rules are off (they would only ever
    fire "down"). Node metrics come from Container Insights, so node-exporter (a host-network DaemonSet) is off
    with its rules; per-pod CPU comes from the kubelet's cAdvisor, which stays on. Prometheus keeps its data on
    an emptyDir (no EBS CSI driver in the cluster): a restart loses history, not alerting.
    """
    return {
        "crds": {"enabled": True},
        "defaultRules": {
            "rules": {
                "etcd": False,
                "kubeControllerManager": False,
                "kubeProxy": False,
                "kubeSchedulerAlerting": False,
                "kubeSchedulerRecording": False,
                "node": False,
                "nodeExporterAlerting": False,
                "nodeExporterRecording": False,
                "windows": False,
            }
        },
        "windowsMonitoring": {"enabled": False},
        "kubeControllerManager": {"enabled": False},
        "kubeScheduler": {"enabled": False},
        "kubeEtcd": {"enabled": False},
        "kubeProxy": {"enabled": False},
        "nodeExporter": {"enabled": False},
        # The mlapi alerts read kube_deployment_* and kube_horizontalpodautoscaler_* series.
        "kubeStateMetrics": {"enabled": True},
        "kube-state-metrics": {"resources": RESOURCES["kube-state-metrics"]},
        "prometheusOperator": {
            "resources": RESOURCES["operator"],
            "prometheusConfigReloader": {"resources": RESOURCES["config-reloader"]},
            "admissionWebhooks": {"patch": {"resources": RESOURCES["webhook-patch"]}},
        },
        "prometheus": {
            "prometheusSpec": {
                "scrapeInterval": SCRAPE_INTERVAL,
                "evaluationInterval": SCRAPE_INTERVAL,
                "retention": "7d",
                "retentionSize": "4GB",
                "resources": RESOURCES["prometheus"],
                # Select every PodMonitor, ServiceMonitor and PrometheusRule, not only the chart's own
                # (`...NilUsesHelmValues: true` would require a `release` label on ours).
                "podMonitorSelectorNilUsesHelmValues": False,
                "serviceMonitorSelectorNilUsesHelmValues": False,
                "ruleSelectorNilUsesHelmValues": False,
            }
        },
        "alertmanager": {"alertmanagerSpec": {"resources": RESOURCES["alertmanager"]}},
        "grafana": {
            "admin": {"existingSecret": admin_secret, "userKey": "admin-user", "passwordKey": "admin-password"},
            "resources": RESOURCES["grafana"],
            "sidecar": {
                "resources": RESOURCES["grafana-sidecar"],
                "dashboards": {"enabled": True, "label": "grafana_dashboard", "labelValue": "1",
                               "searchNamespace": "ALL"},
            },
        },
    }


def rule_groups(alerts_file: Path) -> list[dict[str, Any]]:
    """The `groups` of a Prometheus rule file, which is exactly a PrometheusRule's `spec.groups`."""
    document = yaml.safe_load(alerts_file.read_text())
    groups = document.get("groups") if isinstance(document, dict) else None
    if not isinstance(groups, list) or not groups:
        raise ValueError(f"{alerts_file}: not a Prometheus rule file (no `groups:` list)")
    return groups


PRICE_RULE = "mlapi:vcpu_hour_usd"


def with_vcpu_price(groups: list[dict[str, Any]], usd: float | None) -> list[dict[str, Any]]:
    """The rule groups with the `mlapi:vcpu_hour_usd` recording rule set to `usd` (None: unchanged)."""
    if usd is None:
        return groups
    return [
        {**group, "rules": [{**rule, "expr": f"vector({usd:.6g})"} if rule.get("record") == PRICE_RULE else rule
                            for rule in group["rules"]]}
        for group in groups
    ]


def dashboard_json(dashboard_file: Path) -> str:
    """The dashboard as compact JSON, checked to parse and to carry a uid (Grafana keys imports by uid)."""
    dashboard = json.loads(dashboard_file.read_text())
    if not isinstance(dashboard, dict) or not dashboard.get("uid") or not dashboard.get("panels"):
        raise ValueError(f"{dashboard_file}: not a Grafana dashboard (needs `uid` and `panels`)")
    return json.dumps(dashboard, separators=(",", ":"), sort_keys=True)


def pod_monitor_spec(target: ScrapeTarget) -> dict[str, Any]:
    """PodMonitor spec for one target: its namespace, its pods, its metrics port and path."""
    return {
        "namespaceSelector": {"matchNames": [target.namespace]},
        "selector": {"matchLabels": target.selector,
                     **({"matchExpressions": list(target.expressions)} if target.expressions else {})},
        "podMetricsEndpoints": [{"port": target.port, "path": target.path, "interval": SCRAPE_INTERVAL}],
    }


class Monitoring(pulumi.ComponentResource):
    """kube-prometheus-stack with the mlapi scrape targets, alert rules and dashboard."""

    namespace: pulumi.Output[str]
    grafana_service: str
    grafana_admin_password: pulumi.Output[str]

    def __init__(self, name: str, args: MonitoringArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlapi:monitoring:Monitoring", name, None, opts)
        # Read the files first: a missing or malformed one fails the preview before anything is declared.
        groups = with_vcpu_price(rule_groups(args.alerts_file), args.vcpu_hour_usd)
        dashboard = dashboard_json(args.dashboard_file)
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=args.depends_on)

        namespace = k8s.core.v1.Namespace(
            f"{name}-namespace",
            metadata={
                "name": NAMESPACE,
                # The chart's pods meet `baseline` (node-exporter, the one host-network workload, is off).
                "labels": {
                    "pod-security.kubernetes.io/enforce": "baseline",
                    "pod-security.kubernetes.io/warn": "restricted",
                },
            },
            opts=k8s_opts,
        )
        ns_name = namespace.metadata["name"]
        password = random.RandomPassword(
            f"{name}-grafana-password", length=32, special=False, opts=pulumi.ResourceOptions(parent=self)
        )
        admin = k8s.core.v1.Secret(
            f"{name}-grafana-admin",
            metadata={"name": GRAFANA_ADMIN_SECRET, "namespace": ns_name},
            type="Opaque",
            string_data={"admin-user": "admin", "admin-password": pulumi.Output.secret(password.result)},
            opts=k8s_opts,
        )
        stack = k8s.helm.v3.Release(
            f"{name}-stack",
            name=RELEASE,
            chart="kube-prometheus-stack",
            version=args.chart_version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=PROMETHEUS_REPO),
            namespace=ns_name,
            values=chart_values(GRAFANA_ADMIN_SECRET),
            atomic=True,
            timeout=900,
            opts=pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[admin])),
        )
        # PodMonitor and PrometheusRule are CRDs the release installs.
        crd_ready = pulumi.ResourceOptions.merge(k8s_opts, pulumi.ResourceOptions(depends_on=[stack]))
        for target in args.targets:
            k8s.apiextensions.CustomResource(
                f"{name}-{target.name}-podmonitor",
                api_version="monitoring.coreos.com/v1",
                kind="PodMonitor",
                metadata={"name": target.name, "namespace": ns_name},
                spec=pod_monitor_spec(target),
                opts=crd_ready,
            )
        k8s.apiextensions.CustomResource(
            f"{name}-rules",
            api_version="monitoring.coreos.com/v1",
            kind="PrometheusRule",
            metadata={"name": "mlapi", "namespace": ns_name},
            spec={"groups": groups},
            opts=crd_ready,
        )
        k8s.core.v1.ConfigMap(
            f"{name}-dashboard",
            metadata={"name": "mlapi-dashboard", "namespace": ns_name, "labels": DASHBOARD_LABEL},
            data={"mlapi.json": dashboard},
            opts=k8s_opts,
        )
        k8s.networking.v1.NetworkPolicy(
            f"{name}-scrape",
            metadata={"name": "mlapi-prometheus-scrape", "namespace": args.app_namespace},
            spec={
                "podSelector": {"matchLabels": args.app_pod_selector},
                "policyTypes": ["Ingress"],
                "ingress": [
                    {
                        "from": [
                            {
                                "namespaceSelector": {"matchLabels": {"kubernetes.io/metadata.name": NAMESPACE}},
                                "podSelector": {"matchLabels": {"app.kubernetes.io/name": "prometheus"}},
                            }
                        ],
                        "ports": [{"protocol": "TCP", "port": args.app_port}],
                    }
                ],
            },
            opts=k8s_opts,
        )
        self.namespace = ns_name
        self.grafana_service = GRAFANA_SERVICE
        self.grafana_admin_password = pulumi.Output.secret(password.result)
        self.register_outputs({"namespace": self.namespace, "grafana_admin_password": self.grafana_admin_password})


