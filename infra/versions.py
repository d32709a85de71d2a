"""The support matrix the stack's version pins rely on, as data, with where each fact comes from.

Pins move deliberately: bump a version here, in `config.py` DEFAULTS and in `Pulumi.yaml`, and the tests check
that the pinned Kubernetes version is in EKS standard support (extended support costs more per cluster hour),
that the pinned Istio release is maintained and supports it, and that Cluster Autoscaler matches its minor.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

# When these facts were last checked against their sources.
REVIEWED = date(2026, 11, 25)

# End of EKS standard support per Kubernetes minor (endoflife.date products/amazon-eks.md; EKS user guide,
# "Understand the Kubernetes version lifecycle on EKS": 14 months of standard support, then 12 of extended).
EKS_STANDARD_SUPPORT_ENDS: dict[str, date] = {
    "1.32": date(2026, 3, 23),
    "1.33": date(2026, 7, 29),
    "1.34": date(2026, 12, 2),
    "1.35": date(2027, 3, 27),
    "1.36": date(2027, 8, 2),
}


@dataclass(frozen=True)
class IstioRelease:
    """One Istio minor: the Kubernetes minors it supports and its end of life (None: not announced yet)."""

    kubernetes: tuple[str, str]
    end_of_life: date | None

    def supports(self, kubernetes_version: str) -> bool:
        """Whether `1.NN` lies within the supported range (inclusive)."""
        low, high = (_minor(v) for v in self.kubernetes)
        return low <= _minor(kubernetes_version) <= high


# istio.io "Supported Releases" table and release announcements; endoflife.date products/istio.md. 1.31.0
# (2026-08-20) "is officially supported on Kubernetes versions 1.32 to 1.36"; a minor is supported until six
# weeks after the N+2 minor ships, so 1.31's end of life is not announced yet.
ISTIO_RELEASES: dict[str, IstioRelease] = {
    "1.26": IstioRelease(("1.29", "1.33"), date(2025, 12, 22)),
    "1.27": IstioRelease(("1.29", "1.33"), date(2026, 4, 7)),
    "1.28": IstioRelease(("1.30", "1.34"), date(2026, 7, 1)),
    "1.29": IstioRelease(("1.31", "1.35"), date(2026, 8, 31)),
    "1.30": IstioRelease(("1.32", "1.36"), date(2026, 11, 30)),
    "1.31": IstioRelease(("1.32", "1.36"), None),
}

# Helm charts and images pinned by the program, with their source.
KUBERNETES_VERSION = "1.35"
ISTIO_VERSION = "1.31.1"  # istio.io news/releases/1.31.x/announcing-1.31.1 (2026-09-21)
METRICS_SERVER_CHART = "3.13.1"  # kubernetes-sigs/metrics-server tag metrics-server-helm-chart-3.13.1
# Cluster Autoscaler's minor must equal the cluster's (kubernetes/autoscaler cluster-autoscaler README, "Releases").
CLUSTER_AUTOSCALER_CHART = "9.59.0"  # kubernetes/autoscaler tag cluster-autoscaler-chart-9.59.0
CLUSTER_AUTOSCALER_IMAGES: dict[str, str] = {"1.35": "v1.35.2", "1.36": "v1.36.1"}
# kube-prometheus-stack: the newest release whose chart values and CRDs were read (prometheus-community/helm-charts
# charts/kube-prometheus-stack/Chart.yaml, 2026-08-22); the chart has no support window, only the latest release.
KUBE_PROMETHEUS_STACK_CHART = "88.5.3"
# external-secrets supports only its latest minor (docs/introduction/stability-support.md); 2.14.0 is the newest
# release seen (its release notes); values and CRDs were read at v2.9.0 and are unchanged in shape since.
EXTERNAL_SECRETS_CHART = "2.14.0"
AWS_LOAD_BALANCER_CONTROLLER_CHART = "3.5.0"  # kubernetes-sigs/aws-load-balancer-controller v3.5.0 (eks-charts)


def _minor(version: str) -> int:
    major, minor = version.split(".")[:2]
    if major != "1":
        raise ValueError(f"not a Kubernetes 1.x version: {version}")
    return int(minor)


def istio_minor(version: str) -> str:
    """`1.31.1` -> `1.31`."""
    return ".".join(version.split(".")[:2])


def support_problem(kubernetes_version: str, istio_version: str, on: date | None = None) -> str | None:
    """Why this pair cannot work (a sentence), or None. With `on`, also whether both are still supported then."""
    ends = EKS_STANDARD_SUPPORT_ENDS.get(kubernetes_version)
    if ends is None:
        return f"Kubernetes {kubernetes_version} is not in the EKS support matrix (infra/versions.py)"
    if on is not None and on > ends:
        return f"EKS standard support for Kubernetes {kubernetes_version} ended on {ends.isoformat()}"
    release = ISTIO_RELEASES.get(istio_minor(istio_version))
    if release is None:
        return f"Istio {istio_version} is not in the support matrix (infra/versions.py)"
    if on is not None and release.end_of_life is not None and on > release.end_of_life:
        return f"Istio {istio_minor(istio_version)} reached end of life on {release.end_of_life.isoformat()}"
    if not release.supports(kubernetes_version):
        low, high = release.kubernetes
        return f"Istio {istio_minor(istio_version)} supports Kubernetes {low}-{high}, not {kubernetes_version}"
    return None
