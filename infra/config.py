"""One typed, validated view of the stack's configuration.

Pulumi config arrives as loose strings and JSON; every component below takes its settings from the frozen
dataclasses built here, so a typo or an impossible combination fails before any resource is declared, with a
message that names the `mlapi:` key to fix. Defaults live here and are mirrored in `Pulumi.yaml` (a test keeps
the two equal), because Pulumi's own defaults are not applied when the program runs under unit-test mocks.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import pulumi

from infra import versions
from infra.model_source import (
    CHECKPOINT_MARKER,
    COMMIT_RE,
    HUB_ID_RE,
    S3_URI_RE,
    ModelSource,
    SourceError,
    aws_session,
    local_digest,
    s3_digest,
)
from infra.timeouts import MAX_REQUEST_TIMEOUT_SECONDS, Timeouts

NAMESPACE = "mlapi"
# The directory holding Pulumi.yaml. The CLI runs the program (and its provider plugins) with `infra/` as the
# working directory (pulumi/pulumi pkg/engine/project.go, getPwdMain), so every path the program hands to a
# provider is made absolute from here, never left relative to whatever the working directory is.
PROJECT_ROOT = Path(__file__).resolve().parent.parent
Platform = Literal["eks", "fargate"]
NatStrategy = Literal["single", "one-per-az"]

_NAME_RE = re.compile(r"^[a-z]([-a-z0-9]{0,22}[a-z0-9])?$")
_PREFIX_RE = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")
_K8S_VERSION_RE = re.compile(r"^1\.\d{2}$")
_SEMVER_RE = re.compile(r"^\d+\.\d+\.\d+$")
_QUANTITY_UNITS = ("cpu", "memory")


class ConfigError(ValueError):
    """A configuration value that cannot work; the message starts with the full key, e.g. `mlapi:services[1].name`."""

    def __init__(self, key: str, message: str) -> None:
        self.key = key if ":" in key else f"{NAMESPACE}:{key}"
        super().__init__(f"{self.key}: {message}")


@dataclass(frozen=True)
class CandidateModel:
    """A new model version for a service, rolled out beside the live one (shadow, then canary) until promoted.

    `model_revision` is always pinned: the hub commit SHA, or the digest of a local or S3 model's files.
    """

    model_id: str
    model_revision: str
    source: ModelSource


@dataclass(frozen=True)
class ModelService:
    """One model served as its own workload under its own path prefix (`MLAPI_PATH_PREFIX`)."""

    name: str
    model_id: str
    # The hub commit SHA, or for a local or S3 model the sha256 of its files or listing (`source.revision`).
    model_revision: str
    path_prefix: str
    cpu_millicores: int
    memory_mib: int
    min_replicas: int
    max_replicas: int
    cpu_target_percent: int
    requests_per_target: int
    cache_prefix: str
    source: ModelSource
    # Unset: the service sizes its threads and workers from its cgroup CPU quota, which is the right answer
    # unless an operator measured otherwise.
    intra_op_threads: int | None = None
    inference_workers: int | None = None
    # Set while a new version rolls out; promotion moves it into model_id/model_revision and removes it.
    candidate: CandidateModel | None = None


@dataclass(frozen=True)
class NetworkSettings:
    """VPC shape: CIDR, how many AZs, and how many NAT gateways the private subnets egress through."""

    cidr: str
    availability_zones: int
    nat_gateways: NatStrategy


@dataclass(frozen=True)
class ImageSettings:
    """How the service image is built and kept: context, Dockerfile, preview builds, images retained in ECR.

    `context` and `dockerfile` are absolute paths (resolved from the project directory), so docker-build's Check
    finds them whatever the provider's working directory.
    """

    context: str
    dockerfile: str
    build_on_preview: bool
    keep_images: int
    # A Hugging Face token for private hub models (`mlapi:hfToken`, a stack secret, or HF_TOKEN): it reaches the
    # build only as a BuildKit secret.
    hf_token: pulumi.Output[str] | None = None
    # boto3 credentials for S3 models: the same identity (and `aws:profile`) the deployment uses.
    aws_profile: str | None = None


@dataclass(frozen=True)
class ClusterAccess:
    """IAM principals given EKS access entries: cluster admins (people), the CI deploy role (admin) and the CI
    preview role (read-only). The identity that creates the cluster is admin already (EKS bootstraps it)."""

    admin_arns: tuple[str, ...]
    deploy_role_arn: str
    preview_role_arn: str


CapacityType = Literal["on-demand", "spot", "spot-and-on-demand"]


@dataclass(frozen=True)
class ClusterSettings:
    """EKS control plane and the Auto Mode NodePool the workloads run on (only read for `platform: eks`).

    The NodePool launches instances of `instance_families` with `instance_cpus` vCPUs, bought as
    `capacity_type`, until the nodes it runs reach `cpu_limit` vCPUs or `memory_gib` GiB in all.
    """

    kubernetes_version: str
    instance_families: tuple[str, ...]
    instance_cpus: tuple[int, ...]
    capacity_type: CapacityType
    cpu_limit: int
    memory_gib: int
    public_access: bool
    public_access_cidrs: tuple[str, ...]
    access: ClusterAccess
    istio_version: str
    metrics_server_version: str


@dataclass(frozen=True)
class CacheSettings:
    """ElastiCache Redis replication group shape."""

    node_type: str
    nodes: int
    automatic_failover: bool
    multi_az: bool
    engine_version: str
    snapshot_retention_days: int


@dataclass(frozen=True)
class FargateSettings:
    """ECS Fargate and ALB options (only read for `platform: fargate`)."""

    certificate_arn: str
    health_check_grace_seconds: int


@dataclass(frozen=True)
class OperationsSettings:
    """What operators look at and what guards the edge: charts of the EKS add-ons, the alarm e-mail, the
    optional edge rate limit (None: off)."""

    prometheus_stack_version: str
    external_secrets_version: str
    alarm_email: str
    edge_rate_limit_per_minute: int | None
    # API key names the Fargate dashboard prices one by one (config `costDashboardKeys`).
    cost_keys: tuple[str, ...] = ()


@dataclass(frozen=True)
class BudgetSettings:
    """A monthly AWS Budgets cost budget on the stack's tag and who its alerts reach (config `monthlyBudgetUsd`)."""

    monthly_limit_usd: int
    thresholds_percent: tuple[int, ...]
    emails: tuple[str, ...]
    sns_topic_arn: str


@dataclass(frozen=True)
class StackConfig:
    """Everything the program needs, validated once."""

    project: str
    stack: str
    region: str
    platform: Platform
    network: NetworkSettings
    image: ImageSettings
    cluster: ClusterSettings
    cache: CacheSettings
    fargate: FargateSettings
    log_retention_days: int
    certificate_arn: str
    timeouts: Timeouts
    operations: OperationsSettings
    services: tuple[ModelService, ...]
    budget: BudgetSettings | None = None

    @property
    def prefix(self) -> str:
        """Base for AWS names that must be unique per account and region: `mlapi-<stack>`."""
        return f"{self.project}-{self.stack}"

    def tags(self, **extra: str) -> dict[str, str]:
        """The tags every AWS resource carries, so cost and ownership are traceable to a stack."""
        return {"stack": self.stack, "service": self.project, "managed-by": "pulumi", **extra}


# Defaults mirrored in Pulumi.yaml's `config:` block (tests/infra/test_infra_config.py keeps them equal).
DEFAULTS: dict[str, Any] = {
    "platform": "eks",
    "vpcCidr": "10.0.0.0/16",
    "availabilityZones": 2,
    "natGateways": "single",
    "imageContext": ".",
    "dockerfile": "Dockerfile",
    "buildOnPreview": False,
    "keepImages": 10,
    "kubernetesVersion": versions.KUBERNETES_VERSION,
    "nodeInstanceFamilies": ["c7i", "c6i", "m7i", "m6i"],
    "nodeInstanceCpus": [4, 8],
    "nodeCapacityType": "on-demand",
    "nodePoolCpuLimit": 32,
    "nodePoolMemoryGib": 128,
    "apiPublicAccess": True,
    "apiPublicAccessCidrs": [],
    "clusterAdminArns": [],
    "deployRoleArn": "",
    "previewRoleArn": "",
    "istioVersion": versions.ISTIO_VERSION,
    "metricsServerVersion": versions.METRICS_SERVER_CHART,
    "cacheNodeType": "cache.t4g.small",
    "cacheNodes": 2,
    "cacheAutomaticFailover": True,
    "cacheMultiAz": True,
    "cacheEngineVersion": "7.1",
    "cacheSnapshotRetentionDays": 1,
    "certificateArn": "",
    "healthCheckGraceSeconds": 300,
    "logRetentionDays": 14,
    "requestTimeoutSeconds": 30,
    "kubePrometheusStackVersion": versions.KUBE_PROMETHEUS_STACK_CHART,
    "externalSecretsVersion": versions.EXTERNAL_SECRETS_CHART,
    "alarmEmail": "",
    "edgeRateLimit": False,
    "edgeRateLimitPerMinute": 6000,
    "monthlyBudgetUsd": 0,
    "budgetAlertThresholds": [50, 80, 100],
    "budgetAlertEmails": [],
    "budgetAlertTopicArn": "",
    "costDashboardKeys": [],
}
# No default modelRevision: a hub model must pin a commit, and local and S3 models have none.
SERVICE_DEFAULTS: dict[str, Any] = {
    "cpu": 1000,
    "memory": 1536,
    "minReplicas": 2,
    "maxReplicas": 4,
    "cpuTarget": 70,
    "requestsPerTarget": 200,
}
_SERVICE_KEYS = {"name", "modelId", "modelRevision", "pathPrefix", "cachePrefix", "intraOpThreads",
                 "inferenceWorkers", "candidate", *SERVICE_DEFAULTS}
_CANDIDATE_KEYS = {"modelId", "modelRevision"}
# hfToken is a secret: read with get_secret in load(), never as plain config (Pulumi.yaml cannot declare it with a
# default, so it is not in DEFAULTS).
SECRET_CONFIG_KEYS = {"hfToken"}
_KNOWN_KEYS = {*DEFAULTS, "services", *SECRET_CONFIG_KEYS}
# Keys of the managed node group that EKS Auto Mode replaced: a stack still setting them learns what to set instead.
_RETIRED_KEYS = {
    key: "was removed with the managed node group: EKS Auto Mode sizes the nodes; set nodeInstanceFamilies, "
    "nodeInstanceCpus, nodeCapacityType, nodePoolCpuLimit and nodePoolMemoryGib instead (docs/deploy.md)"
    for key in ("nodeInstanceType", "nodeMinSize", "nodeDesiredSize", "nodeMaxSize")
}
_FAMILY_RE = re.compile(r"^[cmr][5-8][a-z]*$")


def _int(raw: Mapping[str, Any], key: str, label: str, low: int, high: int) -> int:
    value = raw[key]
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ConfigError(label, f"must be an integer, got {value!r}")
    try:
        number = int(value)
    except ValueError as err:
        raise ConfigError(label, f"must be an integer, got {value!r}") from err
    if not low <= number <= high:
        raise ConfigError(label, f"must be between {low} and {high}, got {number}")
    return number


def _bool(raw: Mapping[str, Any], key: str, label: str) -> bool:
    value = raw[key]
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(label, f"must be true or false, got {value!r}")


def _str(raw: Mapping[str, Any], key: str, label: str, pattern: re.Pattern[str] | None = None) -> str:
    value = raw[key]
    if not isinstance(value, str) or not value:
        raise ConfigError(label, f"must be a non-empty string, got {value!r}")
    if pattern is not None and not pattern.match(value):
        raise ConfigError(label, f"{value!r} does not match {pattern.pattern}")
    return value


def _list(raw: Mapping[str, Any], key: str) -> list[Any]:
    value = raw[key]
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as err:
            raise ConfigError(key, f"must be a list: {err}") from err
    if not isinstance(value, list):
        raise ConfigError(key, f"must be a list, got {type(value).__name__}")
    return value


def _cidr(value: Any, label: str) -> str:
    try:
        return str(ipaddress.ip_network(value, strict=True))
    except (TypeError, ValueError) as err:
        raise ConfigError(label, f"not a valid CIDR block: {value!r}") from err


def did_you_mean(key: str, known: set[str] | frozenset[str], namespace: str = "") -> str:
    """` (did you mean mlapi:X?)` for the known key closest to a misspelt one, as the service does for MLAPI_ names."""
    close = difflib.get_close_matches(key, sorted(known), n=1, cutoff=0.75)
    if not close:
        lowered = {k.lower(): k for k in known}
        close = [lowered[key.lower()]] if key.lower() in lowered else []
    return f" (did you mean {namespace}{close[0]}?)" if close else ""


def _sha_hint(model_id: str, ref: str = "main") -> str:
    """How to look up the commit a hub branch or tag points to now."""
    api = f"https://huggingface.co/api/models/{model_id}/revision/{ref}"
    return (f"find the commit SHA with `curl -s {api} | jq -r .sha` "
            "(add -H \"Authorization: Bearer $HF_TOKEN\" for a private repo), or copy it from the History of the "
            "model page's \"Files and versions\" tab")


@dataclass(frozen=True)
class _Aws:
    """What an S3 listing at preview needs: the deployment's region and `aws:profile`."""

    region: str = ""
    profile: str | None = None


def _model_source(where: str, item: Mapping[str, Any], aws: _Aws) -> ModelSource:
    """Resolve `modelId` (+ `modelRevision`) into a pinned `ModelSource`, failing with the key to fix.

    Hub ids need a 40-hex commit; a local directory (relative to the project, as the Pulumi CLI runs from infra/)
    must hold a checkpoint now; an S3 prefix is listed now, so a typo or missing permission shows in the preview.
    """
    model_id = _str(item, "modelId", f"{where}.modelId")
    revision = item.get("modelRevision")
    s3 = S3_URI_RE.match(model_id)
    local = model_id.startswith(("./", "../", "/")) or model_id in (".", "..")
    if model_id.startswith("~"):
        raise ConfigError(f"{where}.modelId", f"{model_id!r}: ~ is not expanded; give the path relative to the "
                          f"project ({PROJECT_ROOT}) as ./path, or absolute")
    if (s3 or local) and revision is not None:
        kind = "an S3 model" if s3 else "a local checkpoint"
        raise ConfigError(f"{where}.modelRevision", f"does not apply to {kind}: its image tag derives from a digest "
                          "of its files; remove modelRevision")
    if s3:
        try:
            session = aws_session(aws.profile, aws.region)
            digest = s3_digest(s3["bucket"], s3["prefix"], session)
        except SourceError as err:
            raise ConfigError(f"{where}.modelId", str(err)) from err
        return ModelSource("s3", f"s3://{s3['bucket']}/{s3['prefix']}", digest)
    if model_id.startswith("s3://"):
        raise ConfigError(f"{where}.modelId", f"{model_id!r} is not s3://BUCKET/PREFIX (a valid bucket name and a "
                          "key prefix holding the checkpoint)")
    if local:
        directory = (PROJECT_ROOT / model_id).resolve()
        if not directory.is_dir():
            raise ConfigError(f"{where}.modelId", f"{directory} is not a directory (local paths are relative to the "
                              f"project, {PROJECT_ROOT})")
        if not (directory / CHECKPOINT_MARKER).is_file():
            raise ConfigError(f"{where}.modelId", f"{directory} has no {CHECKPOINT_MARKER}: point it at a saved "
                              "checkpoint (save_pretrained's output folder)")
        return ModelSource("local", str(directory), local_digest(directory))
    if not HUB_ID_RE.match(model_id) or "--" in model_id or ".." in model_id:
        raise ConfigError(f"{where}.modelId", f"{model_id!r} is neither a hub id org/name (e.g. distilbert/"
                          "distilbert-base-uncased-finetuned-sst-2-english), a local path (./models/my-ft or "
                          "absolute) nor s3://BUCKET/PREFIX")
    if (PROJECT_ROOT / model_id).is_dir():
        raise ConfigError(f"{where}.modelId", f"{model_id!r} reads as the hub id {model_id}, but it is also a "
                          f"directory of the project: write ./{model_id} for the local checkpoint")
    if revision is None:
        raise ConfigError(f"{where}.modelRevision", f"is required for a hub model, pinned to a commit; "
                          f"{_sha_hint(model_id)}")
    if not isinstance(revision, str) or not COMMIT_RE.match(revision):
        raise ConfigError(f"{where}.modelRevision", f"{revision!r} is not a commit SHA (40 lower-case hex); a branch "
                          f"or tag such as main moves, so the same tag could bake other weights; "
                          f"{_sha_hint(model_id, str(revision) if isinstance(revision, str) and revision else 'main')}")
    return ModelSource("hub", model_id, revision)


def _candidate(where: str, item: Any, aws: _Aws) -> CandidateModel:
    if not isinstance(item, Mapping):
        raise ConfigError(where, "must be an object with modelId (and modelRevision for a hub model)")
    unknown = sorted(set(item) - _CANDIDATE_KEYS)
    if unknown:
        hint = did_you_mean(unknown[0], _CANDIDATE_KEYS)
        raise ConfigError(f"{where}.{unknown[0]}", f"unknown key{hint} (known: {', '.join(sorted(_CANDIDATE_KEYS))})")
    if "modelId" not in item:
        raise ConfigError(f"{where}.modelId", "is required")
    source = _model_source(where, item, aws)
    return CandidateModel(model_id=item["modelId"], model_revision=source.revision, source=source)


def _service(index: int, item: Any, aws: _Aws | None = None) -> ModelService:
    where = f"services[{index}]"
    aws = aws or _Aws()
    if not isinstance(item, Mapping):
        raise ConfigError(where, "must be an object with name, modelId and pathPrefix")
    unknown = sorted(set(item) - _SERVICE_KEYS)
    if unknown:
        hint = did_you_mean(unknown[0], _SERVICE_KEYS)
        raise ConfigError(f"{where}.{unknown[0]}", f"unknown key{hint} (known: {', '.join(sorted(_SERVICE_KEYS))})")
    for required in ("name", "modelId", "pathPrefix"):
        if required not in item:
            raise ConfigError(f"{where}.{required}", "is required")
    raw = {**SERVICE_DEFAULTS, **item}
    name = _str(raw, "name", f"{where}.name", _NAME_RE)
    prefix = _str(raw, "pathPrefix", f"{where}.pathPrefix")
    if not _PREFIX_RE.match(prefix) or prefix.endswith("/"):
        raise ConfigError(f"{where}.pathPrefix", f"{prefix!r} must look like /name or /name/sub, no trailing slash")
    min_replicas = _int(raw, "minReplicas", f"{where}.minReplicas", 1, 100)
    max_replicas = _int(raw, "maxReplicas", f"{where}.maxReplicas", 1, 100)
    if min_replicas > max_replicas:
        raise ConfigError(f"{where}.minReplicas", f"{min_replicas} is greater than maxReplicas {max_replicas}")
    source = _model_source(where, raw, aws)
    candidate = _candidate(f"{where}.candidate", raw["candidate"], aws) if raw.get("candidate") is not None else None
    if candidate is not None and candidate.source == source:
        raise ConfigError(f"{where}.candidate", f"is the model already live ({source.location} at "
                          f"{source.revision[:12]}): a candidate must change the weights")
    return ModelService(
        name=name,
        model_id=raw["modelId"],
        model_revision=source.revision,
        path_prefix=prefix,
        cpu_millicores=_int(raw, "cpu", f"{where}.cpu", 250, 16_000),
        memory_mib=_int(raw, "memory", f"{where}.memory", 512, 120_000),
        min_replicas=min_replicas,
        max_replicas=max_replicas,
        cpu_target_percent=_int(raw, "cpuTarget", f"{where}.cpuTarget", 10, 95),
        requests_per_target=_int(raw, "requestsPerTarget", f"{where}.requestsPerTarget", 1, 100_000),
        cache_prefix=str(raw.get("cachePrefix") or f"{NAMESPACE}-{name}"),
        source=source,
        intra_op_threads=_int(raw, "intraOpThreads", f"{where}.intraOpThreads", 1, 64) if "intraOpThreads" in raw
        else None,
        inference_workers=_int(raw, "inferenceWorkers", f"{where}.inferenceWorkers", 1, 64)
        if "inferenceWorkers" in raw else None,
        candidate=candidate,
    )


def _services(raw: Mapping[str, Any], aws: _Aws) -> tuple[ModelService, ...]:
    if "services" not in raw:
        raise ConfigError("services", "is required: a list of {name, modelId, pathPrefix, ...}")
    items = _list(raw, "services")
    if not items:
        raise ConfigError("services", "must declare at least one model service")
    services = tuple(_service(i, item, aws) for i, item in enumerate(items))
    seen_names: dict[str, int] = {}
    seen_prefixes: dict[str, int] = {}
    for i, svc in enumerate(services):
        if svc.name in seen_names:
            raise ConfigError(f"services[{i}].name", f"duplicate of services[{seen_names[svc.name]}].name")
        seen_names[svc.name] = i
        for other, j in seen_prefixes.items():
            # `/a` and `/a/b` would both claim `/a/b/...` on a prefix match: make routing ambiguous an error.
            if svc.path_prefix == other or svc.path_prefix.startswith(other + "/") or other.startswith(
                svc.path_prefix + "/"
            ):
                raise ConfigError(
                    f"services[{i}].pathPrefix", f"{svc.path_prefix!r} overlaps services[{j}].pathPrefix {other!r}"
                )
        seen_prefixes[svc.path_prefix] = i
    return services


def build_config(raw_values: Mapping[str, Any], *, project: str, stack: str, region: str,
                 hf_token: pulumi.Output[str] | None = None, aws_profile: str | None = None) -> StackConfig:
    """Validate raw `mlapi:` values (already stripped of the namespace) into a `StackConfig`.

    `hf_token` is the secret `mlapi:hfToken` (or HF_TOKEN) as load() read it; `aws_profile` is `aws:profile`, the
    credentials an S3 model is listed with at preview and fetched with at build time.
    """
    unknown = sorted(set(raw_values) - _KNOWN_KEYS)
    for key in unknown:
        if key in _RETIRED_KEYS:
            raise ConfigError(key, _RETIRED_KEYS[key])
    if unknown:
        hint = did_you_mean(unknown[0], _KNOWN_KEYS, f"{NAMESPACE}:")
        raise ConfigError(unknown[0], f"unknown key{hint}; see Pulumi.yaml for the keys this project reads")
    raw = {**DEFAULTS, **raw_values}
    platform = raw["platform"]
    if platform not in ("eks", "fargate"):
        raise ConfigError("platform", f"must be 'eks' or 'fargate', got {platform!r}")
    nat = raw["natGateways"]
    if nat not in ("single", "one-per-az"):
        raise ConfigError("natGateways", f"must be 'single' or 'one-per-az', got {nat!r}")
    if not region:
        raise ConfigError("aws:region", "is required")

    public_access = _bool(raw, "apiPublicAccess", "apiPublicAccess")
    cidrs = tuple(_cidr(c, f"apiPublicAccessCidrs[{i}]") for i, c in enumerate(_list(raw, "apiPublicAccessCidrs")))
    for i, cidr in enumerate(cidrs):
        if ipaddress.ip_network(cidr).prefixlen == 0:
            raise ConfigError(f"apiPublicAccessCidrs[{i}]", "must not open the Kubernetes API to the whole internet; "
                              "list your own and your CI runners' egress addresses, or set apiPublicAccess: false")
    if not public_access and cidrs:
        raise ConfigError("apiPublicAccessCidrs", "must be empty when apiPublicAccess is false (private endpoint)")
    if platform == "eks" and public_access and not cidrs:
        raise ConfigError("apiPublicAccessCidrs", "is required for platform eks: the CIDRs allowed to reach the "
                          "Kubernetes API (e.g. your address as a /32)")

    kubernetes_version = _str(raw, "kubernetesVersion", "kubernetesVersion", _K8S_VERSION_RE)
    istio_version = _str(raw, "istioVersion", "istioVersion", _SEMVER_RE)
    problem = versions.support_problem(kubernetes_version, istio_version)
    if platform == "eks" and problem:
        key = "istioVersion" if problem.startswith("Istio") else "kubernetesVersion"
        raise ConfigError(key, problem)

    nodes = _int(raw, "cacheNodes", "cacheNodes", 1, 6)
    failover = _bool(raw, "cacheAutomaticFailover", "cacheAutomaticFailover")
    multi_az = _bool(raw, "cacheMultiAz", "cacheMultiAz")
    # ElastiCache rejects these combinations at create time; fail at preview instead.
    if failover and nodes < 2:
        raise ConfigError("cacheAutomaticFailover", "needs cacheNodes >= 2 (a primary and a replica)")
    if multi_az and not failover:
        raise ConfigError("cacheMultiAz", "needs cacheAutomaticFailover: true")

    certificate_arn = raw["certificateArn"] or ""
    if certificate_arn and not str(certificate_arn).startswith("arn:"):
        raise ConfigError("certificateArn", f"must be an ACM certificate ARN, got {certificate_arn!r}")

    return StackConfig(
        project=project,
        stack=stack,
        region=region,
        platform=platform,
        network=NetworkSettings(
            cidr=_cidr(raw["vpcCidr"], "vpcCidr"),
            availability_zones=_int(raw, "availabilityZones", "availabilityZones", 2, 6),
            nat_gateways=nat,
        ),
        image=ImageSettings(
            **_build_paths(raw),
            build_on_preview=_bool(raw, "buildOnPreview", "buildOnPreview"),
            keep_images=_int(raw, "keepImages", "keepImages", 1, 1000),
            hf_token=hf_token,
            aws_profile=aws_profile,
        ),
        cluster=ClusterSettings(
            kubernetes_version=kubernetes_version,
            **_node_pool(raw),
            public_access=public_access,
            public_access_cidrs=cidrs,
            access=_cluster_access(raw),
            istio_version=istio_version,
            metrics_server_version=_str(raw, "metricsServerVersion", "metricsServerVersion", _SEMVER_RE),
        ),
        cache=CacheSettings(
            node_type=_str(raw, "cacheNodeType", "cacheNodeType", re.compile(r"^cache\.[a-z0-9]+\.[a-z0-9]+$")),
            nodes=nodes,
            automatic_failover=failover,
            multi_az=multi_az,
            engine_version=_str(raw, "cacheEngineVersion", "cacheEngineVersion"),
            snapshot_retention_days=_int(raw, "cacheSnapshotRetentionDays", "cacheSnapshotRetentionDays", 0, 35),
        ),
        fargate=FargateSettings(
            certificate_arn=certificate_arn,
            health_check_grace_seconds=_int(raw, "healthCheckGraceSeconds", "healthCheckGraceSeconds", 0, 7200),
        ),
        log_retention_days=_retention(raw),
        certificate_arn=certificate_arn,
        operations=_operations(raw),
        timeouts=Timeouts(
            _int(raw, "requestTimeoutSeconds", "requestTimeoutSeconds", 1, MAX_REQUEST_TIMEOUT_SECONDS)
        ),
        services=_services(raw, _Aws(region=region, profile=aws_profile)),
        budget=_budget(raw),
    )


def _node_pool(raw: Mapping[str, Any]) -> dict[str, Any]:
    """The NodePool's instance families, sizes, capacity type and limits."""
    families = _list(raw, "nodeInstanceFamilies")
    if not families:
        raise ConfigError("nodeInstanceFamilies", "must list at least one instance family, e.g. c7i")
    for i, family in enumerate(families):
        if not isinstance(family, str) or not _FAMILY_RE.match(family):
            raise ConfigError(f"nodeInstanceFamilies[{i}]", f"{family!r} is not a c, m or r family of generation "
                              "5 to 8 (e.g. c7i, m7i, m6a): infra/capacity.py sizes nodes from those")
    cpus = _list(raw, "nodeInstanceCpus")
    if not cpus:
        raise ConfigError("nodeInstanceCpus", "must list at least one vCPU count, e.g. [4, 8]")
    for i, count in enumerate(cpus):
        if isinstance(count, bool) or not isinstance(count, int) or count not in (2, 4, 8, 16, 32, 48, 64):
            raise ConfigError(f"nodeInstanceCpus[{i}]", f"must be one of 2, 4, 8, 16, 32, 48, 64, got {count!r}")
    capacity_type = raw["nodeCapacityType"]
    if capacity_type not in ("on-demand", "spot", "spot-and-on-demand"):
        raise ConfigError("nodeCapacityType", f"must be on-demand, spot or spot-and-on-demand, got {capacity_type!r}")
    return {
        "instance_families": tuple(families),
        "instance_cpus": tuple(sorted(set(cpus))),
        "capacity_type": capacity_type,
        "cpu_limit": _int(raw, "nodePoolCpuLimit", "nodePoolCpuLimit", 2, 10_000),
        "memory_gib": _int(raw, "nodePoolMemoryGib", "nodePoolMemoryGib", 4, 100_000),
    }


_PRINCIPAL_RE = re.compile(r"^arn:aws[a-z-]*:iam::\d{12}:(role|user)/[\w+=,.@/-]+$")


def _principal(value: Any, label: str) -> str:
    if not isinstance(value, str) or not _PRINCIPAL_RE.match(value):
        raise ConfigError(label, f"must be an IAM role or user ARN (arn:aws:iam::<account>:role/<name>), got {value!r}")
    return value


def _cluster_access(raw: Mapping[str, Any]) -> ClusterAccess:
    """Who gets which EKS access entry; every ARN at most once (EKS allows one entry per principal)."""
    admins = tuple(_principal(a, f"clusterAdminArns[{i}]") for i, a in enumerate(_list(raw, "clusterAdminArns")))
    deploy = _principal(raw["deployRoleArn"], "deployRoleArn") if raw["deployRoleArn"] else ""
    preview = _principal(raw["previewRoleArn"], "previewRoleArn") if raw["previewRoleArn"] else ""
    seen: dict[str, str] = {}
    labelled = [(f"clusterAdminArns[{i}]", a) for i, a in enumerate(admins)]
    labelled += [("deployRoleArn", deploy), ("previewRoleArn", preview)]
    for label, arn in labelled:
        if arn and arn in seen:
            raise ConfigError(label, f"{arn} is already given access by {seen[arn]} (one access entry per principal)")
        seen.setdefault(arn, label)
    return ClusterAccess(admin_arns=admins, deploy_role_arn=deploy, preview_role_arn=preview)


def _build_paths(raw: Mapping[str, Any]) -> dict[str, str]:
    """`imageContext` relative to the project directory and `dockerfile` relative to the context, as absolute
    paths that must exist: a missing Dockerfile fails here, naming the key, instead of in the provider."""
    context = (PROJECT_ROOT / _str(raw, "imageContext", "imageContext")).resolve()
    if not context.is_dir():
        raise ConfigError("imageContext", f"{context} is not a directory (paths are relative to {PROJECT_ROOT})")
    dockerfile = (context / _str(raw, "dockerfile", "dockerfile")).resolve()
    if not dockerfile.is_file():
        raise ConfigError("dockerfile", f"{dockerfile} does not exist (paths are relative to imageContext)")
    return {"context": str(context), "dockerfile": str(dockerfile)}


_EMAIL_RE = re.compile(r"^[^@\s]+@[^@\s]+\.[^@\s]+$")
# A key's name as the keys file spells it (service/mlapi/auth/keys.py); the dashboard names it in metric math.
_KEY_NAME_RE = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._@-]{0,63}$")
MAX_COST_KEYS = 50


def _operations(raw: Mapping[str, Any]) -> OperationsSettings:
    email = raw["alarmEmail"] or ""
    if email and not _EMAIL_RE.match(str(email)):
        raise ConfigError("alarmEmail", f"must be an e-mail address (or empty), got {email!r}")
    # WAF rate-based rules count at least 10 requests per window; Envoy refills at least one token a second.
    per_minute = _int(raw, "edgeRateLimitPerMinute", "edgeRateLimitPerMinute", 60, 10_000_000)
    cost_keys = _list(raw, "costDashboardKeys")
    for i, key in enumerate(cost_keys):
        if not isinstance(key, str) or not _KEY_NAME_RE.match(key):
            raise ConfigError(f"costDashboardKeys[{i}]", f"must be an API key name as the keys file spells it "
                              f"(letters, digits, . _ @ -, up to 64), got {key!r}")
    if len(cost_keys) > MAX_COST_KEYS:
        # Three metrics and expressions per key and service; a dashboard graph holds 500.
        raise ConfigError("costDashboardKeys", f"at most {MAX_COST_KEYS} keys, got {len(cost_keys)}")
    return OperationsSettings(
        prometheus_stack_version=_str(raw, "kubePrometheusStackVersion", "kubePrometheusStackVersion", _SEMVER_RE),
        external_secrets_version=_str(raw, "externalSecretsVersion", "externalSecretsVersion", _SEMVER_RE),
        alarm_email=str(email),
        edge_rate_limit_per_minute=per_minute if _bool(raw, "edgeRateLimit", "edgeRateLimit") else None,
        cost_keys=tuple(dict.fromkeys(cost_keys)),
    )


_TOPIC_RE = re.compile(r"^arn:aws[a-z-]*:sns:[a-z0-9-]+:\d{12}:[A-Za-z0-9_-]{1,256}$")


def _budget(raw: Mapping[str, Any]) -> BudgetSettings | None:
    """The optional budget: off at 0; when on, 1 to 4 thresholds and at least one e-mail or SNS topic."""
    limit = _int(raw, "monthlyBudgetUsd", "monthlyBudgetUsd", 0, 10_000_000)
    thresholds = _list(raw, "budgetAlertThresholds")
    emails = _list(raw, "budgetAlertEmails")
    topic = str(raw["budgetAlertTopicArn"] or "")
    for i, value in enumerate(thresholds):
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 1000:
            raise ConfigError(f"budgetAlertThresholds[{i}]", f"must be a percentage of the budget, 1 to 1000, "
                              f"got {value!r}")
    for i, email in enumerate(emails):
        if not isinstance(email, str) or not _EMAIL_RE.match(email):
            raise ConfigError(f"budgetAlertEmails[{i}]", f"must be an e-mail address, got {email!r}")
    if topic and not _TOPIC_RE.match(topic):
        raise ConfigError("budgetAlertTopicArn", f"must be an SNS topic ARN, got {topic!r}")
    if not limit:
        return None
    # AWS Budgets: 5 notifications a budget (the thresholds plus one on the forecast), 10 e-mails a notification.
    if not 1 <= len(set(thresholds)) <= 4:
        raise ConfigError("budgetAlertThresholds", f"must list 1 to 4 percentages, got {thresholds!r}")
    if len(emails) > 10:
        raise ConfigError("budgetAlertEmails", f"AWS Budgets takes at most 10 addresses, got {len(emails)}")
    if not emails and not topic:
        raise ConfigError("monthlyBudgetUsd", "needs budgetAlertEmails or budgetAlertTopicArn: someone to alert")
    return BudgetSettings(monthly_limit_usd=limit, thresholds_percent=tuple(sorted(set(thresholds))),
                          emails=tuple(emails), sns_topic_arn=topic)


# CloudWatch Logs accepts only these retention periods (PutRetentionPolicy API reference).
_RETENTION_DAYS = (1, 3, 5, 7, 14, 30, 60, 90, 120, 150, 180, 365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922,
                   3288, 3653)


def _retention(raw: Mapping[str, Any]) -> int:
    days = _int(raw, "logRetentionDays", "logRetentionDays", 1, 3653)
    if days not in _RETENTION_DAYS:
        raise ConfigError("logRetentionDays", f"{days} is not a CloudWatch retention period {_RETENTION_DAYS}")
    return days


_STRUCTURED_KEYS = ("services", "apiPublicAccessCidrs", "clusterAdminArns", "nodeInstanceFamilies",
                    "nodeInstanceCpus", "budgetAlertThresholds", "budgetAlertEmails",
                    "costDashboardKeys")


def load() -> StackConfig:
    """Read the current stack's `mlapi:` and `aws:region` config through Pulumi and validate it.

    Every `mlapi:` key the stack sets is passed on, so a misspelt key fails instead of being silently ignored.
    """
    cfg = pulumi.Config(NAMESPACE)
    raw: dict[str, Any] = {}
    for key in _stack_keys() - SECRET_CONFIG_KEYS:
        raw[key] = cfg.get_object(key) if key in _STRUCTURED_KEYS else cfg.get(key)
    aws = pulumi.Config("aws")
    return build_config(raw, project=pulumi.get_project(), stack=pulumi.get_stack(), region=aws.get("region") or "",
                        hf_token=_hf_token(cfg), aws_profile=aws.get("profile"))


def _hf_token(cfg: pulumi.Config) -> pulumi.Output[str] | None:
    """`mlapi:hfToken`, which must be a stack secret (a plain value would sit in Pulumi.<stack>.yaml, in git);
    else HF_TOKEN from the environment, made a secret at once so it never reaches the state in plaintext."""
    from pulumi.runtime import config as runtime_config

    key = f"{NAMESPACE}:hfToken"
    if cfg.get_secret("hfToken") is not None:
        # The language host lists the secret keys in PULUMI_CONFIG_SECRET_KEYS; the SDK's is_config_secret only
        # knows keys handed to set_all_config (the test harness, the Automation API).
        if "PULUMI_CONFIG_SECRET_KEYS" in os.environ:
            secret = key in runtime_config.get_config_secret_keys_env()
        else:
            secret = runtime_config.is_config_secret(key)
        if not secret:
            raise ConfigError(key, "must be a secret, or it sits in plaintext in the stack file: "
                              "pulumi config set --secret mlapi:hfToken hf_...")
        return cfg.require_secret("hfToken")
    token = os.environ.get("HF_TOKEN")
    return pulumi.Output.secret(token) if token else None


def _stack_keys() -> set[str]:
    # The SDK keeps config in a context variable (set by the language host or by tests) or in PULUMI_CONFIG.
    from pulumi.runtime import config as runtime_config

    prefix = f"{NAMESPACE}:"
    every = {**runtime_config.get_config_env(), **runtime_config.CONFIG.get()}
    return {k[len(prefix):] for k in every if k.startswith(prefix)}
