"""AWS Load Balancer Controller: provisions the Istio gateway's Network Load Balancer with IP targets.

The legacy in-tree cloud provider would publish every Service port through NodePorts open to 0.0.0.0/0; the
controller instead registers the gateway pods' IPs directly and opens only the load balancer's listener ports,
with backend rules from the load balancer's own security group. Its AWS permissions come through Pod Identity.
The policy below covers what the controller does for a Service of type LoadBalancer (NLB, IP targets,
security groups, tags); Ingress-only features (WAF, Shield, Cognito) are not granted and are switched off.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import pulumi
import pulumi_kubernetes as k8s

from infra import versions
from infra.capacity import RELEASE_REQUESTS
from infra.eks.pod_identity import PodIdentityRole, PodIdentityRoleArgs

RELEASE = "aws-load-balancer-controller"
REPO = "https://aws.github.io/eks-charts"
NAMESPACE = "kube-system"
SERVICE_ACCOUNT = "aws-load-balancer-controller"
CLUSTER_TAG = "elbv2.k8s.aws/cluster"


def controller_policy() -> str:
    """Read the network and load balancers; create and change only what carries the controller's cluster tag."""
    tagged_resource = {"Null": {f"aws:ResourceTag/{CLUSTER_TAG}": "false"}}
    tagged_request = {"Null": {f"aws:RequestTag/{CLUSTER_TAG}": "false"}}
    return json.dumps(
        {
            "Version": "2012-10-17",
            "Statement": [
                {
                    "Effect": "Allow",
                    "Action": [
                        "ec2:DescribeAccountAttributes", "ec2:DescribeAddresses", "ec2:DescribeAvailabilityZones",
                        "ec2:DescribeInternetGateways", "ec2:DescribeVpcs", "ec2:DescribeSubnets",
                        "ec2:DescribeSecurityGroups", "ec2:DescribeInstances", "ec2:DescribeNetworkInterfaces",
                        "ec2:DescribeTags", "ec2:DescribeRouteTables", "ec2:DescribeIpamPools",
                        "ec2:GetSecurityGroupsForVpc", "elasticloadbalancing:Describe*",
                        "acm:ListCertificates", "acm:DescribeCertificate",
                    ],
                    "Resource": "*",
                },
                {
                    "Effect": "Allow",
                    "Action": "iam:CreateServiceLinkedRole",
                    "Resource": "*",
                    "Condition": {"StringEquals": {"iam:AWSServiceName": "elasticloadbalancing.amazonaws.com"}},
                },
                {
                    "Effect": "Allow",
                    "Action": "ec2:CreateSecurityGroup",
                    "Resource": "*",
                },
                {
                    "Effect": "Allow",
                    "Action": "ec2:CreateTags",
                    "Resource": "arn:aws:ec2:*:*:security-group/*",
                    "Condition": {"StringEquals": {"ec2:CreateAction": "CreateSecurityGroup"}, **tagged_request},
                },
                {
                    "Effect": "Allow",
                    "Action": [
                        "ec2:CreateTags", "ec2:DeleteTags", "ec2:DeleteSecurityGroup",
                    ],
                    "Resource": "arn:aws:ec2:*:*:security-group/*",
                    "Condition": tagged_resource,
                },
                {
                    # Backend rules go on the cluster's node/pod security groups, which the controller does not tag.
                    "Effect": "Allow",
                    "Action": ["ec2:AuthorizeSecurityGroupIngress", "ec2:RevokeSecurityGroupIngress"],
                    "Resource": "*",
                },
                {
                    "Effect": "Allow",
                    "Action": ["elasticloadbalancing:CreateLoadBalancer", "elasticloadbalancing:CreateTargetGroup"],
                    "Resource": "*",
                    "Condition": tagged_request,
                },
                {
                    "Effect": "Allow",
                    "Action": ["elasticloadbalancing:AddTags"],
                    "Resource": [
                        "arn:aws:elasticloadbalancing:*:*:targetgroup/*/*",
                        "arn:aws:elasticloadbalancing:*:*:loadbalancer/net/*/*",
                        "arn:aws:elasticloadbalancing:*:*:loadbalancer/app/*/*",
                    ],
                    "Condition": {
                        "StringEquals": {
                            "elasticloadbalancing:CreateAction": ["CreateTargetGroup", "CreateLoadBalancer"]
                        },
                        **tagged_request,
                    },
                },
                {
                    "Effect": "Allow",
                    "Action": [
                        "elasticloadbalancing:AddTags", "elasticloadbalancing:RemoveTags",
                        "elasticloadbalancing:ModifyLoadBalancerAttributes", "elasticloadbalancing:SetIpAddressType",
                        "elasticloadbalancing:SetSecurityGroups", "elasticloadbalancing:SetSubnets",
                        "elasticloadbalancing:DeleteLoadBalancer", "elasticloadbalancing:ModifyTargetGroup",
                        "elasticloadbalancing:ModifyTargetGroupAttributes", "elasticloadbalancing:DeleteTargetGroup",
                        "elasticloadbalancing:ModifyCapacityReservation",
                    ],
                    "Resource": "*",
                    "Condition": tagged_resource,
                },
                {
                    "Effect": "Allow",
                    "Action": [
                        "elasticloadbalancing:CreateListener", "elasticloadbalancing:DeleteListener",
                        "elasticloadbalancing:ModifyListener", "elasticloadbalancing:ModifyListenerAttributes",
                        "elasticloadbalancing:AddListenerCertificates",
                        "elasticloadbalancing:RemoveListenerCertificates",
                        "elasticloadbalancing:RegisterTargets", "elasticloadbalancing:DeregisterTargets",
                    ],
                    "Resource": "*",
                },
            ],
        }
    )


@dataclass(frozen=True)
class LoadBalancerControllerArgs:
    """The cluster, its VPC and region, and what the release must wait for."""

    cluster_name: str
    cluster_name_output: pulumi.Input[str]
    vpc_id: pulumi.Input[str]
    region: str
    provider: k8s.Provider
    depends_on: list[pulumi.Resource]
    tags: dict[str, str]


class LoadBalancerController(pulumi.ComponentResource):
    """The aws-load-balancer-controller Helm release with its Pod Identity role; `release` is what Services of
    type LoadBalancer must wait for (its webhook claims them)."""

    release: k8s.helm.v3.Release

    def __init__(
        self, name: str, args: LoadBalancerControllerArgs, opts: pulumi.ResourceOptions | None = None
    ) -> None:
        super().__init__("mlapi:lbcontroller:LoadBalancerController", name, None, opts)
        identity = PodIdentityRole(
            f"{name}-identity",
            PodIdentityRoleArgs(
                cluster_name=args.cluster_name_output,
                namespace=NAMESPACE,
                service_account=SERVICE_ACCOUNT,
                policy=controller_policy(),
                tags=args.tags,
                depends_on=args.depends_on,
            ),
            opts=pulumi.ResourceOptions(parent=self),
        )
        (pod,) = RELEASE_REQUESTS[RELEASE]
        self.release = k8s.helm.v3.Release(
            f"{name}-release",
            name=RELEASE,
            chart="aws-load-balancer-controller",
            version=versions.AWS_LOAD_BALANCER_CONTROLLER_CHART,
            repository_opts=k8s.helm.v3.RepositoryOptsArgs(repo=REPO),
            namespace=NAMESPACE,
            values={
                "clusterName": args.cluster_name,
                "region": args.region,
                # Set explicitly so the controller never depends on reaching the instance metadata service.
                "vpcId": args.vpc_id,
                "serviceAccount": {"create": True, "name": SERVICE_ACCOUNT},
                "replicaCount": pod.min_replicas,
                "resources": pod.resources(),
                "enableShield": False,
                "enableWaf": False,
                "enableWafv2": False,
            },
            atomic=True,
            timeout=600,
            opts=pulumi.ResourceOptions(
                parent=self, provider=args.provider, depends_on=[*args.depends_on, identity.association]
            ),
        )
        self.register_outputs({})
