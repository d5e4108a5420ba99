"""Cmdlet signatures the lab binds against.

The NetSecurity signatures come from ``ipsec_deploy/data/netsecurity-spec.json``,
which was generated from Microsoft's Windows Server 2019 help pages. The few
other cmdlets the lab emulates (Test-NetConnection, Get-WinEvent,
Get-CimInstance, Get-ScheduledTask) are written out below in the same shape, from their help
pages, with only the parameters the lab needs plus the ones a caller would
plausibly send.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import lru_cache
from importlib import resources
from typing import Any

COMMON_PARAMETERS: dict[str, list[str]] = {
    "Verbose": ["vb"],
    "Debug": ["db"],
    "ErrorAction": ["ea"],
    "WarningAction": ["wa"],
    "InformationAction": ["infa"],
    "ErrorVariable": ["ev"],
    "WarningVariable": ["wv"],
    "InformationVariable": ["iv"],
    "OutVariable": ["ov"],
    "OutBuffer": ["ob"],
    "PipelineVariable": ["pv"],
}

ALL_SETS = "(All)"

# NOTE: the spec lists enum members but not their numeric values or which
# enums are [Flags]. The values below follow the NetSecurity CDXML enum
# definitions as far as they are known (Enabled True=1/False=2,
# SecurityPolicy None/Request/Require = 0/1/2, Profile and KeyModule as bit
# flags); they were not checked on a Windows host. Enums missing here get
# their members' ordinal positions.
ENUM_VALUES: dict[str, dict[str, int]] = {
    "Enabled": {"True": 1, "False": 2},
    "Profile": {"Any": 0, "Domain": 1, "Private": 2, "Public": 4, "NotApplicable": 65535},
    "KeyModule": {"Default": 0, "IKEv1": 1, "AuthIP": 2, "IKEv2": 4},
    "DiffieHellmanGroup": {
        "None": 0, "DH1": 1, "DH2": 2, "DH14": 3, "DH19": 4, "DH20": 5, "DH24": 6,
        "SameAsMainMode": 7,
    },
    "IPsecEncapsulation": {"None": 0, "AH": 1, "ESP": 2},
    "TrafficExemption": {
        "None": 0, "NeighborDiscovery": 1, "Icmp": 2, "RouterDiscovery": 4, "Dhcp": 8,
        "NotConfigured": 16,
    },
}
FLAGS_ENUMS = frozenset({"Profile", "KeyModule", "TrafficExemption", "IPsecEncapsulation"})

# CIM class of each noun's objects. CDXML cmdlets declare their -InputObject
# and -Associated<Noun> parameters with these class names (PSTypeName), so
# pipeline input binds only to the parameter of its own class.
NOUN_CIM_CLASSES = {
    "NetIPsecRule": "MSFT_NetConSecRule",
    "NetIPsecMainModeRule": "MSFT_NetMainModeRule",
    "NetIPsecPhase1AuthSet": "MSFT_NetIKEP1AuthSet",
    "NetIPsecPhase2AuthSet": "MSFT_NetIKEP2AuthSet",
    "NetIPsecMainModeCryptoSet": "MSFT_NetIKEMMCryptoSet",
    "NetIPsecQuickModeCryptoSet": "MSFT_NetIKEQMCryptoSet",
    "NetIPsecMainModeSA": "MSFT_NetMainModeSA",
    "NetIPsecQuickModeSA": "MSFT_NetQuickModeSA",
    "NetFirewallRule": "MSFT_NetFirewallRule",
    "NetFirewallAddressFilter": "MSFT_NetAddressFilter",
    "NetFirewallInterfaceFilter": "MSFT_NetInterfaceFilter",
    "NetFirewallInterfaceTypeFilter": "MSFT_NetInterfaceTypeFilter",
    "NetFirewallPortFilter": "MSFT_NetProtocolPortFilter",
    "NetFirewallProfile": "MSFT_NetFirewallProfile",
}

ENUM_TYPE_PREFIX = "Microsoft.PowerShell.Cmdletization.GeneratedTypes.NetSecurity."

# .NET type names used in binding error messages.
DOTNET_TYPE_NAMES = {
    "String": "System.String",
    "Boolean": "System.Boolean",
    "UInt16": "System.UInt16",
    "UInt32": "System.UInt32",
    "UInt64": "System.UInt64",
    "Int32": "System.Int32",
    "Int64": "System.Int64",
    "CimInstance": "Microsoft.Management.Infrastructure.CimInstance",
    "Hashtable": "System.Collections.Hashtable",
}


@dataclass(frozen=True)
class EnumSpec:
    """A generated NetSecurity enum: member names with their numeric values."""

    name: str
    values: dict[str, int]
    is_flags: bool

    @property
    def dotnet_name(self) -> str:
        return ENUM_TYPE_PREFIX + self.name

    def name_of(self, value: int) -> str | None:
        for member, number in self.values.items():
            if number == value:
                return member
        return None


@dataclass(frozen=True)
class ParameterSpec:
    """One documented cmdlet parameter."""

    name: str
    type: str  # as documented: "String[]", "SecurityPolicy", "SwitchParameter", ...
    parameter_sets: tuple[str, ...]
    mandatory: bool
    position: int | None
    aliases: tuple[str, ...]
    pipeline_by_value: bool = False
    pipeline_by_property_name: bool = False
    accepts_wildcards: bool = False

    @property
    def is_array(self) -> bool:
        return self.type.endswith("[]")

    @property
    def element_type(self) -> str:
        return self.type[:-2] if self.is_array else self.type

    @property
    def is_switch(self) -> bool:
        return self.type == "SwitchParameter"

    def in_set(self, set_name: str) -> bool:
        return ALL_SETS in self.parameter_sets or set_name in self.parameter_sets


@dataclass(frozen=True)
class CmdletSpec:
    """A cmdlet's parameters and parameter sets."""

    name: str
    parameters: dict[str, ParameterSpec]
    parameter_sets: tuple[str, ...]
    default_parameter_set: str | None
    supports_common_parameters: bool = True

    def parameters_in_set(self, set_name: str) -> list[ParameterSpec]:
        return [p for p in self.parameters.values() if p.in_set(set_name)]


@dataclass
class Spec:
    """All cmdlet and enum specs the lab knows, looked up case-insensitively."""

    cmdlets: dict[str, CmdletSpec] = field(default_factory=dict)
    enums: dict[str, EnumSpec] = field(default_factory=dict)
    not_existing: frozenset[str] = frozenset()
    sa_output: dict[str, Any] = field(default_factory=dict)

    def cmdlet(self, name: str) -> CmdletSpec | None:
        return self.cmdlets.get(name.lower())


def _parse_position(raw: Any) -> int | None:
    return raw if isinstance(raw, int) else None


def _cmdlet_from_json(name: str, data: dict[str, Any]) -> CmdletSpec:
    parameters: dict[str, ParameterSpec] = {}
    for param_name, param in data["parameters"].items():
        pipeline = param.get("pipeline_input") or {}
        parameters[param_name] = ParameterSpec(
            name=param_name,
            type=param["type"],
            parameter_sets=tuple(param["parameter_sets"]),
            mandatory=bool(param["mandatory"]),
            position=_parse_position(param.get("position")),
            aliases=tuple(param.get("aliases") or ()),
            pipeline_by_value=bool(pipeline.get("by_value")),
            pipeline_by_property_name=bool(pipeline.get("by_property_name")),
            accepts_wildcards=bool(param.get("accepts_wildcards")),
        )
    set_names = tuple(s["name"] for s in data["parameter_sets"])
    default = data.get("default_parameter_set")
    if default in ("None", ""):
        default = None
    return CmdletSpec(
        name=name,
        parameters=parameters,
        parameter_sets=set_names,
        default_parameter_set=default,
        supports_common_parameters=bool(data.get("supports_common_parameters", True)),
    )


def _param(name: str, type_: str, *, sets: tuple[str, ...] = (ALL_SETS,), mandatory: bool = False,
           position: int | None = None, aliases: tuple[str, ...] = ()) -> ParameterSpec:
    return ParameterSpec(name, type_, sets, mandatory, position, aliases)


def _extra_cmdlets() -> list[CmdletSpec]:
    """Signatures of the non-NetSecurity cmdlets the lab emulates (a subset of their parameters)."""
    # NOTE: the first three signatures list only part of each cmdlet's
    # parameters; a parameter Windows has but the list lacks is rejected as
    # unknown. Get-ScheduledTask lists all of its parameters.
    test_net_connection = CmdletSpec(
        name="Test-NetConnection",
        parameters={p.name: p for p in [
            _param("ComputerName", "String", position=0, aliases=("RemoteAddress", "cn")),
            _param("Port", "Int32", sets=("RemotePort",), mandatory=True, aliases=("RemotePort",)),
            _param("CommonTCPPort", "String", sets=("CommonTCPPort",), mandatory=True, position=1),
            _param("InformationLevel", "String"),
            _param("TraceRoute", "SwitchParameter", sets=("ICMP",)),
            _param("Hops", "Int32", sets=("ICMP",)),
        ]},
        parameter_sets=("ICMP", "CommonTCPPort", "RemotePort"),
        default_parameter_set="ICMP",
    )
    get_win_event = CmdletSpec(
        name="Get-WinEvent",
        parameters={p.name: p for p in [
            _param("LogName", "String[]", sets=("GetLogSet",), position=0),
            _param("FilterHashtable", "Hashtable[]", sets=("HashQuerySet",), mandatory=True, position=0),
            _param("MaxEvents", "Int64"),
            _param("ComputerName", "String", aliases=("Cn",)),
            _param("Oldest", "SwitchParameter"),
        ]},
        parameter_sets=("GetLogSet", "HashQuerySet"),
        default_parameter_set="GetLogSet",
    )
    get_cim_instance = CmdletSpec(
        name="Get-CimInstance",
        parameters={p.name: p for p in [
            _param("ClassName", "String", sets=("ClassNameComputerSet",), mandatory=True, position=0),
            _param("Namespace", "String"),
            _param("Filter", "String"),
            _param("Property", "String[]", aliases=("SelectProperties",)),
            _param("KeyOnly", "SwitchParameter"),
            _param("Shallow", "SwitchParameter"),
            _param("OperationTimeoutSec", "UInt32", aliases=("OT",)),
            _param("ComputerName", "String[]", aliases=("CN", "ServerName")),
        ]},
        parameter_sets=("ClassNameComputerSet",),
        default_parameter_set="ClassNameComputerSet",
    )
    # From the Windows Server 2019 help page of Get-ScheduledTask (ScheduledTasks module).
    get_scheduled_task = CmdletSpec(
        name="Get-ScheduledTask",
        parameters={p.name: p for p in [
            ParameterSpec("TaskName", "String[]", (ALL_SETS,), False, 0, (), pipeline_by_property_name=True,
                          accepts_wildcards=True),
            ParameterSpec("TaskPath", "String[]", (ALL_SETS,), False, 1, (), pipeline_by_property_name=True,
                          accepts_wildcards=True),
            _param("CimSession", "CimSession[]", aliases=("Session",)),
            _param("ThrottleLimit", "Int32"),
            _param("AsJob", "SwitchParameter"),
        ]},
        parameter_sets=("Default",),
        default_parameter_set="Default",
    )
    return [test_net_connection, get_win_event, get_cim_instance, get_scheduled_task]


def _spec_text() -> str:
    return resources.files("ipsec_deploy").joinpath("data/netsecurity-spec.json").read_text("utf-8")


@lru_cache(maxsize=1)
def load_spec() -> Spec:
    """Load the NetSecurity spec shipped with the package and add the lab's other cmdlets."""
    data = json.loads(_spec_text())
    spec = Spec(
        not_existing=frozenset(n.lower() for n in data["requested_but_not_existing"]["cmdlets"]),
        sa_output=data["sa_output_objects"],
    )

    for name, cmdlet_data in data["cmdlets"].items():
        spec.cmdlets[name.lower()] = _cmdlet_from_json(name, cmdlet_data)
    for cmdlet in _extra_cmdlets():
        spec.cmdlets[cmdlet.name.lower()] = cmdlet

    for enum_name, enum_data in data["enums"].items():
        values = ENUM_VALUES.get(enum_name) or {m: i for i, m in enumerate(enum_data["members"])}
        spec.enums[enum_name] = EnumSpec(enum_name, values, enum_name in FLAGS_ENUMS)
    return spec
