"""Declare one component under Pulumi mocks and hand back what it declared, for tests of a single concern."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pulumi
import pulumi_kubernetes as k8s
from infra_mocks import NoReferencesMonitor, Recorded, RecordingMocks, plain


def declare(build: Callable[[], dict[str, Any]], preview: bool = False) -> tuple[list[Recorded], dict[str, Any]]:
    """Run `build` (which creates components and returns outputs by name) under mocks; return resources, outputs."""
    mocks = RecordingMocks()
    pulumi.runtime.set_mocks(mocks, project="mlapi", stack="dev", preview=preview, monitor=NoReferencesMonitor(mocks))
    outputs: dict[str, Any] = {}

    @pulumi.runtime.test
    def program() -> pulumi.Output[Any]:
        exported = build()
        return pulumi.Output.all(**exported).apply(outputs.update) if exported else pulumi.Output.from_input(None)

    program()
    return mocks.resources, outputs


def provider() -> k8s.Provider:
    """A Kubernetes provider like the cluster's (the kubeconfig is never used under mocks)."""
    return k8s.Provider("k8s", kubeconfig="{}")


def by_name(resources: list[Recorded]) -> dict[str, Recorded]:
    """Resources keyed by their Pulumi name."""
    return {r.name: r for r in resources}


def manifest(res: Recorded) -> dict[str, Any]:
    """A recorded Kubernetes resource as the object the provider would apply."""
    return {k: v for k, v in plain(res.inputs).items() if k != "compat"}
