"""Python counterpart of read_security_associations.ps1, the SA reader of ipsec-deploy's verification.

Like the other counterparts, it calls the emulated cmdlets and returns the
hashtables the script emits, and it is registered only while the script
text still has the digest it was written for.
"""

from __future__ import annotations

from typing import Any

from ipsec_deploy.lab.netsecurity.host import LabHost
from ipsec_deploy.lab.pipeline import PSObjectValue
from ipsec_deploy.lab.shipped_scripts import ShippedScript, bind_script_parameters, powershell_string


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


# Digest of the normalised script text; update it only together with the
# counterpart above.
VERIFY_SHIPPED_SCRIPTS = (
    ShippedScript("read_security_associations.ps1", read_security_associations,
                  "b61c96edb17849854614fe6b7f0a369882ff031502a59e5c2bfc1084a43500c7"),
)
