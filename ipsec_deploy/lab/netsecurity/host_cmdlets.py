"""Host-level cmdlets: SAs, Test-NetConnection, Get-WinEvent and Get-CimInstance."""

from __future__ import annotations

import ipaddress
from datetime import datetime
from typing import Any

from ipsec_deploy.lab.netsecurity import errors
from ipsec_deploy.lab.netsecurity.binding import has_wildcards, wildcard_match
from ipsec_deploy.lab.netsecurity.context import CmdletContext, cmdlet
from ipsec_deploy.lab.netsecurity.negotiation import (
    CIPHER_LABELS,
    GROUP_LABELS,
    HASH_LABELS,
    Traffic,
    expire_sas,
    send_traffic,
)
from ipsec_deploy.lab.netsecurity.objects import cim_class_of, cim_instance, render_event
from ipsec_deploy.lab.netsecurity.spec import load_spec
from ipsec_deploy.lab.pipeline import PSObjectValue

# IKEEXT_AUTHENTICATION_METHOD_TYPE values, as MSFT_NetIPsecIdentity.AuthenticationMethod carries them.
# NOTE: taken from the IKEEXT enumeration order; the class page publishes no value map.
AUTHENTICATION_METHOD_CODES = {"PresharedKey": 0, "Certificate": 1, "Kerberos": 2, "Anonymous": 3, "NTLM": 5}
# NOTE: IKEEXT_KEY_MODULE_TYPE values (IKE 0, AuthIP 1, IKEv2 2); not published for MSFT_NetMainModeSA.
KEY_MODULE_CODES = {"IKEv1": 0, "AuthIP": 1, "IKEv2": 2}
# IPSEC_TRANSFORM_TYPE: AH 1, ESP auth 2, ESP cipher 3, ESP auth and cipher 4.
TRANSFORM_TYPES = {"AH": 1, "ESP_AUTH": 2, "ESP_CIPHER": 3, "ESP_AUTH_AND_CIPHER": 4}
COMMON_TCP_PORTS = {"HTTP": 80, "RDP": 3389, "SMB": 445, "WINRM": 5985}
IP_PROTOCOL_NUMBERS = {"Any": 0, "TCP": 6, "UDP": 17, "ICMPv4": 1}


def _code(sa_cmdlet: str, property_name: str, label: str) -> int:
    """Look up the numeric code of an algorithm label in the spec's value map for that SA property."""
    for prop in load_spec().sa_output[sa_cmdlet]["properties"]:
        if prop["name"] == property_name:
            for code, text in (prop["value_map_win32_docs"] or {}).items():
                if text == label:
                    return int(code)
    return 0


def _sa_properties(sa_cmdlet: str) -> list[str]:
    return [p["name"] for p in load_spec().sa_output[sa_cmdlet]["properties"]]


def _identity(method: str, identity: str) -> PSObjectValue:
    return cim_instance("MSFT_NetIPsecIdentity", {
        "ImpersonationType": 0,
        "AuthenticationMethod": AUTHENTICATION_METHOD_CODES.get(method, 0),
        "Flags": 0,
        "Identity": identity,
    })


def render_main_mode_sa(sa: dict[str, Any], host_name: str) -> PSObjectValue:
    spec_name = "Get-NetIPsecMainModeSA"
    properties: dict[str, Any] = {name: None for name in _sa_properties(spec_name)}
    properties.update({
        "Name": str(sa["id"]),
        "InstanceID": str(sa["id"]),
        "LocalEndpoint": sa["local_address"],
        "RemoteEndpoint": sa["remote_address"],
        "LocalFirstId": _identity(sa["authentication_method"], sa["local_identity"]),
        "RemoteFirstId": _identity(sa["authentication_method"], sa["remote_identity"]),
        "LocalSecondId": None,
        "RemoteSecondId": None,
        "KeyModule": KEY_MODULE_CODES.get(sa["key_module"], 1),
        "AuthenticationMethod": AUTHENTICATION_METHOD_CODES.get(sa["authentication_method"], 0),
        "CipherAlgorithm": _code(spec_name, "CipherAlgorithm", CIPHER_LABELS.get(sa["encryption"], "None")),
        "HashAlgorithm": _code(spec_name, "HashAlgorithm", HASH_LABELS.get(sa["hash"], "None")),
        "GroupId": _code(spec_name, "GroupId", GROUP_LABELS.get(sa["key_exchange"], "None")),
        "LifetimeSeconds": sa["lifetime_seconds"],
        "MaxQMSAs": 0,
        "LocalUdpEncapsulationPort": 0,
        "RemoteUdpEncapsulationPort": 0,
        "SystemName": host_name,
        "CreationClassName": "MSFT_NetMainModeSA",
    })
    return cim_instance("MSFT_NetMainModeSA", properties, key=str(sa["id"]))


def render_quick_mode_sa(sa: dict[str, Any], host_name: str) -> PSObjectValue:
    spec_name = "Get-NetIPsecQuickModeSA"
    properties: dict[str, Any] = {name: None for name in _sa_properties(spec_name)}
    if sa["encapsulation"] == "AH":
        transform, integrity = TRANSFORM_TYPES["AH"], sa["ah_hash"]
    elif sa["encryption"] not in (None, "None") and sa["esp_hash"] not in (None, "None"):
        transform, integrity = TRANSFORM_TYPES["ESP_AUTH_AND_CIPHER"], sa["esp_hash"]
    elif sa["encryption"] not in (None, "None"):
        transform, integrity = TRANSFORM_TYPES["ESP_CIPHER"], "None"
    else:
        transform, integrity = TRANSFORM_TYPES["ESP_AUTH"], sa["esp_hash"]
    properties.update({
        "Name": str(sa["id"]),
        "InstanceID": str(sa["id"]),
        "LocalEndpoint": sa["local_address"],
        "RemoteEndpoint": sa["remote_address"],
        "LocalPort": sa["local_port"],
        "RemotePort": sa["remote_port"],
        "IpProtocol": IP_PROTOCOL_NUMBERS.get(sa["protocol"], 0),
        "MmSaId": sa["main_mode_id"],
        "QmSaId": sa["id"],
        "FirstTransformType": transform,
        "FirstIntegrityAlgorithm": _code(spec_name, "FirstIntegrityAlgorithm", HASH_LABELS.get(integrity, "None")),
        "FirstCipherAlgorithm": _code(spec_name, "FirstCipherAlgorithm", CIPHER_LABELS.get(sa["encryption"], "None")),
        "SecondTransformType": 0,
        "SecondIntegrityAlgorithm": 0,
        "SecondCipherAlgorithm": 0,
        "PfsGroupId": _code(spec_name, "PfsGroupId", GROUP_LABELS.get(sa["pfs_group"], "None")),
        "PFSInUse": sa["pfs_group"] not in (None, "None"),
        "EncapsulationMode": 3,  # CIM_IPsecSAEndpoint: 3 = Transport
        "LifetimeSeconds": sa["lifetime_seconds"],
        "LifetimeKilobytes": sa["lifetime_kilobytes"],
        "TransportLayerFilterName": sa["rule"],
        "SystemName": host_name,
        "CreationClassName": "MSFT_NetQuickModeSA",
    })
    return cim_instance("MSFT_NetQuickModeSA", properties, key=str(sa["id"]))


def _select_sas(ctx: CmdletContext, sas: list[dict[str, Any]], cim_class: str) -> list[dict[str, Any]]:
    bound = ctx.bound
    if bound.has("Name"):
        selected = []
        for pattern in bound.get("Name"):
            matched = [sa for sa in sas if wildcard_match(pattern, str(sa["id"]))]
            if not matched and not has_wildcards(pattern):
                ctx.write_error(errors.object_not_found(ctx.command, cim_class, "Name", pattern))
            selected += matched
        return selected
    if bound.has("InputObject"):
        wanted = {str(i.properties.get("Name")) for i in bound.get("InputObject")}
        return [sa for sa in sas if str(sa["id"]) in wanted]
    for parameter in ("AssociatedNetIPsecMainModeSA", "AssociatedNetIPsecQuickModeSA"):
        if bound.has(parameter):
            instance = bound.get(parameter)
            if cim_class_of(instance) == "MSFT_NetMainModeSA":
                return [sa for sa in sas if str(sa["main_mode_id"]) == str(instance.properties.get("Name"))]
            return [sa for sa in sas if str(sa["id"]) == str(instance.properties.get("MmSaId"))]
    return list(sas)


@cmdlet("Get-NetIPsecMainModeSA")
def get_main_mode_sa(ctx: CmdletContext) -> None:
    expire_sas(ctx.host)
    for sa in _select_sas(ctx, ctx.host.state.main_mode_sas, "MSFT_NetMainModeSA"):
        ctx.output.append(render_main_mode_sa(sa, ctx.host.name))


@cmdlet("Get-NetIPsecQuickModeSA")
def get_quick_mode_sa(ctx: CmdletContext) -> None:
    expire_sas(ctx.host)
    for sa in _select_sas(ctx, ctx.host.state.quick_mode_sas, "MSFT_NetQuickModeSA"):
        ctx.output.append(render_quick_mode_sa(sa, ctx.host.name))


@cmdlet("Remove-NetIPsecMainModeSA")
def remove_main_mode_sa(ctx: CmdletContext) -> None:
    state = ctx.host.state
    for sa in _select_sas(ctx, state.main_mode_sas, "MSFT_NetMainModeSA"):
        state.main_mode_sas.remove(sa)
        state.quick_mode_sas[:] = [q for q in state.quick_mode_sas if q["main_mode_id"] != sa["id"]]
        if ctx.bound.get("PassThru"):
            ctx.output.append(render_main_mode_sa(sa, ctx.host.name))


@cmdlet("Remove-NetIPsecQuickModeSA")
def remove_quick_mode_sa(ctx: CmdletContext) -> None:
    state = ctx.host.state
    for sa in _select_sas(ctx, state.quick_mode_sas, "MSFT_NetQuickModeSA"):
        state.quick_mode_sas.remove(sa)
        if ctx.bound.get("PassThru"):
            ctx.output.append(render_quick_mode_sa(sa, ctx.host.name))


def _is_address(text: str) -> bool:
    try:
        ipaddress.ip_address(text)
    except ValueError:
        return False
    return True


@cmdlet("Test-NetConnection")
def test_net_connection(ctx: CmdletContext) -> None:
    """Model a connection from this host; the lab never opens a socket to the target."""
    bound = ctx.bound
    host = ctx.host
    target = bound.get("ComputerName") or "internetbeacon.msedge.net"

    if _is_address(target):
        remote_address, name_resolved = target, True
    else:
        peer = host.network.host(target)
        remote_address = peer.facts.addresses[0] if peer is not None else None
        name_resolved = peer is not None

    port = bound.get("Port")
    if bound.has("CommonTCPPort"):
        port = COMMON_TCP_PORTS.get(str(bound.get("CommonTCPPort")).upper())
        if port is None:
            raise errors.cannot_convert(ctx.command, "CommonTCPPort", bound.get("CommonTCPPort"), "System.String",
                                        "Specify one of: HTTP, RDP, SMB, WINRM.")
    source_address = host.facts.addresses[0]

    delivered = False
    if remote_address is not None:
        source_port = 49152 + host.state.next_sa_id % 16000 if port is not None else None
        traffic = Traffic(source_address, remote_address, "TCP" if port is not None else "ICMPv4",
                          source_port, port)
        outcome = send_traffic(host, traffic)
        peer = host.network.host_by_address(remote_address)
        delivered = outcome.delivered and (port is None or (peer is not None and port in peer.facts.open_ports))

    properties: dict[str, Any] = {
        "ComputerName": target,
        "RemoteAddress": remote_address,
        "InterfaceAlias": "Ethernet",
        "SourceAddress": source_address,
        "NameResolutionSucceeded": name_resolved,
    }
    if port is not None:
        properties.update({"RemotePort": port, "TcpTestSucceeded": delivered, "PingSucceeded": False})
    else:
        properties.update({"PingSucceeded": delivered})
    ctx.output.append(PSObjectValue(
        type_names=["TestNetConnectionResult", "System.Object"],
        properties=properties,
        to_string="TestNetConnectionResult",
    ))


def _event_ids(filters: dict[str, Any]) -> set[int] | None:
    for key, value in filters.items():
        if key.lower() == "id":
            values = value if isinstance(value, list) else [value]
            return {int(v) for v in values}
    return None


@cmdlet("Get-WinEvent")
def get_win_event(ctx: CmdletContext) -> None:
    """Read the host's Security log; only IPsec events are ever written to it."""
    bound = ctx.bound
    if bound.has("ComputerName"):
        raise errors.not_emulated("Get-WinEvent -ComputerName")
    if bound.parameter_set == "HashQuerySet":
        filters = bound.get("FilterHashtable")[0]
        lowered = {str(k).lower(): v for k, v in filters.items()}
        log_names = lowered.get("logname", [])
        log_names = log_names if isinstance(log_names, list) else [log_names]
        wanted_ids = _event_ids(filters)
    else:
        log_names = bound.get("LogName") or []
        wanted_ids = None

    if not any(str(n).lower() == "security" for n in log_names):
        # NOTE: the lab has only a Security log; other logs exist on Windows.
        raise errors.CmdletError(errors.error_record(
            f"There is not an event log on the localhost computer that matches \"{', '.join(map(str, log_names))}\".",
            "NoMatchingLogsFound", "ObjectNotFound", "Microsoft.PowerShell.Commands.GetWinEventCommand",
            exception_type="System.Exception",
        ))

    entries = [e for e in ctx.host.state.events if wanted_ids is None or e["Id"] in wanted_ids]
    entries.sort(key=lambda e: (e["TimeCreated"], e["RecordId"]), reverse=not bound.get("Oldest"))
    if bound.has("MaxEvents"):
        entries = entries[: bound.get("MaxEvents")]
    if not entries:
        raise errors.CmdletError(errors.error_record(
            "No events were found that match the specified selection criteria.",
            "NoMatchingEventsFound", "ObjectNotFound", "Microsoft.PowerShell.Commands.GetWinEventCommand",
            exception_type="System.Exception",
        ))
    for entry in entries:
        ctx.output.append(render_event(entry, ctx.host.facts.fqdn))


@cmdlet("Get-CimInstance")
def get_cim_instance(ctx: CmdletContext) -> None:
    facts = ctx.host.facts
    class_name = ctx.bound.get("ClassName")
    namespace = (ctx.bound.get("Namespace") or "root/cimv2").replace("\\", "/").lower()
    if ctx.bound.has("ComputerName"):
        raise errors.not_emulated("Get-CimInstance -ComputerName")

    build = facts.os_version.rsplit(".", 1)[-1]
    instances = {
        "win32_operatingsystem": ("Win32_OperatingSystem", {
            "Caption": facts.os_caption,
            "Version": facts.os_version,
            "BuildNumber": build,
            "CSName": facts.computer_name.upper(),
            "OSArchitecture": "64-bit",
            "ProductType": 3,  # server
            "LastBootUpTime": datetime.fromisoformat(ctx.host.network.clock.now().isoformat()),
        }),
        "win32_computersystem": ("Win32_ComputerSystem", {
            "Name": facts.computer_name.upper(),
            "DNSHostName": facts.computer_name.lower(),
            "Domain": facts.domain or "WORKGROUP",
            "PartOfDomain": facts.domain is not None,
            "Workgroup": None if facts.domain else "WORKGROUP",
            "Manufacturer": "ipsec-deploy lab",
            "Model": "Simulated Windows Server 2019 host",
        }),
    }
    found = instances.get(str(class_name).lower()) if namespace == "root/cimv2" else None
    if found is None:
        raise errors.CmdletError(errors.error_record(
            "Invalid class ", "HRESULT 0x80041010", "ObjectNotFound",
            "Microsoft.Management.Infrastructure.CimCmdlets.GetCimInstanceCommand",
            exception_type="Microsoft.Management.Infrastructure.CimException", target_name=str(class_name),
        ))
    cim_class, properties = found
    value = cim_instance(cim_class, properties, key=properties.get("Name") or properties.get("CSName"))
    value.type_names = [
        f"Microsoft.Management.Infrastructure.CimInstance#root/cimv2/{cim_class}",
        f"Microsoft.Management.Infrastructure.CimInstance#{cim_class}",
        "Microsoft.Management.Infrastructure.CimInstance",
        "System.Object",
    ]
    ctx.output.append(value)
