"""Cluster Autoscaler: adds nodes when pods (the HPAs' new replicas) are Pending, removes them when idle.

It scales the managed node group the cluster already has, found by the tags EKS puts on the group's Auto
Scaling group (`k8s.io/cluster-autoscaler/enabled`, `k8s.io/cluster-autoscaler/<cluster>`), between the node
group's min and max sizes. Its AWS permissions come through Pod Identity and may change the desired capacity
only of groups tagged for this cluster (cluster-autoscaler/cloudprovider/aws/README.md, "IAM Policy").
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra import versions
from infra.capacity import RELEASE_REQUESTS
from infra.eks.pod_identity import PodIdentityRole, PodIdentityRoleArgs

RELEASE = "cluster-autoscaler"
REPO = "https://kubernetes.github.io/autoscaler"
NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "cluster-autoscaler"


def autoscaler_policy(cluster_name: str) -> str:
    """Read Auto Scaling groups and instance types; scale and terminate only this cluster's groups."""
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": [
                        "autoscaling:DescribeAutoScalingGroups",
                        "autoscaling:DescribeAutoScalingInstances",
                        "autoscaling:DescribeLaunchConfigurations",
                        "autoscaling:DescribeScalingActivities",
                        "autoscaling:DescribeTags",
                        "ec2:DescribeImages",
                        "ec2:DescribeInstanceTypes",
                        "ec2:DescribeLaunchTemplateVersions",
                        "ec2:GetInstanceTypesFromInstanceRequirements",
                        "eks:DescribeNodegroup",
                    ],
                    "Resource": "*",
                },
                {
                    "Effect": "Allow",
                    "Action": ["autoscaling:SetDesiredCapacity", "autoscaling:TerminateInstanceInAutoScalingGroup"],
                    "Resource": "*",
                    "Condition": {
                        "StringEquals": {f"aws:ResourceTag/k8s.io/cluster-autoscaler/{cluster_name}": "owned"}
                    },
                },
            ],
        }
    )


@dataclass(frozen=True)
class ClusterAutoscalerArgs:
    """The cluster, its Kubernetes version (the autoscaler's minor must match) and region."""

    cluster_name: str
    cluster_name_output: pulumi.Input[str]
    kubernetes_version: str
    region: str
    provider: k8s.Provider
    depends_on: list[pulumi.Resource]
    tags: dict[str, str]


class ClusterAutoscaler(pulumi.ComponentResource):
    """The cluster-autoscaler Helm release with its Pod Identity role."""

    release: k8s.helm.v3.Release

    def __init__(self, name: str, args: ClusterAutoscalerArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlapi:autoscaler:ClusterAutoscaler", name, None, opts)
        identity = PodIdentityRole(
            f"{name}-identity",
            PodIdentityRoleArgs(
                cluster_name=args.cluster_name_output,
                namespace=NAMESPACE,
                service_account=SERVICE_ACCOUNT,
                policy=autoscaler_policy(args.cluster_name),
                tags=args.tags,
                depends_on=args.depends_on,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        (pod,) = RELEASE_REQUESTS[RELEASE]
        self.release = k8s.helm.v3.Release(
            f"{name}-release",
            name=RELEASE,
            chart="cluster-autoscaler",
            version=versions.CLUSTER_AUTOSCALER_CHART,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=REPO),
            namespace=NAMESPACE,
            values={
                "cloudProvider": "aws",
                "awsRegion": args.region,
                "autoDiscovery": {"clusterName": args.cluster_name},
                "image": {"tag": versions.CLUSTER_AUTOSCALER_IMAGES[args.kubernetes_version]},
                "rbac": {"serviceAccount": {"create": True, "name": SERVICE_ACCOUNT}},
                "replicaCount": pod.min_replicas,
                "resources": pod.resources(),
                "extraArgs": {
                    # Spread new nodes over the AZs the node group spans; pick the group that wastes least.
                    "balance-similar-node-groups": True,
                    "expander": "least-waste",
                    "skip-nodes-with-system-pods": False,
                    # The model pods' only local storage is an emptyDir /tmp scratch: it must not pin a node.
                    "skip-nodes-with-local-storage": False,
                },
            },
            atomic=True,
            timeout=600,
            opts=pulumi.ResourceOptions(
                parent=self, provider=args.provider, depends_on=[*args.depends_on, identity.association]
            ),
        )
        self.register_outputs({})
