"""What the EKS stack asks the scheduler for, as data, and whether the node group can hold it.

Every pod the cluster runs is listed with its CPU and memory requests: the EKS add-ons (whose requests the
program does not set), every Helm release the program installs (chart defaults, or the values the program
passes, which it reads from here), and the model services from the stack config. Adding a release means adding
its requests to `RELEASE_REQUESTS`; a test fails for any installed release missing from it.

The node group must hold every DaemonSet on every node plus every Deployment at its minimum replicas on the
minimum node count, and at maximum replicas (plus one surge pod per model service for a rolling update) on the
maximum node count, each with `HEADROOM` left for what is not listed here (kubelet spikes, daemons added later).
"""

from __future__ import annotations

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


# Pods EKS and its add-ons run; the program installs the add-ons but not their resource settings.
EKS_ADDONS: tuple[PodRequests, ...] = (
    PodRequests("aws-node", "daemonset", 50, 64, source="vpc-cni add-on: aws-node 25m + network policy agent 25m"),
    PodRequests("kube-proxy", "daemonset", 100, 32, source="kube-proxy add-on: 100m CPU request"),
    PodRequests("eks-pod-identity-agent", "daemonset", 25, 32, source="eks-pod-identity-agent add-on, rounded up"),
    PodRequests("coredns", "deployment", 100, 70, 2, 2, source="coredns add-on: 2 replicas, 100m / 70Mi"),
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
    "cluster-autoscaler": (
        PodRequests("cluster-autoscaler", "deployment", 100, 300, source="set by the program (autoscaler.py)"),
    ),
    "aws-load-balancer-controller": (
        PodRequests("aws-load-balancer-controller", "deployment", 100, 128, 2, 2,
                    source="set by the program (lb_controller.py); chart default 2 replicas"),
    ),
    # One pod each of Prometheus, Alertmanager, the operator, Grafana and kube-state-metrics (node-exporter off).
    "kube-prometheus-stack": tuple(
        _from_containers(pod, (monitoring.RESOURCES[c]["requests"] for c in containers),
                         "set by the program (monitoring.py)")
        for pod, containers in monitoring.CONTAINERS_PER_POD.items()
    ),
    "external-secrets": tuple(
        _from_containers(f"external-secrets-{part}", [resources["requests"]], "set by the program (api_keys.py)")
        for part, resources in api_keys.ESO_RESOURCES.items()
    ),
}


@dataclass(frozen=True)
class NodeShape:
    """An instance type as the scheduler sees it: allocatable CPU and memory after kube-reserved and eviction."""

    vcpus: int
    memory_mib: int
    max_pods: int

    @property
    def allocatable_cpu(self) -> int:
        """Millicores left after kube-reserved: 6% of the first core, 1% of the second, 0.5% of the next two,
        0.25% of the rest (EKS AMI bootstrap, `get_cpu_millicores_to_reserve`)."""
        shares = (60, 10, 5, 5)
        reserved = sum(shares[: self.vcpus]) + max(0, self.vcpus - 4) * 2.5
        return int(self.vcpus * 1000 - reserved)

    @property
    def allocatable_memory(self) -> int:
        """MiB left after kube-reserved (255 + 11 per pod) and the 100Mi eviction threshold (EKS AMI bootstrap),
        and the ~7% the instance does not show the OS (8 GiB instances report about 7.6 GiB)."""
        return int(self.memory_mib * 0.93) - (255 + 11 * self.max_pods) - 100


# vCPUs, memory and max pods (amazon-eks-ami eni-max-pods.txt) of the instance types this project sizes for.
NODE_SHAPES: dict[str, NodeShape] = {
    "m6i.large": NodeShape(2, 8192, 29),
    "m6i.xlarge": NodeShape(4, 16384, 58),
    "m6i.2xlarge": NodeShape(8, 32768, 58),
    "m7i.large": NodeShape(2, 8192, 29),
    "m7i.xlarge": NodeShape(4, 16384, 58),
    "m7i.2xlarge": NodeShape(8, 32768, 58),
    "c6i.xlarge": NodeShape(4, 8192, 58),
    "c7i.xlarge": NodeShape(4, 8192, 58),
}


def service_requests(services: Iterable[ModelService]) -> tuple[PodRequests, ...]:
    """The model services as scheduled: requests equal limits (workloads.py), min to max replicas (the HPA)."""
    return tuple(
        PodRequests(s.name, "deployment", s.cpu_millicores, s.memory_mib, s.min_replicas, s.max_replicas,
                    source="stack config mlapi:services")
        for s in services
    )


def cluster_requests(services: Iterable[ModelService], releases: Iterable[str]) -> tuple[PodRequests, ...]:
    """Everything the cluster schedules: add-ons, the given Helm releases and the model services."""
    missing = [r for r in releases if r not in RELEASE_REQUESTS]
    if missing:
        raise KeyError(f"no requests recorded for Helm release(s) {missing}: add them to RELEASE_REQUESTS")
    return (*EKS_ADDONS, *(p for r in releases for p in RELEASE_REQUESTS[r]), *service_requests(services))


@dataclass(frozen=True)
class Load:
    """Requested CPU (millicores) and memory (MiB) against what a node count offers."""

    nodes: int
    cpu_requested: int
    memory_requested: int
    cpu_allocatable: int
    memory_allocatable: int

    @property
    def fits(self) -> bool:
        """Within allocatable minus `HEADROOM`, for CPU and memory both."""
        return (self.cpu_requested <= self.cpu_allocatable * (1 - HEADROOM)
                and self.memory_requested <= self.memory_allocatable * (1 - HEADROOM))


def load(pods: Iterable[PodRequests], shape: NodeShape, nodes: int, at: Literal["min", "max"],
         surge: Iterable[ModelService] = ()) -> Load:
    """Requests of `pods` on `nodes` nodes with Deployments at their min or max replicas, plus one surge pod of
    each service in `surge` (a rolling update with maxSurge 1)."""
    cpu = memory = 0
    for pod in pods:
        count = nodes if pod.kind == "daemonset" else (pod.min_replicas if at == "min" else pod.max_replicas)
        cpu += count * pod.cpu_millicores
        memory += count * pod.memory_mib
    for svc in surge:
        cpu += svc.cpu_millicores
        memory += svc.memory_mib
    return Load(nodes, cpu, memory, nodes * shape.allocatable_cpu, nodes * shape.allocatable_memory)


def capacity_problems(settings: ClusterSettings, services: tuple[ModelService, ...],
                      releases: Iterable[str]) -> list[str]:
    """Why the node group cannot hold the cluster (sentences), empty when it can at both ends."""
    shape = NODE_SHAPES.get(settings.instance_type)
    if shape is None:
        return [f"{settings.instance_type} is not in infra/capacity.py NODE_SHAPES; add its shape to size it"]
    pods = cluster_requests(services, releases)
    problems = []
    daemons = [p for p in pods if p.kind == "daemonset"]
    per_node_cpu = shape.allocatable_cpu - sum(p.cpu_millicores for p in daemons)
    per_node_memory = shape.allocatable_memory - sum(p.memory_mib for p in daemons)
    for pod in pods:
        if pod.kind == "deployment" and (pod.cpu_millicores > per_node_cpu or pod.memory_mib > per_node_memory):
            problems.append(f"one {pod.name} pod ({pod.cpu_millicores}m, {pod.memory_mib}Mi) is larger than what "
                            f"a {settings.instance_type} has left after its DaemonSets")
    for at, nodes, surge in (("min", settings.min_nodes, ()), ("max", settings.max_nodes, services)):
        result = load(pods, shape, nodes, at, surge)  # type: ignore[arg-type]
        if not result.fits:
            problems.append(
                f"at {at} replicas the cluster requests {result.cpu_requested}m CPU / {result.memory_requested}Mi, "
                f"more than {nodes} x {settings.instance_type} can hold with {HEADROOM:.0%} headroom "
                f"({result.cpu_allocatable}m / {result.memory_allocatable}Mi allocatable)"
            )
    return problems
