"""The support matrix the stack's version pins rely on, as data, with where each fact comes from.

Pins move deliberately: bump a version here, in `config.py` DEFAULTS and in `Pulumi.yaml`, and the tests check
that the pinned Kubernetes version is in EKS standard support (extended support costs more per cluster hour),
that the pinned Istio release is maintained and supports it, and that every chart pinned has its default values
vendored under tests/infra/charts/ at that version.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date

# When these facts were last checked against their sources.
REVIEWED = date(2026, 12, 5)

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


# Istio minors: the Kubernetes range each supports (istio.io "Supported Releases"; the lower bound is
# istioctl/pkg/install/k8sversion/version.go MinK8SVersion at the release tag) and its end of life (None: not
# announced). A minor is supported until six weeks after the N+2 minor ships. The istio/istio repository as last
# read (snapshot of 2026-08-22, HEAD 86c9f01) has 1.30.3 (tagged 2026-07-13) as its newest release; 1.31 exists
# only as 1.31.0-rc.0 (2026-08-19), so no 1.31.x is pinned or listed, and 1.30 stays supported until six weeks
# after 1.32.0.
ISTIO_RELEASES: dict[str, IstioRelease] = {
    "1.26": IstioRelease(("1.29", "1.33"), date(2025, 12, 22)),
    "1.27": IstioRelease(("1.29", "1.33"), date(2026, 4, 7)),
    "1.28": IstioRelease(("1.30", "1.34"), date(2026, 7, 1)),
    "1.29": IstioRelease(("1.31", "1.35"), date(2026, 8, 31)),
    "1.30": IstioRelease(("1.32", "1.36"), None),
}

# Helm charts pinned by the program. Each pin is a tag that exists in its repository, read at that tag (the
# commit is noted); tests/infra/charts/README.md vendors each chart's values.yaml from the same commit.
KUBERNETES_VERSION = "1.35"
# istio/istio tag 1.30.3, commit 56df41f63e513f834c9a3af33d8aed82d1d961f2 (charts base, istiod, gateway).
ISTIO_VERSION = "1.30.3"
# kubernetes-sigs/metrics-server tag metrics-server-helm-chart-3.13.1, commit 842dcc8c (2026-06-11), the newest
# chart tag. EKS Auto Mode does not run metrics-server, and the HPAs need it.
METRICS_SERVER_CHART = "3.13.1"
# prometheus-community/helm-charts tag kube-prometheus-stack-88.5.3, commit ea930bae (2026-08-21), the newest
# release of the chart in the repository as read; the chart has no support window, only the latest release.
KUBE_PROMETHEUS_STACK_CHART = "88.5.3"
# external-secrets/external-secrets tag helm-chart-2.9.0, commit cc5bfbc2 (2026-08-08), the newest chart release
# in the repository as read. The project supports only its latest minor (docs/introduction/stability-support.md):
# check for a newer one before each upgrade. (2.14.0, pinned before, has no tag in the repository.)
EXTERNAL_SECRETS_CHART = "2.9.0"
# fluxcd/flagger tag v1.44.0, commit 15bd6ad5 (2026-07-21), the newest release in the repository as read; its chart
# `charts/flagger` is version 1.44.0 (kubeVersion >=1.19) and installs the CRDs of artifacts/flagger/crd.yaml.
# Flagger supports its latest release only: check for a newer one before each upgrade.
FLAGGER_CHART = "1.44.0"


def _minor(version: str) -> int:
    major, minor = version.split(".")[:2]
    if major != "1":
        raise ValueError(f"not a Kubernetes 1.x version: {version}")
    return int(minor)


def istio_minor(version: str) -> str:
    """`1.30.3` -> `1.30`."""
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
