"""The EKS Auto Mode NodePool every workload of the stack runs on, and the NodeClass its nodes are launched with.

Auto Mode runs Karpenter in the control plane: nodes appear when pods go Pending and go away when empty or
underused. The built-in `general-purpose` pool is turned off (cluster.py), so this pool decides what the stack
pays for: the instance families and sizes of the stack config (compute-optimised first), on-demand or spot, and
`limits` on the total vCPUs and memory of its nodes, which infra/capacity.py checks against the stack at its
maximum replicas. (EKS user guide, "Create a Node Pool for EKS Auto Mode" and "Create a Node Class for Amazon
EKS"; the `eks.amazonaws.com/instance-*` requirement keys are Auto Mode's well-known labels.)

The NodeClass places nodes in the private subnets with the cluster security group (the group Redis admits) and
turns on NetworkPolicy enforcement, which Auto Mode leaves off until both the NodeClass asks for it and the
`amazon-vpc-cni` ConfigMap enables the controller (EKS user guide, "Use Network Policies with EKS Auto Mode").
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import pulumi
import pulumi_kubernetes as k8s

from infra.config import ClusterSettings

NODE_CLASS = "mlapi"
NODE_POOL = "mlapi"
POOL_LABEL = {"mlapi/pool": "models"}
# Auto Mode replaces a node after at most 21 days; two weeks keeps patching regular and predictable.
EXPIRE_AFTER = "336h"
# A drain blocked by a PodDisruptionBudget ends after this; `pulumi destroy` must never wait on it forever.
TERMINATION_GRACE = "10m"
CAPACITY_TYPES = {"on-demand": ["on-demand"], "spot": ["spot"], "spot-and-on-demand": ["spot", "on-demand"]}


def node_pool_spec(settings: ClusterSettings) -> dict[str, Any]:
    """The NodePool spec: what may be launched, how it is bought, when it is replaced, and how much in all."""
    return {
        "template": {
            "metadata": {"labels": POOL_LABEL},
            "spec": {
                "nodeClassRef": {"group": "eks.amazonaws.com", "kind": "NodeClass", "name": NODE_CLASS},
                "requirements": [
                    {"key": "eks.amazonaws.com/instance-family", "operator": "In",
                     "values": list(settings.instance_families)},
                    {"key": "eks.amazonaws.com/instance-cpu", "operator": "In",
                     "values": [str(c) for c in settings.instance_cpus]},
                    {"key": "karpenter.sh/capacity-type", "operator": "In",
                     "values": CAPACITY_TYPES[settings.capacity_type]},
                    # The image is built for linux/amd64 (infra/shared/image.py).
                    {"key": "kubernetes.io/arch", "operator": "In", "values": ["amd64"]},
                ],
                "expireAfter": EXPIRE_AFTER,
                "terminationGracePeriod": TERMINATION_GRACE,
            },
        },
        "limits": {"cpu": str(settings.cpu_limit), "memory": f"{settings.memory_gib}Gi"},
        "disruption": {
            "consolidationPolicy": "WhenEmptyOrUnderutilized",
            "consolidateAfter": "5m",
            "budgets": [{"nodes": "10%"}],
        },
    }


def node_class_spec(role_name: str, subnet_ids: list[str], security_group_id: str,
                    tags: dict[str, str]) -> dict[str, Any]:
    """The NodeClass spec: the Auto Mode node role, private subnets, the cluster security group, NetworkPolicy on."""
    return {
        "role": role_name,
        "subnetSelectorTerms": [{"id": subnet} for subnet in subnet_ids],
        "securityGroupSelectorTerms": [{"id": security_group_id}],
        "networkPolicy": "DefaultAllow",
        "networkPolicyEventLogs": "Disabled",
        "tags": tags,
    }


@dataclass(frozen=True)
class NodePoolArgs:
    """The pool's settings, where its nodes go (role, subnets, security group) and the cluster's provider."""

    settings: ClusterSettings
    node_role_name: pulumi.Input[str]
    private_subnet_ids: pulumi.Input[list[str]]
    security_group_id: pulumi.Input[str]
    provider: k8s.Provider
    depends_on: list[pulumi.Resource]
    tags: dict[str, str]


class NodePool(pulumi.ComponentResource):
    """NodeClass + NodePool + the NetworkPolicy switch; `ready` is what every workload must wait for (and what
    `pulumi destroy` deletes after them, so no drain waits on pods that are about to go anyway)."""

    ready: list[pulumi.Resource]

    def __init__(self, name: str, args: NodePoolArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlapi:nodepool:NodePool", name, None, opts)
        k8s_opts = pulumi.ResourceOptions(parent=self, provider=args.provider, depends_on=args.depends_on)
        network_policy = k8s.core.v1.ConfigMap(
            f"{name}-network-policy",
            metadata={"name": "amazon-vpc-cni", "namespace": "kube-system"},
            data={"enable-network-policy-controller": "true"},
            opts=k8s_opts,
        )
        node_class = k8s.apiextensions.CustomResource(
            f"{name}-class",
            api_version="eks.amazonaws.com/v1",
            kind="NodeClass",
            metadata={"name": NODE_CLASS},
            spec=pulumi.Output.all(args.node_role_name, args.private_subnet_ids, args.security_group_id).apply(
                lambda v: node_class_spec(v[0], v[1], v[2], args.tags)
            ),
            opts=k8s_opts,
        )
        pool = k8s.apiextensions.CustomResource(
            f"{name}-pool",
            api_version="karpenter.sh/v1",
            kind="NodePool",
            metadata={"name": NODE_POOL},
            spec=node_pool_spec(args.settings),
            opts=pulumi.ResourceOptions.merge(
                k8s_opts,
                # Deleting a NodePool drains and terminates its nodes before the object goes.
                pulumi.ResourceOptions(depends_on=[node_class, network_policy],
                                       custom_timeouts=pulumi.CustomTimeouts(delete="20m")),
            ),
        )
        self.ready = [pool, node_class, network_policy]
        self.register_outputs({})
