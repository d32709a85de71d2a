"""CloudWatch log groups, created before the things that write to them, so every log has a retention period.

EKS control-plane logging and Container Insights create their log groups on first write with "never expire";
creating them here first (same names) makes retention part of the stack and lets `pulumi destroy` remove them.
"""

from __future__ import annotations

from dataclasses import dataclass

import pulumi
import pulumi_aws as aws


def eks_log_group_names(cluster_name: str) -> dict[str, str]:
    """Log groups EKS and the CloudWatch observability add-on write to (EKS user guide, "Control plane logs";
    CloudWatch "Container Insights on Amazon EKS" log groups)."""
    return {
        "control-plane": f"/aws/eks/{cluster_name}/cluster",
        "application": f"/aws/containerinsights/{cluster_name}/application",
        "dataplane": f"/aws/containerinsights/{cluster_name}/dataplane",
        "host": f"/aws/containerinsights/{cluster_name}/host",
        "performance": f"/aws/containerinsights/{cluster_name}/performance",
    }


def ecs_log_group_names(cluster_name: str, services: list[str]) -> dict[str, str]:
    """One log group per Fargate service plus the Container Insights performance group."""
    groups = {svc: f"/ecs/{cluster_name}/{svc}" for svc in services}
    groups["performance"] = f"/aws/ecs/containerinsights/{cluster_name}/performance"
    return groups


@dataclass(frozen=True)
class ObservabilityArgs:
    """Role -> log group name, and how long to keep the logs."""

    log_groups: dict[str, str]
    retention_days: int
    tags: dict[str, str]


class Observability(pulumi.ComponentResource):
    """The stack's log groups; `log_group_names` maps each role to the group's name."""

    log_group_names: dict[str, pulumi.Output[str]]

    def __init__(self, name: str, args: ObservabilityArgs, opts: pulumi.ResourceOptions | None = None) -> None:
        super().__init__("mlapi:observability:Observability", name, None, opts)
        self.log_group_names = {}
        for role, group_name in args.log_groups.items():
            group = aws.cloudwatch.LogGroup(
                f"{name}-{role}",
                name=group_name,
                retention_in_days=args.retention_days,
                tags=args.tags,
                opts=pulumi.ResourceOptions(parent=self),
            )
            self.log_group_names[role] = group.name
        self.register_outputs({"log_group_names": self.log_group_names})
