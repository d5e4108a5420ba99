"""The emulated PowerShell host and NetSecurity policy store of the lab (a simulator, not Windows).

Build a lab network, add hosts, and give the wire layer one handler per host::

    network = LabNetwork(state_dir)            # or LabNetwork() for memory only
    host = network.add_host(HostFacts("SRV1", ["10.0.1.10"], domain="corp.example"))
    handler = NetSecurityHandler(host)         # implements PipelineHandler
    host.invoke("New-NetIPsecRule", {"DisplayName": "x"})   # the same cmdlets from Python
"""

from ipsec_deploy.lab.netsecurity.clock import LabClock
from ipsec_deploy.lab.netsecurity.errors import CmdletError
from ipsec_deploy.lab.netsecurity.facts import HostFacts, MachineCertificate
from ipsec_deploy.lab.netsecurity.faults import CmdletFault
from ipsec_deploy.lab.netsecurity.handler import NetSecurityHandler
from ipsec_deploy.lab.netsecurity.host import LabHost
from ipsec_deploy.lab.netsecurity.negotiation import NegotiationOutcome, Traffic, send_traffic
from ipsec_deploy.lab.netsecurity.network import LabNetwork
from ipsec_deploy.lab.netsecurity.scripts import DEFAULT_SCRIPTS, ScriptRegistry, register_script

__all__ = [
    "CmdletError",
    "CmdletFault",
    "DEFAULT_SCRIPTS",
    "HostFacts",
    "LabClock",
    "LabHost",
    "LabNetwork",
    "MachineCertificate",
    "NegotiationOutcome",
    "NetSecurityHandler",
    "ScriptRegistry",
    "Traffic",
    "register_script",
    "send_traffic",
]
