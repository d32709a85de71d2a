"""The VPC every other component lives in: public subnets for load balancers, private subnets for the rest.

Nodes, tasks and Redis never get public addresses; they reach ECR and the model hub through NAT. One NAT gateway
is enough for a dev stack, one per AZ survives an AZ outage (config `natGateways`).
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_awsx as awsx

from infra.config import NetworkSettings


@dataclass(frozen=True)
class NetworkArgs:
    """Shape of the VPC and the tags its resources carry."""

    settings: NetworkSettings
    tags: dict[str, str]


class Network(pulumi.ComponentResource):
    """An awsx VPC with public and private subnets spread over `availability_zones` AZs."""

    vpc_id: pulumi.Output[str]
    public_subnet_ids: pulumi.Output[list[str]]
    private_subnet_ids: pulumi.Output[list[str]]

    def __init__(self, name: str, args: NetworkArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlapi:network:Network", name, None, opts)
        nat = (
            awsx.ec2.NatGatewayStrategy.SINGLE
            if args.settings.nat_gateways == "single"
            else awsx.ec2.NatGatewayStrategy.ONE_PER_AZ
        )
        vpc = awsx.ec2.Vpc(
            f"{name}-vpc",
            cidr_block=args.settings.cidr,
            number_of_availability_zones=args.settings.availability_zones,
            enable_dns_hostnames=True,
            enable_dns_support=True,
            nat_gateways=awsx.ec2.NatGatewayConfigurationArgs(strategy=nat),
            subnet_strategy=awsx.ec2.SubnetAllocationStrategy.AUTO,
            subnet_specs=[
                # The role tags tell Kubernetes' AWS cloud provider where to put public and internal load
                # balancers (https://docs.aws.amazon.com/eks/latest/userguide/network-load-balancing.html).
                awsx.ec2.SubnetSpecArgs(
                    type=awsx.ec2.SubnetType.PUBLIC, cidr_mask=22, tags={**args.tags, "kubernetes.io/role/elb": "1"}
                ),
                awsx.ec2.SubnetSpecArgs(
                    type=awsx.ec2.SubnetType.PRIVATE,
                    cidr_mask=20,
                    tags={**args.tags, "kubernetes.io/role/internal-elb": "1"},
                ),
            ],
            tags=args.tags,
            opts=pulumi.ResourceOptions(parent=self),
        )
        self.vpc_id = vpc.vpc_id
        self.public_subnet_ids = vpc.public_subnet_ids
        self.private_subnet_ids = vpc.private_subnet_ids
        self.register_outputs(
            {
                "vpc_id": self.vpc_id,
                "public_subnet_ids": self.public_subnet_ids,
                "private_subnet_ids": self.private_subnet_ids,
            }
        )
