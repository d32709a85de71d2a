"""The EKS cluster on EKS Auto Mode, and the Kubernetes provider every Kubernetes object in this program uses.

Auto Mode (pulumi-eks `Cluster(auto_mode=...)`) has AWS run what a cluster used to need installed and
permissioned by hand: compute autoscaling (Karpenter), the load balancer controller, the Pod Identity agent,
CoreDNS, kube-proxy, the VPC CNI and block storage, all outside the cluster's own pods (EKS user guide, "Automate
cluster infrastructure with EKS Auto Mode"). Only the built-in `system` NodePool is kept (for what Auto Mode itself
schedules); every workload of the stack runs on the program's own NodePool (node_pool.py). metrics-server is not
part of Auto Mode, and the HPAs need it, so it is installed here.

Nothing here relies on the ambient kubeconfig: the provider is built from the cluster's own `kubeconfig_json`
and the stack sets `pulumi:disable-default-providers: [kubernetes]`, so no object can land in whatever cluster
kubectl happens to point at (pulumi-eks #745, pulumi-kubernetes #1565).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws
import pulumi_eks as eks
import pulumi_kubernetes as k8s

from infra.capacity import RELEASE_REQUESTS
from infra.config import ClusterSettings
from infra.eks.access import AccessEntries, AccessEntriesArgs
from infra.eks.node_pool import NodePool, NodePoolArgs

CONTROL_PLANE_LOG_TYPES = ["api", "audit", "authenticator", "controllerManager", "scheduler"]
METRICS_SERVER_REPO = "https://kubernetes-sigs.github.io/metrics-server/"
# Lets the CloudWatch observability add-on's agent on each node publish Container Insights metrics and logs.
CLOUDWATCH_AGENT_POLICY = "arn:aws:iam::aws:policy/CloudWatchAgentServerPolicy"


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
    """EKS Auto Mode with API authentication, an OIDC provider, encrypted secrets, control-plane logs, Container
    Insights, metrics-server and the stack's NodePool; `ready` is what every in-cluster object waits for."""

    cluster_name: pulumi.Output[str]
    kubeconfig: pulumi.Output[str]
    node_security_group_id: pulumi.Output[str]
    oidc_provider_arn: pulumi.Output[str]
    provider: k8s.Provider
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
            # Access entries instead of the aws-auth ConfigMap (Auto Mode requires them); the creator gets cluster
            # admin (https://docs.aws.amazon.com/eks/latest/userguide/grant-k8s-access.html#set-cam).
            authentication_mode=eks.AuthenticationMode.API,
            create_oidc_provider=True,
            skip_default_node_group=True,
            # With the defaults skipped, cluster_security_group_id is the group EKS creates, which Auto Mode nodes
            # carry (node_pool.py selects it) and which Redis must admit (pulumi-eks Cluster docs).
            skip_default_security_groups=True,
            encryption_config_key_arn=secrets_key.arn,
            enabled_cluster_log_types=CONTROL_PLANE_LOG_TYPES,
            # pulumi-eks creates the node role with its access entry; only the `system` pool is built in.
            auto_mode=eks.AutoModeOptionsArgs(
                enabled=True,
                create_node_role=True,
                compute_config=eks.ClusterComputeConfigArgs(node_pools=["system"]),
            ),
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.log_groups),
        )
        cloudwatch_policy = aws.iam.RolePolicyAttachment(
            f"{name}-node-cloudwatch",
            role=cluster.auto_mode_node_role_name,
            policy_arn=CLOUDWATCH_AGENT_POLICY,
            opts=child,
        )

        self.cluster_name = cluster.urn.apply(lambda _: args.cluster_name)
        access = AccessEntries(
            f"{name}-access",
            AccessEntriesArgs(cluster_name=self.cluster_name, access=settings.access, tags=args.tags),
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.provider = k8s.Provider(
            f"{name}-k8s",
            kubeconfig=cluster.kubeconfig_json,
            enable_server_side_apply=True,
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*access.ready]),
        )
        pool = NodePool(
            f"{name}-pool",
            NodePoolArgs(
                settings=settings,
                node_role_name=cluster.auto_mode_node_role_name,
                private_subnet_ids=args.private_subnet_ids,
                security_group_id=cluster.cluster_security_group_id,
                provider=self.provider,
                depends_on=[],
                tags=args.tags,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        insights = aws.eks.Addon(
            f"{name}-container-insights",
            cluster_name=self.cluster_name,
            addon_name="amazon-cloudwatch-observability",
            resolve_conflicts_on_create="OVERWRITE",
            resolve_conflicts_on_update="OVERWRITE",
            tags=args.tags,
            # Its agent pods need nodes to run on, and the node role's CloudWatch permission.
            opts=pulumi.ResourceOptions(parent=self, depends_on=[*pool.ready, cloudwatch_policy]),
        )
        (metrics_pod,) = RELEASE_REQUESTS["metrics-server"]
        metrics_server = k8s.helm.v3.Release(
            f"{name}-metrics-server",
            name="metrics-server",
            chart="metrics-server",
            version=settings.metrics_server_version,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=METRICS_SERVER_REPO),
            namespace="kube-system",
            values={"resources": metrics_pod.resources()},
            atomic=True,
            timeout=600,
            opts=pulumi.ResourceOptions(parent=self, provider=self.provider, depends_on=pool.ready),
        )

        self.kubeconfig = pulumi.Output.secret(cluster.kubeconfig_json)
        self.node_security_group_id = cluster.cluster_security_group_id
        self.oidc_provider_arn = cluster.oidc_provider_arn
        self.ready = [*pool.ready, metrics_server, insights, *access.ready]
        self.register_outputs(
            {
                "cluster_name": self.cluster_name,
                "kubeconfig": self.kubeconfig,
                "node_security_group_id": self.node_security_group_id,
                "oidc_provider_arn": self.oidc_provider_arn,
            }
        )
