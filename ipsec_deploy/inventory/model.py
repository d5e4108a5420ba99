"""The validated inventory: hosts, groups, networks, auth and crypto profiles, policies.

Every class here is immutable and carries the ``Location`` it was read from,
so that the planner's checks can report ``file:line`` too.
"""

from __future__ import annotations

import ipaddress
import re
from dataclasses import dataclass
from typing import Any, Literal, Union

IPAddress = Union[ipaddress.IPv4Address, ipaddress.IPv6Address]
IPNetwork = Union[ipaddress.IPv4Network, ipaddress.IPv6Network]

Transport = Literal["http", "https"]
ConnectionAuth = Literal["negotiate", "kerberos", "ntlm", "credssp", "certificate", "basic"]

# SecurityPolicy members of New-NetIPsecRule -InboundSecurity/-OutboundSecurity.
SecurityPolicy = Literal["None", "Request", "Require"]

# KeyModule members of New-NetIPsecRule -KeyModule. On Server 2019 "Default"
# means IKEv1 plus AuthIP.
KeyModule = Literal["Default", "IKEv1", "AuthIP", "IKEv2"]

DEFAULT_MANAGED_GROUP = "ipsec-deploy"
DEFAULT_POLICY_STORE = "PersistentStore"
DEFAULT_PORTS: dict[str, int] = {"http": 5985, "https": 5986}

def is_domain_gpo(policy_store: str) -> bool:
    """Tell whether a policy store names a domain GPO (DOMAIN\\GPO-name), which every host it applies to shares."""
    return "\\" in policy_store


# A NetBIOS computer name, as $env:COMPUTERNAME shows it.
NETBIOS_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9_-]{0,14}")


def netbios_name(host_name: str) -> str:
    """Return the NetBIOS computer name Windows derives from a host name: first label, upper case, 15 characters."""
    return host_name.split(".", 1)[0].upper()[:15]


@dataclass(frozen=True)
class Location:
    """The file and 1-based line a value was read from."""

    file: str
    line: int

    def __str__(self) -> str:
        return f"{self.file}:{self.line}"


@dataclass(frozen=True)
class ConnectionSettings:
    """Settings the deployer uses to reach a host's WinRM listener."""

    transport: Transport = "https"
    port: int | None = None
    auth: ConnectionAuth = "negotiate"
    username: str | None = None
    password_env: str | None = None  # the password itself is never in the inventory
    cert_validation: bool = True
    ca_bundle: str | None = None
    client_certificate: str | None = None
    client_key: str | None = None
    operation_timeout_seconds: int = 20

    @property
    def effective_port(self) -> int:
        return self.port if self.port is not None else DEFAULT_PORTS[self.transport]


@dataclass(frozen=True)
class PolicyOverride:
    """Per-host replacement of some settings of one policy."""

    policy: str
    inbound_security: SecurityPolicy | None = None
    outbound_security: SecurityPolicy | None = None
    auth: str | None = None
    crypto: str | None = None
    key_module: KeyModule | None = None
    location: Location | None = None


@dataclass(frozen=True)
class Host:
    name: str
    address: str  # management endpoint: DNS name or IP of the WinRM listener
    ip_addresses: tuple[IPAddress, ...]
    domain: str | None
    forest: str | None
    connection: ConnectionSettings
    policy_overrides: tuple[PolicyOverride, ...] = ()
    location: Location | None = None
    computer_name: str | None = None  # the Windows computer name, when it differs from the host name

    @property
    def expected_computer_name(self) -> str | None:
        """Return the NetBIOS name the host must report, or None for a host keyed by an IP address without computer_name."""
        if self.computer_name is not None:
            return netbios_name(self.computer_name)
        try:
            ipaddress.ip_address(self.name)
        except ValueError:
            return netbios_name(self.name)
        # An address gives no computer name to compare with.
        return None

    def override_for(self, policy: str) -> PolicyOverride | None:
        for override in self.policy_overrides:
            if override.policy == policy:
                return override
        return None


@dataclass(frozen=True)
class Forest:
    name: str
    trusts: tuple[str, ...] = ()
    domain_controllers: tuple[IPAddress, ...] = ()
    location: Location | None = None


@dataclass(frozen=True)
class Network:
    """A named set of addresses and subnets, optionally tied to a forest."""

    name: str
    addresses: tuple[IPNetwork, ...]
    forest: str | None = None
    location: Location | None = None


@dataclass(frozen=True)
class Group:
    name: str
    hosts: tuple[str, ...]
    location: Location | None = None


AuthMethodKind = Literal["kerberos", "certificate", "ntlm", "pre_shared_key", "anonymous"]


@dataclass(frozen=True)
class AuthMethod:
    """One authentication proposal, as New-NetIPsecAuthProposal takes it."""

    method: AuthMethodKind
    identity: Literal["machine", "user"] = "machine"
    authority: str | None = None  # certificate: the issuing CA's distinguished name
    authority_type: Literal["Root", "Intermediate"] = "Root"
    key_env: str | None = None  # pre-shared key: name of the environment variable


@dataclass(frozen=True)
class AuthProfile:
    """A named pair of phase 1 and phase 2 authentication proposal lists."""

    name: str
    phase1: tuple[AuthMethod, ...]
    phase2: tuple[AuthMethod, ...] = ()
    location: Location | None = None


@dataclass(frozen=True)
class MainModeProposal:
    encryption: str
    hash: str
    key_exchange: str


@dataclass(frozen=True)
class QuickModeProposal:
    encapsulation: Literal["ESP", "AH"]
    encryption: str | None  # None for AH, which does not encrypt
    integrity: str


@dataclass(frozen=True)
class CryptoProfile:
    """A named main mode and quick mode crypto configuration."""

    name: str
    main_mode: tuple[MainModeProposal, ...]
    quick_mode: tuple[QuickModeProposal, ...]
    pfs_group: str = "None"
    main_mode_lifetime_minutes: int | None = None
    location: Location | None = None


@dataclass(frozen=True)
class Endpoint:
    """One side of a policy: the references as written and what they resolve to."""

    references: tuple[str, ...]
    addresses: tuple[IPNetwork, ...]  # empty only when is_any
    hosts: frozenset[str]  # managed hosts named directly or through a group
    networks: tuple[Network, ...]  # named networks referenced
    is_any: bool = False  # written as "any": every address


@dataclass(frozen=True)
class Policy:
    """A connection security policy between two endpoints, or an exemption."""

    name: str
    endpoint1: Endpoint
    endpoint2: Endpoint
    protocol: str  # "Any", "TCP", "UDP", "ICMPv4", "ICMPv6" or a number 0-255
    endpoint1_ports: tuple[str, ...] = ()
    endpoint2_ports: tuple[str, ...] = ()
    inbound_security: SecurityPolicy = "Require"
    outbound_security: SecurityPolicy = "Require"
    auth: str | None = None
    crypto: str | None = None
    key_module: KeyModule = "Default"
    probe_port: int | None = None
    is_exemption: bool = False
    location: Location | None = None


@dataclass(frozen=True)
class Settings:
    managed_group: str = DEFAULT_MANAGED_GROUP
    policy_store: str = DEFAULT_POLICY_STORE
    allow_pre_shared_keys: bool = False
    allow_weak_crypto: bool = False

    # Plan an exemption for the controller's WinRM traffic on every host
    # with IPsec rules (see ipsec_deploy.planner.management).
    management_exemption: bool = False


@dataclass(frozen=True)
class Inventory:
    path: str
    settings: Settings
    hosts: dict[str, Host]
    groups: dict[str, Group]
    networks: dict[str, Network]
    forests: dict[str, Forest]
    auth_profiles: dict[str, AuthProfile]
    crypto_profiles: dict[str, CryptoProfile]
    policies: tuple[Policy, ...]
    exemptions: tuple[Policy, ...]

    # Addresses and subnets of the admin workstations that run ipsec-deploy,
    # with the line of the ``controller`` key.
    controller: tuple[IPNetwork, ...] = ()
    controller_location: Location | None = None

    # The raw ``lab`` section, read only by the lab simulator.
    lab: Any = None
    lab_location: Location | None = None

    # Warnings found while loading (weak algorithms allowed by the opt-in);
    # every plan repeats them.
    warnings: tuple[Any, ...] = ()

    def all_policies(self) -> tuple[Policy, ...]:
        return self.exemptions + self.policies
