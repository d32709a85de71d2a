"""How long a request, a drain and a shutdown may take, derived from one value so the layers agree.

The service answers 503 (with Retry-After) once a request runs longer than `MLAPI_REQUEST_TIMEOUT_SECONDS`, and
on SIGTERM uvicorn lets in-flight requests finish for the request timeout plus 10 s before it stops them. Every
layer around the container is sized from that: Kubernetes waits for the preStop delay (endpoints removed from
the gateway first) plus that shutdown before SIGKILL; ECS drains the target group for a whole request before
SIGTERM and waits the shutdown before SIGKILL (`stopTimeout`, at most 120 s, ECS container definition
reference); load balancers keep an idle connection longer than a request may run.
"""

from __future__ import annotations

from dataclasses import dataclass

# What the service adds to the request timeout for its graceful shutdown (uvicorn timeout_graceful_shutdown).
SERVICE_SHUTDOWN_EXTRA_SECONDS = 10
# Time for an endpoint removal to reach the gateway's Envoys before the server stops accepting connections.
PRE_STOP_SECONDS = 5
# Slack between "the server should be done" and the platform's SIGKILL.
KILL_MARGIN_SECONDS = 5
ECS_MAX_STOP_TIMEOUT = 120
MAX_REQUEST_TIMEOUT_SECONDS = ECS_MAX_STOP_TIMEOUT - SERVICE_SHUTDOWN_EXTRA_SECONDS - KILL_MARGIN_SECONDS


@dataclass(frozen=True)
class Timeouts:
    """Every timeout of the stack as a function of the service's request timeout (config `requestTimeoutSeconds`)."""

    request_seconds: int

    def __post_init__(self) -> None:
        if not 1 <= self.request_seconds <= MAX_REQUEST_TIMEOUT_SECONDS:
            raise ValueError(f"request timeout must be 1..{MAX_REQUEST_TIMEOUT_SECONDS} s, got {self.request_seconds}")

    @property
    def shutdown_seconds(self) -> int:
        """How long the server drains in-flight requests after SIGTERM (the service's own arithmetic)."""
        return self.request_seconds + SERVICE_SHUTDOWN_EXTRA_SECONDS

    @property
    def pre_stop_seconds(self) -> int:
        """The pod's preStop sleep: SIGTERM only after the gateway stopped sending new requests."""
        return PRE_STOP_SECONDS

    @property
    def termination_grace_seconds(self) -> int:
        """Pod `terminationGracePeriodSeconds`: counts from the start of preStop, so it covers both."""
        return self.pre_stop_seconds + self.shutdown_seconds + KILL_MARGIN_SECONDS

    @property
    def ecs_stop_timeout_seconds(self) -> int:
        """ECS container `stopTimeout`, SIGTERM to SIGKILL."""
        return min(ECS_MAX_STOP_TIMEOUT, self.shutdown_seconds + KILL_MARGIN_SECONDS)

    @property
    def deregistration_delay_seconds(self) -> int:
        """ALB target-group drain before ECS sends SIGTERM: every request in flight gets its whole timeout."""
        return self.request_seconds + KILL_MARGIN_SECONDS

    @property
    def idle_timeout_seconds(self) -> int:
        """Load balancer idle timeout: never shorter than a request may run (ALB default 60 s)."""
        return max(60, self.request_seconds + KILL_MARGIN_SECONDS)

    @property
    def route_timeout_seconds(self) -> int:
        """Gateway route timeout: after the service's own 503, so clients see its JSON answer, not the proxy's."""
        return self.request_seconds + KILL_MARGIN_SECONDS
