"""Whether a lab host's IPsec policy would drop the controller's WinRM traffic.

The controller (the admin workstation running ipsec-deploy) is not a lab
host and never negotiates IPsec. On Windows, a connection security rule
that requires inbound IPsec for the controller's address and the WinRM port
drops those packets, so the session dies. The lab models that from a
simulated controller address, since its real listeners are on loopback.
"""

from __future__ import annotations

from ipsec_deploy.lab.netsecurity.host import LabHost
from ipsec_deploy.lab.netsecurity.negotiation import matching_rule


def management_blocked(host: LabHost, controller_address: str, winrm_port: int) -> bool:
    """Return whether the host's rules drop clear TCP traffic from the controller to its WinRM port."""
    for local in host.facts.addresses:
        if (":" in local) != (":" in controller_address):
            continue
        match = matching_rule(host, local, controller_address, "TCP", winrm_port, None)
        if match is None:
            continue
        properties = match.obj.properties
        exempt = properties.get("InboundSecurity") == "None" and properties.get("OutboundSecurity") == "None"
        if not exempt and properties.get("InboundSecurity") == "Require":
            return True
    return False
