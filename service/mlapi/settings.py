"""Service configuration, read once from `MLAPI_*` environment variables and validated at start.

Every input limit and tuning knob is a named setting with a documented default, so an operator can see and change
what the server enforces without reading code; a bad value stops the server with a message naming the variable.
"""

from __future__ import annotations

import difflib
import math
import os
import re
from pathlib import Path
from typing import Annotated, Literal

from pydantic import Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict

from mlapi.auth.keys import parse_keys, read_keys_file
from mlapi.engine.shaping import worker_plan

BackendName = Literal["onnx", "torch"]
_PREFIX_RE = re.compile(r"^(/[A-Za-z0-9._~-]+)+$")
_COUNTER_RE = re.compile(r"^[a-zA-Z_:][a-zA-Z0-9_:]*_total$")


class Settings(BaseSettings):
    """All of the server's configuration; see the README's configuration table for each field."""

    model_config = SettingsConfigDict(env_prefix="MLAPI_", extra="ignore", frozen=True)

    model_dir: Path = Field(
        Path("models/default"),
        description="baked model directory (`mlapi serve --model-dir` overrides it)",
    )
    host: str = Field(
        "127.0.0.1",
        description="bind address (containers set `0.0.0.0`)",
    )
    port: int = Field(
        8000, ge=1, le=65535,
        description="bind port (`mlapi serve --port` overrides it)",
    )
    path_prefix: str = Field(
        "",
        description=(
            "serve every route (docs included) under e.g. `/project`, and at the root as well (an ALB cannot "
            "rewrite paths; probes use `/health`); the OpenAPI document lists the prefixed routes"
        ),
    )
    log_level: Literal["critical", "error", "warning", "info", "debug"] = Field(
        "info",
        description="server log level: `critical`, `error`, `warning`, `info` or `debug`",
    )

    backend: BackendName = Field(
        "onnx",
        description="default backend: `onnx` or `torch`",
    )
    extra_backends: Annotated[list[BackendName], NoDecode] = Field(
        [],
        description="more backends to load, comma-separated (e.g. `torch`), chosen per request with `?backend=`",
    )
    precision: Literal["auto", "int8", "fp32"] = Field(
        "auto",
        description="`auto` (what bake measured safe), `int8` or `fp32`",
    )
    intra_op_threads: int | None = Field(
        None, ge=1, le=256,
        description="inference threads in all, split over the workers; unset: the CPUs in the cgroup quota",
    )
    inference_workers: int | None = Field(
        None, ge=1, le=64,
        description=(
            "ONNX passes run side by side, each with its share of the threads. Unset: one single-threaded worker "
            "per CPU, which does the most texts a second under load; with more than one worker a lone text, "
            "while every worker is idle, runs on all the threads at once (one more session, weights shared)"
        ),
    )

    redis_url: SecretStr | None = Field(
        None,
        description="Redis URL; unset = in-process LRU",
    )
    cache_enabled: bool = Field(
        True,
        description="`false` computes every text",
    )
    cache_prefix: str = Field(
        "fastapi-cache-project", min_length=1, max_length=200,
        description="key prefix",
    )
    cache_ttl_seconds: int = Field(
        86_400, ge=1,
        description="entry lifetime",
    )
    cache_max_entries: int = Field(
        100_000, ge=1,
        description="in-process LRU size (alone, or in front of Redis)",
    )
    redis_timeout_ms: int = Field(
        100, ge=1, le=10_000,
        description="connect and call timeout",
    )
    redis_cooldown_seconds: float = Field(
        5.0, ge=0.0,
        description="how long to skip Redis after a failure",
    )

    max_batch: int = Field(
        1000, ge=1, le=10_000,
        description="texts per request (the body limit and the token-budgeted batcher bound the cost)",
    )
    max_chars: int = Field(
        4096, ge=1,
        description="characters per text (longer texts are refused; texts over the model's token limit are truncated)",
    )
    max_request_tokens: int = Field(
        131_072, ge=1024,
        description=(
            "estimated tokens per request still to compute (a text counts a quarter of its characters, at most the "
            "model's token limit, plus 4); over it, 413: one request cannot hold the model for minutes"
        ),
    )
    max_labels: int = Field(
        64, ge=1,
        description="labels per `/query`",
    )
    max_body_bytes: int = Field(
        2 * 1024 * 1024, ge=1024,
        description="request body limit",
    )
    max_queue: int = Field(
        4096, ge=1,
        description="texts waiting for inference before 503; at least `MLAPI_MAX_BATCH` and 1 + `MLAPI_MAX_LABELS`",
    )
    batch_max_size: int = Field(
        32, ge=1, le=4096,
        description="texts per forward pass",
    )
    batch_max_tokens: int = Field(
        8192, ge=16,
        description=(
            "padded tokens per forward pass, at most. Within it, texts are sorted by length and a pass ends where"
            " padding the next texts would cost more than a pass of its own, as measured by bake on the served "
            "graph (`pass_overhead_tokens` in the manifest)"
        ),
    )
    batch_turn_tokens: int = Field(
        1024, ge=16,
        description=(
            "tokens (estimated from length) one scheduled pass carries, at most, shared in turn between the tenants "
            "with texts waiting: a short request waits at most for the pass in front of it, so this bounds what a "
            "flood of long texts adds to everyone else's latency (at least one text per pass). Split evenly over "
            "the inference workers, so a turn takes about as long whatever the worker plan"
        ),
    )
    batch_wait_ms: float = Field(
        0.0, ge=0.0, le=1000.0,
        description=(
            "how long a short queue waits for more requests before a pass (0: requests that arrive during a pass "
            "join the next one, which measured best here)"
        ),
    )
    request_timeout_seconds: float = Field(
        30.0, gt=0.0, le=3600.0,
        description=(
            "deadline of every request: past it, 503 `timeout` with `Retry-After` (uvicorn's graceful-shutdown "
            "time is this plus 10 s, so a stop never cuts a request off)"
        ),
    )
    drain_seconds: float = Field(
        0.0, ge=0.0, le=300.0,
        description=(
            "after SIGTERM, keep listening this long with `/health` at 503 `draining` before the graceful "
            "shutdown (for load balancers without a pre-stop hook); a stop takes at most drain + timeout + 10 s"
        ),
    )
    label_order: Literal["score", "model"] = Field(
        "score",
        description=(
            "order of each text's labels in `/predict`: `score` (high to low) or `model` (the model's label ids, "
            "as the pipeline's `return_all_scores=True`)"
        ),
    )
    body_read_timeout_seconds: float = Field(
        15.0, gt=0.0, le=600.0,
        description="time a client has to send a request's whole body before 408 (slow clients cannot hold the server)",
    )

    max_header_bytes: int = Field(
        16_384, ge=1024, le=1_048_576,
        description="bytes of a request's line and headers, at most; beyond, 400 and the connection is closed",
    )
    header_timeout_seconds: float = Field(
        10.0, gt=0.0, le=300.0,
        description=(
            "time a connection has, from opening (or from the first byte of a later request), to send a request's"
            " whole headers before it is closed (idle and half-sent connections cannot hold sockets)"
        ),
    )
    max_connections: int = Field(
        1000, ge=1, le=100_000,
        description="open connections and requests in flight, at most; past it, new requests get 503 at once",
    )
    api_keys_file: Path | None = Field(
        None,
        description="keys file (see API keys); unset with `MLAPI_API_KEYS` unset = no keys needed",
    )
    api_keys: SecretStr | None = Field(
        None,
        description=(
            "the keys file's content, for secrets injected as a variable (set one of the two); set but blank = "
            "keys required, none valid"
        ),
    )
    api_keys_reload_seconds: float = Field(
        10.0, gt=0.0, le=60.0,
        description="how often the keys file is checked for changes (at most 60)",
    )
    cache_headers: Literal["auto", "on", "off"] = Field(
        "auto",
        description=(
            "whether answers carry `X-Cache-Hits`, `X-Cache-Misses` and `X-Cache-Texts`: they tell a client whether"
            " anyone sent a text before, so `auto` sends them only when API keys are off (one tenant); `on` or `off`"
            " decides outright"
        ),
    )
    rate_limit_requests: float = Field(
        0.0, ge=0.0,
        description=(
            "requests per second per key (or per client address without keys); `0` = no limit; a key's `rate=` "
            "overrides it"
        ),
    )
    rate_limit_texts: float = Field(
        0.0, ge=0.0,
        description="texts per second per key (or address); `0` = no limit; a key's `texts=` overrides it",
    )
    rate_limit_burst_seconds: float = Field(
        2.0, gt=0.0, le=3600.0,
        description="bucket size in seconds of rate: how far a client may burst above its rate",
    )

    metrics_log_interval_seconds: float = Field(
        0.0, ge=0.0, le=3600.0,
        description=(
            "every this many seconds, write to stdout one JSON line per series of `MLAPI_METRICS_LOG_COUNTERS` that "
            "grew, with its increase (`{\"metric\": ..., labels..., \"value\": n}`), and once more at shutdown; "
            "`0` = off. For platforms that ship logs but do not scrape `/metrics`: the Fargate stack sets 60, and "
            "CloudWatch Logs metric filters turn the lines into per-key metrics"
        ),
    )
    metrics_log_counters: Annotated[list[str], NoDecode] = Field(
        ["mlapi_key_texts_total"],
        description=(
            "the Prometheus counters (by their `_total` name, comma-separated) whose increases "
            "`MLAPI_METRICS_LOG_INTERVAL_SECONDS` writes; a name the server does not export stops it at start"
        ),
    )
    shadow_url: str | None = Field(
        None,
        description=(
            "a candidate `mlapi serve` to mirror answers to, as its base URL with its path prefix (e.g. "
            "`http://sentiment-canary:8000/sentiment`; `/predict` and `/health` are appended); sampled texts go to "
            "it off the request path and its answers are compared with this server's (see Shadow in "
            "docs/operations.md); unset = no mirroring"
        ),
    )
    shadow_fraction: float = Field(
        0.1, ge=0.0, le=1.0,
        description="share of `/predict` texts mirrored to `MLAPI_SHADOW_URL`, sampled per text (`1` = all)",
    )
    shadow_queue: int = Field(
        1000, ge=1, le=1_000_000,
        description=(
            "mirrored texts waiting for the candidate, at most; past it texts are dropped and counted "
            "(`mlapi_shadow_dropped_texts_total`), never waited for"
        ),
    )
    shadow_timeout_seconds: float = Field(
        5.0, gt=0.0, le=120.0,
        description="time the candidate has to answer a mirrored request (or its `/health`) before it is an `error`",
    )
    shadow_api_key: SecretStr | None = Field(
        None,
        description=(
            "API key sent to the candidate as `X-API-Key` when the candidate requires keys (a key of its keys file, "
            "with a rate that admits the mirrored share)"
        ),
    )

    @field_validator("path_prefix")
    @classmethod
    def _check_prefix(cls, value: str) -> str:
        value = value.rstrip("/")
        if value and not _PREFIX_RE.match(value):
            raise ValueError("must be empty or look like /name or /name/sub (letters, digits, . _ ~ -)")
        return value

    @field_validator("extra_backends", "metrics_log_counters", mode="before")
    @classmethod
    def _split_comma_list(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("metrics_log_counters")
    @classmethod
    def _check_counters(cls, value: list[str]) -> list[str]:
        for name in value:
            if not _COUNTER_RE.match(name):
                raise ValueError(f"{name!r} is not a counter name: letters, digits and _, ending in _total")
        return list(dict.fromkeys(value))

    @field_validator("shadow_url")
    @classmethod
    def _check_shadow_url(cls, value: str | None) -> str | None:
        if value is None or not value.strip():
            return None
        value = value.strip().rstrip("/")
        if not re.match(r"^https?://[^/?#\s@]+(/[^?#\s]*)?$", value):
            raise ValueError(
                "must be http:// or https:// with a host, and a path prefix at most (no query, no user:password@: "
                "the key goes in MLAPI_SHADOW_API_KEY)"
            )
        return value

    @field_validator("redis_url")
    @classmethod
    def _check_redis_url(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None or not value.get_secret_value():
            return None
        if not value.get_secret_value().startswith(("redis://", "rediss://", "unix://")):
            raise ValueError("must start with redis://, rediss:// or unix://")
        return value

    @field_validator("api_keys_file")
    @classmethod
    def _check_keys_file(cls, value: Path | None) -> Path | None:
        if value is None or not str(value):
            return None
        read_keys_file(value)  # fail at start, naming the line, rather than refuse every request
        return value

    @field_validator("api_keys")
    @classmethod
    def _check_keys(cls, value: SecretStr | None) -> SecretStr | None:
        if value is None:
            return None
        # Set but blank (an empty ECS secret, say) means "keys required, none issued yet": closed, never open.
        parse_keys(value.get_secret_value(), "MLAPI_API_KEYS")
        return value

    @model_validator(mode="before")
    @classmethod
    def _refuse_unknown_variables(cls, data: object) -> object:
        unknown = sorted(set(unknown_variables(os.environ)))
        if unknown:
            raise ValueError("; ".join(_describe_unknown(name) for name in unknown))
        return data

    @model_validator(mode="after")
    def _check_batch_fits(self) -> Settings:
        if self.max_queue < self.max_batch:
            raise ValueError(
                f"MLAPI_MAX_QUEUE ({self.max_queue}) must be at least MLAPI_MAX_BATCH ({self.max_batch}), "
                "or a full request could never be admitted"
            )
        if self.max_queue < 1 + self.max_labels:
            raise ValueError(
                f"MLAPI_MAX_QUEUE ({self.max_queue}) must be at least 1 + MLAPI_MAX_LABELS ({self.max_labels}), "
                "or a full /query (the sentence and every label) could never be admitted"
            )
        if self.api_keys_file is not None and self.api_keys is not None:
            raise ValueError("set MLAPI_API_KEYS_FILE or MLAPI_API_KEYS, not both")
        return self

    @property
    def auth_enabled(self) -> bool:
        """Whether requests to the model routes need an API key."""
        return self.api_keys_file is not None or self.api_keys is not None

    @property
    def cache_headers_enabled(self) -> bool:
        """Whether answers tell the client what the cache did (see `cache_headers`)."""
        return self.cache_headers == "on" or (self.cache_headers == "auto" and not self.auth_enabled)

    @property
    def backends(self) -> list[BackendName]:
        """The backends to load: the default first, then any extra ones, without repeats."""
        return list(dict.fromkeys([self.backend, *self.extra_backends]))

    @property
    def threads(self) -> int:
        """Intra-op threads for inference: the setting, or the CPUs this process may really use."""
        return self.intra_op_threads or usable_cpus()

    @property
    def inference_shape(self) -> tuple[int, int]:
        """(inference workers, threads per worker): as set, else planned from the CPUs (`shaping.worker_plan`)."""
        if self.inference_workers is None:
            return worker_plan(self.threads)
        return self.inference_workers, max(1, self.threads // self.inference_workers)


def setting_variables() -> set[str]:
    """Every environment variable the server reads: MLAPI_ plus a field name, upper-cased."""
    return {f"MLAPI_{name.upper()}" for name in Settings.model_fields}


def settings_table() -> str:
    """The README's configuration table, one row per setting, from each field's default and description.

    The README is checked against it (tests/test_readme_settings.py), so the table cannot drift from the code:
    `python -m mlapi.settings` prints it.
    """
    rows = ["| variable | default | meaning |", "|---|---|---|"]
    for name, field in Settings.model_fields.items():
        default = field.default
        if default is None:
            shown = "unset"
        elif default in ("", []):
            shown = "empty"
        elif isinstance(default, bool):
            shown = f"`{str(default).lower()}`"
        elif isinstance(default, list):
            shown = f"`{','.join(str(item) for item in default)}`"
        elif isinstance(default, float) and default.is_integer():
            shown = f"`{int(default)}`"
        else:
            shown = f"`{default}`"
        rows.append(f"| `MLAPI_{name.upper()}` | {shown} | {field.description} |")
    return "\n".join(rows)


def unknown_variables(environ: dict[str, str] | os._Environ[str]) -> list[str]:
    """`MLAPI_*` variables that name no setting: a typo would otherwise be ignored without a word."""
    known = setting_variables()
    return [name for name in environ if name.upper().startswith("MLAPI_") and name.upper() not in known]


def _describe_unknown(name: str) -> str:
    close = difflib.get_close_matches(name.upper(), sorted(setting_variables()), n=1)
    hint = f" (did you mean {close[0]}?)" if close else ""
    return f"{name} is not a setting{hint}"


def usable_cpus(cgroup_root: Path = Path("/sys/fs/cgroup")) -> int:
    """CPUs this process may use: the affinity mask capped by a cgroup v2 or v1 CPU quota.

    A pod limited to 1 CPU on a 16-core node sees 16 cores in `os.cpu_count()`; sizing the thread pool to the node
    oversubscribes the quota and makes every request slower.
    """
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    quota = _cgroup_quota(cgroup_root)
    if quota is not None:
        cpus = min(cpus, max(1, math.ceil(quota)))
    return max(1, cpus)


def _cgroup_quota(root: Path) -> float | None:
    v2 = root / "cpu.max"
    try:
        if v2.exists():
            quota, period = v2.read_text().split()[:2]
            return None if quota == "max" else int(quota) / int(period)
        v1_quota = root / "cpu" / "cpu.cfs_quota_us"
        v1_period = root / "cpu" / "cpu.cfs_period_us"
        if v1_quota.exists() and v1_period.exists():
            quota_us = int(v1_quota.read_text())
            return None if quota_us <= 0 else quota_us / int(v1_period.read_text())
    except (OSError, ValueError):
        return None
    return None


if __name__ == "__main__":
    print(settings_table())
