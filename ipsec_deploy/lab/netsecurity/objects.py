"""Render lab state as the objects Windows returns: CIM instances and event records.

NOTE: on Windows a rule's addresses, protocol and ports live in its
associated MSFT_NetAddressFilter and MSFT_NetProtocolPortFilter instances,
read with Get-NetFirewallAddressFilter / Get-NetFirewallPortFilter. The lab
also puts LocalAddress, RemoteAddress, Protocol, LocalPort, RemotePort,
InterfaceAlias and InterfaceType on the rule objects themselves, so a client
can read a whole rule in one round trip. A client that must also work on
Windows has to read those from the filter objects there.

NOTE: enum-typed properties (Enabled, Profile, InboundSecurity ...) are
returned as their member names, as a remote client sees them after
deserialisation; locally Windows gives enum values.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from ipsec_deploy.lab.netsecurity.store import RULE_STATUS_OK, PolicyObject, PolicyStore
from ipsec_deploy.lab.pipeline import PSObjectValue

CIM_INSTANCE = "Microsoft.Management.Infrastructure.CimInstance"
NAMESPACE = "root/standardcimv2"

# Property order of Get-NetIPsecRule's output, then the filter properties the lab adds.
RULE_PROPERTIES = (
    "Name", "DisplayName", "Description", "DisplayGroup", "Group", "Enabled", "Profile", "Platform",
    "Mode", "InboundSecurity", "OutboundSecurity", "QuickModeCryptoSet", "Phase1AuthSet",
    "Phase2AuthSet", "KeyModule", "AllowWatchKey", "AllowSetKey", "LocalTunnelEndpoint",
    "RemoteTunnelEndpoint", "RemoteTunnelHostname", "ForwardPathLifetime", "EncryptedTunnelBypass",
    "RequireAuthorization", "User", "Machine",
)
MAIN_MODE_RULE_PROPERTIES = (
    "Name", "DisplayName", "Description", "DisplayGroup", "Group", "Enabled", "Profile", "Platform",
    "MainModeCryptoSet", "Phase1AuthSet",
)
FILTER_PROPERTIES = ("LocalAddress", "RemoteAddress", "Protocol", "LocalPort", "RemotePort",
                     "InterfaceAlias", "InterfaceType")
SET_EXTRA_PROPERTIES = {
    "MSFT_NetIKEMMCryptoSet": ("MaxMinutes", "MaxSessions", "ForceDiffieHellman"),
    "MSFT_NetIKEQMCryptoSet": ("PerfectForwardSecrecyGroup",),
}
REFERENCE_PROPERTIES = ("QuickModeCryptoSet", "Phase1AuthSet", "Phase2AuthSet", "MainModeCryptoSet")


@dataclass
class CimInstanceValue(PSObjectValue):
    """A CIM instance the lab returned, remembering its class and the store it came from.

    The wire layer serialises it as a plain ``PSObjectValue``; inside one
    pipeline the lab reads ``cim_class`` and ``policy_store`` when the object
    is piped to another cmdlet as -InputObject.
    """

    cim_class: str = ""
    policy_store: str | None = None


def cim_type_names(cim_class: str) -> list[str]:
    return [
        f"{CIM_INSTANCE}#{NAMESPACE}/{cim_class}",
        f"{CIM_INSTANCE}#{cim_class}",
        CIM_INSTANCE,
        "System.Object",
    ]


def cim_instance(cim_class: str, properties: dict[str, Any], key: str | None = None,
                 policy_store: str | None = None) -> CimInstanceValue:
    to_string = f'{cim_class} (InstanceID = "{key}")' if key is not None else cim_class
    return CimInstanceValue(
        type_names=cim_type_names(cim_class),
        properties=properties,
        to_string=to_string,
        cim_class=cim_class,
        policy_store=policy_store,
    )


def cim_class_of(value: Any) -> str | None:
    if isinstance(value, CimInstanceValue):
        return value.cim_class
    if isinstance(value, PSObjectValue):
        for type_name in value.type_names:
            if type_name.startswith(CIM_INSTANCE + "#"):
                return type_name.rsplit("/", 1)[-1].rsplit("#", 1)[-1]
    return None


def _status_properties(store: PolicyStore) -> dict[str, Any]:
    return {
        "PrimaryStatus": "OK",
        "Status": RULE_STATUS_OK,
        "EnforcementStatus": "NotApplicable",
        "PolicyStoreSource": store.name,
        "PolicyStoreSourceType": store.store_type,
    }


def proposal_instance(proposal_class: str, properties: dict[str, Any]) -> CimInstanceValue:
    return cim_instance(proposal_class, copy.deepcopy(properties))


def render_policy_object(obj: PolicyObject, store: PolicyStore, store_name: str) -> CimInstanceValue:
    """Render a rule or set as Get-NetIPsec* returns it, read through ``store_name``."""
    kind = obj.kind
    source = obj.properties
    properties: dict[str, Any] = {}

    if kind.noun == "NetIPsecRule":
        names: tuple[str, ...] = RULE_PROPERTIES
    elif kind.noun == "NetIPsecMainModeRule":
        names = MAIN_MODE_RULE_PROPERTIES
    else:
        names = ("Name", "DisplayName", "Description", "DisplayGroup", "Group",
                 *SET_EXTRA_PROPERTIES.get(kind.cim_class, ()), "Proposal")

    for name in names:
        if name == "DisplayGroup":
            properties[name] = source.get("Group", "")
        elif name == "Proposal":
            properties[name] = [proposal_instance(kind.proposal_class or "", p) for p in source.get("Proposal", [])]
        elif name in REFERENCE_PROPERTIES:
            # NOTE: a rule without an explicit set shows "Default" here, as
            # far as known from Windows' console output.
            properties[name] = source.get(name) or "Default"
        elif name in ("User", "Machine"):
            properties[name] = source.get(name) or "Any"
        else:
            value = source.get(name)
            properties[name] = copy.deepcopy(value) if isinstance(value, list) else value

    properties.update(_status_properties(store))
    if kind.noun in ("NetIPsecRule", "NetIPsecMainModeRule"):
        for name in FILTER_PROPERTIES:
            if name in source:
                properties[name] = copy.deepcopy(source[name])
    properties["InstanceID"] = source["Name"]
    properties["ElementName"] = source.get("DisplayName")
    return cim_instance(kind.cim_class, properties, key=source["Name"], policy_store=store_name)


def render_event(event: dict[str, Any], computer: str) -> PSObjectValue:
    """Render a Security log entry as Get-WinEvent returns an EventLogRecord."""
    time_created = datetime.fromisoformat(event["TimeCreated"])
    return PSObjectValue(
        type_names=[
            "System.Diagnostics.Eventing.Reader.EventLogRecord",
            "System.Diagnostics.Eventing.Reader.EventRecord",
            "System.Object",
        ],
        properties={
            "Id": event["Id"],
            "RecordId": event["RecordId"],
            "TimeCreated": time_created,
            "ProviderName": "Microsoft-Windows-Security-Auditing",
            "LogName": "Security",
            "MachineName": computer,
            "LevelDisplayName": "Information",
            "KeywordsDisplayNames": [event["Keywords"]],
            "Message": event["Message"],
        },
        to_string="System.Diagnostics.Eventing.Reader.EventLogRecord",
    )
