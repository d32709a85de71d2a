"""The EKS cluster: control plane, a managed node group in the private subnets, and the Kubernetes provider that
every Kubernetes object in this program is created through.

Nothing here relies on the ambient kubeconfig: the provider is built from the cluster's own `kubeconfig_json`
and the stack sets `pulumi:disable-default-providers: [kubernetes]`, so no object can land in whatever cluster
kubectl happens to point at (pulumi-eks #745, pulumi-kubernetes #1565).
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_eks as eks
import pulumi_kubernetes as k8s

from infra.config import ClusterSettings
from infra.eks.access import AccessEntries, AccessEntriesArgs

_NODE_POLICIES = {
    "worker": "arn:aws:iam::aws:policy/AmazonEKSWorkerNodePolicy",
    "cni": "arn:aws:iam::aws:policy/AmazonEKS_CNI_Policy",
    "ecr": "arn:aws:iam::aws:policy/AmazonEC2ContainerRegistryReadOnly",
    # Lets the CloudWatch observability add-on on each node publish Container Insights metrics and logs.
    "cloudwatch": "arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy",
}
CONTROL_PLANE_LOG_TYPES = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
METRICS_SERVER_REPO = "https://kubernetes-sigs.github.io/metrics-server/"


@dataclass(frozen=True)
class ClusterArgs:
    """Cluster name, sizing, network placement and the log groups that must exist before the control plane."""

    cluster_name: str
    settings: ClusterSettings
    vpc_id: pulumi.Input[str]
    public_subnet_ids: pulumi.Input[list[str]]
    private_subnet_ids: pulumi.Input[list[str]]
    log_groups: list[pulumi.Resource]
    tags: dict[str, str]


class Cluster(pulumi.ComponentResource):
    """EKS with API authentication, an OIDC provider, encrypted secrets, control-plane logs and metrics-server."""

    cluster_name: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    node_security_group_id: pulumi.Output[str]
    oidc_provider_arn: pulumi.Output[str]
    provider: k8s.Provider
    pod_identity_agent: pulumi.Resource
    ready: list[pulumi.Resource]

    def __init__(self, name: str, args: ClusterArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlapi:cluster:Cluster", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        settings = args.settings

        secrets_key = aws.kms.Key(
            f"{name}-secrets-key",
            description=f"Envelope encryption of Kubernetes secrets in {args.cluster_name}",
            enable_key_rotation=True,
            deletion_window_in_days=7,
            tags=args.tags,
            opts=child,
        )
        node_role = aws.iam.Role(
            f"{name}-node-role",
            assume_role_policy=json.dumps(
                {
                    "Version": "2012-10-17",
                    "Statement": [
                        {"Effect": "Allow", "Principal": {"Service": "ec2.amazonaws.com"}, "Action": "sts:AssumeRole"}
                    ],
                }
            ),
            tags=args.tags,
            opts=child,
        )
        attachments = [
            aws.iam.RolePolicyAttachment(f"{name}-node-{role}", role=node_role.name, policy_arn=arn, opts=child)
            for role, arn in _NODE_POLICIES.items()
        ]

        cluster = eks.Cluster(
            f"{name}-eks",
            name=args.cluster_name,
            version=settings.kubernetes_version,
            vpc_id=args.vpc_id,
            public_subnet_ids=args.public_subnet_ids,
            private_subnet_ids=args.private_subnet_ids,
            node_associate_public_ip_address=False,
            endpoint_private_access=True,
            endpoint_public_access=settings.public_access,
            public_access_cidrs=list(settings.public_access_cidrs) or None,
            # Access entries instead of the aws-auth ConfigMap; the creator gets cluster admin
            # (https://docs.aws.amazon.com/eks/latest/userguide/grant-k8s-access.html#set-cam).
            authentication_mode=eks.AuthenticationMode.API,
            create_oidc_provider=True,
            skip_default_node_group=True,
            # Managed node groups use the security group EKS creates; with the defaults skipped,
            # node_security_group_id is that group, the one Redis must admit (pulumi-eks Cluster docs).
            skip_default_security_groups=True,
            encryption_config_key_arn=secrets_key.arn,
            enabled_cluster_log_types=CONTROL_PLANE_LOG_TYPES,
            # VPC CNI enforces NetworkPolicy only when asked to (EKS user guide, "Limit pod traffic").
            vpc_cni_options=eks.VpcCniOptionsArgs(enable_network_policy=True),
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.log_groups),
        )
        node_group = eks.ManagedNodeGroup(
            f"{name}-nodes",
            cluster=cluster,
            node_role=node_role,
            instance_types=[settings.instance_type],
            subnet_ids=args.private_subnet_ids,
            scaling_config=aws.eks.NodeGroupScalingConfigArgs(
                min_size=settings.min_nodes, desired_size=settings.desired_nodes, max_size=settings.max_nodes
            ),
            # Cluster Autoscaler owns the desired size once the group exists (autoscaler.py).
            ignore_scaling_changes=True,
            labels={"mlapi/pool": "models"},
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=attachments),
        )
        insights = aws.eks.Addon(
            f"{name}-container-insights",
            cluster_name=args.cluster_name,
            addon_name="amazon-cloudwatch-observability",
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[cluster, node_group]),
        )

        self.cluster_name = cluster.urn.apply(lambda _: args.cluster_name)
        access = AccessEntries(
            f"{name}-access",
            AccessEntriesArgs(cluster_name=self.cluster_name, access=settings.access, tags=args.tags),
            opts=pulumi.ResourceOptions(parent=self),
        )
        # Pod Identity: how the in-cluster controllers (autoscaler, load balancer controller) get AWS credentials.
        pod_identity = aws.eks.Addon(
            f"{name}-pod-identity-agent",
            cluster_name=self.cluster_name,
            addon_name="eks-pod-identity-agent",
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[node_group]),
        )
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=cluster.kubeconfig_json,
            enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[node_group, *access.ready]),
        )
        metrics_server = k8s.helm.v3.Release(
            f"{name}-metrics-server",
            name="metrics-server",
            chart="metrics-server",
            version=settings.metrics_server_version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=METRICS_SERVER_REPO),
            namespace="kube-system",
            atomic=True,
            timeout=600,
            opts=pulumi.ResourceOptions(parent=self, provider=self.provider),
        )

        self.kubeconfig = pulumi.Output.secret(cluster.kubeconfig_json)
        self.node_security_group_id = cluster.node_security_group_id
        self.oidc_provider_arn = cluster.oidc_provider_arn
        self.pod_identity_agent = pod_identity
        self.ready = [node_group, metrics_server, insights, pod_identity, *access.ready]
        self.register_outputs(
            {
                "cluster_name": self.cluster_name,
                "kubeconfig": self.kubeconfig,
                "node_security_group_id": self.node_security_group_id,
                "oidc_provider_arn": self.oidc_provider_arn,
            }
        )
