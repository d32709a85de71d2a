"""An IAM role for one Kubernetes service account through EKS Pod Identity.

The role trusts `pods.eks.amazonaws.com` and an association binds it to the service account, so the pod gets
credentials from the Pod Identity agent without OIDC trust policies per cluster (EKS user guide, "Learn how EKS
Pod Identity grants pods access to AWS services").
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_aws as aws

POD_IDENTITY_TRUST = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": {"Service": "pods.eks.amazonaws.com"},
                "Action": ["sts:AssumeRole", "sts:TagSession"],
            }
        ],
    }
)


@dataclass(frozen=True)
class PodIdentityRoleArgs:
    """The cluster, the service account, and the permissions its pods need."""

    cluster_name: pulumi.Input[str]
    namespace: str
    service_account: str
    policy: pulumi.Input[str]
    tags: dict[str, str]
    depends_on: list[pulumi.Resource]


class PodIdentityRole(pulumi.ComponentResource):
    """Role + inline policy + Pod Identity association for `namespace/service_account`."""

    role_arn: pulumi.Output[str]
    association: aws.eks.PodIdentityAssociation

    def __init__(self, name: str, args: PodIdentityRoleArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlapi:podidentity:PodIdentityRole", name, None, opts)
        child = pulumi.ResourceOptions(parent=self)
        role = aws.iam.Role(f"{name}-role", assume_role_policy=POD_IDENTITY_TRUST, tags=args.tags, opts=child)
        aws.iam.RolePolicy(f"{name}-policy", role=role.id, policy=args.policy, opts=child)
        self.association = aws.eks.PodIdentityAssociation(
            f"{name}-association",
            cluster_name=args.cluster_name,
            namespace=args.namespace,
            service_account=args.service_account,
            role_arn=role.arn,
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self, depends_on=args.depends_on),
        )
        self.role_arn = role.arn
        self.register_outputs({"role_arn": self.role_arn})
