"""Python counterparts of the verification scripts: reading, probing and clearing SAs.

Like the other counterparts, it calls the emulated cmdlets and returns the
hashtables the script emits, and it is registered only while the script
text still has the digest it was written for.
"""

from __future__ import annotations

from typing import Any

from ipsec_deploy.lab.netsecurity.host import LabHost
from ipsec_deploy.lab.pipeline import PSObjectValue
from ipsec_deploy.lab.shipped_scripts import (
    ShippedScript,
    bind_script_parameters,
    foreach_items,
    hashtable_value,
    powershell_string,
)


def _nested(value: Any, name: str) -> Any:
    """Read a property of an embedded instance, as ``$sa.LocalFirstId.AuthenticationMethod`` does."""
    if isinstance(value, PSObjectValue):
        return value.properties.get(name)
    if isinstance(value, dict):
        return value.get(name)
    return None


def read_security_associations(host: LabHost, parameters: dict[str, Any], input: list[Any]) -> list[dict[str, Any]]:
    bind_script_parameters("read_security_associations.ps1", parameters, ())
    output: list[dict[str, Any]] = []

    for sa in host.invoke_checked("Get-NetIPsecMainModeSA", {}):
        properties = sa.properties
        output.append({
            "Kind": "main_mode_sa",
            "LocalEndpoint": powershell_string(properties.get("LocalEndpoint")),
            "RemoteEndpoint": powershell_string(properties.get("RemoteEndpoint")),
            "AuthenticationMethod": powershell_string(_nested(properties.get("LocalFirstId"), "AuthenticationMethod")),
            "CipherAlgorithm": powershell_string(properties.get("CipherAlgorithm")),
            "HashAlgorithm": powershell_string(properties.get("HashAlgorithm")),
            "GroupId": powershell_string(properties.get("GroupId")),
            "KeyModule": powershell_string(properties.get("KeyModule")),
        })

    for sa in host.invoke_checked("Get-NetIPsecQuickModeSA", {}):
        properties = sa.properties
        output.append({
            "Kind": "quick_mode_sa",
            **{
                name: powershell_string(properties.get(name))
                for name in (
                    "LocalEndpoint", "RemoteEndpoint", "LocalPort", "RemotePort", "IpProtocol",
                    "FirstTransformType", "FirstIntegrityAlgorithm", "FirstCipherAlgorithm", "PfsGroupId",
                )
            },
        })
    return output


def probe_peers(host: LabHost, parameters: dict[str, Any], input: list[Any]) -> list[dict[str, Any]]:
    """Counterpart of probe_peers.ps1: one Test-NetConnection per probe, in order."""
    bound = bind_script_parameters("probe_peers.ps1", parameters, ("Probes",))
    output: list[dict[str, Any]] = []
    for probe in foreach_items(bound["Probes"]):
        target = powershell_string(hashtable_value(probe, "ComputerName"))
        port = hashtable_value(probe, "Port")
        arguments: dict[str, Any] = {"ComputerName": target, "WarningAction": "SilentlyContinue"}
        if port is not None:
            arguments["Port"] = int(port)
        result = host.invoke_checked("Test-NetConnection", arguments)[0].properties
        succeeded = result.get("TcpTestSucceeded") if port is not None else result.get("PingSucceeded")
        output.append({"ComputerName": target, "Port": port, "Succeeded": bool(succeeded)})
    return output


def clear_security_associations(host: LabHost, parameters: dict[str, Any], input: list[Any]) -> list[dict[str, Any]]:
    """Counterpart of clear_security_associations.ps1: remove the SAs with the given peers."""
    bound = bind_script_parameters("clear_security_associations.ps1", parameters, ("RemoteAddress",))
    peers = {powershell_string(address) for address in foreach_items(bound["RemoteAddress"])}
    counts = {}
    for noun, key in (("NetIPsecQuickModeSA", "QuickModeSAs"), ("NetIPsecMainModeSA", "MainModeSAs")):
        matching = [sa for sa in host.invoke_checked(f"Get-{noun}", {}) if powershell_string(sa.properties.get("RemoteEndpoint")) in peers]
        if matching:
            host.invoke_checked(f"Remove-{noun}", {"Name": [powershell_string(sa.properties.get("Name")) for sa in matching]})
        counts[key] = len(matching)
    return [counts]


# Digests of the normalised script texts; update one only together with
# its counterpart above.
VERIFY_SHIPPED_SCRIPTS = (
    ShippedScript("read_security_associations.ps1", read_security_associations,
                  "b61c96edb17849854614fe6b7f0a369882ff031502a59e5c2bfc1084a43500c7"),
    ShippedScript("probe_peers.ps1", probe_peers,
                  "bab730058250c8e1797adfed72bfd7b8054ac20252d04ac4aa8d0de048bb761e"),
    ShippedScript("clear_security_associations.ps1", clear_security_associations,
                  "5cb2889dd31dfcb28468f9ef029dc208ea2e4f27444f1358bef9509e2495a138"),
)
