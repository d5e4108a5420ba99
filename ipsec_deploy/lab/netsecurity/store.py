"""The emulated policy stores: IPsec rules, main mode rules, auth sets and crypto sets.

Objects are kept as their Windows property names and values (``Name``,
``DisplayName``, ``InboundSecurity`` ...), so storing them as JSON and
rendering them as CIM instances need no mapping. ``ObjectKind`` says what
differs between the six kinds of objects.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any, Literal

StoreType = Literal["Local", "GroupPolicy"]

PERSISTENT_STORE = "PersistentStore"
ACTIVE_STORE = "ActiveStore"
RSOP_STORE = "RSOP"
LOCAL_GPO_STORE = "localhost"
# Stores that exist on every Windows host but that the lab keeps empty.
EMPTY_READ_ONLY_STORES = ("SystemDefaults", "StaticServiceStore", "ConfigurableServiceStore")

# Names of the default sets, from the -Default parameter of each New- cmdlet's help page.
DEFAULT_MAIN_MODE_CRYPTO_SET = "{E5A5D32A-4BCE-4e4d-B07F-4AB1BA7E5FE1}"
DEFAULT_QUICK_MODE_CRYPTO_SET = "{E5A5D32A-4BCE-4e4d-B07F-4AB1BA7E5FE2}"
DEFAULT_PHASE1_AUTH_SET = "{E5A5D32A-4BCE-4e4d-B07F-4AB1BA7E5FE3}"
DEFAULT_PHASE2_AUTH_SET = "{E5A5D32A-4BCE-4e4d-B07F-4AB1BA7E5FE4}"

RULE_STATUS_OK = "The rule was parsed successfully from the store. (65536)"


@dataclass(frozen=True)
class ObjectKind:
    """What one kind of policy object looks like and how its cmdlets address it."""

    noun: str  # the cmdlet noun, e.g. "NetIPsecRule"
    cim_class: str
    key_parameter: str  # the parameter that carries the object's Name
    label: str  # how messages name one object of this kind
    has_enabled: bool = False
    references: dict[str, str] = field(default_factory=dict)  # property -> noun of the referenced set
    proposal_class: str | None = None
    default_name: str | None = None
    defaults: dict[str, Any] = field(default_factory=dict)


_SET_DEFAULTS = {"Description": "", "Group": ""}

IPSEC_RULE = ObjectKind(
    noun="NetIPsecRule",
    cim_class="MSFT_NetConSecRule",
    key_parameter="IPsecRuleName",
    label="IPsec rule",
    has_enabled=True,
    references={
        "Phase1AuthSet": "NetIPsecPhase1AuthSet",
        "Phase2AuthSet": "NetIPsecPhase2AuthSet",
        "QuickModeCryptoSet": "NetIPsecQuickModeCryptoSet",
    },
    defaults={
        "Description": "", "Group": "", "Enabled": "True", "Profile": "Any", "Platform": [],
        "Mode": "Transport",
        # NOTE: the help page documents None as the default of OutboundSecurity;
        # the InboundSecurity text is copied from another parameter, so None is
        # assumed for it too.
        "InboundSecurity": "None", "OutboundSecurity": "None",
        "QuickModeCryptoSet": None, "Phase1AuthSet": None, "Phase2AuthSet": None,
        "KeyModule": "Default", "AllowWatchKey": False, "AllowSetKey": False,
        "LocalTunnelEndpoint": [], "RemoteTunnelEndpoint": [], "RemoteTunnelHostname": None,
        "ForwardPathLifetime": 0, "EncryptedTunnelBypass": False, "RequireAuthorization": False,
        "User": None, "Machine": None,
        "LocalAddress": ["Any"], "RemoteAddress": ["Any"], "Protocol": "Any",
        "LocalPort": ["Any"], "RemotePort": ["Any"],
        "InterfaceAlias": ["Any"], "InterfaceType": "Any",
    },
)

MAIN_MODE_RULE = ObjectKind(
    noun="NetIPsecMainModeRule",
    cim_class="MSFT_NetMainModeRule",
    key_parameter="Name",
    label="main mode rule",
    has_enabled=True,
    references={"MainModeCryptoSet": "NetIPsecMainModeCryptoSet", "Phase1AuthSet": "NetIPsecPhase1AuthSet"},
    defaults={
        "Description": "", "Group": "", "Enabled": "True", "Profile": "Any", "Platform": [],
        "MainModeCryptoSet": None, "Phase1AuthSet": None,
        "LocalAddress": ["Any"], "RemoteAddress": ["Any"],
    },
)

PHASE1_AUTH_SET = ObjectKind(
    noun="NetIPsecPhase1AuthSet",
    cim_class="MSFT_NetIKEP1AuthSet",
    key_parameter="Name",
    label="phase 1 authentication set",
    proposal_class="MSFT_NetIKEAuthProposal",
    default_name=DEFAULT_PHASE1_AUTH_SET,
    defaults=dict(_SET_DEFAULTS),
)

PHASE2_AUTH_SET = ObjectKind(
    noun="NetIPsecPhase2AuthSet",
    cim_class="MSFT_NetIKEP2AuthSet",
    key_parameter="Name",
    label="phase 2 authentication set",
    proposal_class="MSFT_NetIKEAuthProposal",
    default_name=DEFAULT_PHASE2_AUTH_SET,
    defaults=dict(_SET_DEFAULTS),
)

MAIN_MODE_CRYPTO_SET = ObjectKind(
    noun="NetIPsecMainModeCryptoSet",
    cim_class="MSFT_NetIKEMMCryptoSet",
    key_parameter="Name",
    label="main mode cryptographic set",
    proposal_class="MSFT_NetIKEMMCryptoProposal",
    default_name=DEFAULT_MAIN_MODE_CRYPTO_SET,
    # The help page gives the MaxMinutes default as "4800 minutes (eight
    # hours)"; eight hours is 480 minutes.
    defaults={**_SET_DEFAULTS, "MaxMinutes": 480, "MaxSessions": 0, "ForceDiffieHellman": False},
)

QUICK_MODE_CRYPTO_SET = ObjectKind(
    noun="NetIPsecQuickModeCryptoSet",
    cim_class="MSFT_NetIKEQMCryptoSet",
    key_parameter="Name",
    label="quick mode cryptographic set",
    proposal_class="MSFT_NetIKEQMCryptoProposal",
    default_name=DEFAULT_QUICK_MODE_CRYPTO_SET,
    defaults={**_SET_DEFAULTS, "PerfectForwardSecrecyGroup": "None"},
)

KINDS: dict[str, ObjectKind] = {
    kind.noun: kind
    for kind in (IPSEC_RULE, MAIN_MODE_RULE, PHASE1_AUTH_SET, PHASE2_AUTH_SET,
                 MAIN_MODE_CRYPTO_SET, QUICK_MODE_CRYPTO_SET)
}


@dataclass
class PolicyObject:
    """One rule or set: its kind's noun and its Windows properties."""

    noun: str
    properties: dict[str, Any]

    @property
    def kind(self) -> ObjectKind:
        return KINDS[self.noun]

    @property
    def name(self) -> str:
        return self.properties["Name"]

    def copy(self) -> PolicyObject:
        return PolicyObject(self.noun, copy.deepcopy(self.properties))


@dataclass
class PolicyStore:
    """A writable policy store: the host's PersistentStore or a GPO."""

    name: str
    store_type: StoreType
    objects: dict[str, dict[str, PolicyObject]] = field(default_factory=dict)  # noun -> lower name -> object

    def of_kind(self, noun: str) -> list[PolicyObject]:
        return list(self.objects.get(noun, {}).values())

    def find(self, noun: str, name: str) -> PolicyObject | None:
        return self.objects.get(noun, {}).get(name.lower())

    def add(self, obj: PolicyObject) -> None:
        self.objects.setdefault(obj.noun, {})[obj.name.lower()] = obj

    def remove(self, obj: PolicyObject) -> None:
        self.objects.get(obj.noun, {}).pop(obj.name.lower(), None)

    def rename(self, obj: PolicyObject, new_name: str) -> None:
        self.remove(obj)
        obj.properties["Name"] = new_name
        self.add(obj)

    def referencing(self, target: PolicyObject) -> list[PolicyObject]:
        """Return the rules of this store that name ``target`` in one of their set properties."""
        users = []
        for kind in KINDS.values():
            for property_name, noun in kind.references.items():
                if noun != target.noun:
                    continue
                for obj in self.of_kind(kind.noun):
                    value = obj.properties.get(property_name)
                    if value is not None and value.lower() == target.name.lower():
                        users.append(obj)
        return users

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "store_type": self.store_type,
            "objects": {
                noun: [obj.properties for obj in by_name.values()]
                for noun, by_name in self.objects.items()
            },
        }

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> PolicyStore:
        store = cls(data["name"], data["store_type"])
        for noun, items in data["objects"].items():
            for properties in items:
                store.add(PolicyObject(noun, properties))
        return store


@dataclass(frozen=True)
class StoredObject:
    """An object together with the store it lives in, as the ActiveStore view lists it."""

    store: PolicyStore
    obj: PolicyObject
