"""The IPsec objects a host must hold, as the NetSecurity module names and creates them.

Each class is the desired state of one Windows object. ``new_call`` returns
the New- cmdlet call that creates it in a given policy store, so the policy
store stays a single parameter chosen by the caller (a host's
PersistentStore today, a GPO store later).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import ClassVar, Literal, Union

from .cmdlets import CmdletCall, ParameterValue, SecretFromEnvironment
from .inventory.model import AuthMethod, MainModeProposal, QuickModeProposal

ANY_ADDRESS = "Any"


def auth_proposal_call(method: AuthMethod) -> CmdletCall:
    """Build the New-NetIPsecAuthProposal call for one authentication method."""
    identity = "Machine" if method.identity == "machine" else "User"
    if method.method == "kerberos":
        return CmdletCall("New-NetIPsecAuthProposal", ((identity, True), ("Kerberos", True)))
    if method.method == "certificate":
        return CmdletCall(
            "New-NetIPsecAuthProposal",
            (
                (identity, True),
                ("Cert", True),
                ("Authority", method.authority or ""),
                ("AuthorityType", method.authority_type),
            ),
        )
    if method.method == "ntlm":
        return CmdletCall("New-NetIPsecAuthProposal", ((identity, True), ("Ntlm", True)))
    if method.method == "pre_shared_key":
        return CmdletCall(
            "New-NetIPsecAuthProposal",
            (("Machine", True), ("PreSharedKey", SecretFromEnvironment(method.key_env or ""))),
        )
    return CmdletCall("New-NetIPsecAuthProposal", (("Anonymous", True),))


def main_mode_proposal_call(proposal: MainModeProposal) -> CmdletCall:
    return CmdletCall(
        "New-NetIPsecMainModeCryptoProposal",
        (
            ("Encryption", proposal.encryption),
            ("Hash", proposal.hash),
            ("KeyExchange", proposal.key_exchange),
        ),
    )


def quick_mode_proposal_call(proposal: QuickModeProposal) -> CmdletCall:
    if proposal.encapsulation == "AH":
        parameters: tuple[tuple[str, ParameterValue], ...] = (("Encapsulation", "AH"), ("AHHash", proposal.integrity))
    else:
        parameters = (
            ("Encapsulation", "ESP"),
            ("Encryption", proposal.encryption or "None"),
            ("ESPHash", proposal.integrity),
        )
    return CmdletCall("New-NetIPsecQuickModeCryptoProposal", parameters)


@dataclass(frozen=True)
class _ManagedObject:
    """Fields every object the tool owns carries; ``group`` marks ownership."""

    name: str
    display_name: str
    description: str
    group: str

    kind: ClassVar[str]
    noun: ClassVar[str]  # the cmdlet noun, as in New-<noun>
    name_parameter: ClassVar[str] = "Name"

    def identity_parameters(self) -> tuple[tuple[str, ParameterValue], ...]:
        return (
            (self.name_parameter, self.name),
            ("DisplayName", self.display_name),
            ("Description", self.description),
            ("Group", self.group),
        )

    def specific_parameters(self) -> tuple[tuple[str, ParameterValue], ...]:
        raise NotImplementedError

    def new_call(self, policy_store: str) -> CmdletCall:
        return CmdletCall(
            f"New-{self.noun}",
            (("PolicyStore", policy_store),) + self.identity_parameters() + self.specific_parameters(),
        )


@dataclass(frozen=True)
class Phase1AuthSet(_ManagedObject):
    proposals: tuple[AuthMethod, ...] = ()

    kind: ClassVar[str] = "phase1_auth_set"
    noun: ClassVar[str] = "NetIPsecPhase1AuthSet"

    def specific_parameters(self):
        return (("Proposal", tuple(auth_proposal_call(p) for p in self.proposals)),)


@dataclass(frozen=True)
class Phase2AuthSet(_ManagedObject):
    proposals: tuple[AuthMethod, ...] = ()

    kind: ClassVar[str] = "phase2_auth_set"
    noun: ClassVar[str] = "NetIPsecPhase2AuthSet"

    def specific_parameters(self):
        return (("Proposal", tuple(auth_proposal_call(p) for p in self.proposals)),)


@dataclass(frozen=True)
class MainModeCryptoSet(_ManagedObject):
    proposals: tuple[MainModeProposal, ...] = ()
    max_minutes: int | None = None

    kind: ClassVar[str] = "main_mode_crypto_set"
    noun: ClassVar[str] = "NetIPsecMainModeCryptoSet"

    def specific_parameters(self):
        parameters: tuple[tuple[str, ParameterValue], ...] = (
            ("Proposal", tuple(main_mode_proposal_call(p) for p in self.proposals)),
        )
        if self.max_minutes is not None:
            parameters += (("MaxMinutes", self.max_minutes),)
        return parameters


@dataclass(frozen=True)
class QuickModeCryptoSet(_ManagedObject):
    proposals: tuple[QuickModeProposal, ...] = ()

    # Perfect forward secrecy belongs to the quick mode crypto set, not to
    # the proposals or the rule.
    perfect_forward_secrecy_group: str = "None"

    kind: ClassVar[str] = "quick_mode_crypto_set"
    noun: ClassVar[str] = "NetIPsecQuickModeCryptoSet"

    def specific_parameters(self):
        return (
            ("Proposal", tuple(quick_mode_proposal_call(p) for p in self.proposals)),
            ("PerfectForwardSecrecyGroup", self.perfect_forward_secrecy_group),
        )


@dataclass(frozen=True)
class MainModeRule(_ManagedObject):
    """Binds a main mode crypto set and a phase 1 auth set to an address pair.

    Without it a custom main mode crypto set is never used: Windows applies
    the default set to every main mode negotiation.
    """

    local_address: tuple[str, ...] = ()
    remote_address: tuple[str, ...] = ()
    main_mode_crypto_set: str = ""
    phase1_auth_set: str = ""
    enabled: bool = True

    kind: ClassVar[str] = "main_mode_rule"
    noun: ClassVar[str] = "NetIPsecMainModeRule"

    def specific_parameters(self):
        return (
            ("Enabled", "True" if self.enabled else "False"),
            ("Profile", "Any"),
            ("LocalAddress", self.local_address or (ANY_ADDRESS,)),
            ("RemoteAddress", self.remote_address or (ANY_ADDRESS,)),
            ("MainModeCryptoSet", self.main_mode_crypto_set),
            ("Phase1AuthSet", self.phase1_auth_set),
        )


@dataclass(frozen=True)
class IPsecRule(_ManagedObject):
    """A connection security rule in transport mode; both securities None makes an exemption."""

    # The policy a rule comes from; Windows does not store it, so rules read
    # back from a host compare equal without it.
    policy: str = field(default="", compare=False)
    enabled: bool = True
    inbound_security: Literal["None", "Request", "Require"] = "Require"
    outbound_security: Literal["None", "Request", "Require"] = "Require"
    local_address: tuple[str, ...] = ()
    remote_address: tuple[str, ...] = ()
    protocol: str = "Any"
    local_port: tuple[str, ...] = ()
    remote_port: tuple[str, ...] = ()
    phase1_auth_set: str | None = None
    phase2_auth_set: str | None = None
    quick_mode_crypto_set: str | None = None
    key_module: str = "Default"
    mirrors: tuple["MirrorRef", ...] = field(default=(), compare=False)

    kind: ClassVar[str] = "ipsec_rule"
    noun: ClassVar[str] = "NetIPsecRule"
    name_parameter: ClassVar[str] = "IPsecRuleName"

    @property
    def is_exemption(self) -> bool:
        return self.inbound_security == "None" and self.outbound_security == "None"

    def specific_parameters(self):
        parameters: list[tuple[str, ParameterValue]] = [
            ("Enabled", "True" if self.enabled else "False"),
            ("Profile", "Any"),
            ("Mode", "Transport"),
            ("InboundSecurity", self.inbound_security),
            ("OutboundSecurity", self.outbound_security),
            ("LocalAddress", self.local_address or (ANY_ADDRESS,)),
            ("RemoteAddress", self.remote_address or (ANY_ADDRESS,)),
            ("Protocol", self.protocol),
        ]
        if self.local_port:
            parameters.append(("LocalPort", self.local_port))
        if self.remote_port:
            parameters.append(("RemotePort", self.remote_port))
        if self.phase1_auth_set:
            parameters.append(("Phase1AuthSet", self.phase1_auth_set))
        if self.phase2_auth_set:
            parameters.append(("Phase2AuthSet", self.phase2_auth_set))
        if self.quick_mode_crypto_set:
            parameters.append(("QuickModeCryptoSet", self.quick_mode_crypto_set))
        parameters.append(("KeyModule", self.key_module))
        return tuple(parameters)


@dataclass(frozen=True)
class MirrorRef:
    """The rule on a peer host that mirrors a rule, with the peer's addresses it covers."""

    host: str
    rule: str


PlannedObject = Union[Phase1AuthSet, Phase2AuthSet, MainModeCryptoSet, QuickModeCryptoSet, MainModeRule, IPsecRule]

# Creation order: sets before the rules that reference them. Removal runs
# in the reverse order.
KIND_ORDER = (
    Phase1AuthSet.kind,
    Phase2AuthSet.kind,
    MainModeCryptoSet.kind,
    QuickModeCryptoSet.kind,
    MainModeRule.kind,
    IPsecRule.kind,
)
