"""Entry point of the Pulumi program: read the typed config, declare the shared foundation, then one platform.

`platform: eks` puts the services on EKS behind Istio (`eks/platform.py`); `platform: fargate` on ECS Fargate
behind an ALB (`fargate/platform.py`). Network, registry, images and cache are the same on both
(`shared/foundation.py`). The Pulumi CLI runs this file with `infra/` as the working directory; nothing here or below
depends on the working directory.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pulumi

# Pulumi runs this file by path (`main: infra/`); make `infra.*` importable without an installed package.
sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from infra import config as stack_config  # noqa: E402
from infra import cost  # noqa: E402
from infra.eks.platform import HELM_RELEASES, check_capacity, deploy_eks  # noqa: E402
from infra.fargate.platform import deploy_fargate  # noqa: E402
from infra.shared.budget import Budget, BudgetArgs  # noqa: E402
from infra.shared.foundation import build_foundation  # noqa: E402

cfg = stack_config.load()
if cfg.platform == "eks":
    check_capacity(cfg)  # a node group that cannot hold the cluster fails before anything is declared
estimate = cost.estimate(cfg, HELM_RELEASES)
for warning in estimate.warnings:
    pulumi.warn(f"estimatedMonthlyCostUsd: {warning}")
base = build_foundation(cfg)
deploy = deploy_eks if cfg.platform == "eks" else deploy_fargate
outputs = {
    **deploy(cfg, base),
    "repositoryUrl": base.registry.repository_url,
    "redisEndpoint": base.cache.endpoint,
    "vpcId": base.network.vpc_id,
    "estimatedMonthlyCostUsd": estimate.as_output(),
}
candidates = {svc.name: base.candidate_image_ref(svc.name) for svc in cfg.services if svc.candidate is not None}
if candidates:
    # The image each candidate rolls out with, visible in `pulumi preview` and `pulumi stack output`.
    outputs["candidateImages"] = candidates
if cfg.budget is not None:
    budget = Budget("budget", BudgetArgs(
        budget_name=cfg.prefix, stack=cfg.stack, monthly_limit_usd=cfg.budget.monthly_limit_usd,
        thresholds_percent=cfg.budget.thresholds_percent, emails=cfg.budget.emails,
        sns_topic_arn=cfg.budget.sns_topic_arn, tags=cfg.tags()))
    outputs["budgetName"] = budget.budget_name
for key, value in outputs.items():
    pulumi.export(key, value)
