"""EKS access entries: who, besides the identity that created the cluster, may use the Kubernetes API.

With `authentication_mode=API` and no entries, only the creator is admin, so whichever of a person, the deploy
workflow and the preview workflow did not create the cluster gets Unauthorized from the Kubernetes provider.
Each configured principal gets one entry and one policy association (EKS user guide, "Grant IAM users access to
Kubernetes with EKS access entries"; "Review access policy permissions" for the policies).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

from infra.config import ClusterAccess

_POLICY = "arn:aws:eks::aws:cluster-access-policy/"
ADMIN_POLICY = _POLICY + "AmazonEKSClusterAdminPolicy"
# Read of every object except Secrets. `pulumi preview` with it falls back from a server-side dry run to a
# client-side diff (pulumi-kubernetes #2419), which is what a read-only preview can have.
VIEW_POLICY = _POLICY + "AmazonEKSViewPolicy"


def access_policies(access: ClusterAccess) -> dict[str, tuple[str, str]]:
    """role name -> (principal ARN, access policy ARN) for every configured principal."""
    grants = {f"admin-{i}": (arn, ADMIN_POLICY) for i, arn in enumerate(access.admin_arns)}
    if access.deploy_role_arn:
        grants["deploy"] = (access.deploy_role_arn, ADMIN_POLICY)
    if access.preview_role_arn:
        grants["preview"] = (access.preview_role_arn, VIEW_POLICY)
    return grants


@dataclass(frozen=True)
class AccessEntriesArgs:
    """The cluster (its name, as an output so the entries wait for it) and who gets access."""

    cluster_name: pulumi.Input[str]
    access: ClusterAccess
    tags: dict[str, str]


class AccessEntries(pulumi.ComponentResource):
    """One access entry plus cluster-scoped policy association per principal; `ready` lists the associations."""

    ready: list[pulumi.Resource]

    def __init__(self, name: str, args: AccessEntriesArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlapi:access:AccessEntries", name, None, opts)
        self.ready = []
        for role, (principal, policy) in access_policies(args.access).items():
            entry = aws.eks.AccessEntry(
                f"{name}-{role}",
                cluster_name=args.cluster_name,
                principal_arn=principal,
                type="STANDARD",
                tags=args.tags,
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.ready.append(
                aws.eks.AccessPolicyAssociation(
                    f"{name}-{role}-policy",
                    cluster_name=args.cluster_name,
                    principal_arn=entry.principal_arn,
                    policy_arn=policy,
                    access_scope=aws.eks.AccessPolicyAssociationAccessScopeArgs(type="cluster"),
                    opts=pulumi.ResourceOptions(parent=self),
                )
            )
        self.register_outputs({})
