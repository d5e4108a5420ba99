"""What a simulated host is: its name, domain, addresses, certificates and faults."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from ipsec_deploy.lab.netsecurity.faults import CmdletFault

WINDOWS_SERVER_2019_CAPTION = "Microsoft Windows Server 2019 Datacenter"
WINDOWS_SERVER_2019_VERSION = "10.0.17763"


@dataclass(frozen=True)
class MachineCertificate:
    """A computer certificate in the host's LocalMachine\\My store.

    ``issuer`` is the issuing CA's name as an auth proposal's ``-Authority``
    names it; ``root_ca`` is the root of its chain (the issuer itself when
    omitted). A proposal accepts the certificate when its Authority is the
    issuer (AuthorityType Intermediate) or the root (AuthorityType Root).
    """

    subject: str
    issuer: str
    root_ca: str | None = None

    @property
    def chain_root(self) -> str:
        return self.root_ca or self.issuer


@dataclass
class HostFacts:
    """The facts of one simulated Windows Server 2019 host, as the inventory's lab section gives them."""

    computer_name: str
    addresses: list[str]  # data-plane addresses; they exist only inside the simulation
    domain: str | None = None  # DNS domain name; None for a workgroup host
    forest: str | None = None  # forest root domain; the domain itself when omitted
    trusted_forests: list[str] = field(default_factory=list)
    machine_certificates: list[MachineCertificate] = field(default_factory=list)
    os_caption: str = WINDOWS_SERVER_2019_CAPTION
    os_version: str = WINDOWS_SERVER_2019_VERSION
    # New-NetIPsecRule parameter sets of rules that already exist outside
    # ipsec-deploy's group; created in the PersistentStore on first start.
    foreign_rules: list[dict[str, Any]] = field(default_factory=list)
    # Other pre-existing objects, as (cmdlet, parameters) pairs run on first start.
    foreign_commands: list[tuple[str, dict[str, Any]]] = field(default_factory=list)
    # Either a mapping cmdlet -> message (or CmdletFault), or a list of CmdletFault.
    fail_cmdlets: dict[str, Any] | list[CmdletFault] = field(default_factory=dict)
    # Pre-shared keys the inventory holds for this host, by name. Negotiation
    # compares the keys inside the auth proposals, not these.
    preshared_keys: dict[str, str] = field(default_factory=dict)
    # Domain GPOs ("corp.example\\IPsec policy") linked to this host; their
    # rules join the ActiveStore.
    applied_gpos: list[str] = field(default_factory=list)
    open_ports: list[int] = field(default_factory=lambda: [135, 445, 3389, 5985])
    ikeext_running: bool = True  # the IKE and AuthIP IPsec Keying Modules service

    @property
    def forest_name(self) -> str | None:
        return self.forest or self.domain

    @property
    def fqdn(self) -> str:
        if self.domain:
            return f"{self.computer_name}.{self.domain}".lower()
        return self.computer_name.lower()

    @property
    def kerberos_identity(self) -> str:
        """The machine account name that main mode SAs show for Kerberos."""
        netbios_domain = (self.domain or "WORKGROUP").split(".")[0].upper()
        return f"{netbios_domain}\\{self.computer_name.upper()}$"

    def trusts_forest(self, forest: str | None) -> bool:
        if forest is None or self.forest_name is None:
            return False
        if forest.lower() == self.forest_name.lower():
            return True
        return any(forest.lower() == t.lower() for t in self.trusted_forests)
