"""The mocked run's resources as the engine orders them: who must exist before whom, and so who goes first on
`pulumi destroy`.

The engine creates a resource after its parent, its provider, everything in `depends_on` and every resource
whose outputs flow into its inputs; it deletes in the reverse order, and deletes a resource only after everything
that depends on it is gone. Resources with no path between them are created and deleted in parallel, in any
order. So "A is created after B in every `pulumi up`" and "A is deleted before B in every `pulumi destroy`" both
mean one thing: B is an ancestor of A in this graph.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field

from infra_mocks import Recorded, plain


@dataclass
class Graph:
    """Resources by URN, and for each URN the URNs it directly waits for."""

    resources: dict[str, Recorded]
    edges: dict[str, set[str]] = field(default_factory=dict)

    @classmethod
    def of(cls, resources: Iterable[Recorded]) -> Graph:
        """The graph of a recorded run (resources without a URN, if any, are left out)."""
        by_urn = {r.urn: r for r in resources if r.urn}
        edges: dict[str, set[str]] = {}
        for urn, res in by_urn.items():
            waits = set(res.dependencies)
            if res.parent:
                waits.add(res.parent)
            if res.provider:  # a provider reference is `<URN>::<ID>`
                waits.add(res.provider.rsplit("::", 1)[0])
            edges[urn] = {w for w in waits if w in by_urn and w != urn}
        return cls(by_urn, edges)

    def ancestors(self, urn: str) -> set[str]:
        """Every URN `urn` waits for, directly or not."""
        seen: set[str] = set()
        stack = [urn]
        while stack:
            for nxt in self.edges.get(stack.pop(), ()):
                if nxt not in seen:
                    seen.add(nxt)
                    stack.append(nxt)
        return seen

    def created_after(self, later: str, earlier: str) -> bool:
        """Whether every `pulumi up` creates `earlier` (and awaits its readiness) before `later`."""
        return earlier in self.ancestors(later)

    def deleted_before(self, first: str, then: str) -> bool:
        """Whether every `pulumi destroy` finishes deleting `first` before it starts deleting `then`."""
        return then in self.ancestors(first)

    def destroy_order(self) -> list[str]:
        """One order `pulumi destroy` may take: repeatedly delete a resource nothing remaining depends on."""
        dependants: dict[str, set[str]] = {u: set() for u in self.resources}
        for urn, waits in self.edges.items():
            for w in waits:
                dependants[w].add(urn)
        order: list[str] = []
        remaining = dict(dependants)
        while remaining:
            ready = sorted(u for u, deps in remaining.items() if not deps & remaining.keys())
            assert ready, "dependency cycle"
            order += ready
            for u in ready:
                del remaining[u]
        return order

    def of_type(self, typ: str) -> list[Recorded]:
        """Resources of one type token."""
        return [r for r in self.resources.values() if r.typ == typ]

    def manifest(self, urn: str) -> dict:
        """A Kubernetes resource's inputs as plain data."""
        return plain(self.resources[urn].inputs)
