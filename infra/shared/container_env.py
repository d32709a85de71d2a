"""The `MLAPI_*` environment of a model container, the same on Kubernetes and on ECS.

Threads and workers are left to the service, which sizes them from its cgroup CPU quota, unless the stack sets
them explicitly (`intraOpThreads`, `inferenceWorkers` on a service). Secrets (the Redis URL) are not here: each
platform delivers them by reference.
"""

from __future__ import annotations

from infra.config import ModelService
from infra.timeouts import Timeouts

CONTAINER_PORT = 8000


def model_env(service: ModelService, timeouts: Timeouts) -> dict[str, str]:
    """Plain (non-secret) settings of one model service's container."""
    env = {
        "MLAPI_HOST": "0.0.0.0",
        "MLAPI_PORT": str(CONTAINER_PORT),
        "MLAPI_PATH_PREFIX": service.path_prefix,
        "MLAPI_CACHE_PREFIX": service.cache_prefix,
        "MLAPI_REQUEST_TIMEOUT_SECONDS": str(timeouts.request_seconds),
    }
    if service.intra_op_threads is not None:
        env["MLAPI_INTRA_OP_THREADS"] = str(service.intra_op_threads)
    if service.inference_workers is not None:
        env["MLAPI_INFERENCE_WORKERS"] = str(service.inference_workers)
    return env


def health_path(service: ModelService) -> str:
    """The readiness path under the service's prefix; it answers 503 until the model is loaded and while draining."""
    return f"{service.path_prefix}/health"
