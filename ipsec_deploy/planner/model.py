"""The plan: for every managed host, the ordered objects it must hold, plus mirrored pairs."""

from __future__ import annotations

from dataclasses import dataclass

from ..inventory.model import Host
from ..inventory.problems import Problem
from ..objects import KIND_ORDER, IPsecRule, PlannedObject


@dataclass(frozen=True)
class MirrorPair:
    """Two rules of one policy on two managed hosts that must mirror each other."""

    policy: str
    host_a: str
    rule_a: str
    host_b: str
    rule_b: str


@dataclass(frozen=True)
class HostPlan:
    host: Host
    objects: tuple[PlannedObject, ...]

    @property
    def rules(self) -> tuple[IPsecRule, ...]:
        return tuple(obj for obj in self.objects if isinstance(obj, IPsecRule))

    def object(self, kind: str, name: str) -> PlannedObject | None:
        for obj in self.objects:
            if obj.kind == kind and obj.name == name:
                return obj
        return None


@dataclass(frozen=True)
class Plan:
    inventory_path: str
    managed_group: str
    policy_store: str
    hosts: tuple[HostPlan, ...]
    pairs: tuple[MirrorPair, ...]
    warnings: tuple[Problem, ...]

    def host(self, name: str) -> HostPlan:
        for host_plan in self.hosts:
            if host_plan.host.name == name:
                return host_plan
        raise KeyError(name)

    def limited_to(self, names: set[str]) -> "Plan":
        """Return the plan for only the named hosts, keeping pairs with at least one of them."""
        return Plan(
            self.inventory_path,
            self.managed_group,
            self.policy_store,
            tuple(h for h in self.hosts if h.host.name in names),
            tuple(p for p in self.pairs if p.host_a in names or p.host_b in names),
            self.warnings,
        )


def sort_objects(objects: list[PlannedObject]) -> tuple[PlannedObject, ...]:
    """Order objects for creation: sets before the rules that use them, then by name."""
    return tuple(sorted(objects, key=lambda obj: (KIND_ORDER.index(obj.kind), obj.name)))
