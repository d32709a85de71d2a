"""Runs the real Pulumi program under mocks, as the Pulumi CLI would, and hands tests what it declared.

A module of its own (not conftest.py) so tests import it by a name no other test directory uses.
"""

from __future__ import annotations

import json
import os
import runpy
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pulumi
import yaml

REPO = Path(__file__).resolve().parents[2]
# The Pulumi CLI runs the program with `main` (infra/) as its working directory (pulumi/pulumi
# pkg/engine/project.go, getPwdMain); so do the tests.
PROGRAM_DIR = REPO / "infra"
# Helpers beside this file and the program under test, importable whatever pytest's import mode.
sys.path[:0] = [str(Path(__file__).resolve().parent), str(REPO)]

from infra_mocks import NoReferencesMonitor, Recorded, RecordingMocks  # noqa: E402

ACCOUNT_ID = "123456789012"
# What docs/deploy.md has a user set with `pulumi config set` before the first `pulumi up` of an EKS stack: the
# committed stack file deliberately leaves who may reach the cluster to each deployment.
OPERATOR_CONFIG: dict[str, dict[str, str]] = {
    "dev": {
        "mlapi:apiPublicAccessCidrs": json.dumps(["203.0.113.7/32", "198.51.100.0/24"]),
        "mlapi:clusterAdminArns": json.dumps([f"arn:aws:iam::{ACCOUNT_ID}:role/platform-admin"]),
        "mlapi:deployRoleArn": f"arn:aws:iam::{ACCOUNT_ID}:role/mlapi-deploy",
        "mlapi:previewRoleArn": f"arn:aws:iam::{ACCOUNT_ID}:role/mlapi-preview",
    },
}


def stack_config(stack: str) -> dict[str, str]:
    """The stack file's `config:` as the Pulumi engine hands it to a program: every value a string (JSON if
    structured), with the project's declared defaults for keys the stack does not set."""
    project = yaml.safe_load((REPO / "Pulumi.yaml").read_text())
    values: dict[str, Any] = {
        f"{project['name']}:{key}": decl["default"]
        for key, decl in project.get("config", {}).items()
        if isinstance(decl, dict) and "default" in decl
    }
    values.update(yaml.safe_load((REPO / f"Pulumi.{stack}.yaml").read_text())["config"])
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in values.items()}


def operated_config(stack: str) -> dict[str, str]:
    """The stack file's config plus what the operator sets before the first `pulumi up`."""
    return {**stack_config(stack), **OPERATOR_CONFIG.get(stack, {})}


@dataclass
class ProgramRun:
    """What one mocked `pulumi up` declared: every resource and the program's exported values."""

    resources: list[Recorded]
    outputs: dict[str, Any]
    config: dict[str, str]
    preview: bool = False

    def of_type(self, typ: str) -> list[Recorded]:
        return [r for r in self.resources if r.typ == typ]

    def one(self, typ: str, name: str | None = None) -> Recorded:
        found = [r for r in self.of_type(typ) if name is None or r.name == name]
        assert len(found) == 1, f"expected one {typ} {name or ''}, found {[r.name for r in found]}"
        return found[0]


def run_program(stack: str, overrides: dict[str, str] | None = None, *, preview: bool = False,
                secrets: dict[str, str] | None = None) -> ProgramRun:
    """Run infra/__main__.py under mocks with the stack file's config (plus `overrides`, and `secrets` as values
    set with `pulumi config set --secret`), from infra/ as the working directory, as `pulumi up` (or, with
    `preview`, `pulumi preview` of a new stack) would."""
    config = {**operated_config(stack), **(overrides or {}), **(secrets or {})}
    mocks = RecordingMocks(preview=preview)
    pulumi.runtime.set_mocks(mocks, project="mlapi", stack=stack, preview=preview, monitor=NoReferencesMonitor(mocks))
    pulumi.runtime.set_all_config(config, sorted(secrets or {}))
    outputs: dict[str, Any] = {}

    # runpy inside the test function: in setUp it breaks with "attached to a different loop" (pulumi #6561).
    @pulumi.runtime.test
    def program() -> pulumi.Output[Any]:
        cwd = os.getcwd()
        os.chdir(PROGRAM_DIR)
        try:
            module = runpy.run_path(str(PROGRAM_DIR), run_name="__main__")
        finally:
            os.chdir(cwd)
        exported = {key: pulumi.Output.from_input(value) for key, value in module["outputs"].items()}
        exported["redisUrl"] = module["base"].cache.url
        return pulumi.Output.all(**exported).apply(outputs.update)

    program()
    return ProgramRun(resources=mocks.resources, outputs=outputs, config=config, preview=preview)


