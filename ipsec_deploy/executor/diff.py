"""Compute the operations that turn a host's current objects into the desired ones. Pure: no I/O.

Each operation carries the calls that undo it, built from the object as it
was, so a failed change set can be reversed on the host in one step.
Operations come in dependency order: rules are removed before the sets they
reference, sets are created or changed before the rules that use them, and
sets are removed last.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from typing import Literal

from ..cmdlets import CmdletCall
from ..objects import KIND_ORDER, IPsecRule, MainModeCryptoSet, Phase1AuthSet, Phase2AuthSet, PlannedObject

Action = Literal["create", "update", "delete"]

RULE_KINDS = ("main_mode_rule", "ipsec_rule")


@dataclass(frozen=True)
class Operation:
    action: Action
    kind: str
    name: str
    call: CmdletCall
    undo: tuple[CmdletCall, ...]
    before: PlannedObject | None = None
    after: PlannedObject | None = None

    @property
    def summary(self) -> str:
        return f"{self.action} {self.kind} {self.name}"


def remove_call(obj: PlannedObject, policy_store: str) -> CmdletCall:
    return CmdletCall(f"Remove-{obj.noun}", ((obj.name_parameter, obj.name), ("PolicyStore", policy_store)))


def set_call(obj: PlannedObject, policy_store: str) -> CmdletCall:
    """Set every property of an existing object to the values of ``obj``."""
    specific = obj.specific_parameters()
    if isinstance(obj, IPsecRule):
        # New- leaves out empty port lists, but Set- must pass "Any" to
        # clear ports the rule had, or they stay and the rule never converges.
        given = {name for name, _ in specific}
        specific += tuple((name, ("Any",)) for name in ("LocalPort", "RemotePort") if name not in given)
    return CmdletCall(
        f"Set-{obj.noun}",
        (
            (obj.name_parameter, obj.name),
            ("PolicyStore", policy_store),
            ("NewDisplayName", obj.display_name),
            ("Description", obj.description),
        )
        + specific,
    )


def comparable(current: PlannedObject, desired: PlannedObject) -> PlannedObject:
    """Return ``current`` with the values Windows fills in by default replaced by the desired ones.

    A main mode crypto set planned without a lifetime gets Windows' default,
    which must not show as a change on every run.
    """
    if isinstance(current, MainModeCryptoSet) and isinstance(desired, MainModeCryptoSet) and desired.max_minutes is None:
        return replace(current, max_minutes=None)
    return current


def with_secret_names(current: PlannedObject, desired: PlannedObject | None) -> PlannedObject:
    """Return ``current`` with the environment variable names of its pre-shared keys taken from ``desired``.

    A host never returns a pre-shared key, so a set read back has no name for
    its key. Without one the set would always differ from the plan, and an
    undo or restore that recreates it could not find its key.
    """
    if not isinstance(current, (Phase1AuthSet, Phase2AuthSet)) or not isinstance(desired, type(current)):
        return current
    names = iter(p.key_env for p in desired.proposals if p.method == "pre_shared_key")
    proposals = tuple(
        replace(p, key_env=next(names, None)) if p.method == "pre_shared_key" and p.key_env is None else p for p in current.proposals
    )
    return replace(current, proposals=proposals)


def needs_recreate(current: PlannedObject, desired: PlannedObject) -> bool:
    """Return whether Set- cannot express the change, so the object is removed and created again.

    Set-NetIPsecRule cannot clear a reference to an auth set or crypto set
    once the rule has one.
    """
    if isinstance(current, IPsecRule) and isinstance(desired, IPsecRule):
        for attribute in ("phase1_auth_set", "phase2_auth_set", "quick_mode_crypto_set"):
            if getattr(current, attribute) and not getattr(desired, attribute):
                return True
    return False


def diff_host(current: dict[tuple[str, str], PlannedObject], desired: tuple[PlannedObject, ...], policy_store: str) -> list[Operation]:
    """Return the ordered operations that make ``current`` equal to ``desired``."""
    desired_by_key = {(obj.kind, obj.name): obj for obj in desired}
    remove_rules: list[Operation] = []
    write_sets: list[Operation] = []
    write_rules: list[Operation] = []
    remove_sets: list[Operation] = []

    for key, obj in desired_by_key.items():
        existing = current.get(key)
        target = write_rules if obj.kind in RULE_KINDS else write_sets
        if existing is None:
            target.append(Operation("create", obj.kind, obj.name, obj.new_call(policy_store), (remove_call(obj, policy_store),), None, obj))
        elif comparable(existing, obj) != obj:
            if needs_recreate(existing, obj):
                remove_rules.append(Operation("delete", obj.kind, obj.name, remove_call(existing, policy_store), (existing.new_call(policy_store),), existing, None))
                target.append(Operation("create", obj.kind, obj.name, obj.new_call(policy_store), (remove_call(obj, policy_store),), None, obj))
            else:
                target.append(Operation("update", obj.kind, obj.name, set_call(obj, policy_store), (set_call(existing, policy_store),), existing, obj))

    for key, existing in current.items():
        if key in desired_by_key:
            continue
        operation = Operation("delete", existing.kind, existing.name, remove_call(existing, policy_store), (existing.new_call(policy_store),), existing, None)
        (remove_rules if existing.kind in RULE_KINDS else remove_sets).append(operation)

    def order(operations: list[Operation], reverse: bool = False) -> list[Operation]:
        return sorted(operations, key=lambda op: (KIND_ORDER.index(op.kind), op.name), reverse=reverse)

    # Removal runs in reverse kind order: IPsec rules before main mode rules,
    # quick mode sets before phase 1 auth sets.
    return order(remove_rules, reverse=True) + order(write_sets) + order(write_rules) + order(remove_sets, reverse=True)
