"""Resource URNs stay what they were, so moving code never makes `pulumi up` delete and recreate resources.

A URN is the stack, the project, the type chain of the resource's parents and its own type, and its name; a file
moved, a module renamed or a component re-parented changes none of that only if every type token and name is
kept. `fixtures/urns.json` is the URN set of both stacks' mocked `pulumi up` as it was before infra/ was laid out
by platform. Every URN in it must still be declared, except those `REPLACED_BY_DESIGN` names: what the program
deliberately stopped creating (each with the reason). New URNs are fine; `python tests/infra/test_infra_urns.py`
rewrites the fixture only when the change of URNs is the point of a commit.
"""

from __future__ import annotations

import fnmatch
import json
import sys
from pathlib import Path

import pytest
from infra_program import ProgramRun, run_program

FIXTURE = Path(__file__).resolve().parent / "fixtures" / "urns.json"
STACKS = ("dev", "fargate")
# URN patterns (fnmatch) that are gone on purpose, with why.
_EKS = "urn:pulumi:dev::mlapi::"
REPLACED_BY_DESIGN: dict[str, str] = {
    _EKS + "mlapi:autoscaler:ClusterAutoscaler*": "EKS Auto Mode scales compute (managed Karpenter)",
    _EKS + "mlapi:lbcontroller:LoadBalancerController*": "EKS Auto Mode runs the load balancer controller",
    _EKS + "mlapi:cluster:Cluster$eks:index:ManagedNodeGroup::cluster-nodes": "Auto Mode NodePool instead",
    _EKS + "mlapi:cluster:Cluster$aws:eks/addon:Addon::cluster-pod-identity-agent": "built into Auto Mode nodes",
    _EKS + "mlapi:cluster:Cluster$aws:iam/role:Role::cluster-node-role": "pulumi-eks creates the Auto Mode node role",
    **{_EKS + f"mlapi:cluster:Cluster$aws:iam/rolePolicyAttachment:RolePolicyAttachment::cluster-node-{p}":
       "the Auto Mode node role carries the node policies it needs" for p in ("worker", "cni", "ecr")},
    _EKS + "mlapi:mesh:Mesh$kubernetes:core/v1:Service::mesh-gateway-service":
        "a read of the chart's Service; the program now owns the gateway's LoadBalancer Service",
    _EKS + "mlapi:workloads:Workloads$kubernetes:core/v1:Service::workloads-*-service":
        "Flagger owns each model service's Services (apex, primary, canary); a Service of the program's with the "
        "apex's name would fight Flagger's selector (infra/eks/canary.py)",
}


def urns(run: ProgramRun) -> set[str]:
    """Every URN the run declared or read (the stack itself is not a registration)."""
    return {r.urn for r in run.resources if r.urn}


def replaced(urn: str) -> bool:
    """Whether `urn` is one the program stopped declaring on purpose."""
    return any(fnmatch.fnmatchcase(urn, pattern) for pattern in REPLACED_BY_DESIGN)


@pytest.mark.parametrize("stack", STACKS)
def test_urns_of_the_recorded_graph_are_unchanged(stack: str, request: pytest.FixtureRequest) -> None:
    recorded = set(json.loads(FIXTURE.read_text())[stack])
    run: ProgramRun = request.getfixturevalue(stack if stack == "dev" else "fargate")
    missing = sorted(u for u in recorded - urns(run) if not replaced(u))
    assert not missing, f"{len(missing)} URNs would be deleted and recreated: {missing[:10]}"


def test_every_replaced_pattern_matches_a_recorded_urn() -> None:
    # A pattern that matches nothing hides nothing, and would silently excuse a later accident.
    recorded = {u for stack in STACKS for u in json.loads(FIXTURE.read_text())[stack]}
    for pattern in REPLACED_BY_DESIGN:
        assert any(fnmatch.fnmatchcase(u, pattern) for u in recorded), pattern


def test_the_fixture_was_recorded_from_both_stacks() -> None:
    recorded = json.loads(FIXTURE.read_text())
    assert set(recorded) == set(STACKS)
    for stack in STACKS:
        assert len(recorded[stack]) > 50 and all(u.startswith(f"urn:pulumi:{stack}::mlapi::") for u in recorded[stack])


if __name__ == "__main__":
    FIXTURE.write_text(json.dumps({s: sorted(urns(run_program(s))) for s in STACKS}, indent=1) + "\n")
    sys.exit(0)
