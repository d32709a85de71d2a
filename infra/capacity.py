"""What the EKS stack asks the scheduler for, as data, and whether the Auto Mode NodePool can hold it.

Every pod the program puts on the NodePool is listed with its CPU and memory requests: the DaemonSets of the
CloudWatch add-on (whose requests the program does not set), every Helm release the program installs (chart
defaults, or the values the program passes, which it reads from here), and the model services from the stack
config. Adding a release means adding its requests to `RELEASE_REQUESTS`; a test fails for any installed release
missing from it. On Auto Mode, CoreDNS, kube-proxy, the VPC CNI and the Pod Identity agent run as system services
of the node image, not as pods (EKS user guide, "Monitor the EKS Auto Mode runtime"), so they are not listed.

Karpenter launches nodes as pods go Pending and stops at the NodePool's `limits` (total vCPUs and memory of its
nodes). The check: with every Deployment at its maximum replicas plus one surge pod per model service, the nodes
that hold them, counted at the smallest size the NodePool may launch (the most per-node overhead), with
`HEADROOM` left for bin-packing and what is not listed, stay within both limits; and every pod fits on one such
node next to the DaemonSets.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Literal

from infra.config import ClusterSettings, ModelService
from infra.eks import monitoring
from infra.shared import api_keys

Kind = Literal["daemonset", "deployment"]
HEADROOM = 0.15


@dataclass(frozen=True)
class PodRequests:
    """One workload's per-pod requests and how many pods it runs (DaemonSets: one per node)."""

    name: str
    kind: Kind
    cpu_millicores: int
    memory_mib: int
    min_replicas: int = 1
    max_replicas: int = 1
    source: str = ""

    def resources(self) -> dict[str, dict[str, str]]:
        """As a Kubernetes `resources` block with requests only (for Helm values the program sets)."""
        return {"requests": {"cpu": f"{self.cpu_millicores}m", "memory": f"{self.memory_mib}Mi"}}


# Pods of the EKS add-ons the program installs but whose resources it does not set (Container Insights).
EKS_ADDONS: tuple[PodRequests, ...] = (
    PodRequests("cloudwatch-agent", "daemonset", 250, 128,
                source="amazon-cloudwatch-observability chart 6.4.0 values.yaml agent.resources.requests"),
    PodRequests("fluent-bit", "daemonset", 50, 25,
                source="amazon-cloudwatch-observability chart 6.4.0 values.yaml containerLogs.fluentBit"),
    PodRequests("amazon-cloudwatch-observability-controller-manager", "deployment", 100, 64,
                source="amazon-cloudwatch-observability chart 6.4.0 values.yaml manager.resources.requests"),
)


def _millicores(quantity: str) -> int:
    return int(quantity[:-1]) if quantity.endswith("m") else int(float(quantity) * 1000)


def _mebibytes(quantity: str) -> int:
    if quantity.endswith("Gi"):
        return int(float(quantity[:-2]) * 1024)
    if not quantity.endswith("Mi"):
        raise ValueError(f"memory quantity {quantity!r}: write it in Mi or Gi")
    return int(quantity[:-2])


def _from_containers(name: str, containers: Iterable[dict[str, str]], source: str) -> PodRequests:
    """One pod whose containers' requests the program sets (in monitoring.py, api_keys.py): their sum."""
    requests = list(containers)
    return PodRequests(name, "deployment", sum(_millicores(r["cpu"]) for r in requests),
                       sum(_mebibytes(r["memory"]) for r in requests), source=source)


# Every Helm release the program installs, keyed by release name. Where the program sets resources or replica
# bounds in the release values, it takes them from here, so this table and the cluster cannot disagree.
RELEASE_REQUESTS: dict[str, tuple[PodRequests, ...]] = {
    "metrics-server": (
        PodRequests("metrics-server", "deployment", 100, 200, source="metrics-server chart 3.13.1 values.yaml"),
    ),
    "istio-base": (),  # CRDs and webhooks only
    "istiod": (PodRequests("istiod", "deployment", 100, 256, 1, 3, source="set by the program (mesh.py)"),),
    "istio-ingressgateway": (
        PodRequests("istio-ingressgateway", "deployment", 100, 128, 2, 4, source="set by the program (mesh.py)"),
    ),
    # One pod each of Prometheus, Alertmanager, the operator, Grafana and kube-state-metrics (node-exporter off).
    "kube-prometheus-stack": tuple(
        _from_containers(pod, (monitoring.RESOURCES[c]["requests"] for c in containers),
                         "set by the program (monitoring.py)")
        for pod, containers in monitoring.CONTAINERS_PER_POD.items()
    ),
    # One controller pod; it only watches Canaries and queries Prometheus.
    "flagger": (PodRequests("flagger", "deployment", 50, 64, source="set by the program (canary.py)"),),
    "external-secrets": tuple(
        _from_containers(f"external-secrets-{part}", [resources["requests"]], "set by the program (api_keys.py)")
        for part, resources in api_keys.ESO_RESOURCES.items()
    ),
}


# GiB of memory per vCPU of each instance category the NodePool may launch (EC2 instance type specifications).
MEMORY_PER_VCPU_GIB = {"c": 2, "m": 4, "r": 8}
# Pods per node EKS Auto Mode configures with prefix delegation, for kube-reserved memory (the Kubernetes limit).
MAX_PODS = 110


@dataclass(frozen=True)
class NodeShape:
    """An instance size as the scheduler sees it: allocatable CPU and memory after kube-reserved and eviction."""

    vcpus: int
    memory_mib: int
    max_pods: int = MAX_PODS

    @property
    def allocatable_cpu(self) -> int:
        """Millicores left after kube-reserved: 6% of the first core, 1% of the second, 0.5% of the next two,
        0.25% of the rest (EKS node bootstrap, `get_cpu_millicores_to_reserve`)."""
        shares = (60, 10, 5, 5)
        reserved = sum(shares[: self.vcpus]) + max(0, self.vcpus - 4) * 2.5
        return int(self.vcpus * 1000 - reserved)

    @property
    def allocatable_memory(self) -> int:
        """MiB left after kube-reserved (255 + 11 per pod) and the 100Mi eviction threshold, and the ~7% the
        instance does not show the OS (8 GiB instances report about 7.6 GiB)."""
        return int(self.memory_mib * 0.93) - (255 + 11 * self.max_pods) - 100


def smallest_node(settings: ClusterSettings) -> NodeShape:
    """The smallest node the NodePool may launch: fewest vCPUs, in the family with the least memory per vCPU."""
    per_vcpu = min(MEMORY_PER_VCPU_GIB[family[0]] for family in settings.instance_families)
    vcpus = min(settings.instance_cpus)
    return NodeShape(vcpus, vcpus * per_vcpu * 1024)


def service_requests(services: Iterable[ModelService]) -> tuple[PodRequests, ...]:
    """The model services as scheduled: requests equal limits (workloads.py), min to max replicas (the HPA).

    A service with a candidate runs it beside the live model while Flagger analyses it (canary.py): the canary
    Deployment scales like the primary, so it is counted twice.
    """
    listed = []
    for s in services:
        for name in (s.name, f"{s.name}-canary") if s.candidate is not None else (s.name,):
            listed.append(PodRequests(name, "deployment", s.cpu_millicores, s.memory_mib, s.min_replicas,
                                      s.max_replicas, source="stack config mlapi:services"))
    return tuple(listed)


def cluster_requests(services: Iterable[ModelService], releases: Iterable[str]) -> tuple[PodRequests, ...]:
    """Everything the NodePool schedules: add-ons, the given Helm releases and the model services."""
    missing = [r for r in releases if r not in RELEASE_REQUESTS]
    if missing:
        raise KeyError(f"no requests recorded for Helm release(s) {missing}: add them to RELEASE_REQUESTS")
    return (*EKS_ADDONS, *(p for r in releases for p in RELEASE_REQUESTS[r]), *service_requests(services))


@dataclass(frozen=True)
class Load:
    """Every Deployment at max replicas plus surge, the nodes of `shape` that hold it, and what they add up to."""

    cpu_requested: int
    memory_requested: int
    nodes: int
    shape: NodeShape

    @property
    def cpu_capacity(self) -> int:
        """vCPUs of those nodes, as the NodePool's `limits.cpu` counts them."""
        return self.nodes * self.shape.vcpus

    @property
    def memory_capacity_gib(self) -> int:
        """GiB of those nodes, as the NodePool's `limits.memory` counts them."""
        return self.nodes * self.shape.memory_mib // 1024


def load_at_max(pods: Iterable[PodRequests], shape: NodeShape, surge: Iterable[ModelService] = ()) -> Load:
    """Deployments at their max replicas plus one surge pod of each service in `surge` (maxSurge 1), on nodes of
    `shape` that each also run every DaemonSet, kept `HEADROOM` below allocatable."""
    listed = list(pods)
    daemons = [p for p in listed if p.kind == "daemonset"]
    cpu = sum(p.cpu_millicores * p.max_replicas for p in listed if p.kind == "deployment")
    memory = sum(p.memory_mib * p.max_replicas for p in listed if p.kind == "deployment")
    for svc in surge:
        cpu += svc.cpu_millicores
        memory += svc.memory_mib
    free_cpu = shape.allocatable_cpu * (1 - HEADROOM) - sum(p.cpu_millicores for p in daemons)
    free_memory = shape.allocatable_memory * (1 - HEADROOM) - sum(p.memory_mib for p in daemons)
    nodes = max(math.ceil(cpu / free_cpu), math.ceil(memory / free_memory), 1)
    return Load(cpu, memory, nodes, shape)


def capacity_problems(settings: ClusterSettings, services: tuple[ModelService, ...],
                      releases: Iterable[str]) -> list[tuple[str, str]]:
    """Why the NodePool cannot hold the cluster, as (config key, sentence) pairs; empty when it can."""
    shape = smallest_node(settings)
    pods = cluster_requests(services, releases)
    problems = []
    daemons = [p for p in pods if p.kind == "daemonset"]
    per_node_cpu = shape.allocatable_cpu - sum(p.cpu_millicores for p in daemons)
    per_node_memory = shape.allocatable_memory - sum(p.memory_mib for p in daemons)
    for pod in pods:
        if pod.kind == "deployment" and (pod.cpu_millicores > per_node_cpu or pod.memory_mib > per_node_memory):
            problems.append(("nodeInstanceCpus", f"one {pod.name} pod ({pod.cpu_millicores}m, {pod.memory_mib}Mi) "
                             f"is larger than what a {shape.vcpus}-vCPU {shape.memory_mib // 1024} GiB node has left "
                             "after its DaemonSets"))
    at_max = load_at_max(pods, shape, services)
    needs = (f"at max replicas the cluster requests {at_max.cpu_requested}m CPU / {at_max.memory_requested}Mi, "
             f"which takes {at_max.nodes} nodes of {shape.vcpus} vCPU / {shape.memory_mib // 1024} GiB with "
             f"{HEADROOM:.0%} headroom")
    if at_max.cpu_capacity > settings.cpu_limit:
        problems.append(("nodePoolCpuLimit", f"{needs}: {at_max.cpu_capacity} vCPUs, more than the limit of "
                         f"{settings.cpu_limit}"))
    if at_max.memory_capacity_gib > settings.memory_gib:
        problems.append(("nodePoolMemoryGib", f"{needs}: {at_max.memory_capacity_gib} GiB, more than the limit of "
                         f"{settings.memory_gib}"))
    return problems
