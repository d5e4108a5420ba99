"""A plan made from snapshots, so that revert can use the staged rollout and verification. Pure.

A snapshot contains a host's objects as read from the host, without the
policy each rule came from. Mirrors are found the way an admin would: a rule
on a peer whose addresses and ports are this rule's, swapped.
"""

from __future__ import annotations

from dataclasses import replace

from ..inventory.model import Host
from ..objects import IPsecRule, MirrorRef, PlannedObject
from ..planner.model import HostPlan, MirrorPair, Plan, sort_objects
from ..planner.traffic import address_covered


def policy_name(rule_name: str, group: str) -> str:
    """Return the policy a rule was planned from, by the planner's naming: <group>-rule-<policy>[-endpoint1|-endpoint2]."""
    name = rule_name.removeprefix(f"{group}-rule-")
    for suffix in ("-endpoint1", "-endpoint2"):
        name = name.removesuffix(suffix)
    return name


def _is_mirror(rule: IPsecRule, other: IPsecRule) -> bool:
    return (
        other.local_address == rule.remote_address
        and other.remote_address == rule.local_address
        and other.local_port == rule.remote_port
        and other.remote_port == rule.local_port
        and other.protocol == rule.protocol
    )


def _covers(rule: IPsecRule, host: Host, peer: Host) -> bool:
    return any(address_covered(a, rule.local_address) for a in host.ip_addresses) and any(
        address_covered(a, rule.remote_address) for a in peer.ip_addresses
    )


def snapshot_plan(inventory_path: str, group: str, policy_store: str, hosts: dict[str, Host], snapshots: dict[str, list[PlannedObject]]) -> Plan:
    """Return a plan whose hosts must hold their snapshot objects, with mirrors linked by address."""
    rules = {name: [o for o in objects if isinstance(o, IPsecRule)] for name, objects in snapshots.items()}
    pairs: dict[tuple, MirrorPair] = {}
    linked: dict[str, list[PlannedObject]] = {}

    for name, objects in snapshots.items():
        updated: list[PlannedObject] = []
        for obj in objects:
            if not isinstance(obj, IPsecRule):
                updated.append(obj)
                continue
            mirrors = []
            for peer_name in sorted(snapshots):
                if peer_name == name or not _covers(obj, hosts[name], hosts[peer_name]):
                    continue
                for other in rules[peer_name]:
                    if _is_mirror(obj, other):
                        mirrors.append(MirrorRef(peer_name, other.name))
                        (host_a, rule_a), (host_b, rule_b) = sorted([(name, obj.name), (peer_name, other.name)])
                        label = obj.policy or policy_name(obj.name, group)
                        pairs[(host_a, rule_a, host_b, rule_b)] = MirrorPair(label, host_a, rule_a, host_b, rule_b)
                        break
            updated.append(replace(obj, mirrors=tuple(mirrors)))
        linked[name] = updated

    return Plan(
        inventory_path,
        group,
        policy_store,
        tuple(HostPlan(hosts[name], sort_objects(linked[name])) for name in sorted(linked)),
        tuple(sorted(pairs.values(), key=lambda p: (p.policy, p.host_a, p.host_b))),
        (),
    )
