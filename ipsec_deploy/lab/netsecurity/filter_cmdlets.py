"""Get-NetFirewallAddressFilter and Get-NetFirewallPortFilter for IPsec and main mode rules.

On Windows a rule's addresses, protocol and ports live in filter objects
(MSFT_NetAddressFilter, MSFT_NetProtocolPortFilter), one of each per rule,
read by piping the rule to these cmdlets. The lab has no firewall rules, so
only the filters of connection security rules exist.
"""

from __future__ import annotations

import ipaddress
from typing import Any

from ipsec_deploy.lab.netsecurity import errors
from ipsec_deploy.lab.netsecurity.context import CmdletContext, cmdlet
from ipsec_deploy.lab.netsecurity.filters import normalize_protocol
from ipsec_deploy.lab.netsecurity.objects import cim_class_of, cim_instance
from ipsec_deploy.lab.netsecurity.store import IPSEC_RULE, MAIN_MODE_RULE, ObjectKind, PolicyObject

ADDRESS_FILTER_CLASS = "MSFT_NetAddressFilter"
PORT_FILTER_CLASS = "MSFT_NetProtocolPortFilter"
ASSOCIATED_RULE_PARAMETERS = {
    "AssociatedNetIPsecRule": IPSEC_RULE,
    "AssociatedNetIPsecMainModeRule": MAIN_MODE_RULE,
}


def address_as_windows_shows(entry: str) -> str:
    """Return an address entry as Get-NetFirewallAddressFilter shows it.

    Windows shows an IPv4 subnet with a dotted mask (10.0.1.0/255.255.255.0)
    whatever notation created it, as users of the NetworkingDsc module found
    for firewall rules, which use the same filter class.
    NOTE: IPv6 subnets keep their prefix length here; not checked on Windows.
    """
    if "/" not in entry:
        return entry
    network = ipaddress.ip_network(entry, strict=False)
    if network.version == 4:
        return f"{network.network_address}/{network.netmask}"
    return str(network)


def _selected_rules(ctx: CmdletContext, kinds: tuple[ObjectKind, ...]) -> list[PolicyObject]:
    """Find the rules whose filters the call requests: the piped or named rule, or all rules of the store."""
    bound = ctx.bound
    host = ctx.host
    if bound.has("AssociatedNetFirewallRule"):
        raise errors.not_emulated(f"{ctx.command} -AssociatedNetFirewallRule")
    if bound.has("CimSession") or bound.has("AsJob"):
        raise errors.not_emulated(f"{ctx.command} -{'CimSession' if bound.has('CimSession') else 'AsJob'}")

    for parameter, kind in ASSOCIATED_RULE_PARAMETERS.items():
        if not bound.has(parameter):
            continue
        instance = bound.get(parameter)
        # The rule is read from the store it was read from, unless the call names another.
        store_name = host.resolve_store_name(
            ctx.command, bound.get("PolicyStore") or getattr(instance, "policy_store", None),
            bound.get("GPOSession"),
        )
        name = str(instance.properties.get("Name") or "")
        if cim_class_of(instance) != kind.cim_class:
            raise errors.windows_system_error(
                ctx.command, 87, f"The parameter is incorrect. -{parameter} takes {kind.cim_class} "
                f"instances; got {cim_class_of(instance) or instance.type_names[0]}.", "InvalidArgument", name,
            )
        for store in host.stores_for_read(ctx.command, store_name):
            found = store.find(kind.noun, name)
            if found is not None:
                return [found]
        ctx.write_error(errors.windows_system_error(
            ctx.command, 2, "The system cannot find the file specified.", "ObjectNotFound", name,
        ))
        return []

    store_name = host.resolve_store_name(ctx.command, bound.get("PolicyStore"), bound.get("GPOSession"))
    rules: list[PolicyObject] = []
    for store in host.stores_for_read(ctx.command, store_name):
        for kind in kinds:
            rules += store.of_kind(kind.noun)
    return rules


def _list(value: Any, default: str = "Any") -> list[str]:
    if value is None:
        return [default]
    return [str(v) for v in value] if isinstance(value, list) else [str(value)]


@cmdlet("Get-NetFirewallAddressFilter")
def get_address_filter(ctx: CmdletContext) -> None:
    for rule in _selected_rules(ctx, (IPSEC_RULE, MAIN_MODE_RULE)):
        properties = rule.properties
        # NOTE: Windows' instances carry more properties (LocalIP, RemoteIP,
        # CreationClassName ...); the lab returns the ones clients read.
        ctx.output.append(cim_instance(ADDRESS_FILTER_CLASS, {
            "InstanceID": rule.name,
            "LocalAddress": [address_as_windows_shows(a) for a in _list(properties.get("LocalAddress"))],
            "RemoteAddress": [address_as_windows_shows(a) for a in _list(properties.get("RemoteAddress"))],
        }, key=rule.name))


@cmdlet("Get-NetFirewallPortFilter")
def get_port_filter(ctx: CmdletContext) -> None:
    bound = ctx.bound
    if bound.has("DynamicTarget"):
        raise errors.not_emulated(f"{ctx.command} -DynamicTarget")
    protocol_filter = [normalize_protocol(str(p)) or str(p) for p in bound.get("Protocol") or []]

    # Main mode rules have no protocol or ports, so they have no port filter.
    for rule in _selected_rules(ctx, (IPSEC_RULE,)):
        properties = rule.properties
        protocol = str(properties.get("Protocol") or "Any")
        if protocol_filter and protocol.lower() not in (p.lower() for p in protocol_filter):
            continue
        ctx.output.append(cim_instance(PORT_FILTER_CLASS, {
            "InstanceID": rule.name,
            "Protocol": protocol,
            "LocalPort": _list(properties.get("LocalPort")),
            "RemotePort": _list(properties.get("RemotePort")),
            "IcmpType": ["Any"],
            "DynamicTarget": "Any",
        }, key=rule.name))
