"""Turn an inventory into a plan: a pure function with no I/O.

For each policy, a managed host gets one rule per endpoint it belongs to:
local addresses are its own endpoint, remote addresses the other one, and
ports follow their endpoint. The peer in the other endpoint gets the same
rule with both sides swapped, which makes the pair an exact mirror.
Object names come only from the managed group and inventory names, so
re-planning an unchanged inventory yields the same names.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, replace

from ..inventory.model import Endpoint, Host, Inventory, Policy
from ..inventory.problems import ProblemCollector
from ..objects import (
    IPsecRule,
    MainModeCryptoSet,
    MainModeRule,
    MirrorRef,
    Phase1AuthSet,
    Phase2AuthSet,
    PlannedObject,
    QuickModeCryptoSet,
)
from .checks import check_plan
from .management import MANAGEMENT_EXEMPTION_POLICY, check_management_paths, management_addresses
from .model import HostPlan, MirrorPair, Plan, sort_objects


def endpoint_contains_host(endpoint: Endpoint, host: Host) -> bool:
    """Return whether a host belongs to an endpoint: named in it, or one of its addresses is inside."""
    if host.name in endpoint.hosts or endpoint.is_any:
        return True
    return any(
        address.version == network.version and address in network
        for address in host.ip_addresses
        for network in endpoint.addresses
    )


def format_address(network) -> str:
    """Render a network the way New-NetIPsecRule takes it: single addresses without a prefix length."""
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def canonical_addresses(networks) -> tuple[str, ...]:
    """Sort addresses (IPv4 first) so the written order of an endpoint never changes a rule."""
    ordered = sorted(set(networks), key=lambda n: (n.version, n.network_address, n.prefixlen))
    return tuple(format_address(n) for n in ordered)


@dataclass(frozen=True)
class RuleSide:
    """The endpoint of a policy that a host's rule belongs to, and the peer endpoint."""

    local: Endpoint
    remote: Endpoint
    local_ports: tuple[str, ...]
    remote_ports: tuple[str, ...]
    suffix: str  # "" for a symmetric policy, else "endpoint1"/"endpoint2"
    peer_suffix: str


def policy_sides(policy: Policy) -> list[tuple[str, RuleSide]]:
    """Return (membership endpoint name, side) pairs; a symmetric policy has one side."""
    # Compare what ends up in the rules, not how the endpoints were written:
    # [APP-SRV01] and [10.0.1.10] give the same rule.
    symmetric = (
        set(policy.endpoint1.addresses) == set(policy.endpoint2.addresses)
        and policy.endpoint1_ports == policy.endpoint2_ports
    )
    if symmetric:
        side = RuleSide(policy.endpoint1, policy.endpoint2, policy.endpoint1_ports, policy.endpoint2_ports, "", "")
        return [("endpoint1", side)]
    return [
        ("endpoint1", RuleSide(policy.endpoint1, policy.endpoint2, policy.endpoint1_ports, policy.endpoint2_ports, "endpoint1", "endpoint2")),
        ("endpoint2", RuleSide(policy.endpoint2, policy.endpoint1, policy.endpoint2_ports, policy.endpoint1_ports, "endpoint2", "endpoint1")),
    ]


class _Namer:
    """Deterministic object names and display names under the managed group."""

    def __init__(self, group: str) -> None:
        self.group = group

    def rule(self, policy: str, suffix: str) -> str:
        return f"{self.group}-rule-{policy}" + (f"-{suffix}" if suffix else "")

    def main_mode_rule(self, policy: str, suffix: str) -> str:
        return f"{self.group}-mmrule-{policy}" + (f"-{suffix}" if suffix else "")

    def phase1_auth_set(self, profile: str) -> str:
        return f"{self.group}-p1auth-{profile}"

    def phase2_auth_set(self, profile: str) -> str:
        return f"{self.group}-p2auth-{profile}"

    def main_mode_crypto_set(self, profile: str) -> str:
        return f"{self.group}-mmcrypto-{profile}"

    def quick_mode_crypto_set(self, profile: str) -> str:
        return f"{self.group}-qmcrypto-{profile}"

    def description(self, what: str) -> str:
        return f"Managed by ipsec-deploy ({what}). Changes made by hand are overwritten."


@dataclass(frozen=True)
class EffectivePolicy:
    """A policy's settings on one host, after that host's overrides."""

    policy: Policy
    inbound_security: str
    outbound_security: str
    auth: str | None
    crypto: str | None
    key_module: str


def effective_policy(policy: Policy, host: Host) -> EffectivePolicy:
    override = host.override_for(policy.name)
    if override is None or policy.is_exemption:
        return EffectivePolicy(policy, policy.inbound_security, policy.outbound_security, policy.auth, policy.crypto, policy.key_module)
    return EffectivePolicy(
        policy,
        override.inbound_security or policy.inbound_security,
        override.outbound_security or policy.outbound_security,
        override.auth or policy.auth,
        override.crypto or policy.crypto,
        override.key_module or policy.key_module,
    )


def build_plan(inventory: Inventory) -> Plan:
    """Compute the plan, or raise InventoryError listing every problem found."""
    namer = _Namer(inventory.settings.managed_group)
    per_host: dict[str, dict[tuple[str, str], PlannedObject]] = {name: {} for name in inventory.hosts}
    rule_index: dict[tuple[str, str, str], str] = {}  # (host, policy, side suffix) -> rule name

    for policy in inventory.all_policies():
        for membership, side in policy_sides(policy):
            endpoint = policy.endpoint1 if membership == "endpoint1" else policy.endpoint2
            for host in sorted(inventory.hosts.values(), key=lambda h: h.name):
                if not endpoint_contains_host(endpoint, host):
                    continue
                objects = _objects_for_side(inventory, namer, policy, side, host)
                for obj in objects:
                    existing = per_host[host.name].setdefault((obj.kind, obj.name), obj)
                    # Shared sets are planned once per policy that uses them;
                    # two different objects under one name would be a naming bug.
                    assert existing == obj, f"two different objects named {obj.name} on {host.name}"
                rule_index[(host.name, policy.name, side.suffix)] = namer.rule(policy.name, side.suffix)

    pairs = _link_mirrors(inventory, per_host, rule_index)

    # Added after the mirrors are linked: the controller is not a managed
    # host, so this exemption has no mirror and forms no pair.
    if inventory.settings.management_exemption and inventory.controller:
        for host in inventory.hosts.values():
            exemption = _management_exemption(inventory, namer, host, per_host[host.name].values())
            if exemption is not None:
                per_host[host.name][(exemption.kind, exemption.name)] = exemption

    host_plans = tuple(
        HostPlan(inventory.hosts[name], sort_objects(list(per_host[name].values())))
        for name in sorted(inventory.hosts)
    )
    problems = ProblemCollector()
    problems.problems.extend(inventory.warnings)
    plan = Plan(
        inventory.path,
        inventory.settings.managed_group,
        inventory.settings.policy_store,
        host_plans,
        tuple(pairs),
        (),
    )
    check_plan(inventory, plan, problems)
    check_management_paths(inventory, plan, problems)
    problems.raise_if_errors()
    return replace(plan, warnings=tuple(problems.warnings))


def _objects_for_side(inventory: Inventory, namer: _Namer, policy: Policy, side: RuleSide, host: Host) -> list[PlannedObject]:
    settings = effective_policy(policy, host)
    group = inventory.settings.managed_group
    local = canonical_addresses(side.local.addresses)
    remote = canonical_addresses(side.remote.addresses)
    label = policy.name + (f" ({side.suffix})" if side.suffix else "")
    objects: list[PlannedObject] = []

    phase1_name = phase2_name = quick_mode_name = None
    if not policy.is_exemption:
        auth = inventory.auth_profiles[settings.auth] if settings.auth else None
        crypto = inventory.crypto_profiles[settings.crypto] if settings.crypto else None
        if auth is not None:
            phase1_name = namer.phase1_auth_set(auth.name)
            objects.append(Phase1AuthSet(phase1_name, f"{group} phase 1 auth {auth.name}", namer.description(f"auth profile {auth.name}"), group, auth.phase1))
            if auth.phase2:
                phase2_name = namer.phase2_auth_set(auth.name)
                objects.append(Phase2AuthSet(phase2_name, f"{group} phase 2 auth {auth.name}", namer.description(f"auth profile {auth.name}"), group, auth.phase2))
        if crypto is not None:
            main_mode_name = namer.main_mode_crypto_set(crypto.name)
            quick_mode_name = namer.quick_mode_crypto_set(crypto.name)
            objects.append(
                MainModeCryptoSet(main_mode_name, f"{group} main mode crypto {crypto.name}", namer.description(f"crypto profile {crypto.name}"), group, crypto.main_mode, crypto.main_mode_lifetime_minutes)
            )
            objects.append(
                QuickModeCryptoSet(quick_mode_name, f"{group} quick mode crypto {crypto.name}", namer.description(f"crypto profile {crypto.name}"), group, crypto.quick_mode, crypto.pfs_group)
            )
            # A custom main mode crypto set is only used through a main mode
            # rule that binds it to these addresses.
            objects.append(
                MainModeRule(
                    namer.main_mode_rule(policy.name, side.suffix),
                    f"{group} main mode {label}",
                    namer.description(f"policy {policy.name}"),
                    group,
                    local,
                    remote,
                    main_mode_name,
                    phase1_name or "",
                )
            )

    kind = "exemption" if policy.is_exemption else "policy"
    objects.append(
        IPsecRule(
            namer.rule(policy.name, side.suffix),
            f"{group} {kind} {label}",
            namer.description(f"{kind} {policy.name}"),
            group,
            policy=policy.name,
            inbound_security=settings.inbound_security,
            outbound_security=settings.outbound_security,
            local_address=local,
            remote_address=remote,
            protocol=policy.protocol,
            local_port=side.local_ports,
            remote_port=side.remote_ports,
            phase1_auth_set=phase1_name,
            phase2_auth_set=phase2_name,
            quick_mode_crypto_set=quick_mode_name,
            key_module=settings.key_module,
        )
    )
    return objects


def _management_exemption(inventory: Inventory, namer: _Namer, host: Host, planned) -> IPsecRule | None:
    """Plan the exemption for the controller's WinRM traffic to a host that has IPsec rules, or None."""
    if not any(isinstance(obj, IPsecRule) and not obj.is_exemption for obj in planned):
        return None
    local = management_addresses(host)
    families = {address.version for address in local}
    # A rule whose local and remote addresses are of different IP versions
    # can never match, so only controller addresses of the host's versions
    # are listed. A host without a known address gets any local address.
    remote = [network for network in inventory.controller if not families or network.version in families]
    if not remote:
        return None
    group = inventory.settings.managed_group
    name = MANAGEMENT_EXEMPTION_POLICY
    return IPsecRule(
        namer.rule(name, ""),
        f"{group} exemption {name}",
        namer.description(f"exemption {name}, WinRM from the controller"),
        group,
        policy=name,
        inbound_security="None",
        outbound_security="None",
        local_address=canonical_addresses(ipaddress.ip_network(address) for address in local),
        remote_address=canonical_addresses(remote),
        protocol="TCP",
        local_port=(str(host.connection.effective_port),),
        remote_port=(),
        key_module="Default",
    )


def _link_mirrors(inventory: Inventory, per_host, rule_index) -> list[MirrorPair]:
    """Record on every rule the rules that mirror it on managed peers, and list the pairs."""
    pairs: dict[tuple, MirrorPair] = {}
    for policy in inventory.all_policies():
        for membership, side in policy_sides(policy):
            peer_endpoint = side.remote
            for host in inventory.hosts.values():
                rule_name = rule_index.get((host.name, policy.name, side.suffix))
                if rule_name is None:
                    continue
                mirrors = []
                for peer in sorted(inventory.hosts.values(), key=lambda h: h.name):
                    if peer.name == host.name or not endpoint_contains_host(peer_endpoint, peer):
                        continue
                    peer_rule = rule_index.get((peer.name, policy.name, side.peer_suffix))
                    if peer_rule is None:
                        continue
                    mirrors.append(MirrorRef(peer.name, peer_rule))
                    key = tuple(sorted([(host.name, rule_name), (peer.name, peer_rule)]))
                    (host_a, rule_a), (host_b, rule_b) = key
                    pairs[key] = MirrorPair(policy.name, host_a, rule_a, host_b, rule_b)
                rule = per_host[host.name][("ipsec_rule", rule_name)]
                per_host[host.name][("ipsec_rule", rule_name)] = replace(rule, mirrors=tuple(mirrors))
    return sorted(pairs.values(), key=lambda p: (p.policy, p.host_a, p.host_b, p.rule_a))
