"""Facts: the IPsec objects a host holds now, parsed from the read_state script's output.

Values are normalised to the planner's forms, so that a host that matches its
plan compares equal object for object: addresses as sorted CIDR text, "Any"
as an empty list, enum values as member names.
"""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from typing import Any

from ..inventory.model import NETBIOS_NAME, AuthMethod, Host, MainModeProposal, QuickModeProposal
from ..objects import (
    ANY_ADDRESS,
    IPsecRule,
    MainModeCryptoSet,
    MainModeRule,
    Phase1AuthSet,
    Phase2AuthSet,
    PlannedObject,
    QuickModeCryptoSet,
)
from ..planner.build import format_address

# AuthenticationMethod of MSFT_NetIKEAuthProposal, by member name and by the
# numbers of the CIM class documentation (CIM_IKEProposal).
# NOTE: the numeric codes come from the CIM class pages, which list 65005
# twice; 65006 for machine certificates is inferred. Only the names have
# been exercised, against the lab.
AUTH_METHODS: dict[str, tuple[str, str]] = {
    "machinekerberos": ("kerberos", "machine"),
    "65002": ("kerberos", "machine"),
    "userkerberos": ("kerberos", "user"),
    "65004": ("kerberos", "user"),
    "machinentlm": ("ntlm", "machine"),
    "65003": ("ntlm", "machine"),
    "userntlm": ("ntlm", "user"),
    "65005": ("ntlm", "user"),
    "machinecert": ("certificate", "machine"),
    "machinehealthcert": ("certificate", "machine"),
    "65006": ("certificate", "machine"),
    "65008": ("certificate", "machine"),
    "usercert": ("certificate", "user"),
    "65007": ("certificate", "user"),
    "presharedkey": ("pre_shared_key", "machine"),
    "2": ("pre_shared_key", "machine"),
    "anonymous": ("anonymous", "machine"),
    "65001": ("anonymous", "machine"),
}


class StateError(ValueError):
    """Output of read_state that cannot be understood."""


@dataclass(frozen=True)
class ForeignRule:
    """A connection security rule the tool does not own; only reported, never changed."""

    name: str
    display_name: str
    group: str
    enabled: bool
    inbound_security: str
    outbound_security: str
    local_address: tuple[str, ...]
    remote_address: tuple[str, ...]
    protocol: str
    local_port: tuple[str, ...]
    remote_port: tuple[str, ...]


@dataclass
class HostState:
    """The managed objects of one host, keyed by (kind, name), and the foreign rules."""

    managed: dict[tuple[str, str], PlannedObject] = field(default_factory=dict)
    foreign_rules: list[ForeignRule] = field(default_factory=list)
    computer_name: str = ""  # $env:COMPUTERNAME of the host the session reached

    def objects(self) -> list[PlannedObject]:
        return list(self.managed.values())


def normalize_addresses(values: Any) -> tuple[str, ...]:
    """Return addresses as the planner writes them; Windows shows IPv4 subnets with a dotted mask."""
    entries = [str(v) for v in _as_list(values)]
    if not entries or any(e.lower() == ANY_ADDRESS.lower() for e in entries):
        return ()
    networks = []
    others = []
    for entry in entries:
        try:
            networks.append(ipaddress.ip_network(entry, strict=False))
        except ValueError:
            others.append(entry)  # ranges and keywords such as LocalSubnet stay as written
    ordered = sorted(set(networks), key=lambda n: (n.version, n.network_address, n.prefixlen))
    return tuple(format_address(n) for n in ordered) + tuple(sorted(others))


def normalize_ports(values: Any) -> tuple[str, ...]:
    entries = [str(v) for v in _as_list(values)]
    if not entries or any(e.lower() == "any" for e in entries):
        return ()
    return tuple(entries)


def _as_list(values: Any) -> list[Any]:
    if values is None or values == "":
        return []
    if isinstance(values, (list, tuple)):
        return [v for v in values if v not in (None, "")]
    return [values]


def _text(record: dict[str, Any], key: str) -> str:
    value = record.get(key)
    return "" if value is None else str(value)


def _optional(record: dict[str, Any], key: str) -> str | None:
    value = _text(record, key)
    return value or None


def _set_reference(record: dict[str, Any], key: str) -> str | None:
    """Read a rule's reference to a set; "Default" means the rule uses Windows' default set, as if unset."""
    value = _text(record, key)
    return None if value in ("", "Default") else value


def _enabled(record: dict[str, Any]) -> bool:
    return _text(record, "Enabled").lower() in ("true", "1")


def parse_auth_proposal(data: dict[str, Any]) -> AuthMethod:
    method = _text(data, "AuthenticationMethod").lower()
    if method not in AUTH_METHODS:
        raise StateError(f"unknown authentication method {data.get('AuthenticationMethod')!r}")
    kind, identity = AUTH_METHODS[method]
    if kind == "certificate":
        authority_type = _text(data, "AuthorityType") or "Root"
        return AuthMethod(kind, identity, _optional(data, "Authority"), "Intermediate" if authority_type.lower() == "intermediate" else "Root")
    # A pre-shared key is never read back from a host.
    return AuthMethod(kind, identity)


def parse_main_mode_proposal(data: dict[str, Any]) -> MainModeProposal:
    return MainModeProposal(_text(data, "Encryption"), _text(data, "Hash"), _text(data, "KeyExchange"))


def parse_quick_mode_proposal(data: dict[str, Any]) -> QuickModeProposal:
    encapsulation = _text(data, "Encapsulation").upper() or "ESP"
    if encapsulation == "AH":
        return QuickModeProposal("AH", None, _text(data, "AHHash"))
    return QuickModeProposal("ESP", _optional(data, "Encryption"), _text(data, "ESPHash"))


def parse_object(record: dict[str, Any]) -> PlannedObject | ForeignRule:
    kind = _text(record, "Kind")
    common = {
        "name": _text(record, "Name"),
        "display_name": _text(record, "DisplayName"),
        "description": _text(record, "Description"),
        "group": _text(record, "Group"),
    }
    proposals = record.get("Proposals") or []
    if kind == Phase1AuthSet.kind:
        return Phase1AuthSet(**common, proposals=tuple(parse_auth_proposal(p) for p in proposals))
    if kind == Phase2AuthSet.kind:
        return Phase2AuthSet(**common, proposals=tuple(parse_auth_proposal(p) for p in proposals))
    if kind == MainModeCryptoSet.kind:
        max_minutes = _text(record, "MaxMinutes")
        return MainModeCryptoSet(
            **common,
            proposals=tuple(parse_main_mode_proposal(p) for p in proposals),
            max_minutes=int(max_minutes) if max_minutes.isdigit() else None,
        )
    if kind == QuickModeCryptoSet.kind:
        return QuickModeCryptoSet(
            **common,
            proposals=tuple(parse_quick_mode_proposal(p) for p in proposals),
            perfect_forward_secrecy_group=_text(record, "PerfectForwardSecrecyGroup") or "None",
        )
    if kind == MainModeRule.kind:
        return MainModeRule(
            **common,
            local_address=normalize_addresses(record.get("LocalAddress")),
            remote_address=normalize_addresses(record.get("RemoteAddress")),
            main_mode_crypto_set=_text(record, "MainModeCryptoSet"),
            phase1_auth_set=_text(record, "Phase1AuthSet"),
            enabled=_enabled(record),
        )
    if kind == IPsecRule.kind:
        return IPsecRule(
            **common,
            enabled=_enabled(record),
            inbound_security=_text(record, "InboundSecurity"),
            outbound_security=_text(record, "OutboundSecurity"),
            local_address=normalize_addresses(record.get("LocalAddress")),
            remote_address=normalize_addresses(record.get("RemoteAddress")),
            protocol=_text(record, "Protocol") or "Any",
            local_port=normalize_ports(record.get("LocalPort")),
            remote_port=normalize_ports(record.get("RemotePort")),
            phase1_auth_set=_set_reference(record, "Phase1AuthSet"),
            phase2_auth_set=_set_reference(record, "Phase2AuthSet"),
            quick_mode_crypto_set=_set_reference(record, "QuickModeCryptoSet"),
            key_module=_text(record, "KeyModule") or "Default",
        )
    if kind == "foreign_ipsec_rule":
        return ForeignRule(
            name=common["name"],
            display_name=common["display_name"],
            group=common["group"],
            enabled=_enabled(record),
            inbound_security=_text(record, "InboundSecurity"),
            outbound_security=_text(record, "OutboundSecurity"),
            local_address=normalize_addresses(record.get("LocalAddress")),
            remote_address=normalize_addresses(record.get("RemoteAddress")),
            protocol=_text(record, "Protocol") or "Any",
            local_port=normalize_ports(record.get("LocalPort")),
            remote_port=normalize_ports(record.get("RemotePort")),
        )
    raise StateError(f"unknown object kind {kind!r}")


def parse_host_state(records: list[Any]) -> HostState:
    state = HostState()
    for record in records:
        if not isinstance(record, dict):
            raise StateError(f"expected one record per object, got {type(record).__name__}")
        if record.get("Kind") == "computer":
            state.computer_name = _text(record, "ComputerName")
            continue
        parsed = parse_object(record)
        if isinstance(parsed, ForeignRule):
            state.foreign_rules.append(parsed)
        else:
            state.managed[(parsed.kind, parsed.name)] = parsed
    return state


def wrong_host_reason(host: Host, reported: str) -> str | None:
    """Return why the session reached another computer than the inventory means, or None when it is the right one."""
    expected = host.expected_computer_name
    if expected is None or reported.upper() == expected:
        # A host keyed by an IP address is not checked, and the loader warns about it.
        return None

    # Two entries with swapped ports, or a stale DNS record, would otherwise put one host's rules on another.
    endpoint = f"{host.address} port {host.connection.effective_port}"
    reason = (
        f"the WinRM endpoint {endpoint} answered as computer '{reported or 'unknown'}', not '{expected}'; "
        "nothing was changed on it. Correct the host's address or port in the inventory"
    )
    if NETBIOS_NAME.fullmatch(reported):
        reason += f", or, if the entry is meant to reach that computer, set 'computer_name: {reported}' on host '{host.name}'"
    return reason
