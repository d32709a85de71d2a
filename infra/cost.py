"""What a stack costs a month before anyone pays: list prices as data, and arithmetic over the stack's shapes.

`pulumi preview` shows the estimate as the `estimatedMonthlyCostUsd` output, so a user sees the bill's order of
magnitude before `pulumi up`, as a hosted endpoint shows $/hour before it is created. Two totals: `minimum` (every
service at minReplicas, on the cheapest instances the NodePool may launch) and `maximum` (every service at
maxReplicas plus a rolling-update surge, on the dearest), both for the hourly charges only. Usage charges (NAT and
load balancer data, log GB) depend on traffic; their unit prices are listed next to the line items.

Prices are a table kept here, not fetched: the Pricing API needs credentials and a network the preview may not
have, and a table can be reviewed. A region the table does not cover gets a warning and no figure, never a guess.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Any

from infra.capacity import PodRequests, cluster_requests, load_at_max, smallest_node
from infra.config import ModelService, StackConfig

HOURS_PER_MONTH = 730  # the convention of the AWS Pricing Calculator
PRICES_AS_OF = "2026-12-05"  # the day each price below was checked against the sources named beside it
PRICE_SOURCES = (
    "EC2 On-Demand Linux, us-east-1: m5/m6i.xlarge $0.192, m7i.xlarge $0.2016 (c3x.dev 'm5 vs m6i vs m7i', 2026); "
    "c5/c6i.xlarge $0.17, c7i.xlarge $0.1785, c6a.xlarge $0.153, r5/r6i.xlarge $0.252 (public price tables in code, "
    "2026); m6a, r6a, r7i not confirmed",
    "Amazon EKS: cluster $0.10/h in standard support (factualminds.com 'Amazon EKS Pricing' 2026-06-13; cloudburn.io "
    "2026-04-01)",
    "EKS Auto Mode fee: AWS lists one per instance type (AmazonEKS Price List, eksproducttype AutoMode: "
    "vantage-sh/ec2instances.info#968, 2026-07); about 12% of the On-Demand price (factualminds.com 2026-06-13, "
    "awslabs/eks-node-viewer#368); approximated here at 12%, not confirmed type by type",
    "NAT gateway $0.045/h and $0.045/GB in us-east-1 and us-east-2 (rajesh.medampudi.com, basavytix.com, cloudburn.io "
    "2026-02-24)",
    "NLB and ALB $0.0225/h; $0.006/NLCU-h, $0.008/LCU-h (awsnegotiations.com 'Elastic Load Balancer Cost', 2026-05)",
    "ElastiCache on-demand nodes, Redis OSS engine: the AWS Price List API as transcribed by a public cost tool "
    "(AmazonElastiCache, NodeUsage, us-east-1, read 2026-10-02); Valkey nodes list at 0.8x",
    "CloudWatch Logs $0.50/GB ingested, $0.03/GB-month stored; custom metrics $0.30 each a month (hivebook.wiki, "
    "signoz.io 2026-02-15, factualminds.com 2026-06-13)",
    "AWS Fargate Linux/x86 $0.04048 per vCPU-hour, $0.004445 per GB-hour (vantage.sh; wring.co 2026-03-10; "
    "factualminds.com 2026-06-17)",
)


@dataclass(frozen=True)
class PriceTable:
    """List prices of one region in USD. EC2 prices are per vCPU-hour of a family: within a family, EC2 prices
    scale linearly with size (a c7i.2xlarge costs twice a c7i.xlarge), so one number per family covers every size."""

    ec2_vcpu_hour: dict[str, float]
    auto_mode_fee_fraction: float
    eks_cluster_hour: float
    nat_gateway_hour: float
    nat_gateway_gb: float
    nlb_hour: float
    nlb_lcu_hour: float
    alb_hour: float
    alb_lcu_hour: float
    elasticache_node_hour: dict[str, float]
    logs_ingest_gb: float
    logs_storage_gb_month: float
    fargate_vcpu_hour: float
    fargate_gb_hour: float


_US_EAST_1 = PriceTable(
    # Per vCPU-hour = the xlarge price / 4: c7i.xlarge $0.1785 = 4 x 0.044625; m7i.xlarge $0.2016; c6i.xlarge $0.17;
    # m6i.xlarge $0.192 (PRICE_SOURCES, checked 2026-12-05; m6a, r6a and r7i unconfirmed).
    ec2_vcpu_hour={
        "c5": 0.0425, "c6i": 0.0425, "c6a": 0.03825, "c7i": 0.044625,
        "m5": 0.048, "m6i": 0.048, "m6a": 0.0432, "m7i": 0.0504,
        "r5": 0.063, "r6i": 0.063, "r6a": 0.0567, "r7i": 0.06615,
    },
    auto_mode_fee_fraction=0.12,
    eks_cluster_hour=0.10,
    nat_gateway_hour=0.045,
    nat_gateway_gb=0.045,
    nlb_hour=0.0225,
    nlb_lcu_hour=0.006,
    alb_hour=0.0225,
    alb_lcu_hour=0.008,
    elasticache_node_hour={
        "cache.t4g.micro": 0.016, "cache.t4g.small": 0.032, "cache.t4g.medium": 0.065,
        "cache.t3.small": 0.034, "cache.t3.medium": 0.068,
        "cache.m6g.large": 0.149, "cache.m7g.large": 0.158,
        "cache.r6g.large": 0.206, "cache.r7g.large": 0.219,
    },
    logs_ingest_gb=0.50,
    logs_storage_gb_month=0.03,
    fargate_vcpu_hour=0.04048,
    fargate_gb_hour=0.004445,
)
# us-east-2 and us-west-2 have listed the same prices as us-east-1 for these items; checked for NAT (us-east-2) on
# 2026-12-05, the rest is the long-standing pattern, not re-checked item by item.
PRICES: dict[str, PriceTable] = {"us-east-1": _US_EAST_1, "us-east-2": _US_EAST_1, "us-west-2": _US_EAST_1}


@dataclass(frozen=True)
class LineItem:
    """One charge: what it is, what drives it, and its monthly USD at minimum and maximum size."""

    name: str
    driver: str
    minimum: float
    maximum: float

    def as_output(self) -> dict[str, Any]:
        """The line item as the stack output shows it (rounded to cents)."""
        return {"name": self.name, "driver": self.driver, "minimum": round(self.minimum, 2),
                "maximum": round(self.maximum, 2)}


@dataclass(frozen=True)
class Estimate:
    """Line items, what was left out (warnings), and the usage prices that come on top."""

    region: str
    items: tuple[LineItem, ...]
    usage_prices: dict[str, float]
    warnings: tuple[str, ...]

    @property
    def minimum(self) -> float:
        """Sum of the line items at minimum size."""
        return sum(i.minimum for i in self.items)

    @property
    def maximum(self) -> float:
        """Sum of the line items at maximum size."""
        return sum(i.maximum for i in self.items)

    def as_output(self) -> dict[str, Any]:
        """The `estimatedMonthlyCostUsd` stack output; `minimum`/`maximum` are None when no prices are known."""
        priced = bool(self.items)
        return {
            "region": self.region,
            "minimum": round(self.minimum, 2) if priced else None,
            "maximum": round(self.maximum, 2) if priced else None,
            "lineItems": [i.as_output() for i in self.items],
            "usagePricesUsd": self.usage_prices,
            "pricesAsOf": PRICES_AS_OF,
            "pricesCover": sorted(PRICES),
            "warnings": list(self.warnings),
            "note": "hourly charges only, 730 h a month; data processed, LCUs and log GB come on top at "
                    "usagePricesUsd",
        }


def _monthly(hourly: float) -> float:
    return hourly * HOURS_PER_MONTH


def _shared_items(cfg: StackConfig, prices: PriceTable, warnings: list[str]) -> list[LineItem]:
    """NAT gateways and the Redis replication group: the same on both platforms."""
    nats = 1 if cfg.network.nat_gateways == "single" else cfg.network.availability_zones
    items = [LineItem("nat-gateways", f"{nats} NAT gateway(s) (mlapi:natGateways)",
                      _monthly(nats * prices.nat_gateway_hour), _monthly(nats * prices.nat_gateway_hour))]
    node_hour = prices.elasticache_node_hour.get(cfg.cache.node_type)
    if node_hour is None:
        warnings.append(f"no price for ElastiCache node type {cfg.cache.node_type} (mlapi:cacheNodeType): Redis is "
                        "left out of the totals")
    else:
        redis = _monthly(cfg.cache.nodes * node_hour)
        items.append(LineItem("redis", f"{cfg.cache.nodes} x {cfg.cache.node_type} (mlapi:cacheNodes)", redis, redis))
    return items


def _min_replica_pods(pods: tuple[PodRequests, ...]) -> list[PodRequests]:
    return [replace(p, max_replicas=p.min_replicas) for p in pods]


def eks_estimate(cfg: StackConfig, releases: list[str], prices: PriceTable) -> Estimate:
    """The `eks` stack: control plane, Auto Mode nodes and their fee, NLB, NAT, Redis.

    Node counts are those `infra/capacity.py` computes on the smallest node the NodePool may launch: at
    minReplicas for the minimum, at maxReplicas plus surge for the maximum. The minimum prices them at the
    cheapest listed family, the maximum at the dearest. Spot capacity bills less than this; the fee does not.
    """
    warnings: list[str] = []
    items = [LineItem("eks-control-plane", "one EKS cluster", _monthly(prices.eks_cluster_hour),
                      _monthly(prices.eks_cluster_hour))]
    shape = smallest_node(cfg.cluster)
    pods = cluster_requests(cfg.services, releases)
    nodes_min = load_at_max(_min_replica_pods(pods), shape).nodes
    nodes_max = load_at_max(pods, shape, cfg.services).nodes
    rates = {f: prices.ec2_vcpu_hour[f] for f in cfg.cluster.instance_families if f in prices.ec2_vcpu_hour}
    unpriced = [f for f in cfg.cluster.instance_families if f not in prices.ec2_vcpu_hour]
    if unpriced:
        warnings.append(f"no price for instance families {unpriced} (mlapi:nodeInstanceFamilies): "
                        + ("nodes are priced from the other families" if rates else "nodes are left out of the totals"))
    if rates:
        low, high = min(rates.values()), max(rates.values())
        vcpu_min, vcpu_max = nodes_min * shape.vcpus, nodes_max * shape.vcpus
        driver = (f"{nodes_min} to {nodes_max} nodes of {shape.vcpus} vCPU ({min(rates, key=rates.__getitem__)} to "
                  f"{max(rates, key=rates.__getitem__)}, mlapi:services replicas, mlapi:nodeInstanceFamilies)")
        items.append(LineItem("nodes", driver, _monthly(vcpu_min * low), _monthly(vcpu_max * high)))
        fee = prices.auto_mode_fee_fraction
        items.append(LineItem("eks-auto-mode-fee", f"{fee:.0%} of the nodes' On-Demand price",
                              _monthly(vcpu_min * low * fee), _monthly(vcpu_max * high * fee)))
        if cfg.cluster.capacity_type != "on-demand":
            warnings.append("nodes are priced On-Demand; spot (mlapi:nodeCapacityType) bills less, by a varying "
                            "discount the table does not hold")
    items.append(LineItem("load-balancer", "the Istio gateway's NLB", _monthly(prices.nlb_hour),
                          _monthly(prices.nlb_hour)))
    items += _shared_items(cfg, prices, warnings)
    usage = {"natGatewayPerGb": prices.nat_gateway_gb, "nlbPerLcuHour": prices.nlb_lcu_hour,
             "logsIngestPerGb": prices.logs_ingest_gb, "logsStoragePerGbMonth": prices.logs_storage_gb_month}
    return Estimate(cfg.region, tuple(items), usage, tuple(warnings))


def vcpu_hour_usd(cfg: StackConfig) -> float | None:
    """USD a vCPU-hour of an EKS node costs with the Auto Mode fee, at the cheapest listed family (Karpenter
    launches the cheapest instance that fits); None where the table has no price. The cost recording rule uses it."""
    prices = PRICES.get(cfg.region)
    if prices is None:
        return None
    rates = [prices.ec2_vcpu_hour[f] for f in cfg.cluster.instance_families if f in prices.ec2_vcpu_hour]
    return min(rates) * (1 + prices.auto_mode_fee_fraction) if rates else None


def fargate_task_hour(cpu_units: int, memory_mib: int, prices: PriceTable) -> float:
    """USD an hour of one Fargate task of `cpu_units` (1024 = 1 vCPU) and `memory_mib`."""
    return cpu_units / 1024 * prices.fargate_vcpu_hour + memory_mib / 1024 * prices.fargate_gb_hour


def fargate_task_usd(cfg: StackConfig, svc: ModelService) -> float | None:
    """USD an hour of one of `svc`'s Fargate tasks in the stack's region; None where the table has no price."""
    from infra.fargate.ecs_service import fargate_size

    prices = PRICES.get(cfg.region)
    return fargate_task_hour(*fargate_size(svc.cpu_millicores, svc.memory_mib), prices) if prices else None


def fargate_estimate(cfg: StackConfig, prices: PriceTable) -> Estimate:
    """The `fargate` stack: tasks at their Fargate sizes (min to max replicas), ALB, NAT, Redis."""
    from infra.fargate.ecs_service import fargate_size

    warnings: list[str] = []
    items = []
    for svc in cfg.services:
        cpu, memory = fargate_size(svc.cpu_millicores, svc.memory_mib)
        task = fargate_task_hour(cpu, memory, prices)
        items.append(LineItem(f"tasks-{svc.name}",
                              f"{svc.min_replicas} to {svc.max_replicas} tasks of {cpu / 1024:g} vCPU / "
                              f"{memory / 1024:g} GB (mlapi:services)",
                              _monthly(svc.min_replicas * task), _monthly(svc.max_replicas * task)))
    items.append(LineItem("load-balancer", "one ALB", _monthly(prices.alb_hour), _monthly(prices.alb_hour)))
    items += _shared_items(cfg, prices, warnings)
    usage = {"natGatewayPerGb": prices.nat_gateway_gb, "albPerLcuHour": prices.alb_lcu_hour,
             "logsIngestPerGb": prices.logs_ingest_gb, "logsStoragePerGbMonth": prices.logs_storage_gb_month}
    return Estimate(cfg.region, tuple(items), usage, tuple(warnings))


def estimate(cfg: StackConfig, releases: list[str]) -> Estimate:
    """The estimate for the stack's platform and region; an uncovered region gives a warning and no figures."""
    prices = PRICES.get(cfg.region)
    if prices is None:
        return Estimate(cfg.region, (), {}, (
            f"no price table for region {cfg.region} (aws:region); infra/cost.py covers {', '.join(sorted(PRICES))}: "
            "add the region's list prices there to get an estimate",))
    if cfg.platform == "eks":
        return eks_estimate(cfg, releases, prices)
    return fargate_estimate(cfg, prices)

