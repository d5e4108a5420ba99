"""Find planned rules that match the controller's own WinRM traffic to a host.

ipsec-deploy reaches every host over WinRM (TCP 5985 or 5986) from the admin
workstation, the controller. A rule that requests or requires IPsec for that
traffic can cut the deployer's session while it applies the plan, unless an
exemption (None/None) on the same host matches the traffic too. Microsoft's
help for the Authentication Exemption rule type says such a rule applies
"regardless of other connection security rules", and the lab ranks
exemptions first in ``ipsec_deploy.lab.netsecurity.negotiation.matching_rule``.

Everything here is pure: the planner calls it with the inventory's
``controller`` addresses, and the executor can call it again at apply time
with the local addresses of its WinRM connections.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Union

from ..inventory.model import Host, Inventory, IPAddress, IPNetwork, Location
from ..inventory.problems import ProblemCollector
from ..objects import ANY_ADDRESS, IPsecRule
from .model import Plan
from .traffic import address_covered, parse_network, ports_overlap, protocols_overlap

# The pseudo-policy of the planned management exemption. Its rule is named
# <managed_group>-rule-management-exemption, and the loader rejects a policy
# or exemption of this name while management_exemption is true.
MANAGEMENT_EXEMPTION_POLICY = "management-exemption"

AddressLike = Union[str, IPAddress, IPNetwork]


@dataclass(frozen=True)
class ManagementConflict:
    """A planned rule on a host that matches the controller's WinRM traffic to it, with no exemption covering it."""

    host: str
    rule: str
    policy: str
    inbound_security: str
    outbound_security: str
    controller: str  # the controller address or subnet, as New-NetIPsecRule takes it
    management_addresses: tuple[str, ...]  # the host's addresses the rule covers
    port: int  # the host's WinRM port

    def describe(self, management_exemption: bool = False) -> str:
        """Build the error message, with the fix that applies to the inventory's setting."""
        addresses = ", ".join(self.management_addresses)
        problem = (
            f"rule '{self.rule}' of policy '{self.policy}' on host '{self.host}' matches the WinRM traffic "
            f"from controller {self.controller} to {addresses} TCP port {self.port} "
            f"({self.inbound_security}/{self.outbound_security}), so applying it can cut ipsec-deploy's own connection to the host"
        )
        if management_exemption:
            fix = f"add {self.controller} to controller so that the planned management exemption covers it, or narrow the rule"
        else:
            fix = "set management_exemption: true to plan a narrow exemption for the controller's WinRM traffic, or narrow the rule"
        return f"{problem}; {fix}"


def to_network(value: AddressLike) -> IPNetwork:
    """Parse an address or subnet; an IPv4-mapped IPv6 address becomes its IPv4 address."""
    if isinstance(value, (ipaddress.IPv4Network, ipaddress.IPv6Network)):
        return value
    if isinstance(value, str) and "/" in value:
        return ipaddress.ip_network(value.strip(), strict=False)
    address = value if not isinstance(value, str) else ipaddress.ip_address(value.strip().split("%", 1)[0])
    if isinstance(address, ipaddress.IPv6Address) and address.ipv4_mapped is not None:
        address = address.ipv4_mapped
    return ipaddress.ip_network(address)


def management_addresses(host: Host) -> tuple[IPAddress, ...]:
    """Return the addresses the controller reaches the host's WinRM listener on.

    That is ``address`` when it is an IP address. A DNS name can resolve to
    any of the host's data-plane ``ip`` addresses, so all of them count. So
    does a loopback address: no remote host is managed over loopback, so it
    marks a local stand-in for the host (the lab), and the host's real
    addresses are its data-plane ones.
    """
    try:
        address = to_network(host.address).network_address
    except ValueError:
        return tuple(host.ip_addresses)
    if address.is_loopback and host.ip_addresses:
        return tuple(host.ip_addresses)
    return (address,)


def management_path_problems(
    plan: Plan,
    controller_addresses: Iterable[AddressLike],
    management_addresses_by_host: Mapping[str, Iterable[AddressLike]] | None = None,
) -> list[ManagementConflict]:
    """Find every planned rule that would match the controller's WinRM traffic to its host.

    ``controller_addresses`` are IP addresses or subnets (strings or
    ``ipaddress`` objects) the controller's traffic comes from.
    ``management_addresses_by_host`` maps a host name to the addresses the
    controller connects to, which replace ``management_addresses(host)`` for
    that host. The executor reads them from its sockets.
    """
    controllers = list(dict.fromkeys(to_network(value) for value in controller_addresses))
    overrides = management_addresses_by_host or {}
    conflicts = []
    for host_plan in plan.hosts:
        host = host_plan.host
        if host.name in overrides:
            targets = tuple(to_network(value).network_address for value in overrides[host.name])
        else:
            targets = management_addresses(host)
        port = host.connection.effective_port
        enabled = [rule for rule in host_plan.rules if rule.enabled]
        exemptions = [rule for rule in enabled if rule.is_exemption]
        for rule in enabled:
            if rule.is_exemption or not _matches_winrm(rule, port):
                continue
            for controller in controllers:
                exposed = [
                    target
                    for target in _local_targets(rule, targets)
                    if _uncovered_controller_part(rule, controller, target, port, exemptions)
                ]
                if exposed:
                    conflicts.append(
                        ManagementConflict(
                            host=host.name,
                            rule=rule.name,
                            policy=rule.policy,
                            inbound_security=rule.inbound_security,
                            outbound_security=rule.outbound_security,
                            controller=_format(controller),
                            management_addresses=tuple("any" if target is None else str(target) for target in exposed),
                            port=port,
                        )
                    )
    return conflicts


def _matches_winrm(rule: IPsecRule, port: int) -> bool:
    """Return whether a rule's protocol and ports can match TCP traffic to the WinRM port."""
    # Only an empty remote port list is counted: the controller's source
    # port is an ephemeral port, so a rule filtering on it is not flagged.
    # NOTE: a rule whose remote ports include the controller's ephemeral
    # range would still match some of that traffic and is not reported.
    return protocols_overlap(rule.protocol, "TCP") and ports_overlap(rule.local_port, (str(port),)) and not rule.remote_port


def _local_targets(rule: IPsecRule, targets: tuple[IPAddress, ...]) -> list[IPAddress | None]:
    """Return the management addresses a rule's local side covers; None stands for an unknown address."""
    if not targets:
        # A host with a DNS name and no data-plane address: only a rule for
        # any local address is sure to match its WinRM traffic.
        return [None] if _is_any(rule.local_address) else []
    return [target for target in targets if address_covered(target, rule.local_address)]


def _uncovered_controller_part(
    rule: IPsecRule, controller: IPNetwork, target: IPAddress | None, port: int, exemptions: list[IPsecRule]
) -> list[IPNetwork]:
    """Return the part of the controller's addresses that the rule covers and no exemption takes back."""
    if _is_any(rule.remote_address):
        exposed = [controller]
    else:
        exposed = [part for text in rule.remote_address if (part := _intersection(controller, parse_network(text))) is not None]

    for exemption in exemptions:
        if not exposed:
            break
        if not _exemption_matches(exemption, target, port):
            continue
        if _is_any(exemption.remote_address):
            return []
        for text in exemption.remote_address:
            exposed = _subtract(exposed, parse_network(text))
    return exposed


def _exemption_matches(exemption: IPsecRule, target: IPAddress | None, port: int) -> bool:
    """Return whether an exemption matches all WinRM traffic from any remote port to ``target``."""
    if exemption.remote_port or not ports_overlap(exemption.local_port, (str(port),)):
        return False
    if exemption.protocol.upper() not in ("ANY", "TCP", "6"):
        return False
    if target is None:
        return _is_any(exemption.local_address)
    return address_covered(target, exemption.local_address)


def _is_any(addresses: tuple[str, ...]) -> bool:
    return not addresses or ANY_ADDRESS in addresses


def _intersection(first: IPNetwork, second: IPNetwork) -> IPNetwork | None:
    """Return the overlap of two networks, which is the smaller one when they overlap at all."""
    if first.version != second.version or not first.overlaps(second):
        return None
    return first if first.prefixlen >= second.prefixlen else second


def _subtract(parts: list[IPNetwork], removed: IPNetwork) -> list[IPNetwork]:
    """Remove one network from a list of networks, splitting the ones that contain it."""
    remaining: list[IPNetwork] = []
    for part in parts:
        if part.version != removed.version or not part.overlaps(removed):
            remaining.append(part)
        elif part.prefixlen < removed.prefixlen:
            remaining.extend(part.address_exclude(removed))
        # Otherwise ``removed`` contains the whole part, which is dropped.
    return remaining


def _format(network: IPNetwork) -> str:
    if network.prefixlen == network.max_prefixlen:
        return str(network.network_address)
    return str(network)


def check_management_paths(inventory: Inventory, plan: Plan, problems: ProblemCollector) -> None:
    """Report every management path conflict of the plan as an error at its policy's line."""
    locations = {policy.name: policy.location for policy in inventory.all_policies()}
    fallback = inventory.controller_location or Location(inventory.path, 1)
    for conflict in management_path_problems(plan, inventory.controller):
        location = locations.get(conflict.policy) or fallback
        problems.error(location, conflict.describe(inventory.settings.management_exemption))

    if inventory.settings.management_exemption:
        _check_managed_controllers(inventory, plan, problems)


def _check_managed_controllers(inventory: Inventory, plan: Plan, problems: ProblemCollector) -> None:
    """Report rules on a managed host inside ``controller`` that cover its WinRM traffic to exempted hosts.

    The management exemption is planned only on the hosts the controller
    connects to. If the controller is itself a managed host whose rules
    require IPsec for that outbound traffic, the two sides disagree and the
    traffic is dropped, so the exemption alone does not keep the session.
    """
    locations = {policy.name: policy.location for policy in inventory.all_policies()}
    exempted = [hp for hp in plan.hosts if hp.object(IPsecRule.kind, management_exemption_name(plan.managed_group))]
    for controller_plan in plan.hosts:
        own = [a for a in controller_plan.host.ip_addresses if any(a in n for n in inventory.controller if n.version == a.version)]
        if not own:
            continue
        rules = [r for r in controller_plan.rules if r.enabled]
        for rule in rules:
            if rule.is_exemption:
                continue
            reached = []
            for target_plan in exempted:
                if target_plan.host.name == controller_plan.host.name:
                    continue
                port = target_plan.host.connection.effective_port
                for source in own:
                    for target in management_addresses(target_plan.host):
                        if _covers_outbound(rule, source, target, port) and not any(
                            r.is_exemption and _covers_outbound(r, source, target, port) for r in rules
                        ):
                            reached.append(f"{target_plan.host.name} ({target} port {port})")
            if reached:
                problems.error(
                    locations.get(rule.policy) or inventory.controller_location or Location(inventory.path, 1),
                    f"controller includes managed host '{controller_plan.host.name}', whose rule '{rule.name}' of policy "
                    f"'{rule.policy}' ({rule.inbound_security}/{rule.outbound_security}) matches its WinRM traffic to "
                    f"{', '.join(sorted(set(reached)))}, which the management exemption exempts there, so the traffic would be dropped; "
                    "run ipsec-deploy from a workstation that is not a managed host, or list that WinRM traffic under exemptions",
                )


def _covers_outbound(rule: IPsecRule, source: IPAddress, target: IPAddress, port: int) -> bool:
    """Return whether a rule on the controller matches its TCP traffic from ``source`` to ``target`` port ``port``."""
    return (
        protocols_overlap(rule.protocol, "TCP")
        and not rule.local_port
        and ports_overlap(rule.remote_port, (str(port),))
        and address_covered(source, rule.local_address)
        and address_covered(target, rule.remote_address)
    )


def management_exemption_name(managed_group: str) -> str:
    return f"{managed_group}-rule-{MANAGEMENT_EXEMPTION_POLICY}"
